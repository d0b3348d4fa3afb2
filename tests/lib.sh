# shellcheck shell=bash
# What the CI scripts that run the daemon for real share (tests/container/run.sh,
# tests/container/kube.sh, tests/systemd/run.sh); each sources it after `set -euo pipefail`:
#   here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
#   . "$here/../lib.sh"
#
# Sets: repo (the checkout), cache (VPCEP_CI_CACHE, default target/ci-cache), passed (the
# count of checks passed), work (the scratch directory, once make_work made it).
# The script sets `suite`, the word its summary line starts with, and may define
# `diagnostics`, what it prints to stderr when a check fails.

repo=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cache=${VPCEP_CI_CACHE:-$repo/target/ci-cache}
passed=0
work=

say() { printf '%s\n' "$*"; }
# ok WHAT: one check passed.
ok() { passed=$((passed + 1)); say "ok: $*"; }
# fail WHAT: a check failed; the diagnostics, the summary line, and exit 1.
fail() {
    say "FAILED: $*" >&2
    if declare -F diagnostics >/dev/null; then diagnostics >&2 || true; fi
    say "$suite: $passed passed, 1 failed"
    exit 1
}
# all_passed: the summary line of a run that reached its end.
all_passed() { say "$suite: $passed passed, 0 failed"; }

# cleanup_on_exit FUNCTION: on any exit (INT and TERM included) FUNCTION runs, with errexit
# off, to remove what the script made by name; then the scratch directory goes.
cleanup_on_exit() {
    script_cleanup=$1
    trap run_cleanup EXIT
    trap 'exit 130' INT
    trap 'exit 143' TERM
}
run_cleanup() {
    set +e
    "$script_cleanup"
    [ -n "$work" ] && rm -rf "$work"
}

# make_work NAME: the scratch directory $work (vpcep-NAME.XXXXXX under TMPDIR), and $cache.
make_work() {
    work=$(mktemp -d "${TMPDIR:-/tmp}/vpcep-$1.XXXXXX")
    mkdir -p "$cache"
}

# wait_until SECONDS COMMAND...: true once COMMAND succeeds, false after SECONDS.
wait_until() {
    local end=$((SECONDS + $1)); shift
    until "$@"; do
        [ "$SECONDS" -lt "$end" ] || return 1
        sleep 0.5
    done
}

# install_missing NEED:PACKAGE...: apt-get installs each PACKAGE whose NEED is missing: a
# command not on PATH, or a path (starting with /) that does not exist.
install_missing() {
    local pair need missing=()
    for pair in "$@"; do
        need=${pair%%:*}
        case $need in
            /*) [ -e "$need" ] || missing+=("${pair#*:}") ;;
            *) command -v "$need" >/dev/null 2>&1 || missing+=("${pair#*:}") ;;
        esac
    done
    [ ${#missing[@]} -gt 0 ] || return 0
    say "# installing ${missing[*]}"
    apt-get update -qq >/dev/null || fail "apt-get update failed"
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends \
        "${missing[@]}" >/dev/null || fail "apt-get install ${missing[*]} failed"
}

# debian_mirror: the Debian mirror for debootstrap: DEBIAN_MIRROR, else the one apt uses.
debian_mirror() {
    local m=${DEBIAN_MIRROR:-}
    if [ -z "$m" ]; then
        m=$(sed -n 's/^URIs:[[:space:]]*\([^[:space:]]*\).*/\1/p' /etc/apt/sources.list.d/*.sources \
            2>/dev/null | grep -v -- '-security' | sed -n 1p || true)
    fi
    if [ -z "$m" ] && [ -f /etc/apt/sources.list ]; then
        m=$(sed -e 's/\[[^]]*\]//' /etc/apt/sources.list |
            awk '$1 == "deb" && $3 == "bookworm" && !n++ { print $2 }')
    fi
    printf '%s\n' "${m:-http://deb.debian.org/debian}"
}

# use_runc_for_podman: CONTAINERS_CONF in $work set up as podman runs on these machines:
# crun cannot run on hybrid cgroups and the default rlimits exceed what this kernel lets
# a root without CAP_SYS_RESOURCE set: runc, and limits within the hard limit.
use_runc_for_podman() {
    cat >"$work/containers.conf" <<EOF
[containers]
default_ulimits = ["nofile=$(ulimit -Hn):$(ulimit -Hn)", "nproc=32768:32768"]
[engine]
runtime = "runc"
EOF
    export CONTAINERS_CONF=$work/containers.conf
}

# simulator_config: the daemon's config.toml without [auth] and [http], which the script
# appends: one target, the simulator on 127.0.0.1:8080, polled every 2 s without jitter,
# the policies in policies/ beside the config.
simulator_config() {
    cat <<'EOF'
[[target]]
name = "ci"
region = "cn-north-4"
project_id = "0605767a3300d5762fb7c0186d8bfc2b"
vpcep_endpoint = "http://127.0.0.1:8080"
iam_endpoint = "http://127.0.0.1:8080"

[poll]
interval = "2s"
jitter = "0s"

[policy]
dir = "policies"

EOF
}

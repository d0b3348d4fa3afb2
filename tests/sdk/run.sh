#!/usr/bin/env bash
# SDK conformance of the simulator: tests/sdk/run.sh BIN
#
# Installs the pinned official Huawei Cloud Python SDK (requirements.txt) into a venv,
# starts `BIN simulate` on a free loopback port with the seed conformance.py writes, runs
# conformance.py against it and stops the simulator. Exits non-zero on any failure; the
# last line of stdout is always `N passed, N failed`.
#
# Environment:
#   PYTHON          interpreter for the venv (default python3, 3.9+)
#   SDK_VENV        venv directory (default ${TMPDIR:-/tmp}/vpcep-sdk-venv-<hash of
#                   requirements.txt>); reused when a previous install completed
#   PIP_INDEX_URL   etc. are honoured by pip as usual
set -uo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
tmp=${TMPDIR:-/tmp}

fail() {
    echo "run.sh: $*" >&2
    echo "0 passed, 1 failed"
    exit 1
}

[ $# -eq 1 ] || fail "usage: tests/sdk/run.sh BIN (e.g. target/release/vpcep-approver)"
bin=$1
case $bin in */*) bin=$(cd "$(dirname "$bin")" && pwd)/$(basename "$bin") ;; esac
[ -x "$bin" ] || command -v "$bin" >/dev/null || fail "$1 is not an executable"

python=${PYTHON:-python3}
command -v "$python" >/dev/null || fail "$python not found"

work=$(mktemp -d "$tmp/vpcep-sdk-run.XXXXXX") || fail "mktemp failed"
sim_pid=
cleanup() {
    if [ -n "$sim_pid" ] && kill -0 "$sim_pid" 2>/dev/null; then
        kill -TERM "$sim_pid" 2>/dev/null
        for _ in $(seq 50); do kill -0 "$sim_pid" 2>/dev/null || break; sleep 0.1; done
        kill -KILL "$sim_pid" 2>/dev/null
        wait "$sim_pid" 2>/dev/null
    fi
    rm -rf "$work"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

# --- venv with the pinned SDK --------------------------------------------------------
req=$here/requirements.txt
req_hash=$(sha256sum "$req" | cut -c1-12)
venv=${SDK_VENV:-$tmp/vpcep-sdk-venv-$req_hash}
t0=$(date +%s%N)
if [ -e "$venv" ] && [ ! -f "$venv/pyvenv.cfg" ]; then
    fail "$venv exists and is not a venv; refusing to overwrite it"
fi
mkdir -p "$(dirname "$venv")"
# one installer at a time per venv (concurrent runs on one machine)
if command -v flock >/dev/null; then
    exec 9>"$venv.lock" && flock 9
fi
if [ -f "$venv/.installed-$req_hash" ]; then
    echo "# venv $venv (reused)"
else
    "$python" -m venv --clear "$venv" || fail "creating the venv $venv failed"
    # A registry hiccup should not fail CI: three tries, a few seconds apart.
    installed=0
    for try in 1 2 3; do
        if "$venv/bin/python" -m pip install --quiet --disable-pip-version-check --no-input \
            -r "$req" >"$work/pip.log" 2>&1; then
            installed=1
            break
        fi
        echo "# pip install failed (try $try of 3)" >&2
        sleep $((try * 5))
    done
    [ "$installed" = 1 ] || { cat "$work/pip.log" >&2; fail "pip install failed"; }
    touch "$venv/.installed-$req_hash"
    ms=$(( ($(date +%s%N) - t0) / 1000000 ))
    echo "# venv $venv: pip install took $((ms / 1000)).$(printf '%03d' $((ms % 1000)))s"
fi
exec 9>&-
py=$venv/bin/python

# --- simulator -------------------------------------------------------------------------
ak=SDKCONFORMANCEAK0001
sk=sdk-conformance-secret-0123456789abcdef
project=0605767a3300d5762fb7c0186d8bfc2b
domain=sdk-domain
user=sdk-user
password='sdk-Passw0rd!'

"$py" "$here/conformance.py" write-seed "$work/seed.json" || fail "writing the seed failed"
"$bin" simulate --listen 127.0.0.1:0 --ak "$ak" --sk "$sk" --user "$domain/$user" \
    --password "$password" --project-id "$project" --seed "$work/seed.json" \
    >"$work/sim.out" 2>"$work/sim.err" &
sim_pid=$!
url=
for _ in $(seq 100); do
    url=$(sed -n 's/^listening on \(http:\/\/[^ ]*\)$/\1/p' "$work/sim.out")
    [ -n "$url" ] && break
    kill -0 "$sim_pid" 2>/dev/null || break
    sleep 0.1
done
if [ -z "$url" ]; then
    cat "$work/sim.err" >&2
    fail "the simulator did not print 'listening on http://ADDR' within 10 s"
fi
echo "# simulator $url (pid $sim_pid)"

# --- cases -----------------------------------------------------------------------------
"$py" "$here/conformance.py" run --endpoint "$url" --ak "$ak" --sk "$sk" \
    --project-id "$project" --domain "$domain" --user "$user" --password "$password" \
    2>&1 | tee "$work/out" | grep -v '^[0-9]* passed, [0-9]* failed$'
rc=${PIPESTATUS[0]}
summary=$(tail -n 1 "$work/out")
if ! kill -0 "$sim_pid" 2>/dev/null; then
    echo "run.sh: the simulator exited during the run; its stderr:" >&2
    cat "$work/sim.err" >&2
    rc=1
fi
if ! [[ $summary =~ ^([0-9]+)\ passed,\ ([0-9]+)\ failed$ ]]; then
    echo "run.sh: conformance.py ended without a summary (exit $rc)" >&2
    echo "0 passed, 1 failed"
    exit 1
fi
if [ "$rc" -ne 0 ] && [ -s "$work/sim.err" ]; then
    echo "# simulator stderr:" >&2
    cat "$work/sim.err" >&2
fi
[ "$rc" -eq 0 ] && [ "${BASH_REMATCH[2]}" -ne 0 ] && rc=1
echo "$summary"
exit "$rc"

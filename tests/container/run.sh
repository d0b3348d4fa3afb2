#!/usr/bin/env bash
# The container image, built and run for real: tests/container/run.sh
#
# Builds the repository's Dockerfile as written with podman (runc, Docker image format so
# HEALTHCHECK is kept, no pulls: the base images are made here with debootstrap), then:
#   - checks what the image holds (no shell, no package manager, no curl; the CA bundle;
#     a non-root user; the exec-form HEALTHCHECK) and prints its size;
#   - runs `demo` in it;
#   - runs the simulator and the daemon as two containers of one pod, which share the
#     pod's loopback (the daemon reaches the simulator on 127.0.0.1 inside the pod), the
#     daemon read-only, without capabilities, its audit log on a named volume;
#   - probes /healthz, /readyz and /metrics through a port published on 127.0.0.1 only,
#     runs the image's own HEALTHCHECK, sees a decision applied and audited, sends SIGHUP
#     (a reload in the metrics), optionally swaps the policy ConfigMap (below), stops the
#     daemon (exit code 0) and verifies the audit chain with the image itself.
# Prints one line per check and ends with `container: N passed, N failed`.
#
# Leaves behind only caches: the base images docker.io/library/debian:bookworm-slim and
# docker.io/library/rust:1.95-slim-bookworm (each labelled with the recipe that made it;
# an image of that name made otherwise is used as it is, never replaced), the image
# $IMAGE with its build stage as $IMAGE-build (the layer cache of the next run; the
# previous run's are removed), the pod infra image podman makes for itself, and the
# debootstrap cache. Everything else it creates is removed by name, also on failure.
#
# Environment:
#   IMAGE                  tag to build (default localhost/vpcep-approver:ci)
#   VPCEP_CI_CACHE         cache directory (default target/ci-cache)
#   DEBIAN_MIRROR          Debian mirror for debootstrap (default: the one apt uses)
#   VPCEP_CI_POLICY_WATCH  1: also check that a ConfigMap-style policy swap reloads by
#                          itself ([policy] watch, README "Policies"); 0: skip that check
set -euo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
. "$here/../lib.sh"
suite=container
image=${IMAGE:-localhost/vpcep-approver:ci}
policy_watch=${VPCEP_CI_POLICY_WATCH:-1}

run=vpcep-ci-$$-$(date +%s)
pod=$run-pod
sim=$run-sim
daemon=$run-daemon
volume=$run-audit
created_pod=0 created_volume=0 mounted_image=0

diagnostics() {
    [ "$created_pod" = 1 ] || return 0
    local c
    for c in "$sim" "$daemon"; do
        if podman container exists "$c" 2>/dev/null; then
            say "--- podman logs $c (last 40 lines)"
            podman logs --tail 40 "$c" 2>&1 || true
        fi
    done
}
remove_podman_objects() {
    [ "$mounted_image" = 1 ] && podman image unmount "$image" >/dev/null 2>&1
    [ "$created_pod" = 1 ] && podman pod rm -f -t 5 "$pod" >/dev/null 2>&1
    podman rm -f -t 0 "$run-demo" "$run-verify" "$run-check" "$run-shell" >/dev/null 2>&1
    [ "$created_volume" = 1 ] && podman volume rm -f "$volume" >/dev/null 2>&1
}
cleanup_on_exit remove_podman_objects

[ "$(id -u)" = 0 ] || fail "needs root (podman with the runc runtime, debootstrap)"

# --- tools ------------------------------------------------------------------------------
install_missing podman:podman runc:runc buildah:buildah conmon:conmon catatonit:catatonit \
    debootstrap:debootstrap curl:curl iptables:iptables slirp4netns:slirp4netns \
    /usr/lib/cni/bridge:containernetworking-plugins

make_work container
use_runc_for_podman
# --network host: a RUN step reaches the package registries directly, no bridge or NAT.
podman_build() { podman build --runtime runc --pull=never --format docker --network host "$@"; }

# One run at a time on this machine makes or replaces the base images and the build
# cache, which live in podman's storage, shared by every checkout.
lock=${TMPDIR:-/tmp}/vpcep-approver-ci-images.lock
exec 8>"$lock"
flock -w 1800 8 || fail "another run held $lock for 30 minutes"

# --- base images ------------------------------------------------------------------------
# label_of IMAGE: the recipe label of a local image, "-" if it has none, "" if absent.
label_of() {
    local v
    v=$(podman image inspect --format '{{index .Labels "vpcep-approver.ci.recipe"}}' "$1" \
        2>/dev/null) || return 0
    case $v in "" | "<no value>") echo - ;; *) echo "$v" ;; esac
}

# make_debian_base: docker.io/library/debian:bookworm-slim from a minbase debootstrap.
make_debian_base() {
    local tag=docker.io/library/debian:bookworm-slim tar=$cache/bookworm-minbase-$1.tar
    if [ ! -s "$tar" ]; then
        rm -f "$cache"/bookworm-minbase-*.tar
        local root=$work/minbase
        say "# debootstrap --variant=minbase bookworm from $(debian_mirror)"
        mkdir -p "$cache/debs"
        debootstrap --variant=minbase --cache-dir="$cache/debs" bookworm "$root" \
            "$(debian_mirror)" >"$work/debootstrap.log" 2>&1 ||
            { tail -n 20 "$work/debootstrap.log"; fail "debootstrap of the minbase root failed"; }
        rm -rf "$root"/var/cache/apt/archives/*.deb "$root"/var/lib/apt/lists/*
        tar --numeric-owner -C "$root" -cf "$tar.part" . && mv "$tar.part" "$tar"
        rm -rf "$root"
    fi
    podman import --change 'CMD ["bash"]' --change "LABEL vpcep-approver.ci.recipe=$1" \
        "$tar" "$tag" >/dev/null || fail "podman import of $tar as $tag failed"
}

# make_rust_base: docker.io/library/rust:1.95-slim-bookworm as the official image is
# laid out (rustup proxies in /usr/local/cargo/bin, the toolchain in /usr/local/rustup),
# carrying this machine's Rust toolchain and the extra CA roots it trusts (so cargo can
# reach the crate registry from inside a build here).
make_rust_base() {
    local ctx=$work/rust-base sysroot release triple name
    sysroot=$(rustc --print sysroot)
    release=$(rustc -vV | sed -n 's/^release: //p')
    triple=$(rustc -vV | sed -n 's/^host: //p')
    name=$release-$triple
    mkdir -p "$ctx/ca"
    find /usr/local/share/ca-certificates -name '*.crt' -type f -exec cp {} "$ctx/ca/" \; 2>/dev/null || true
    cp "$(command -v rustup)" "$ctx/rustup"
    cat >"$ctx/Containerfile" <<EOF
FROM docker.io/library/debian:bookworm-slim
RUN apt-get update && apt-get install -y --no-install-recommends ca-certificates gcc libc6-dev \
 && rm -rf /var/lib/apt/lists/*
COPY ca/ /usr/local/share/ca-certificates/
RUN update-ca-certificates >/dev/null
ENV RUSTUP_HOME=/usr/local/rustup CARGO_HOME=/usr/local/cargo \
    PATH=/usr/local/cargo/bin:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin
COPY rustup /usr/local/cargo/bin/rustup
RUN mkdir -p /usr/local/rustup/toolchains/$name \
 && cp -a /toolchain/. /usr/local/rustup/toolchains/$name/ \
 && rm -rf /usr/local/rustup/toolchains/$name/share/doc \
 && printf 'version = "12"\ndefault_toolchain = "$name"\nprofile = "minimal"\nauto_self_update = "disable"\n' \
      > /usr/local/rustup/settings.toml \
 && for p in cargo rustc rustdoc cargo-clippy cargo-fmt clippy-driver rustfmt; do \
      ln -s rustup /usr/local/cargo/bin/\$p; done \
 && cargo --version && rustc --version
EOF
    podman_build --volume "$sysroot:/toolchain:ro" --label "vpcep-approver.ci.recipe=$1" \
        -t docker.io/library/rust:1.95-slim-bookworm "$ctx" >"$work/rust-base.log" 2>&1 ||
        { tail -n 30 "$work/rust-base.log"; fail "building the rust:1.95-slim-bookworm stand-in failed"; }
}

# ensure_base TAG MAKER INPUTS...: TAG made by MAKER unless present. The recipe label is
# a hash over the maker's code and INPUTS, so a changed recipe remakes its own image; an
# image under TAG without the label (pulled, or made otherwise) is used as it is.
ensure_base() {
    local tag=$1 maker=$2 recipe have old
    shift 2
    recipe=$( { declare -f "$maker"; printf '%s\n' "$@"; } | sha256sum | cut -c1-16)
    have=$(label_of "$tag")
    if [ "$have" = "$recipe" ]; then
        ok "base image $tag is present (recipe $recipe)"
        return
    elif [ "$have" = - ]; then
        ok "base image $tag is present and was not made here: used as it is"
        return
    fi
    old=$(podman image inspect --format '{{.Id}}' "$tag" 2>/dev/null || true)
    local t0=$SECONDS
    "$maker" "$recipe"
    # the image this recipe replaced was made by an earlier recipe of this script
    [ -n "$old" ] && podman rmi "$old" >/dev/null 2>&1 || true
    ok "base image $tag made in $((SECONDS - t0))s (recipe $recipe)"
}

command -v rustc >/dev/null && command -v rustup >/dev/null ||
    fail "the builder base carries this machine's Rust toolchain: rustc and rustup are needed"
rustc_release=$(rustc -vV | sed -n 's/^release: //p')
case $rustc_release in 1.95.*) ;; *)
    fail "FROM rust:1.95-slim-bookworm, but this machine's rustc is $rustc_release" ;;
esac

ensure_base docker.io/library/debian:bookworm-slim make_debian_base
debian_id=$(podman image inspect --format '{{.Id}}' docker.io/library/debian:bookworm-slim)
ca_sum=$(find /usr/local/share/ca-certificates -name '*.crt' -type f -exec cat {} + 2>/dev/null |
    sha256sum | cut -c1-16)
ensure_base docker.io/library/rust:1.95-slim-bookworm make_rust_base \
    "$debian_id" "$(rustc -vV)" "$ca_sum" "$(sha256sum "$(command -v rustup)")"

# --- build the Dockerfile as written ----------------------------------------------------
old_image=$(podman image inspect --format '{{.Id}}' "$image" 2>/dev/null || true)
old_build=$(podman image inspect --format '{{.Id}}' "$image-build" 2>/dev/null || true)
t0=$SECONDS
# The build log, each line stamped with the seconds since the build began; kept in the
# cache directory for a look at where the time went.
stamp() { while IFS= read -r line; do printf '%4ds %s\n' $((SECONDS - t0)) "$line"; done; }
podman_build -t "$image" -f "$repo/Dockerfile" "$repo" 2>&1 | stamp >"$cache/image-build.log" ||
    { tail -n 40 "$cache/image-build.log"; fail "podman build of Dockerfile failed (log: $cache/image-build.log)"; }
# The build stage under a tag of its own (from the layer cache: no rebuild), so the stage
# of the previous run can be removed by name instead of piling up: `podman rmi` of an
# image no longer tagged also removes its parent layers that nothing else uses.
podman_build --target build -t "$image-build" -f "$repo/Dockerfile" "$repo" \
    >"$work/build-stage.log" 2>&1 || { tail -n 20 "$work/build-stage.log"; fail "tagging the build stage failed"; }
new_image=$(podman image inspect --format '{{.Id}}' "$image")
new_build=$(podman image inspect --format '{{.Id}}' "$image-build")
[ -n "$old_image" ] && [ "$old_image" != "$new_image" ] && { podman rmi "$old_image" >/dev/null 2>&1 || true; }
[ -n "$old_build" ] && [ "$old_build" != "$new_build" ] && { podman rmi "$old_build" >/dev/null 2>&1 || true; }
cached=$(grep -c -- '--> Using cache' "$cache/image-build.log" || true)
ok "podman build of Dockerfile as written: $image in $((SECONDS - t0))s ($cached steps from the layer cache)"

# --- what the image holds ---------------------------------------------------------------
cfg_user=$(podman image inspect --format '{{.Config.User}}' "$image")
[ "$cfg_user" = 10001:10001 ] || fail "image user is '$cfg_user', expected 10001:10001"
ok "image runs as the non-root user 10001:10001"
hc=$(podman image inspect --format '{{json .Config.Healthcheck.Test}}' "$image")
[ "$hc" = '["CMD","/usr/local/bin/vpcep-approver","healthcheck"]' ] ||
    fail "image HEALTHCHECK is $hc, expected the exec form of vpcep-approver healthcheck"
ok "image HEALTHCHECK is exec-form: $hc"

mnt=$(podman image mount "$image") || fail "podman image mount $image failed"
mounted_image=1
(cd "$mnt" && find . -mindepth 1 \( -type f -o -type l \) -printf '%P\n' | sort) >"$work/files"
for bad in sh bash dash busybox apt apt-get dpkg curl wget; do
    if grep -E "(^|/)$bad\$" "$work/files" >/dev/null; then
        fail "the image contains $(grep -E "(^|/)$bad\$" "$work/files" | sed -n 1p)"
    fi
done
if podman run --rm --name "$run-shell" --network none --no-healthcheck --entrypoint /bin/sh \
    "$image" -c true >/dev/null 2>&1; then
    fail "/bin/sh ran in the image"
fi
ok "the image has no shell (/bin/sh does not run), package manager or curl; its $(wc -l <"$work/files") files: $(tr '\n' ' ' <"$work/files")"
bundle=$mnt/etc/ssl/certs/ca-certificates.crt
[ -s "$bundle" ] || fail "the image has no CA bundle at /etc/ssl/certs/ca-certificates.crt"
ncert=$(grep -c 'BEGIN CERTIFICATE' "$bundle" || true)
[ "$ncert" -ge 100 ] || fail "the CA bundle holds only $ncert certificates"
for extra in /usr/local/share/ca-certificates/*.crt; do
    [ -f "$extra" ] || continue
    if grep -qF "$(sed -n 2p "$extra")" "$bundle"; then
        fail "the image's CA bundle carries this build host's own root $(basename "$extra")"
    fi
done
ok "the image carries the CA bundle: $ncert Mozilla roots, none of the build host's own"
state_owner=$(stat -c '%u:%g %a' "$mnt/var/lib/vpcep-approver")
[ "$state_owner" = "10001:10001 750" ] || fail "/var/lib/vpcep-approver is $state_owner in the image"
tmp_mode=$(stat -c '%a' "$mnt/tmp")
[ "$tmp_mode" = 1777 ] || fail "/tmp is mode $tmp_mode in the image"
ok "the image's /var/lib/vpcep-approver is 10001:10001 0750 and /tmp is 1777"
podman image unmount "$image" >/dev/null && mounted_image=0
size=$(podman image inspect --format '{{.Size}}' "$image")
size_mib=$(awk -v b="$size" 'BEGIN { printf "%.1f", b / 1048576 }')
ok "image size: $size_mib MiB ($size bytes)"

# --- demo -------------------------------------------------------------------------------
podman run --rm --name "$run-demo" --network none --no-healthcheck --read-only --cap-drop all \
    --security-opt no-new-privileges "$image" demo >"$work/demo.out" 2>&1 ||
    { cat "$work/demo.out"; fail "demo in the image exited non-zero"; }
grep -q '^ok: ' "$work/demo.out" || { cat "$work/demo.out"; fail "demo printed no verified audit chain"; }
ok "demo in the image (no network, read-only root): $(grep '^ok: ' "$work/demo.out" | sed -n 1p)"

# --- the simulator and the daemon in one pod --------------------------------------------
ak=CONTAINERCHECKAK0001
sk=container-check-secret-0123456789abcdef
etc=$work/etc
mkdir -p "$etc"
cp "$repo/examples/seed.json" "$work/seed.json"
{ simulator_config; cat <<'EOF'; } >"$etc/config.toml"
[auth]
method = "aksk"

[audit]
path = "/var/lib/vpcep-approver/audit.jsonl"

[http]
listen = "0.0.0.0:9464"

[log]
format = "json"
EOF

# The policies as a Kubernetes ConfigMap volume lays them out: the files in a timestamped
# directory, `..data` pointing at it, and one symlink per key through `..data`.
configmap_write() { # DIR STAMP: a new data directory from the repository's policies
    local dir=$1 stamp=$2
    mkdir -p "$dir/$stamp"
    cp "$repo"/policies/*.cedar "$repo"/policies/schema.cedarschema "$repo"/policies/entities.json \
        "$dir/$stamp/"
}
configmap_swap() { # DIR STAMP: point ..data at STAMP atomically, link the keys, drop the old
    local dir=$1 stamp=$2 old f
    old=$(readlink "$dir/..data" 2>/dev/null || true)
    ln -s "$stamp" "$dir/..data_tmp"
    mv -T "$dir/..data_tmp" "$dir/..data"
    for f in "$dir/$stamp"/*; do
        f=$(basename "$f")
        [ -L "$dir/$f" ] || ln -s "..data/$f" "$dir/$f"
    done
    if [ -n "$old" ] && [ "$old" != "$stamp" ]; then rm -rf "${dir:?}/$old"; fi
}
configmap_write "$etc/policies" ..2026_01_01_00_00_00.000000001
configmap_swap "$etc/policies" ..2026_01_01_00_00_00.000000001
chmod -R a+rX "$etc" "$work/seed.json"

# slirp4netns: the pod's network is a user-mode stack with no bridge, veth or NAT rule
# on the host; the published port is a socket of the slirp4netns process on 127.0.0.1.
podman pod create --name "$pod" --network slirp4netns:port_handler=slirp4netns \
    -p 127.0.0.1::9464 >/dev/null || fail "podman pod create failed"
created_pod=1
podman run -d --pod "$pod" --name "$sim" --no-healthcheck -v "$work/seed.json:/seed.json:ro" \
    "$image" simulate --listen 127.0.0.1:8080 --seed /seed.json --ak "$ak" --sk "$sk" >/dev/null ||
    fail "starting the simulator container failed"
# logs_have CONTAINER PATTERN (read to a file first: `| grep -q` fails on SIGPIPE under pipefail)
logs_have() { podman logs "$1" >"$work/logs" 2>&1 || true; grep -Eq -- "$2" "$work/logs"; }
sim_ready() { logs_have "$sim" '^listening on http://127\.0\.0\.1:8080'; }
wait_until 20 sim_ready || fail "the simulator did not print 'listening on http://127.0.0.1:8080' within 20 s"
# The published port is known once the pod runs (its infra container holds it).
infra=$(podman pod inspect --format '{{.InfraContainerID}}' "$pod")
published=$(podman port "$infra" 2>&1 | tr '\n' ' ' || true)
hostport=$(podman port "$infra" 9464/tcp | sed -n 's/^127\.0\.0\.1:\([0-9]*\)$/\1/p' || true)
[ -n "$hostport" ] || fail "the pod did not publish 9464 on 127.0.0.1: $published"
case $published in *0.0.0.0* | *::*) fail "the pod published beyond loopback: $published" ;; esac
base=http://127.0.0.1:$hostport

podman volume create "$volume" >/dev/null || fail "podman volume create $volume failed"
created_volume=1
# podman would run the HEALTHCHECK from a systemd timer, which it cannot set up without
# a systemd (it says so on stderr, kept in a file); `podman healthcheck run` runs it below.
podman run -d --pod "$pod" --name "$daemon" \
    --read-only --cap-drop all --security-opt no-new-privileges \
    -e HUAWEICLOUD_SDK_AK="$ak" -e HUAWEICLOUD_SDK_SK="$sk" \
    -v "$etc:/etc/vpcep-approver:ro" -v "$volume:/var/lib/vpcep-approver" \
    "$image" >/dev/null 2>"$work/daemon-start.err" ||
    { cat "$work/daemon-start.err"; fail "starting the daemon container failed"; }
ok "pod $pod: simulator and daemon share the pod's loopback; only 127.0.0.1:$hostport is published"

http_code() { curl -s -o "$work/body" -w '%{http_code}' --max-time 3 "$base$1" || true; }
is_200() { [ "$(http_code "$1")" = 200 ]; }
wait_until 30 is_200 /readyz || fail "/readyz through 127.0.0.1:$hostport not 200 within 30 s: $(cat "$work/body" 2>/dev/null)"
ok "/readyz through the published port: 200 $(head -c 60 "$work/body")"
is_200 /healthz || fail "/healthz through 127.0.0.1:$hostport answered $(http_code /healthz)"
ok "/healthz through the published port: 200 $(head -c 60 "$work/body")"

podman healthcheck run "$daemon" >"$work/hc.out" 2>&1 ||
    fail "podman healthcheck run (the image's HEALTHCHECK) failed: $(cat "$work/hc.out")"
health=$(podman inspect --format '{{.State.Health.Status}}' "$daemon" 2>/dev/null ||
    podman inspect --format '{{.State.Healthcheck.Status}}' "$daemon")
[ "$health" = healthy ] || fail "after podman healthcheck run the daemon is '$health'"
ok "the image's own HEALTHCHECK: podman healthcheck run says $health"

audit=$(podman volume inspect --format '{{.Mountpoint}}' "$volume")/audit.jsonl
applied() { [ -f "$audit" ] && grep -q '"outcome":"applied"' "$audit"; }
wait_until 30 applied || fail "no applied outcome in the audit log within 30 s"
grep -q '"kind":"decision".*"endpoint_id":"705290f3-0d00-41f2-aedc-71f09844e879".*"verdict":"permit"' "$audit" ||
    fail "no permit decision for 705290f3-… in the audit log"
ok "the partner's connection was decided permit, received and audited on the volume"

metric() { # NAME{LABELS} → its value in /metrics, or empty
    curl -s --max-time 3 "$base/metrics" | awk -v k="$1" '$1 == k { v = $2 } END { print v }' || true
}
metric_is() { [ "$(metric "$1")" = "$2" ]; }
version_now() {
    curl -s --max-time 3 "$base/metrics" |
        sed -n 's/^vpcep_approver_policy_info{version="\([^"]*\)"} 1$/\1/p' | sed -n 1p || true
}
reloads=vpcep_approver_policy_reloads_total'{result="success"}'
before=$(metric "$reloads")
if [ -z "$before" ]; then # present at 0 from the start (README "Health, metrics and alerts")
    say "note: /metrics has no $reloads before the first reload; taken as 0"
    before=0
fi
version=$(version_now)
[ -n "$version" ] || fail "/metrics has no vpcep_approver_policy_info"
podman kill --signal HUP "$daemon" >/dev/null || fail "podman kill --signal HUP failed"
wait_until 5 metric_is "$reloads" "$((before + 1))" ||
    fail "$reloads stayed at $(metric "$reloads") (was $before) for 5 s after SIGHUP"
[ "$(version_now)" = "$version" ] || fail "the policy version changed on a SIGHUP without a change"
logs_have "$daemon" 'SIGHUP' || fail "the daemon's log does not mention the SIGHUP"
ok "SIGHUP reloaded the policies: $reloads $before -> $((before + 1)), version $version"

# The ConfigMap layout (..data, the timestamped directory, symlinks) loads as the plain
# files do: the same version as `check` on the repository's policies.
mkdir -p "$work/plain"
cp "$etc/config.toml" "$work/plain/config.toml"
cp -r "$repo/policies" "$work/plain/policies"
chmod -R a+rX "$work/plain"
plain=$(podman run --rm --name "$run-check" --network none --no-healthcheck -v "$work/plain:/plain:ro" \
    "$image" -c /plain/config.toml check 2>&1 | grep -o 'sha256:[0-9a-f]*' | sed -n 1p || true)
[ "$plain" = "$version" ] || fail "policies in the ConfigMap layout load as $version, the plain files as $plain"
ok "the policies in a ConfigMap volume's layout (..data, symlinks) load as the plain files: $plain"

# [policy] watch (README "Policies"): a ConfigMap update, as the kubelet makes it, reloads the
# policies within 5 s without a signal. Run with VPCEP_CI_POLICY_WATCH=1.
check_policy_watch() {
    local dir=$etc/policies stamp=..2026_01_01_00_01_00.000000002 want n0
    configmap_write "$dir" "$stamp"
    printf '\n// changed by the ConfigMap update\n' >>"$dir/$stamp/allow.cedar"
    chmod -R a+rX "$dir"
    mkdir -p "$work/probe/policies"
    cp "$dir/$stamp"/* "$work/probe/policies/"
    cp "$etc/config.toml" "$work/probe/config.toml"
    chmod -R a+rX "$work/probe"
    want=$(podman run --rm --name "$run-check" --network none --no-healthcheck -v "$work/probe:/probe:ro" \
        "$image" -c /probe/config.toml check 2>&1 | grep -o 'sha256:[0-9a-f]*' | sed -n 1p || true)
    [ -n "$want" ] && [ "$want" != "$version" ] ||
        fail "check did not report a new policy version for the changed ConfigMap ('$want')"
    n0=$(metric "$reloads")
    configmap_swap "$dir" "$stamp"
    version_is() { [ "$(version_now)" = "$1" ]; }
    wait_until 5 version_is "$want" ||
        fail "policy_info stayed at $(version_now) for 5 s after the ConfigMap swap (want $want)"
    [ "$(metric "$reloads")" -gt "$n0" ] || fail "$reloads did not grow on the ConfigMap swap"
    ok "a ConfigMap ..data swap reloaded the policies by itself: version $want"
    version=$want
}
if [ "$policy_watch" = 1 ]; then
    check_policy_watch
else
    say "skip: ConfigMap swap reload ([policy] watch); set VPCEP_CI_POLICY_WATCH=1 to run it"
fi

podman stop -t 15 "$daemon" >/dev/null 2>"$work/daemon-stop.err" ||
    { cat "$work/daemon-stop.err"; fail "podman stop $daemon failed"; }
code=$(podman inspect --format '{{.State.ExitCode}}' "$daemon")
[ "$code" = 0 ] || fail "the daemon exited $code on podman stop (SIGTERM), expected 0"
logs_have "$daemon" 'vpcep-approver stopped' || fail "the daemon did not log its clean stop"
ok "podman stop: the daemon exited 0 after a clean shutdown"

podman run --rm --name "$run-verify" --network none --no-healthcheck -v "$volume:/audit:ro" "$image" \
    audit verify /audit/audit.jsonl >"$work/verify.out" 2>&1 ||
    { cat "$work/verify.out"; fail "audit verify in the image found a problem"; }
ok "audit verify (the image's own binary, on the volume): $(tail -n 1 "$work/verify.out")"

all_passed

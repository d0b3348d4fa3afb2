#!/usr/bin/env bash
# The Kubernetes manifests in deploy/kubernetes/: tests/container/kube.sh
#
# 1. kubernetes-validate --strict (pinned in requirements.txt, installed into a venv made
#    here) for several Kubernetes versions, on every manifest; and a copy with a misspelt
#    field must fail, so strict validation is really on.
# 2. The sidecar semantics the manifests promise (kube_manifests.py lint): probes on
#    /healthz only, no readiness probe on the approver, non-root, read-only root, no
#    escalation or capabilities, keys and signing key from Secrets, one audit chain per
#    replica.
# 3. Each manifest run for real by `podman kube play` as a loopback-only copy
#    (kube_manifests.py copy; `--network none`, so each pod has only its own loopback):
#    every approver replica decides against the simulator in its pod, /healthz (what the
#    startup and liveness probes GET) and /readyz answer 200 inside the pod, the
#    securityContext is applied, the pod stops with exit 0, and every replica's audit
#    chain (stdout, or its own claim) verifies on its own.
# Needs the image tests/container/run.sh builds. Ends with `kubernetes: N passed, N failed`.
#
# Environment:
#   IMAGE                   image to run (default localhost/vpcep-approver:ci)
#   VPCEP_CI_CACHE          cache directory for the venv (default target/ci-cache)
#   K8S_VERSIONS            versions to validate against (default "1.27 1.30 1.33 1.37")
#   VPCEP_CI_AUDIT_SIGNING  1 (default): keep [audit] signing_key_file (a generated Ed25519 key) and
#                           verify the checkpoints with the public key; 0: run the copy
#                           without it
set -euo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
. "$here/../lib.sh"
suite=kubernetes
image=${IMAGE:-localhost/vpcep-approver:ci}
versions=${K8S_VERSIONS:-1.27 1.30 1.33 1.37}
signing=${VPCEP_CI_AUDIT_SIGNING:-1}

prefix=vpcep-ci-$$-$(date +%s)
played=()
volumes=()

remove_played_pods() {
    local f v
    for f in "${played[@]}"; do podman kube play --down "$f" >/dev/null 2>&1; done
    for v in "${volumes[@]}"; do podman volume rm -f "$v" >/dev/null 2>&1; done
    podman rm -f -t 0 "$prefix-verify" >/dev/null 2>&1
}
cleanup_on_exit remove_played_pods

make_work kube
manifests=("$repo"/deploy/kubernetes/*.yaml)
[ -e "${manifests[0]}" ] || fail "no manifests in deploy/kubernetes/"

# --- kubernetes-validate in a venv ---------------------------------------------------------
req=$here/requirements.txt
venv=$cache/kubernetes-validate-$(sha256sum "$req" | cut -c1-12)
python=${PYTHON:-python3}
exec 9>"$venv.lock"
flock -w 600 9 || fail "another run held $venv.lock for 10 minutes"
if [ ! -f "$venv/.installed" ]; then
    "$python" -m venv --clear "$venv" || fail "creating the venv $venv failed"
    for try in 1 2 3; do
        if "$venv/bin/python" -m pip install --quiet --disable-pip-version-check --no-input \
            -r "$req" >"$work/pip.log" 2>&1; then
            touch "$venv/.installed"
            break
        fi
        say "# pip install failed (try $try of 3)" >&2
        sleep $((try * 5))
    done
    [ -f "$venv/.installed" ] || { cat "$work/pip.log" >&2; fail "pip install -r $req failed"; }
fi
exec 9>&-
kv=$venv/bin/kubernetes-validate
py=$venv/bin/python

for f in "${manifests[@]}"; do
    for v in $versions; do
        "$kv" --strict --quiet -k "$v" "$f" >"$work/kv.out" 2>&1 ||
            { cat "$work/kv.out"; fail "kubernetes-validate --strict -k $v ${f#"$repo"/}"; }
    done
    ok "kubernetes-validate --strict: ${f#"$repo"/} is valid for Kubernetes $versions"
done
probed=$(grep -l 'livenessProbe:' "${manifests[@]}" | sed -n 1p || true)
[ -n "$probed" ] || fail "no manifest has a livenessProbe"
sed 's/livenessProbe:/livenesProbe:/' "$probed" >"$work/misspelt.yaml"
if "$kv" --strict --quiet -k "${versions##* }" "$work/misspelt.yaml" >/dev/null 2>&1; then
    fail "kubernetes-validate --strict accepted a misspelt field (livenesProbe)"
fi
ok "kubernetes-validate --strict rejects a misspelt field (livenesProbe)"

(cd "$repo" && "$py" "$here/kube_manifests.py" lint "${manifests[@]#"$repo"/}") >"$work/lint.out" 2>&1 ||
    { cat "$work/lint.out"; fail "the manifests break the sidecar semantics"; }
while IFS= read -r line; do ok "${line#ok: }"; done <"$work/lint.out"

# --- podman kube play of loopback-only copies ----------------------------------------------
podman image exists "$image" || fail "no image $image: run tests/container/run.sh first"
[ -n "${CONTAINERS_CONF:-}" ] || use_runc_for_podman # the same runtime settings as run.sh

ak=KUBECHECKAK000000001
sk=kube-check-secret-0123456789abcdef
internal=0605767a3300d5762fb7c0186d8bfc2b # in the manifests' example entities.json
cat >"$work/seed.json" <<EOF
{"services": [{"id": "4189d3c2-8882-4871-a3c2-d380272eed88", "service_name": "cn-north-4.payments",
  "connections": [
    {"id": "11111111-2222-4333-8444-555555555555", "domain_id": "$internal", "description": "internal link"},
    {"id": "66666666-7777-4888-9999-000000000000", "domain_id": "0b1c2d3e4f5061728394a5b6c7d8e9f0", "description": "unknown consumer"}]}]}
EOF
keyargs=()
verify_key=()
if [ "$signing" = 1 ]; then
    install_missing openssl:openssl
    openssl genpkey -algorithm ed25519 -out "$work/signing.pem" 2>/dev/null ||
        fail "openssl genpkey -algorithm ed25519 failed"
    openssl pkey -in "$work/signing.pem" -pubout -out "$work/signing.pub.pem"
    keyargs=(--signing-key "$work/signing.pem")
    verify_key=(--key /key.pem)
else
    say "skip: [audit] signing_key_file in the copies; set VPCEP_CI_AUDIT_SIGNING=1 to keep it"
fi

# verify_chain FILE WHAT: `audit verify` (the image's own binary) on FILE; its last line
# in $verified.
verify_chain() {
    chmod 0644 "$1"
    local args=(--rm --name "$prefix-verify" --network none --no-healthcheck -v "$1:/audit.jsonl:ro")
    [ "$signing" = 1 ] && args+=(-v "$work/signing.pub.pem:/key.pem:ro")
    podman run "${args[@]}" "$image" audit verify "${verify_key[@]}" /audit.jsonl \
        >"$work/verify.out" 2>&1 || { cat "$work/verify.out"; fail "audit verify of $2 found a problem"; }
    verified=$(tail -n 1 "$work/verify.out")
}

# Each manifest with a Deployment runs together with the others (the example Secrets and
# policies).
runnable=() shared=()
for f in "${manifests[@]}"; do
    if grep -q '^kind: Deployment' "$f"; then runnable+=("$f"); else shared+=("$f"); fi
done
n=0
for f in "${runnable[@]}"; do
    n=$((n + 1))
    name=$(basename "$f" .yaml)
    copy=$work/$name.yaml
    p=$prefix-$n
    "$py" "$here/kube_manifests.py" copy --out "$copy" --prefix "$p" --image "$image" \
        --ak "$ak" --sk "$sk" --seed "$work/seed.json" "${keyargs[@]}" "${shared[@]}" "$f" \
        >"$work/$name.volumes" || fail "making the loopback copy of ${f#"$repo"/} failed"
    while IFS= read -r v; do volumes+=("$v"); done <"$work/$name.volumes"
    played+=("$copy")
    podman kube play --network none "$copy" >"$work/play.out" 2>&1 ||
        { cat "$work/play.out"; fail "podman kube play of the copy of ${f#"$repo"/} failed"; }
    mapfile -t pods < <(podman pod ls --format '{{.Name}}' | grep "^$p-" | sort)
    [ ${#pods[@]} -ge 1 ] || fail "podman kube play made no pod for ${f#"$repo"/}"
    want=$(awk '/^kind: Deployment/ { d = 1 } d && /^  replicas:/ { print $2; exit }' "$f")
    [ "${#pods[@]}" = "${want:-1}" ] || fail "${f#"$repo"/}: ${#pods[@]} pods for ${want:-1} replicas"
    for pod in "${pods[@]}"; do
        c=$pod-vpcep-approver
        podman container exists "$c" || fail "pod $pod has no container vpcep-approver"
        # where this replica's chain is: stdout, or the file on its claim
        audit_file=$work/$pod.audit.jsonl
        claim=$(grep -x "$p-vpcep-approver-audit" "$work/$name.volumes" || true)
        collect() {
            if [ -n "$claim" ]; then
                cp "$(podman volume inspect --format '{{.Mountpoint}}' "$claim")/audit.jsonl" \
                    "$audit_file" 2>/dev/null || return 1
            else
                podman logs "$c" 2>/dev/null >"$audit_file" || return 1
            fi
        }
        applied() { collect && grep -q '"outcome":"applied"' "$audit_file"; }
        wait_until 30 applied || { podman logs --tail 20 "$c" >&2 || true; fail "$pod: no applied outcome within 30 s"; }
        grep -q "\"kind\":\"decision\".*\"domain_id\":\"$internal\".*\"verdict\":\"permit\"" "$audit_file" ||
            fail "$pod: no permit decision for the internal account"
        for path in /healthz /readyz; do
            podman exec "$c" /usr/local/bin/vpcep-approver healthcheck --url "http://127.0.0.1:9464$path" \
                >"$work/probe.out" 2>&1 || fail "$pod: GET $path inside the pod: $(cat "$work/probe.out")"
        done
        sec=$(podman inspect --format '{{.Config.User}} {{.HostConfig.ReadonlyRootfs}} {{.HostConfig.SecurityOpt}}' "$c")
        case $sec in "10001:10001 true "*no-new-privileges*) ;; *) fail "$pod: securityContext not applied: $sec" ;; esac
        capeff=$(awk '/^CapEff:/ { print $2 }' "/proc/$(podman inspect --format '{{.State.Pid}}' "$c")/status")
        [ "$capeff" = 0000000000000000 ] || fail "$pod: the approver has capabilities $capeff"
        ok "$name: $pod: decided in its pod, /healthz and /readyz 200, user 10001, read-only root, no-new-privileges, no capabilities"
    done
    for pod in "${pods[@]}"; do
        podman pod stop -t 15 "$pod" >/dev/null || fail "podman pod stop $pod failed"
        c=$pod-vpcep-approver
        code=$(podman inspect --format '{{.State.ExitCode}}' "$c")
        [ "$code" = 0 ] || fail "$pod: the approver exited $code when the pod stopped"
        audit_file=$work/$pod.audit.jsonl
        claim=$(grep -x "$p-vpcep-approver-audit" "$work/$name.volumes" || true)
        if [ -n "$claim" ]; then
            cp "$(podman volume inspect --format '{{.Mountpoint}}' "$claim")/audit.jsonl" "$audit_file"
            where="its own claim"
        else
            podman logs "$c" 2>/dev/null >"$audit_file"
            where="stdout"
        fi
        first=$(head -n 1 "$audit_file")
        [[ $first == *'"prev":"0000000000000000000000000000000000000000000000000000000000000000"}' ]] ||
            fail "$pod: its chain does not start at 64 zeros"
        verify_chain "$audit_file" "$pod"
        if [ -z "$claim" ]; then
            # the README's way from the combined log stream: the audit lines start {"ts":
            podman logs "$c" >"$work/combined" 2>&1
            grep '^{"ts":' "$work/combined" >"$work/filtered" || true
            cmp -s "$work/filtered" "$audit_file" ||
                fail "$pod: grep '^{\"ts\":' of stdout and stderr together is not its stdout chain"
            where="stdout (also as grep '^{\"ts\":' of the combined log)"
        fi
        ok "$name: $pod stopped with exit 0; its own chain on $where: $verified"
    done
    podman kube play --down "$copy" >/dev/null 2>&1 || fail "podman kube play --down of the copy of ${f#"$repo"/} failed"
done

all_passed

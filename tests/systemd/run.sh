#!/usr/bin/env bash
# The systemd unit under a real systemd: tests/systemd/run.sh BIN
#
# Boots a debootstrapped Debian bookworm with `systemd-nspawn -b --private-network` (the
# machine has only its own loopback) and installs into it BIN as /usr/bin/vpcep-approver,
# systemd/vpcep-approver.service exactly as committed, a config whose target is a
# simulator unit on 127.0.0.1 inside, the shipped policies, and the keys as root-only
# files for LoadCredential=. Then checks, one line each: Type=notify reaches READY,
# DynamicUser, StateDirectory and LoadCredential work, decisions reach the journal and
# the audit log, `systemctl reload` reloads, the watchdog is fed (a drop-in with a short
# WatchdogSec keeps it running) and fires on a stopped process (a restart), `systemctl
# stop` is clean, a bad config ends in exit 78 without a restart loop, and `systemd-analyze
# security` inside rates the unit 2.0 or lower. Ends with `systemd: N passed, N failed`.
#
# The debootstrapped root is cached as a tarball (VPCEP_CI_CACHE, default
# target/ci-cache); each run unpacks a fresh copy and removes it afterwards.
#
# Environment:
#   VPCEP_CI_CACHE   cache directory (default target/ci-cache)
#   DEBIAN_MIRROR    Debian mirror for debootstrap (default: the one apt uses)
set -euo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
. "$here/../lib.sh"
suite=systemd
unit=$repo/systemd/vpcep-approver.service

nspawn_pid=
leader=

diagnostics() {
    [ -n "$leader" ] || return 0
    say "--- journal of vpcep-approver.service (last 40 lines)"
    inside journalctl -u vpcep-approver --no-pager -n 40 2>&1 || true
}
# inside CMD...: CMD in the booted machine (all its namespaces), at most 90 s.
inside() { timeout 90 nsenter -t "$leader" -a "$@"; }
# journal_has PATTERN: the unit's journal has a line matching PATTERN (grep -E). Read to a
# file first: `journalctl | grep -q` would fail on SIGPIPE under pipefail.
journal_has() {
    inside journalctl -u vpcep-approver --no-pager -o cat >"$work/journal" 2>&1 || true
    grep -Eq -- "$1" "$work/journal"
}
# in_net CMD...: a host command in the machine's network namespace (its loopback only).
in_net() { timeout 30 nsenter -t "$leader" -n "$@"; }
stop_machine() {
    [ -n "$nspawn_pid" ] && kill -0 "$nspawn_pid" 2>/dev/null || return 0
    [ -n "$leader" ] && timeout 10 nsenter -t "$leader" -a systemctl poweroff >/dev/null 2>&1
    for _ in $(seq 60); do kill -0 "$nspawn_pid" 2>/dev/null || break; sleep 0.5; done
    kill -TERM "$nspawn_pid" 2>/dev/null
    for _ in $(seq 20); do kill -0 "$nspawn_pid" 2>/dev/null || break; sleep 0.5; done
    [ -n "$leader" ] && kill -KILL "$leader" 2>/dev/null
    kill -KILL "$nspawn_pid" 2>/dev/null
    wait "$nspawn_pid" 2>/dev/null
}
cleanup_on_exit stop_machine

[ $# -eq 1 ] || fail "usage: tests/systemd/run.sh BIN (e.g. target/release/vpcep-approver)"
bin=$1
[ -x "$bin" ] || fail "$bin is not an executable"
[ "$(id -u)" = 0 ] || fail "needs root (debootstrap, systemd-nspawn)"

install_missing debootstrap:debootstrap systemd-nspawn:systemd-container curl:curl

make_work systemd

# --- a Debian bookworm with systemd ------------------------------------------------------
packages=systemd,systemd-sysv,libnss-systemd,dbus,procps
tar=$cache/bookworm-systemd-$(printf %s "$packages" | sha256sum | cut -c1-12).tar
root=$work/root
t0=$SECONDS
exec 8>"$cache/bookworm-systemd.lock"
flock -w 600 8 || fail "another run held $cache/bookworm-systemd.lock for 10 minutes"
if [ ! -s "$tar" ]; then
    mkdir -p "$cache/debs"
    debootstrap --variant=minbase --include="$packages" \
        --cache-dir="$cache/debs" bookworm "$root" "$(debian_mirror)" >"$work/debootstrap.log" 2>&1 ||
        { tail -n 20 "$work/debootstrap.log"; fail "debootstrap of bookworm with systemd failed"; }
    rm -rf "$root"/var/cache/apt/archives/*.deb "$root"/var/lib/apt/lists/*
    rm -f "$cache"/bookworm-systemd-*.tar
    tar --numeric-owner -C "$root" -cf "$tar.part" . && mv "$tar.part" "$tar"
    how="debootstrapped and cached"
else
    mkdir -p "$root"
    tar --numeric-owner -C "$root" -xf "$tar" || fail "unpacking $tar failed"
    how="unpacked from the cache"
fi
exec 8>&-
ok "Debian bookworm with $(chroot "$root" systemctl --version | sed -n 1p) $how in $((SECONDS - t0))s"

# --- install the daemon, the unit as committed, a simulator, config and credentials ------
ak=SYSTEMDCHECKAK000001
sk=systemd-check-secret-0123456789abcdef
install -m 0755 "$bin" "$root/usr/bin/vpcep-approver"
install -m 0644 "$unit" "$root/etc/systemd/system/vpcep-approver.service"
install -d -m 0755 "$root/etc/vpcep-approver/policies" "$root/etc/vpcep-sim"
install -m 0644 "$repo"/policies/*.cedar "$repo"/policies/schema.cedarschema \
    "$repo"/policies/entities.json "$root/etc/vpcep-approver/policies/"
install -m 0644 "$repo/examples/seed.json" "$root/etc/vpcep-sim/seed.json"
install -d -m 0700 "$root/etc/vpcep-approver/credentials"
printf %s "$ak" >"$root/etc/vpcep-approver/credentials/ak"
printf %s "$sk" >"$root/etc/vpcep-approver/credentials/sk"
chmod 0600 "$root"/etc/vpcep-approver/credentials/*
{ simulator_config; cat <<'EOF'; } >"$root/etc/vpcep-approver/config.toml"
[auth]
method = "aksk"
access_key_file = "${CREDENTIALS_DIRECTORY}/ak"
secret_key_file = "${CREDENTIALS_DIRECTORY}/sk"

[http]
listen = "127.0.0.1:9464"
EOF
cat >"$root/etc/systemd/system/vpcep-sim.service" <<EOF
[Unit]
Description=VPCEP and IAM simulator on 127.0.0.1:8080 for the vpcep-approver check
Before=vpcep-approver.service

[Service]
ExecStart=/usr/bin/vpcep-approver simulate --listen 127.0.0.1:8080 --seed /etc/vpcep-sim/seed.json --ak $ak --sk $sk
DynamicUser=yes
EOF
# A quiet boot: nothing in this machine needs the network, getty or timers.
for u in systemd-networkd.service systemd-resolved.service systemd-timesyncd.service \
    console-getty.service apt-daily.timer apt-daily-upgrade.timer dpkg-db-backup.timer \
    e2scrub_all.timer fstrim.timer; do
    ln -sf /dev/null "$root/etc/systemd/system/$u"
done
cmp -s "$unit" "$root/etc/systemd/system/vpcep-approver.service" || fail "the installed unit differs"

# --- boot ---------------------------------------------------------------------------------
machine=vpcep-ci-$$
setsid systemd-nspawn -b -D "$root" --machine="$machine" --private-network \
    --register=no --keep-unit --console=passive >"$work/nspawn.log" 2>&1 &
nspawn_pid=$!
find_leader() {
    leader=$(pgrep -P "$nspawn_pid" -x systemd | sed -n 1p)
    [ -n "$leader" ]
}
wait_until 20 find_leader || { cat "$work/nspawn.log"; fail "systemd-nspawn started no systemd within 20 s"; }
t0=$SECONDS
state=$(inside systemctl is-system-running --wait 2>/dev/null || true)
case $state in
    running) ;;
    degraded) say "# degraded boot; failed units: $(inside systemctl --failed --plain --no-legend | tr '\n' ' ')" ;;
    *) cat "$work/nspawn.log"; fail "the machine did not finish booting: '$state'" ;;
esac
links=$(in_net cat /proc/net/dev | awk -F: 'NR > 2 { gsub(/ /, "", $1); printf "%s ", $1 }')
[ "$links" = "lo " ] || fail "the machine has network links beyond loopback: $links"
ok "booted systemd-nspawn -b --private-network ($state in $((SECONDS - t0))s); its only link: lo"

inside systemd-analyze verify /etc/systemd/system/vpcep-approver.service >"$work/verify.out" 2>&1 ||
    { cat "$work/verify.out"; fail "systemd-analyze verify on the unit failed inside"; }
ok "systemd-analyze verify passes on the unit as committed"

inside systemctl start vpcep-sim || fail "systemctl start vpcep-sim failed"
sim_up() { in_net curl -fsS --max-time 2 -o /dev/null http://127.0.0.1:8080/_sim/state; }
wait_until 20 sim_up || fail "the simulator did not answer on 127.0.0.1:8080 within 20 s"

# --- Type=notify: start returns once the daemon says READY=1 -------------------------------
t0=$SECONDS
inside systemctl start vpcep-approver || fail "systemctl start vpcep-approver failed"
active=$(inside systemctl is-active vpcep-approver || true)
[ "$active" = active ] || fail "vpcep-approver is '$active' after systemctl start"
show() { inside systemctl show -p "$1" --value vpcep-approver; }
[ "$(show Type)" = notify ] || fail "the unit's Type is $(show Type)"
journal_has '^Started vpcep-approver' ||
    fail "the journal has no 'Started vpcep-approver' line"
ok "Type=notify: systemctl start returned after READY=1 in $((SECONDS - t0))s; the unit is active"

pid=$(show MainPID)
uid=$(inside awk '/^Uid:/ { print $2 }' "/proc/$pid/status")
user=$(inside ps -o user= -p "$pid" | tr -d ' ')
{ [ "$uid" -ge 61184 ] && [ "$uid" -le 65519 ]; } ||
    fail "the daemon runs as uid $uid, not a DynamicUser uid (61184-65519)"
ok "DynamicUser: the daemon runs as $user, uid $uid"

inside cat "/proc/$pid/environ" | tr '\0' '\n' >"$work/environ"
creds=$(sed -n 's/^CREDENTIALS_DIRECTORY=//p' "$work/environ")
[ -n "$creds" ] || fail "the daemon has no CREDENTIALS_DIRECTORY"
if grep -q '^HUAWEICLOUD_SDK_' "$work/environ"; then fail "the daemon has keys in its environment"; fi
inside test -f "$creds/ak" -a -f "$creds/sk" || fail "$creds has no ak and sk"

audit=/var/lib/vpcep-approver/audit.jsonl
applied() { inside grep -q '"outcome":"applied"' "$audit" 2>/dev/null; }
wait_until 30 applied || fail "no applied outcome in $audit within 30 s"
in_net curl -fsS --max-time 3 -o "$work/sim-state.json" http://127.0.0.1:8080/_sim/state ||
    fail "reading the simulator's state failed"
actions=$(python3 -c 'import json, sys
print(sum(1 for a in json.load(open(sys.argv[1]))["actions"]
          if "705290f3-0d00-41f2-aedc-71f09844e879" in json.dumps(a) and "receive" in json.dumps(a)))' \
    "$work/sim-state.json") || fail "the simulator's state is not the JSON expected"
[ "$actions" -ge 1 ] || fail "the simulator received no signed receive action for 705290f3-…"
ok "LoadCredential: keys read from $creds (none in the environment) signed requests the simulator accepted"

target=$(inside readlink /var/lib/vpcep-approver)
owner=$(inside stat -c '%u %a' "$audit")
[ "$target" = private/vpcep-approver ] || fail "/var/lib/vpcep-approver -> '$target', expected private/vpcep-approver"
[ "$owner" = "$uid 640" ] || fail "$audit is owned '$owner', expected '$uid 640'"
ok "StateDirectory: $audit (-> /var/lib/$target) is the daemon's, mode 0640"

inside grep -q '"kind":"decision".*"endpoint_id":"705290f3-0d00-41f2-aedc-71f09844e879".*"verdict":"permit"' "$audit" ||
    fail "no permit decision for 705290f3-… in $audit"
journal_has 'decision .*705290f3-0d00-41f2-aedc-71f09844e879.* verdict=permit' ||
    fail "the journal has no decision line for 705290f3-…"
journal_has 'outcome.*applied' ||
    fail "the journal has no applied outcome"
ok "decisions in the journal and in the audit log: 705290f3-… permit, receive applied"

# --- reload ------------------------------------------------------------------------------
metric() {
    in_net curl -s --max-time 3 http://127.0.0.1:9464/metrics |
        awk -v k="$1" '$1 == k { v = $2 } END { print v }' || true
}
reloads=vpcep_approver_policy_reloads_total'{result="success"}'
before=$(metric "$reloads")
if [ -z "$before" ]; then # present at 0 from the start (README "Health, metrics and alerts")
    say "note: /metrics has no $reloads before the first reload; taken as 0"
    before=0
fi
inside systemctl reload vpcep-approver || fail "systemctl reload vpcep-approver failed"
reloaded() { [ "$(metric "$reloads")" = "$((before + 1))" ]; }
wait_until 5 reloaded || fail "$reloads stayed at $(metric "$reloads") (was $before) after systemctl reload"
journal_has '^Reloaded vpcep-approver' ||
    fail "the journal has no 'Reloaded vpcep-approver' line"
journal_has 'policies (reloaded|unchanged)' ||
    fail "the daemon logged neither 'policies reloaded' nor 'policies unchanged'"
[ "$(show ActiveState)" = active ] || fail "vpcep-approver is not active after the reload"
ok "systemctl reload: journal shows Reloaded and the daemon's reload line; $reloads $before -> $((before + 1))"

# --- watchdog -----------------------------------------------------------------------------
dropin=/run/systemd/system/vpcep-approver.service.d
inside mkdir -p "$dropin"
printf '[Service]\nWatchdogSec=2s\n' | inside tee "$dropin/50-short-watchdog.conf" >/dev/null
inside systemctl daemon-reload
inside systemctl restart vpcep-approver || fail "restart with WatchdogSec=2s failed"
[ "$(show WatchdogUSec)" = 2s ] || fail "WatchdogUSec is $(show WatchdogUSec) with the drop-in"
pid=$(show MainPID)
restarts0=$(show NRestarts)
sleep 8
[ "$(show MainPID)" = "$pid" ] && [ "$(show ActiveState)" = active ] ||
    fail "with WatchdogSec=2s the daemon did not stay up for 8 s (pid $pid -> $(show MainPID))"
ok "watchdog fed: with WatchdogSec=2s the same process ($pid) ran 8 s, active"

inside kill -STOP "$pid"
restarted() {
    local p
    p=$(show MainPID)
    [ "$p" != 0 ] && [ "$p" != "$pid" ] && [ "$(show ActiveState)" = active ]
}
wait_until 60 restarted || fail "no watchdog restart within 60 s of kill -STOP $pid"
journal_has 'Watchdog timeout' ||
    fail "the journal has no 'Watchdog timeout'"
[ "$(show NRestarts)" -gt "$restarts0" ] || fail "NRestarts did not grow on the watchdog timeout"
ok "watchdog fires: kill -STOP $pid -> 'Watchdog timeout', restarted as $(show MainPID)"
inside rm -rf "$dropin"
inside systemctl daemon-reload
inside systemctl restart vpcep-approver || fail "restart with the unit as committed failed"
[ "$(show WatchdogUSec)" = 1min ] || fail "WatchdogUSec is $(show WatchdogUSec) without the drop-in"

# --- stop ---------------------------------------------------------------------------------
inside systemctl stop vpcep-approver || fail "systemctl stop vpcep-approver failed"
st="$(show ActiveState) $(show Result) $(show ExecMainStatus)"
[ "$st" = "inactive success 0" ] || fail "after systemctl stop: ActiveState Result ExecMainStatus = $st"
journal_has 'vpcep-approver stopped' ||
    fail "the daemon did not log its clean stop"
inside vpcep-approver audit verify "$audit" >"$work/audit-verify.out" 2>&1 ||
    { cat "$work/audit-verify.out"; fail "audit verify $audit found a problem"; }
ok "systemctl stop is clean (inactive, success, exit 0); $(tail -n 1 "$work/audit-verify.out")"

# --- a bad config: exit 78, no restart loop -----------------------------------------------
cfg=/etc/vpcep-approver/config.toml
inside cp "$cfg" "$cfg.good"
inside sed -i 's/^\[poll\]$/[poll]\nintervall = "2s"/' "$cfg"
inside grep -q '^intervall = ' "$cfg" || fail "writing the bad config failed"
restarts0=$(show NRestarts)
if inside systemctl start vpcep-approver 2>/dev/null; then fail "systemctl start succeeded on a bad config"; fi
sleep 8 # past RestartSec=5s: a restart loop would have started again by now
st="$(show ActiveState) $(show Result) $(show ExecMainStatus) $(show NRestarts)"
[ "$st" = "failed exit-code 78 $restarts0" ] ||
    fail "on a bad config: ActiveState Result ExecMainStatus NRestarts = $st, expected failed exit-code 78 $restarts0"
journal_has 'intervall' ||
    fail "the journal does not name the bad key"
ok "a bad config: exit 78, failed, no restart after RestartSec (NRestarts $restarts0); the journal names the key"
inside mv "$cfg.good" "$cfg"
inside systemctl reset-failed vpcep-approver

# --- systemd-analyze security -------------------------------------------------------------
inside systemd-analyze security --no-pager vpcep-approver >"$work/security.out" 2>&1 || true
exposure=$(sed -n 's/.*Overall exposure level for vpcep-approver.service: \([0-9.]*\).*/\1/p' "$work/security.out")
[ -n "$exposure" ] || { cat "$work/security.out"; fail "systemd-analyze security printed no exposure level"; }
awk -v e="$exposure" 'BEGIN { exit !(e <= 2.0) }' ||
    { cat "$work/security.out"; fail "systemd-analyze security rates the unit $exposure (> 2.0)"; }
ok "systemd-analyze security inside the machine: exposure $exposure (at most 2.0)"

inside systemctl poweroff >/dev/null 2>&1 || true
wait_until 30 bash -c "! kill -0 $nspawn_pid 2>/dev/null" || fail "the machine did not power off within 30 s"
wait "$nspawn_pid" 2>/dev/null || true
nspawn_pid=
all_passed

#!/bin/bash
# it_libvirt_e2e: vpmu with a real libvirtd and a real QEMU/KVM guest.
#
#  1. the hook: vpmud (libvirt follower off); `virsh start` -> the hook admits
#     the domain at prepare and binds the lease to the QEMU pid at started;
#     `virsh destroy` -> the hook releases it.
#  2. the follower: the domain is started while vpmud is down (the hook fails
#     open); vpmud --libvirt-uri qemu:///system then finds it running at its
#     first reconcile and leases it, bound to QEMU; a live metadata change and
#     a live `virsh vcpupin` update the lease; destroy releases it.
#
# Nothing is installed on the host: the whole test runs in a private mount
# namespace where /etc/libvirt, /run, /var/{lib,cache,log} are empty tmpfs
# and /etc/passwd,/etc/group are copies with libvirt's QEMU user added. The
# hook is installed there as /etc/libvirt/hooks/qemu.d/vpmu before libvirtd
# starts (libvirt looks for hooks only at start). libvirt runs hooks with a
# scrubbed environment (PATH, HOME, LC_ALL, PWD), so the installed hook is a
# wrapper that sets VPMU_SOCKET and execs the built hook. Every process is
# ours and stopped by pid; the namespace's mounts vanish with it.
#
# By hand (as root): VPMU_BUILD_DIR=build bash tests/it_libvirt_e2e.sh
# Exit 77 (skipped) when this machine cannot run it, with the reason.
set -u

skip() { echo "SKIP: $*"; exit 77; }
fail() { echo "FAIL: $*"; FAILED=1; }

SRC=${VPMU_SOURCE_DIR:-$(cd "$(dirname "$0")/.." && pwd)}
BD=${VPMU_BUILD_DIR:-$SRC/build}
BD=$(cd "$BD" && pwd) || skip "no build directory"
VPMUD=$BD/vpmud
VPMUCTL=$BD/client/vpmuctl
HOOK_BIN=$BD/vpmu-libvirt-hook

if [ -z "${VPMU_E2E_IN_NS:-}" ]; then
	[ "$(id -u)" = 0 ] || skip "needs root (libvirtd runs QEMU as root, /dev/kvm is root-only)"
	for b in /usr/sbin/libvirtd virsh qemu-system-x86_64 unshare /usr/bin/python3; do
		command -v "$b" >/dev/null || skip "$b is not installed (apt-get install --no-install-recommends libvirt-daemon libvirt-daemon-driver-qemu libvirt-clients qemu-system-x86)"
	done
	for b in "$VPMUD" "$VPMUCTL" "$HOOK_BIN"; do [ -x "$b" ] || skip "$b not built"; done
	{ exec 9<>/dev/kvm; } 2>/dev/null || skip "/dev/kvm cannot be opened: QEMU would have no KVM"
	exec 9>&-
	unshare -m --propagation private true 2>/dev/null || skip "cannot create a private mount namespace"
	export VPMU_E2E_IN_NS=1 VPMU_BUILD_DIR="$BD" VPMU_SOURCE_DIR="$SRC"
	exec timeout -k 5 120 unshare -m --propagation private bash "$0" "$@"
fi

# ------------------------------------------------------------ inside the namespace
T0=$(date +%s.%N)
FAILED=0
W=$(mktemp -d /tmp/vpmu-it-libvirt.XXXXXX)
DOM=vpmu-e2e
NS=https://vpmu.org/xmlns/libvirt/1
export LIBVIRT_DEFAULT_URI=qemu:///system
VPMUD_PID=
REAPER_PID=

stop_pid() { # pid: SIGTERM, then SIGKILL after 5 s
	local p=$1 i
	[ -n "$p" ] || return 0
	kill -TERM "$p" 2>/dev/null || return 0
	for i in $(seq 1 50); do kill -0 "$p" 2>/dev/null || return 0; sleep 0.1; done
	kill -KILL "$p" 2>/dev/null
}

cleanup() {
	virsh destroy "$DOM" >/dev/null 2>&1
	virsh undefine "$DOM" >/dev/null 2>&1
	stop_pid "$VPMUD_PID"
	# libvirtd, then its reaper (which exits once libvirtd and any orphan
	# QEMU it adopted are gone)
	[ -s "$W/libvirtd.pid" ] && stop_pid "$(cat "$W/libvirtd.pid")"
	stop_pid "$REAPER_PID"
	wait 2>/dev/null
	if [ "$FAILED" != 0 ]; then
		echo "---- vpmud log"; cat "$W"/vpmud*.log 2>/dev/null | tail -40
		echo "---- hook calls"; cat "$W/hook.log" 2>/dev/null
		echo "---- libvirtd log"; tail -20 /var/log/libvirt/libvirtd.log 2>/dev/null
	fi
	rm -rf "$W"
}
trap cleanup EXIT

# Private, empty trees for everything libvirt writes or reads as config.
for d in /etc/libvirt /run /var/lib /var/cache /var/log; do
	mount -t tmpfs -o mode=0755 tmpfs "$d" || skip "cannot mount a tmpfs on $d"
done
mkdir -p /run/lock /etc/libvirt/hooks/qemu.d /var/log/libvirt /var/lib/libvirt /var/cache/libvirt
# The QEMU driver looks up its compiled-in user libvirt-qemu before it reads
# qemu.conf, so the user must exist even though QEMU runs as root here.
cp /etc/passwd "$W/passwd"; cp /etc/group "$W/group"
getent group kvm >/dev/null || echo "kvm:x:64054:libvirt-qemu" >>"$W/group"
getent group libvirt-qemu >/dev/null || echo "libvirt-qemu:x:64055:" >>"$W/group"
getent passwd libvirt-qemu >/dev/null ||
	echo "libvirt-qemu:x:64055:64055::/var/lib/libvirt:/usr/sbin/nologin" >>"$W/passwd"
mount --bind "$W/passwd" /etc/passwd && mount --bind "$W/group" /etc/group || skip "cannot bind /etc/passwd"

cat >/etc/libvirt/libvirtd.conf <<EOF
auth_unix_ro = "none"
auth_unix_rw = "none"
unix_sock_group = "root"
log_level = 3
log_outputs = "3:file:/var/log/libvirt/libvirtd.log"
EOF
cat >/etc/libvirt/qemu.conf <<EOF
user = "root"
group = "root"
dynamic_ownership = 0
remember_owner = 0
security_driver = "none"
cgroup_controllers = [ ]
stdio_handler = "file"
EOF
cat >/etc/libvirt/hooks/qemu.d/vpmu <<EOF
#!/bin/sh
# libvirt scrubs the environment: say where this test's vpmud listens
echo "\$*" >>"$W/hook.log"
VPMU_SOCKET="$W/vpmud.sock"
export VPMU_SOCKET
exec "$HOOK_BIN" "\$@"
EOF
chmod 0755 /etc/libvirt/hooks/qemu.d/vpmu

start_vpmud() { # log-name, extra options...
	local log=$1; shift
	"$VPMUD" --config /dev/null --socket "$W/vpmud.sock" --state-dir "$W/state" \
		--pmu icelake-8360y --kvm model --dbus none "$@" >"$W/$log" 2>&1 &
	VPMUD_PID=$!
	for _ in $(seq 1 100); do "$VPMUCTL" --socket "$W/vpmud.sock" status >/dev/null 2>&1 && return 0; sleep 0.05; done
	fail "vpmud did not come up ($log)"; return 1
}
ctl() { "$VPMUCTL" --socket "$W/vpmud.sock" "$@"; }
# field of `vm show DOM` (JSON): "origin", "gp", "owner.pid", "vcpus.1.cpus"; empty when no lease
vmfield() {
	ctl --json vm show "$DOM" 2>/dev/null | /usr/bin/python3 -c '
import json, sys
try:
    v = json.load(sys.stdin)
except Exception:
    sys.exit(0)
for k in sys.argv[1].split("."):
    v = v[int(k)] if isinstance(v, list) else (v or {}).get(k)
print("" if v is None else v)' "$1"
}
wait_field() { # field expected [seconds]
	local i
	for i in $(seq 1 $((${3:-5} * 10))); do [ "$(vmfield "$1")" = "$2" ] && return 0; sleep 0.1; done
	return 1
}
listed() { ctl vm list 2>/dev/null | grep -qw "$DOM"; }

# ------------------------------------------------------------ libvirtd, by hand
# QEMU daemonizes; when its parent exits, the orphan goes to the nearest
# subreaper. Without one, this machine's PID 1 reaps slowly and virsh
# destroy waits 1-2 s for the pid to vanish; this reaper collects at once.
cat >"$W/reaper.py" <<'EOF'
import ctypes, os, signal, sys
PR_SET_CHILD_SUBREAPER = 36
ctypes.CDLL(None).prctl(PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0)
main = os.fork()
if main == 0:
    os.execv(sys.argv[1], sys.argv[1:])
signal.signal(signal.SIGTERM, lambda *_: os.kill(main, signal.SIGTERM))
status = 0
while True:
    try:
        pid, st = os.waitpid(-1, 0)
    except ChildProcessError:
        break
    if pid == main:
        status = os.waitstatus_to_exitcode(st)
sys.exit(max(status, 0))
EOF
start_vpmud vpmud1.log --libvirt-uri none || exit 1
setsid /usr/bin/python3 "$W/reaper.py" /usr/sbin/libvirtd --pid-file "$W/libvirtd.pid" \
	</dev/null >"$W/libvirtd.out" 2>&1 &
REAPER_PID=$!
for _ in $(seq 1 300); do virsh version >/dev/null 2>&1 && break; sleep 0.1; done
virsh version >/dev/null 2>&1 || { cat "$W/libvirtd.out"; tail -5 /var/log/libvirt/libvirtd.log; skip "libvirtd did not answer within 30 s"; }
echo "libvirtd up after $(echo "$(date +%s.%N) - $T0" | bc) s: $(virsh version 2>/dev/null | grep -i 'running hypervisor')"

cat >"$W/$DOM.xml" <<EOF
<domain type='kvm'>
  <name>$DOM</name>
  <metadata>
    <vpmu:pmu xmlns:vpmu="$NS" class="preferred" priority="200" gp="2" fixed="0x1"/>
  </metadata>
  <memory unit='MiB'>64</memory>
  <vcpu placement='static'>2</vcpu>
  <cputune>
    <vcpupin vcpu='0' cpuset='0'/>
    <vcpupin vcpu='1' cpuset='1'/>
  </cputune>
  <os><type arch='x86_64' machine='pc'>hvm</type></os>
  <cpu mode='custom' match='exact' check='none'><model fallback='allow'>qemu64</model></cpu>
  <on_poweroff>destroy</on_poweroff>
  <devices>
    <emulator>/usr/bin/qemu-system-x86_64</emulator>
    <controller type='usb' model='none'/>
    <video><model type='none'/></video>
    <memballoon model='none'/>
  </devices>
</domain>
EOF
virsh define "$W/$DOM.xml" >/dev/null || { fail "virsh define"; exit 1; }

# ------------------------------------------------------------ 1. the hook
echo "== 1. the hook (vpmud with --libvirt-uri none)"
virsh start "$DOM" || { fail "virsh start"; exit 1; }
QPID=$(cat "/run/libvirt/qemu/$DOM.pid")
echo "QEMU pid $QPID"
ctl vm list
ctl vm show "$DOM" | head -12
[ "$(vmfield origin)" = vpmu-libvirt-hook ] || fail "lease origin '$(vmfield origin)', want vpmu-libvirt-hook"
[ "$(vmfield owner.pid)" = "$QPID" ] || fail "lease owner '$(vmfield owner.pid)', want the QEMU pid $QPID"
[ "$(vmfield gp)" = 2 ] && [ "$(vmfield fixed_mask)" = 0x1 ] && [ "$(vmfield priority)" = 200 ] ||
	fail "lease is not the domain's metadata (gp 2, fixed 0x1, priority 200)"
[ "$(vmfield vcpus.1.cpus)" = 1 ] || fail "vCPU 1 CPUs '$(vmfield vcpus.1.cpus)', want 1 (its vcpupin)"
grep -q "$DOM prepare begin" "$W/hook.log" && grep -q "$DOM started begin" "$W/hook.log" ||
	fail "hook calls missing: $(cat "$W/hook.log")"
virsh destroy "$DOM" >/dev/null || fail "virsh destroy"
for _ in $(seq 1 30); do listed || break; sleep 0.1; done
listed && fail "lease still listed after virsh destroy"
ctl vm list
grep -q "$DOM release end" "$W/hook.log" || fail "no release hook call"

# ------------------------------------------------------------ 2. the follower
echo "== 2. the follower (domain started while vpmud is down)"
stop_pid "$VPMUD_PID"; wait "$VPMUD_PID" 2>/dev/null; VPMUD_PID=
virsh start "$DOM" || { fail "virsh start without vpmud (the hook must fail open)"; exit 1; }
QPID=$(cat "/run/libvirt/qemu/$DOM.pid")
echo "QEMU pid $QPID (started while vpmud was down)"
start_vpmud vpmud2.log --libvirt-uri qemu:///system || exit 1
wait_field owner.pid "$QPID" || fail "vpmud did not lease the running domain at its reconcile (owner '$(vmfield owner.pid)')"
ctl vm list
[ "$(vmfield origin)" = libvirt ] || fail "lease origin '$(vmfield origin)', want libvirt"
[ "$(ctl vm list | grep -cw "$DOM")" = 1 ] || fail "the domain is leased more than once"

virsh metadata "$DOM" "$NS" --key vpmu --set '<pmu class="preferred" priority="200" gp="3" fixed="0x1"/>' --live >/dev/null ||
	fail "virsh metadata --set"
wait_field gp 3 || fail "metadata change not followed: gp '$(vmfield gp)', want 3"
virsh vcpupin "$DOM" 1 0 --live >/dev/null || fail "virsh vcpupin"
wait_field vcpus.1.cpus 0 || fail "vcpupin not followed: vCPU 1 on '$(vmfield vcpus.1.cpus)', want 0"
ctl vm show "$DOM" | head -12
virsh destroy "$DOM" >/dev/null || fail "virsh destroy"
for _ in $(seq 1 30); do listed || break; sleep 0.1; done
listed && fail "lease still listed after virsh destroy"
grep -E "libvirt: (domain|following)|released" "$W/vpmud2.log" | sed 's/^/vpmud: /'

echo "took $(echo "$(date +%s.%N) - $T0" | bc) s"
[ "$FAILED" = 0 ] && echo "PASS" || echo "FAILED"
exit "$FAILED"

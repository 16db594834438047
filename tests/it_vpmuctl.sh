#!/usr/bin/env bash
# vpmuctl against the real vpmud (model PMU icelake-8360y, model KVM), every
# verb, the --json output, exit codes and error messages, real KVM VMMs
# (vpmu-fake-vmm, when /dev/kvm is usable) and an unprivileged caller (when
# run as root). Each check prints "ok" or "FAIL"; any FAIL exits 1.
#
# Env: VPMU_BUILD_DIR (default: build), VPMU_SOURCE_DIR (unused but set by ctest).
set -u

B=${VPMU_BUILD_DIR:-$(dirname "$0")/../build}
B=$(cd "$B" && pwd) || exit 1
VPMUD=$B/vpmud
CTL=$B/client/vpmuctl
FAKE_VMM=$B/vpmu-fake-vmm
for f in "$VPMUD" "$CTL"; do
	[ -x "$f" ] || { echo "skip: $f not built"; exit 77; }
done
command -v python3 >/dev/null || { echo "skip: python3 missing (JSON checks)"; exit 77; }

T=$(mktemp -d /tmp/vpmu-it-ctl.XXXXXX)
chmod 755 "$T" # the unprivileged user must reach the socket
export VPMU_SOCKET=$T/vpmud.sock
daemon=
bg_pids=()
failures=0

cleanup() {
	local p
	for p in "${bg_pids[@]}"; do kill "$p" 2>/dev/null; done
	for p in "${bg_pids[@]}"; do wait "$p" 2>/dev/null; done
	if [ -n "$daemon" ] && kill -0 "$daemon" 2>/dev/null; then
		kill -TERM "$daemon"
		wait "$daemon" 2>/dev/null
	fi
	if [ "$failures" -eq 0 ]; then
		rm -rf "$T"
	else
		echo "daemon log and outputs kept in $T"
	fi
}
trap cleanup EXIT
trap 'exit 1' INT TERM

ok() { echo "ok   $*"; }
fail() {
	echo "FAIL $*"
	failures=$((failures + 1))
	echo "  --- stdout"; sed 's/^/  | /' "$T/out"
	echo "  --- stderr"; sed 's/^/  | /' "$T/err"
}
check() { # check DESCRIPTION COMMAND...: ok when the command succeeds
	local what=$1
	shift
	if "$@"; then ok "$what"; else fail "$what"; fi
}

# Runs vpmuctl in this shell (not a subshell: a session's default owner is
# vpmuctl's parent, which must stay alive), output to $T/out and $T/err,
# exit status in $rc.
ctl() {
	"$CTL" "$@" >"$T/out" 2>"$T/err"
	rc=$?
}
rc_is() { [ "$rc" -eq "$1" ]; }
out_has() { grep -Eq -- "$1" "$T/out"; }
err_has() { grep -Eq -- "$1" "$T/err"; }
out_lacks() { ! grep -Eq -- "$1" "$T/out"; }
json_ok() { python3 -c 'import json,sys; json.load(sys.stdin)' <"$T/out" 2>/dev/null; }
# jq-like probe with python: jpy EXPR evaluates EXPR with d = the JSON output
# and succeeds when it is true.
jpy() {
	python3 -c 'import json,sys
d = json.load(open(sys.argv[2]))
sys.exit(0 if eval(sys.argv[1]) else 1)' "$1" "$T/out" 2>/dev/null
}
wait_for() { # wait_for TRIES COMMAND...: retry every 50 ms
	local n=$1
	shift
	while [ "$n" -gt 0 ]; do
		"$@" && return 0
		sleep 0.05
		n=$((n - 1))
	done
	return 1
}

# ------------------------------------------------------------ no daemon yet
ctl status
check "no daemon: exit 3 naming the socket" eval 'rc_is 3 && err_has "$VPMU_SOCKET"'
ctl --socket "$T/other.sock" status
check "no daemon: --socket overrides \$VPMU_SOCKET in the message" eval 'rc_is 3 && err_has "$T/other.sock"'

# ------------------------------------------------------------ start vpmud
: >"$T/vpmud.conf"
"$VPMUD" --pmu icelake-8360y --kvm model --dbus none --libvirt-uri none --socket "$VPMU_SOCKET" --state-dir "$T/state" \
	--config "$T/vpmud.conf" 2>"$T/vpmud.log" &
daemon=$!
up() { "$CTL" status >/dev/null 2>&1; }
if ! wait_for 200 up; then
	echo "FAIL vpmud did not come up:"
	cat "$T/vpmud.log"
	failures=1
	exit 1
fi
ok "vpmud is up (pid $daemon)"

# ------------------------------------------------------------ read-only verbs
ctl status
check "status: exit 0" rc_is 0
check "status: the model PMU is SIMULATED" eval 'grep -E "^pmu " "$T/out" | grep -q SIMULATED'
check "status: the model KVM is SIMULATED" eval 'grep -E "^kvm " "$T/out" | grep -q SIMULATED'
check "status: 144 CPUs of the model" out_has '^cpus +144$'
check "status: the vPMU flavour reasoned about, whether routes hold, and in one line what it means for guests and for host sessions" \
	out_has '^vpmu +extension \(routes simulated\): guests: .*; host sessions: '
check "status: the reservation is planned per CPU (the model's default)" out_has '^reservation +per-cpu$'
ctl --json status
check "status --json parses, says simulated" eval 'rc_is 0 && json_ok && jpy "d[\"backends\"][\"pmu_simulated\"] is True and d[\"backends\"][\"kvm\"] == \"model\""'
check "status --json: flavour extension, routes simulated" jpy 'd["backends"]["kvm_flavour"] == "extension" and d["backends"]["kvm_routes"] == "simulated"'

ctl pmu
check "pmu: model, 8 gp and 4 fixed counters" eval 'rc_is 0 && out_has "^model +icelake-8360y" && out_has "^gp +8$" && out_has "^fixed +4$"'
check "pmu: counters taken by others are described, not '?'" eval 'out_has "^taken +nmi_watchdog" && out_lacks "counter \\? on CPUs \\?"'
ctl --json pmu
check "pmu --json parses" eval 'rc_is 0 && json_ok && jpy "d[\"model\"] == \"icelake-8360y\" and d[\"gp\"] == 8"'

ctl plan --cpus 0-3
check "plan --cpus 0-3: one merged row for CPUs 0-3, no VMs" eval 'rc_is 0 && out_has "^0-3 " && out_has "^  none"'
check "plan: names the flavour and the extension's route letters" eval 'out_has "^generation [0-9]+ \(vPMU extension, routes simulated\)$" && out_has "P passthrough, M multiplexed, - disabled"'
ctl --json plan --cpus 2
check "plan --json --cpus 2: exactly CPU 2" eval 'rc_is 0 && json_ok && jpy "[c[\"cpu\"] for c in d[\"cpus\"]] == [2]"'

# ------------------------------------------------------------ watch while another vpmuctl attaches
watchers() { "$CTL" --json status 2>/dev/null | python3 -c 'import json,sys; print(json.load(sys.stdin)["watchers"])'; }
"$CTL" --timeout 20 watch --count 3 >"$T/watch.out" 2>"$T/watch.err" &
watch_pid=$!
bg_pids+=("$watch_pid")
wait_for 200 eval '[ "$(watchers)" = 1 ]' || echo "note: the watcher did not show up in status"
"$CTL" --json --timeout 20 watch --count 1 >"$T/watchj.out" 2>"$T/watchj.err" &
watchj_pid=$!
bg_pids+=("$watchj_pid")
wait_for 200 eval '[ "$(watchers)" = 2 ]' || echo "note: the second watcher did not show up in status"

# --vcpus N --cpus form
ctl vm attach db --priority 800 --class guaranteed --gp 4 --fixed 0x3 --vcpus 2 --cpus 2-5
check "vm attach --vcpus 2 --cpus 2-5: both vCPUs passed through" eval 'rc_is 0 && out_has "^attached db \\(generation [0-9]+\\)" && out_has "2 vCPU\\(s\\) with counters passed through"'
# --vcpu-cpus form
ctl vm attach web --priority 300 --gp 6 --fixed 0x7 --vcpu-cpus '0-1;2,3;100-143'
check "vm attach --vcpu-cpus '0-1;2,3;100-143'" eval 'rc_is 0 && out_has "^attached web"'
ctl vm show web
check "vm show: per-vCPU CPU lists of --vcpu-cpus" eval 'rc_is 0 && out_has "^  0 +0-1 " && out_has "^  1 +2-3 " && out_has "^  2 +100-143 "'
check "vm show: unbound owner" out_has '^owner +none'
ctl --json vm show db
check "vm show --json: the flavour reasoned about; an unbound VM's own routes are advisory, and why" eval 'json_ok && jpy "d[\"flavour\"] == \"extension\" and d[\"routes\"] == \"advisory\" and d[\"routes_why\"]"'
check "vm show --json: routes of a guaranteed VM (4 gp passthrough)" eval 'rc_is 0 && json_ok && jpy "all(v[\"gp\"][:4] == [\"passthrough\"]*4 for v in d[\"vcpus\"]) and len(d[\"vcpus\"]) == 2"'

ctl vm update web --priority 350 --gp 2
check "vm update --priority --gp" eval 'rc_is 0 && out_has "^updated web \\(generation"'
ctl vm show web
check "vm show reflects the update" eval 'out_has "^priority +350$" && out_has "^gp +2$"'
ctl vm update web --vcpus 1 --cpus 6-7
check "vm update --vcpus 1 --cpus 6-7 (replace the vCPUs)" rc_is 0
ctl --json vm show web
check "vm show --json: now one vCPU on 6-7" eval 'json_ok && jpy "[v[\"cpus\"] for v in d[\"vcpus\"]] == [\"6-7\"]"'
ctl vm update web --vcpu-cpus '0;1'
check "vm update --vcpu-cpus '0;1'" rc_is 0

ctl vm list
check "vm list: both VMs, what they were granted, under the flavour reasoned about" eval 'rc_is 0 && out_has "^vPMU extension, routes simulated$" && out_has "^db +800 +guaranteed +2 +advisory +passthrough 2$" && out_has "^web +350 +preferred +2 +advisory +passthrough [0-9]+$"'
ctl --json vm list
check "vm list --json parses" eval 'json_ok && jpy "sorted(v[\"name\"] for v in d[\"vms\"]) == [\"db\", \"web\"]"'

ctl plan --cpus 2-5
check "plan: the guaranteed VM holds 4 gp on CPUs 2-5" eval 'rc_is 0 && out_has "^2-5 +0xf "'

wait_for 200 eval '[ "$(grep -c "^generation" "$T/watch.out")" -ge 3 ]'
if wait "$watch_pid"; then wrc=0; else wrc=$?; fi
cp "$T/watch.out" "$T/out"; cp "$T/watch.err" "$T/err"
check "watch --count 3: exits 0 after 3 events" eval '[ "$wrc" -eq 0 ] && [ "$(grep -c "^generation" "$T/out")" -eq 3 ]'
check "watch: prints the attaches and the update as reasons" eval 'out_has "^watching plan changes from generation" && out_has "vm.attach db" && out_has "vm.attach web"'
if wait "$watchj_pid"; then wrc=0; else wrc=$?; fi
cp "$T/watchj.out" "$T/out"; cp "$T/watchj.err" "$T/err"
check "watch --json --count 1: one compact JSON object" eval '[ "$wrc" -eq 0 ] && [ "$(wc -l <"$T/out")" -eq 1 ] && json_ok && jpy "d[\"event\"] == \"plan\" and d[\"reason\"] == \"vm.attach db\""'
bg_pids=()

# ------------------------------------------------------------ sessions
ctl session start prof --events task-clock,cycles,instructions --cpus 0-1
check "session start (default owner: the calling shell)" eval 'rc_is 0 && out_has "^started session prof" && out_has "stops when pid $$ exits"'
ctl --json session list
check "session list --json: owner_pid is this shell" eval 'rc_is 0 && json_ok && jpy "d[\"sessions\"][0][\"owner_pid\"] == $$"'
ctl session list
check "session list: table" eval 'rc_is 0 && out_has "^prof +100 +preferred +3 +cpus 0-1$"'

# task-clock counts CPU time, so let CPU time pass.
spin_until=$(( $(date +%s%N) + 200000000 ))
while [ "$(date +%s%N)" -lt "$spin_until" ]; do :; done
ctl session read prof
check "session read: task-clock counted (a number)" eval 'rc_is 0 && out_has "^task-clock +[1-9][0-9]* +[0-9]+ +[0-9]+ +[0-9]+ +(no|yes) +software"'
check "session read: hardware events 'not counted' on the model PMU" eval 'out_has "^cycles +not counted \\(" && out_has "^instructions +not counted \\("'
check "session read: never a number for hardware events" eval 'out_lacks "^(cycles|instructions) +[0-9]"'
v0=$(awk '$1 == "task-clock" { print $2 }' "$T/out")

ctl --json session read prof
check "session read --json: counted flag, no value for cycles" eval 'rc_is 0 && json_ok && jpy "[(e[\"event\"], e[\"counted\"], \"value\" in e) for e in d[\"events\"]] == [(\"task-clock\", True, True), (\"cycles\", False, False), (\"instructions\", False, False)]"'

ctl session read prof --interval 100 --count 2
check "session read --interval 100 --count 2: two periods" eval 'rc_is 0 && [ "$(grep -c "^--- change over the last [0-9]* ms" "$T/out")" -eq 2 ]'
deltas=$(awk '$1 == "task-clock" { print $2 }' "$T/out" | tr '\n' ' ')
check "session read --interval: hardware events not counted in every period" eval '[ "$(grep -c "^cycles *not counted" "$T/out")" -eq 2 ]'
cp "$T/out" "$T/interval.out"
ctl session read prof
v3=$(awk '$1 == "task-clock" { print $2 }' "$T/out")
# Deltas, not running totals: both periods fit between the two cumulative readings.
check "session read --interval prints deltas (v0=$v0 deltas=$deltas v3=$v3)" python3 -c '
import sys
v0, v3 = int(sys.argv[1]), int(sys.argv[2])
d = [int(x) for x in sys.argv[3].split()]
sys.exit(0 if len(d) == 2 and all(x > 0 for x in d) and v0 + sum(d) <= v3 else 1)' "${v0:-0}" "${v3:-0}" "$deltas"
ctl --json session read prof --interval 50 --count 3
# --json prints the raw readings, one compact object per line: the first one
# and one per period (N periods need N+1 readings), read_usec increasing.
check "session read --json --interval 50 --count 3: 4 raw readings, one per line" eval 'rc_is 0 && [ "$(wc -l <"$T/out")" -eq 4 ] && python3 -c "
import json, sys
r = [json.loads(l) for l in sys.stdin]
t = [x[\"read_usec\"] for x in r]
sys.exit(0 if t == sorted(t) and len(set(t)) == 4 else 1)" <"$T/out"'

ctl session start other --events task-clock --cpus 0 --owner-pid $$ --priority 200 --class shared
check "session start --owner-pid --priority --class" rc_is 0
ctl --json session start guesttime --events task-clock --cpus 1 --count-guest
check "session start --count-guest: granted on the extension (its sessions count guest time)" eval 'rc_is 0 && json_ok && jpy "d[\"flavour\"] == \"extension\""'
ctl session stop guesttime
ctl session stop other
check "session stop" eval 'rc_is 0 && out_has "^stopped session other"'
ctl session stop other
check "session stop twice: not_found, exit 1" eval 'rc_is 1 && err_has "^vpmuctl: not_found: "'
ctl session start pidsess --events task-clock --pid $$
check "session start --pid" rc_is 0
ctl session list
check "session list: the --pid session's target" out_has '^pidsess .* pid '"$$"'$'
ctl session stop pidsess

# ------------------------------------------------------------ daemon errors: exit 1, "vpmuctl: CODE: MESSAGE"
ctl vm attach db --vcpus 1 --cpus 0
check "attach an existing name: exists, exit 1" eval 'rc_is 1 && err_has "^vpmuctl: exists: "'
ctl vm show nosuch
check "vm show unknown: not_found, exit 1" eval 'rc_is 1 && err_has "^vpmuctl: not_found: .*nosuch"'
ctl vm attach far --vcpus 1 --cpus 200
check "CPU beyond the host's 144: invalid_param from vpmud, exit 1" eval 'rc_is 1 && err_has "^vpmuctl: invalid_param: "'
ctl vm list
check "refused requests created nothing" eval 'out_lacks "^far "'
ctl session start hog --class guaranteed --priority 900 \
	--events branches,branch-misses,cache-misses,cache-references,r01c2,r02c2,r04c2,r08c2 --cpus 2
check "guaranteed session over a guaranteed VM's counters: refused, exit 1" eval 'rc_is 1 && err_has "^vpmuctl: refused: "'
ctl session read nosuch
check "session read unknown: not_found, exit 1" eval 'rc_is 1 && err_has "^vpmuctl: not_found: "'

# ------------------------------------------------------------ usage errors: exit 2, option named, nothing sent
usage() { # usage DESCRIPTION PATTERN ARGS...
	local what=$1 pat=$2
	shift 2
	ctl "$@"
	check "usage: $what: exit 2 naming $pat" eval 'rc_is 2 && err_has "$pat" && [ ! -s "$T/out" ]'
}
usage "--gp 99" "--gp" vm attach u1 --gp 99 --vcpus 1 --cpus 0
usage "--class bogus" "--class" vm attach u1 --class bogus --vcpus 1 --cpus 0
usage "--fixed 0x10000" "--fixed" vm attach u1 --fixed 0x10000 --vcpus 1 --cpus 0
usage "--fixed 0X7 (the protocol's mask rule: lower-case 0x)" "--fixed: must be a mask" vm attach u1 --fixed 0X7 --vcpus 1 --cpus 0
usage "--fixed 0x00007 (1..4 hex digits)" "--fixed: must be a mask" vm attach u1 --fixed 0x00007 --vcpus 1 --cpus 0
usage "--cpus 3-1" "--cpus" vm attach u1 --vcpus 1 --cpus 3-1
usage "--vcpus without --cpus" "--cpus" vm attach u1 --vcpus 2
usage "both vCPU forms" "--vcpu-cpus" vm attach u1 --vcpus 1 --cpus 0 --vcpu-cpus '0;1'
usage "--vcpu-cpus with an empty list" "--vcpu-cpus" vm attach u1 --vcpu-cpus '0;;1'
usage "unknown option" "--colour" vm attach u1 --colour red --vcpus 1 --cpus 0
usage "--priority 1001" "--priority" vm update db --priority 1001
usage "vm update --pid" "vm bind" vm update db --pid 1
usage "--vm-fd without --pid" "--vm-fd" vm attach u1 --vcpus 1 --cpus 0 --vm-fd 3
usage "bad VM name" "A-Z a-z 0-9" vm show 'bad/name'
# the name rule is proto_name_check's, in the daemon's words, plus what was given
usage "VM name of 65" "VM name: must be 1\.\.64 characters \(got \"n{65}\"\)" vm show nnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnn
usage "session name with a space" "session name: only A-Z a-z 0-9 \. _ - allowed \(got \"a b\"\)" session stop 'a b'
usage "VM name .." "VM name: \"\.\" and \"\.\.\" are reserved" vm detach ..
ctl vm show nnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnn
check "a VM name of 64 is the daemon's to answer: not_found, exit 1" eval 'rc_is 1 && err_has "^vpmuctl: not_found: "'
usage "--events duplicated" "--events" session start s --events task-clock,task-clock --cpus 0
usage "--cpus and --pid" "--cpus" session start s --events task-clock --cpus 0 --pid 1
usage "--count without --interval" "--count" session read prof --count 2
usage "--interval 0" "--interval" session read prof --interval 0
usage "watch --count 0" "--count" watch --count 0
usage "--timeout abc" "--timeout" --timeout abc status
ctl frobnicate
check "usage: unknown command: exit 2" eval 'rc_is 2 && err_has "frobnicate"'
ctl --json vm list
check "usage errors sent nothing (no u1 VM)" eval 'jpy "\"u1\" not in [v[\"name\"] for v in d[\"vms\"]]"'

# ------------------------------------------------------------ vm bind with real KVM VMMs
vmm_line= vmm_pid=
start_vmm() { # start_vmm VCPUS: sets vmm_pid, vmm_fd
	local out=$T/vmm.$RANDOM
	: >"$out"
	"$FAKE_VMM" "$1" >"$out" 2>"$out.err" &
	vmm_pid=$!
	bg_pids+=("$vmm_pid")
	wait_for 200 grep -q '^pid=' "$out" || return 1
	vmm_line=$(head -n1 "$out")
	vmm_fd=$(sed -n 's/.*vm_fd=\([0-9]*\).*/\1/p' "$out")
	[ -n "$vmm_fd" ]
}
vm_gone() { "$CTL" --json vm list | python3 -c 'import json,sys; sys.exit(0 if sys.argv[1] not in [v["name"] for v in json.load(sys.stdin)["vms"]] else 1)' "$1"; }

if [ -x "$FAKE_VMM" ] && [ -r /dev/kvm ] && [ -w /dev/kvm ] && start_vmm 2; then
	ok "fake VMM holds a KVM VM: $vmm_line"
	p1=$vmm_pid fd1=$vmm_fd
	ctl vm attach kvm1 --vcpus 2 --cpus 0-1 --gp 2 --pid "$p1" --vm-fd "$fd1"
	check "vm attach --pid --vm-fd (bound at attach)" eval 'rc_is 0 && out_has "bound to pid $p1"'
	ctl vm show kvm1
	check "vm show: owner pid and VM fd" out_has "^owner +pid $p1, VM fd $fd1\$"

	ctl vm attach kvm2 --vcpu-cpus '0;1' --gp 1
	check "vm attach without owner" rc_is 0
	start_vmm 1 || echo "note: a VMM did not start"
	psmall=$vmm_pid
	ctl vm bind kvm2 --pid "$psmall"
	# Refused, but vpmud's answer is obscure (see the report of this test's
	# author): invalid_param "vm N: KVM_VPMU_GET_ROUTES: No such file or
	# directory", field params.owner.
	check "vm bind of a 2-vCPU lease to a 1-vCPU VMM: refused, exit 1" eval 'rc_is 1 && err_has "^vpmuctl: [a-z_]+: "'
	start_vmm 2 || echo "note: a VMM did not start"
	p2=$vmm_pid
	ctl vm bind kvm2 --pid "$p2"
	check "vm bind --pid (vpmud finds the VM fd)" eval 'rc_is 0 && out_has "^bound to pid $p2: kvm2"'
	check "vm bind: vpmuctl hands no route fd, the VM's routes are advisory and it says why" \
		out_has '^  routes: advisory \(the VMM handed no route fd\)$'
	ctl vm bind kvm2 --pid "$p2"
	check "vm bind again to the same VMM: harmless" rc_is 0
	ctl vm bind kvm2 --pid "$p1"
	check "vm bind to another live VMM: exists, exit 1" eval 'rc_is 1 && err_has "^vpmuctl: exists: "'
	ctl --json vm bind kvm2 --pid "$p2"
	check "vm bind --json parses" eval 'rc_is 0 && json_ok && jpy "d[\"name\"] == \"kvm2\""'
	ctl vm show kvm2
	check "vm show: bound to the second VMM" out_has "^owner +pid $p2, VM fd [0-9]+\$"
	check "vm show: routes advisory, the VMM handed no route fd" out_has '^routes +advisory \(the VMM handed no route fd\)$'
	ctl status
	check "status: names the advisory VMs" eval 'out_has "^advisory vms +.*kvm2.*: routes not enforced" && out_has "^vms +[0-9]+ \(.*advisory\)$"'

	# A VMM that hands its route fd itself (the client library's call)
	ctl vm attach rfd --vcpus 1 --cpus 1 --gp 1
	"$FAKE_VMM" --route-fd --name rfd 1 >"$T/rfd.out" 2>&1 &
	prfd=$!
	bg_pids+=("$prfd")
	wait_for 200 grep -q '^vm.bind rfd' "$T/rfd.out"
	check "vpmu-fake-vmm --route-fd (default socket: \$VPMU_SOCKET): bound, routes simulated" \
		grep -q '^vm.bind rfd: bound, routes simulated' "$T/rfd.out"
	ctl vm show rfd
	check "vm show: routes simulated for the VM whose VMM handed its route fd" eval 'out_has "^routes +simulated \(" && out_has "^owner +pid $prfd, "'
	ctl vm list
	check "vm list: the ROUTES column per VM" eval 'out_has "^rfd +100 +preferred +1 +simulated " && out_has "^kvm2 .* advisory "'
	ctl plan
	check "plan: per VM, whether its routes hold" eval 'out_has "^  rfd \(routes simulated \(" && out_has "^  kvm2 \(routes advisory \(the VMM handed no route fd\)\)$"'
	kill "$prfd"
	wait "$prfd" 2>/dev/null
	check "its VMM's exit releases it" wait_for 200 vm_gone rfd

	# A launcher that holds the VMM's route fd hands it with vpmuctl
	# (--route-fd N: vpmuctl's own descriptor N). The test takes the
	# VMM's VM file with pidfd_getfd, as a patched QEMU would hand it.
	ctl vm bind kvm2 --pid "$p2" --route-fd 9
	check "vm bind --route-fd of a descriptor vpmuctl does not have: exit 1, says so, sends nothing" \
		eval 'rc_is 1 && err_has "^vpmuctl: --route-fd 9: not an open descriptor"'
	ctl vm bind kvm2 --pid "$p2" --route-fd 3 --vm-fd 4
	check "vm bind --route-fd with --vm-fd: usage error" eval 'rc_is 2'
	ctl vm attach lfd --vcpus 1 --cpus 1 --gp 1
	start_vmm 1 || echo "note: a VMM did not start"
	plfd=$vmm_pid
	python3 - "$plfd" "$vmm_fd" "$CTL" >"$T/out" 2>"$T/err" <<'PY'
import ctypes, os, subprocess, sys
pid, fd, ctl = int(sys.argv[1]), int(sys.argv[2]), sys.argv[3]
libc = ctypes.CDLL(None, use_errno=True)
pidfd = os.pidfd_open(pid)
route = libc.syscall(438, pidfd, fd, 0)
if route < 0:
    sys.exit("pidfd_getfd: " + os.strerror(ctypes.get_errno()))
os.dup2(route, 3)
sys.exit(subprocess.run([ctl, "vm", "bind", "lfd", "--pid", str(pid), "--route-fd", "3"], pass_fds=(3,)).returncode)
PY
	rc=$?
	check "vm bind --route-fd 3: bound, routes simulated" eval 'rc_is 0 && out_has "^  routes: simulated \("'
	ctl vm show lfd
	check "vm show: the route fd handed by vpmuctl holds" out_has "^routes +simulated \("
	kill "$plfd"
	check "... and the VMM's exit releases it" wait_for 200 vm_gone lfd

	ctl vm attach kvm3 --vcpus 1 --cpus 0 --pid "$p1" --vm-fd 0
	check "vm attach with a fd that is not a KVM VM: invalid_param, exit 1" eval 'rc_is 1 && err_has "^vpmuctl: invalid_param: "'
	check "... and nothing was attached" vm_gone kvm3
	sleep 60 &
	sleeper=$!
	bg_pids+=("$sleeper")
	ctl vm attach kvm3 --vcpus 1 --cpus 0 --pid "$sleeper"
	# docs/protocol.md says not_found for "holds no KVM VM fd"; vpmud answers
	# invalid_param (reported). Either way: exit 1 and the lease undone.
	check "vm attach --pid of a process without a KVM VM: exit 1, vpmuctl says it detaches again" eval 'rc_is 1 && err_has "^vpmuctl: (not_found|invalid_param): " && err_has "detaching it again"'
	check "... and the half-made attach is detached again" vm_gone kvm3
	ctl vm attach kvm5 --vcpus 1 --cpus 0
	ctl vm bind kvm5 --pid 4194304
	check "vm bind to a pid that does not exist: not_found, exit 1" eval 'rc_is 1 && err_has "^vpmuctl: not_found: "'
	ctl vm detach kvm5

	ctl vm attach kvm4 --vcpus 1 --cpus 0 --pid "$psmall"
	check "vm attach --pid alone (attach then bind)" eval 'rc_is 0 && out_has "bound to pid $psmall"'

	kill "$p1"
	wait "$p1" 2>/dev/null
	check "the VMM's death detaches its VM" wait_for 200 vm_gone kvm1
	check "... only that one" eval '! vm_gone kvm2 && ! vm_gone kvm4'
	kill "$p2" "$psmall"
	wait "$p2" "$psmall" 2>/dev/null
	check "the other VMMs' death detaches their VMs" wait_for 200 eval 'vm_gone kvm2 && vm_gone kvm4'
	kill "$sleeper" 2>/dev/null
	wait "$sleeper" 2>/dev/null
	bg_pids=()
else
	echo "skip vm bind with a real VMM: /dev/kvm not usable or vpmu-fake-vmm not built"
fi

# ------------------------------------------------------------ an unprivileged caller
if [ "$(id -u)" -eq 0 ] && command -v setpriv >/dev/null; then
	if ! id vpmu-test >/dev/null 2>&1; then
		useradd --system --no-create-home --shell /usr/sbin/nologin vpmu-test ||
			echo "note: could not create user vpmu-test"
	fi
fi
if [ "$(id -u)" -eq 0 ] && id vpmu-test >/dev/null 2>&1 && command -v setpriv >/dev/null; then
	asuser() { setpriv --reuid=vpmu-test --regid=vpmu-test --clear-groups "$CTL" "$@" >"$T/out" 2>"$T/err"; rc=$?; }
	asuser status
	check "unprivileged: status works" eval 'rc_is 0 && out_has "^server "'
	asuser plan --cpus 0
	check "unprivileged: plan works" eval 'rc_is 0 && out_has "^generation "'
	asuser vm attach evil --vcpus 1 --cpus 0
	check "unprivileged: vm attach is permission_denied, exit 1" eval 'rc_is 1 && err_has "^vpmuctl: permission_denied: "'
	asuser vm detach db
	check "unprivileged: vm detach is permission_denied, exit 1" eval 'rc_is 1 && err_has "^vpmuctl: permission_denied: "'
	asuser session start evil --events task-clock --cpus 0
	check "unprivileged: session start is permission_denied, exit 1" eval 'rc_is 1 && err_has "^vpmuctl: permission_denied: "'
	ctl vm list
	check "unprivileged requests changed nothing" eval 'out_has "^db " && out_lacks "^evil "'
else
	echo "skip unprivileged caller: not root, no setpriv, or no user vpmu-test"
fi

# ------------------------------------------------------------ detach, and a hung daemon
ctl vm detach web
check "vm detach" eval 'rc_is 0 && out_has "^detached web \\(generation"'
ctl vm detach web
check "vm detach twice: not_found, exit 1" eval 'rc_is 1 && err_has "^vpmuctl: not_found: "'
ctl --json vm detach db
check "vm detach --json parses" eval 'rc_is 0 && json_ok && jpy "\"generation\" in d"'
ctl vm list
check "vm list: no VMs left" eval 'rc_is 0 && out_has "^no VMs"'
ctl session stop prof
check "session stop prof" rc_is 0

kill -STOP "$daemon"
ctl --timeout 0.3 vm list
kill -CONT "$daemon"
check "a daemon that does not answer: --timeout gives up with exit 1 or 3 and a message" eval '{ rc_is 1 || rc_is 3; } && [ -s "$T/err" ]'

kill -TERM "$daemon"
wait "$daemon"
drc=$?
daemon=
check "vpmud exits 0 on SIGTERM" [ "$drc" -eq 0 ]
ctl status
check "after the daemon stopped: exit 3" eval 'rc_is 3 && err_has "$VPMU_SOCKET"'

# ------------------------------------------------------------ this host's own vPMU flavour
# --kvm auto: the extension when the kernel has it, else advisory for the
# flavour detected here (perf-based, mediated or none). Routes are the
# flavour's, never the extension's, and nothing claims to be enforced.
"$VPMUD" --pmu icelake-8360y --kvm auto --dbus none --libvirt-uri none --socket "$VPMU_SOCKET" --state-dir "$T/state-auto" \
	--config "$T/vpmud.conf" 2>"$T/vpmud-auto.log" &
daemon=$!
if ! wait_for 200 up; then
	echo "FAIL vpmud --kvm auto did not come up:"
	cat "$T/vpmud-auto.log"
	failures=$((failures + 1))
	exit 1
fi
ctl --json status
flavour=$(python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))["backends"]["kvm_flavour"])' "$T/out" 2>/dev/null)
if [ "$flavour" = extension ]; then
	ok "auto: this kernel has the vpmu extension; nothing advisory to check"
else
	check "auto: advisory, for one of the stock flavours ($flavour)" jpy 'd["backends"]["kvm"] == "advisory" and d["backends"]["kvm_routes"] == "advisory" and d["backends"]["kvm_enforced"] is False and d["backends"]["kvm_flavour"] in ("perf-based", "mediated", "none")'
	ctl status
	check "auto: the status line names the flavour, advisory routes, and what it means for guests and host sessions" \
		out_has "^vpmu +$flavour \(routes advisory\): guests: .*; host sessions: "
	check "auto: the kvm row is advisory, not simulated" eval 'grep -E "^kvm " "$T/out" | grep -q ADVISORY && ! grep -E "^kvm " "$T/out" | grep -q SIMULATED'
	ctl vm attach flav --gp 2 --fixed 0x1 --vcpus 1 --cpus 0
	check "auto: vm attach accepted, under the flavour reasoned about" eval 'rc_is 0 && out_has "^  vPMU $flavour, routes advisory \(vPMU flavour $flavour"'
	ctl --json vm show flav
	case $flavour in
	perf-based) want='("reserved", "at-risk")' ;;
	mediated) want='("mediated",)' ;;
	*) want='("none",)' ;;
	esac
	check "auto: vm show routes are the $flavour flavour's, never passthrough or multiplexed" jpy \
		"d['flavour'] == '$flavour' and all(r in $want for r in d['vcpus'][0]['gp'][:2] + d['vcpus'][0]['fixed'][:1]) and all(r == 'disabled' for r in d['vcpus'][0]['gp'][2:] + d['vcpus'][0]['fixed'][1:])"
	ctl vm show flav
	check "auto: the route legend is the flavour's" out_has "^vCPUs \(routes \(vPMU $flavour, advisory\): "
	ctl session start flavsess --events task-clock --cpus 0 --count-guest
	if [ "$flavour" = mediated ]; then
		check "auto (mediated): --count-guest refused with the reason" eval 'rc_is 1 && err_has "count_guest" && err_has "EBUSY"'
	else
		check "auto ($flavour): --count-guest granted" rc_is 0
		ctl session stop flavsess
	fi
	ctl vm detach flav
fi
kill -TERM "$daemon"
wait "$daemon"
daemon=

if [ "$failures" -ne 0 ]; then
	echo "$failures check(s) failed"
	exit 1
fi
echo "all vpmuctl checks passed"
exit 0

#!/usr/bin/env bash
# vpmud's main job: discovery, what this host's vPMU flavour means (the
# daemon on its defaults, --kvm auto), then the daemon on the model of the
# vpmu KVM extension (--kvm model) in a private runtime directory, driven
# through a short scenario with vpmuctl. On a host without a PMU the daemon
# runs on the built-in model PMU; every output says what is simulated, and
# which flavour and routes it reasons about.
set -euo pipefail
b=$(cd "${1:-build}" && pwd)
vpmud=$b/vpmud
vpmuctl=$b/client/vpmuctl
fake_vmm=$b/vpmu-fake-vmm

step() { printf '\n\033[1m== %s\033[0m\n' "$*"; }
run() { printf '$ %s\n' "$*" | sed "s|$b/client/||; s|$b/||"; "$@"; }

step "PMU discovery: this host"
"$vpmud" --print-pmu
step "KVM on this host: the vPMU flavour it gives guests, with the evidence"
"$vpmud" --print-kvm
step "The guest view KVM's perf-based vPMU gives on the reference Ice Lake"
"$vpmud" --pmu icelake-8360y --print-guest-pmu

rt=$(mktemp -d /tmp/vpmu-demo.XXXXXX)
export VPMU_SOCKET=$rt/vpmud.sock
pids=()
cleanup() {
  for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
  if [ -n "${daemon:-}" ] && kill -0 "$daemon" 2>/dev/null; then kill -TERM "$daemon"; wait "$daemon" || true; fi
  rm -rf "$rt"
}
trap cleanup EXIT

start_daemon() { # log file, extra vpmud options...
  local log=$1
  shift
  rm -f "$VPMU_SOCKET"
  "$vpmud" --config "$rt/vpmud.conf" --socket "$VPMU_SOCKET" --state-dir "$rt/state" "$@" 2>"$log" &
  daemon=$!
  for _ in $(seq 100); do [ -S "$VPMU_SOCKET" ] && break; sleep 0.05; done
  sed 's/^<[0-9]>/  log: /' "$log"
}
stop_daemon() {
  kill -TERM "$daemon"
  wait "$daemon" || true
  daemon=
}
: >"$rt/vpmud.conf"

step "vpmud on its defaults (--kvm auto), private socket and state in $rt: what this host's flavour means"
start_daemon "$rt/vpmud-auto.log"
run "$vpmuctl" status
flavour=$("$vpmuctl" --json status | sed -n 's/.*"kvm_flavour": *"\([^"]*\)".*/\1/p')
if [ "$flavour" != extension ]; then
  step "A VM lease on this host's $flavour vPMU: its routes are the flavour's, advisory (not enforced)"
  run "$vpmuctl" vm attach probe --gp 4 --fixed 0x3 --vcpus 1 --cpus 2-3
  run "$vpmuctl" vm show probe
  run "$vpmuctl" vm detach probe
fi
stop_daemon
rm -rf "$rt/state"

step "vpmud on the model of the vpmu KVM extension (--kvm model): the scenario, simulated"
start_daemon "$rt/vpmud.log" --kvm model
run "$vpmuctl" status

# Real VMMs when /dev/kvm works: each holds a KVM VM and vCPU threads, so
# the leases below follow real processes.
start_vmm() { # name vcpus: sets owner_args to "--pid P --vm-fd F", or empty
  owner_args=
  [ -x "$fake_vmm" ] && [ -w /dev/kvm ] || return 0
  local out="$rt/$1.vmm"
  "$fake_vmm" "$2" >"$out" 2>/dev/null &
  pids+=($!)
  for _ in $(seq 50); do [ -s "$out" ] && break; sleep 0.02; done
  owner_args=$(sed -n 's/^pid=\([0-9]*\) vm_fd=\([0-9]*\).*/--pid \1 --vm-fd \2/p' "$out")
}
# A VMM that does what docs/vmm-integration.md asks: it hands vpmud a route
# fd for the lease NAME (vm.bind with SCM_RIGHTS), so that VM's routes go to
# the (model) kernel; the others are advisory.
start_delegating_vmm() { # name vcpus
  [ -x "$fake_vmm" ] && [ -w /dev/kvm ] || return 0
  local out="$rt/$1.vmm"
  "$fake_vmm" --route-fd="$VPMU_SOCKET" --name "$1" "$2" >"$out" 2>&1 &
  pids+=($!)
  for _ in $(seq 100); do grep -q '^vm.bind' "$out" && break; sleep 0.05; done
  sed 's/^/  vmm: /' "$out"
}

# Host sessions count on real CPUs (software events are opened for real),
# so they use CPU 0-1, which every machine has; VMs may use any CPU of the
# PMU inventory.
step "A guaranteed database VM: 4 general PMCs and fixed 0-1 on CPUs 2-5; its VMM hands vpmud a route fd"
run "$vpmuctl" vm attach db --priority 800 --class guaranteed --gp 4 --fixed 0x3 --vcpus 2 --cpus 2-5
start_delegating_vmm db 2
run "$vpmuctl" vm show db
step "A preferred web VM floating over CPUs 0-3, asking for 6 PMCs and 3 fixed; its VMM hands no route fd (advisory)"
start_vmm web 2
# shellcheck disable=SC2086
run "$vpmuctl" vm attach web --priority 300 --class preferred --gp 6 --fixed 0x7 --vcpus 2 --cpus 0-3 $owner_args
run "$vpmuctl" plan --cpus 0-7

step "A host profiling session of priority 500 on CPUs 0-1 preempts the web VM (it floats over them)"
run "$vpmuctl" session start prof --priority 500 --events cycles,instructions,branches,cache-misses,branch-misses,task-clock,context-switches --cpus 0-1 --owner-pid $$
run "$vpmuctl" plan --cpus 0-7

step "A guaranteed host session that needs counters the guaranteed db VM holds on CPU 2 is refused"
run "$vpmuctl" session start audit --priority 900 --class guaranteed \
  --events branches,branch-misses,cache-misses,cache-references,r01c2,r02c2,r04c2,r08c2 --cpus 2 --owner-pid $$ || true

step "Reading the session: software events are counted, hardware ones on a model PMU are not"
sleep 0.2
run "$vpmuctl" session read prof

if [ ${#pids[@]} -ge 2 ]; then
  step "The web VM's VMM dies: its lease goes and the plan is recomputed"
  run kill "${pids[1]}"
  sleep 0.2
  run "$vpmuctl" vm list
  run "$vpmuctl" plan --cpus 0-7
fi

step "Cleaning up: stop the session, detach the database VM"
run "$vpmuctl" session stop prof
run "$vpmuctl" vm detach db
"$vpmuctl" vm detach web >/dev/null 2>&1 || true
run "$vpmuctl" vm list

step "Stopping vpmud"
stop_daemon
sed 's/^<[0-9]>/  log: /' "$rt/vpmud.log" | tail -n 12
echo
echo "Done. This host's own vPMU flavour is ${flavour:-unknown}; the scenario ran on the model of the"
echo "vpmu extension (simulated), and on a model PMU where the status says so."

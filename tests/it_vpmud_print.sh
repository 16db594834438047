#!/usr/bin/env bash
# vpmud --print-pmu / --print-guest-pmu / --print-kvm: exact boot blocks,
# where the PMU came from, this host's vPMU flavour with its evidence, and
# refusals of bad requests (exit code 2).
set -u
vpmud=${VPMU_BUILD_DIR:?}/vpmud
src=${VPMU_SOURCE_DIR:?}
fx=$src/tests/fixtures
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
fails=0
fail() { echo "FAIL: $*" >&2; fails=$((fails + 1)); }

cat >"$tmp/icl" <<'B'
... version:                5
... bit width:              48
... generic registers:      8
... value mask:             0000ffffffffffff
... max period:             00007fffffffffff
... fixed-purpose events:   4
... event mask:             0001000f000000ff
B
cat >"$tmp/icl-guest" <<'B'
... version:                2
... bit width:              48
... generic registers:      8
... value mask:             0000ffffffffffff
... max period:             00007fffffffffff
... fixed-purpose events:   3
... event mask:             00000007000000ff
B

# run NAME EXPECTED_RC ARGS...: stdout to $tmp/NAME.out, stderr to $tmp/NAME.err
run() {
  local name=$1 want=$2; shift 2
  "$vpmud" "$@" >"$tmp/$name.out" 2>"$tmp/$name.err"
  local rc=$?
  [ "$rc" -eq "$want" ] || fail "$name: vpmud $* exited $rc, want $want; stderr: $(cat "$tmp/$name.err")"
}
block() { grep '^\.\.\. ' "$tmp/$1.out"; }
expect_block() { # name file
  block "$1" | diff -u "$2" - >"$tmp/$1.diff" || fail "$1: block differs: $(cat "$tmp/$1.diff")"
}
expect_line() { # name stream regex
  grep -Eq -- "$3" "$tmp/$1.$2" || fail "$1: no line matching '$3' in $2: $(cat "$tmp/$1.$2")"
}

run model 0 --pmu icelake-8360y --print-pmu
expect_block model "$tmp/icl"
expect_line model out '^# pmu: icelake-8360y \(built-in model, simulated\)$'

run guest 0 --pmu icelake-8360y --print-guest-pmu
expect_block guest "$tmp/icl-guest"
expect_line guest out '^CPUID\.0AH: EAX=0x08300802 EBX=0x00000000 ECX=0x00000000 EDX=0x00008603$'

run guest-opts 0 --pmu icelake-8360y --print-guest-pmu --gp 4 --fixed 0x3 --guest-version 2
expect_line guest-opts out '^CPUID\.0AH: EAX=0x08300402 EBX=0x00000000 ECX=0x00000000 EDX=0x00008602$'
expect_line guest-opts out '^\.\.\. generic registers:      4$'
expect_line guest-opts out '^\.\.\. event mask:             000000030000000f$'

run guest-v5 0 --pmu icelake-8360y --print-guest-pmu --guest-version 5 --fixed 0xb
expect_line guest-v5 out 'ECX=0x0000000b'
expect_line guest-v5 out '^\.\.\. fixed-purpose events:   3$'

run zen4-guest 0 --pmu zen4 --print-guest-pmu
expect_line zen4-guest out '^CPUID\.80000022H: EAX=0x00000001 EBX=0x00000006'
expect_line zen4-guest out '^\.\.\. event mask:             000000000000003f$'

# A host without a PMU (fixture tree): says so, says why, falls back, and the
# block is the fallback model's.
run nopmu 0 --sysfs-root "$fx/sysfs-nopmu" --procfs-root "$fx/sysfs-nopmu" --print-pmu
expect_line nopmu out '^# pmu: this host exposes no PMU: the kernel registered no core PMU'
expect_line nopmu out '^# pmu: the daemon falls back to built-in model icelake-8360y \(simulated\)$'
expect_line nopmu out '^# pmu: icelake-8360y \(built-in model, simulated\)$'
expect_block nopmu "$tmp/icl"

# This machine: either a host PMU or the announced fallback, never silence.
run auto 0 --pmu auto --print-pmu
if grep -q '^# pmu: host' "$tmp/auto.out"; then
  expect_line auto out '^\.\.\. generic registers:      [1-9]'
else
  expect_line auto out '^# pmu: this host exposes no PMU: .+'
  expect_line auto out 'falls back to built-in model icelake-8360y \(simulated\)'
  expect_block auto "$tmp/icl"
fi

run file 0 --pmu "$fx/models/skylake-4c.json" --print-pmu
expect_line file out "^# pmu: skylake-4c \(model file .*skylake-4c.json, simulated\)$"
expect_line file out '^\.\.\. event mask:             000000070000000f$'

# --print-kvm: this host's vPMU flavour with its evidence, exit 0 whatever
# the flavour; the evidence must agree with the files it names.
run kvm 0 --print-kvm
expect_line kvm out '^kvm: vPMU flavour: (unknown|none|perf-based|mediated) \(.+\)$'
expect_line kvm out '^kvm: evidence:$'
expect_line kvm out '^kvm: for guests: .+'
expect_line kvm out '^kvm: for host sessions: .+'
grep -q 'fixture' "$tmp/kvm.out" && fail "kvm: the real host's report mentions a fixture: $(cat "$tmp/kvm.out")"
p=/sys/module/kvm/parameters/enable_pmu
if [ -r "$p" ]; then
  expect_line kvm out "^kvm:   $p: $(cat "$p")\$"
else
  expect_line kvm out "^kvm:   $p: absent\$"
fi
if [ -r /proc/sys/kernel/nmi_watchdog ]; then
  expect_line kvm out "^kvm:   /proc/sys/kernel/nmi_watchdog: $(cat /proc/sys/kernel/nmi_watchdog)\$"
fi
if [ -r /dev/kvm ] && [ -w /dev/kvm ]; then
  expect_line kvm out '^kvm:   open /dev/kvm: ok$'
  expect_line kvm out '^kvm:   KVM_GET_API_VERSION: 12$'
  expect_line kvm out '^kvm: vpmu extension: absent \(stock kernel: guest routes are advisory\)$'
  # kvm.enable_pmu=N (this machine): none, whatever else the host has.
  if [ "$(cat "$p" 2>/dev/null)" = N ]; then
    expect_line kvm out '^kvm: vPMU flavour: none \((kvm\.enable_pmu=N|hybrid CPU .*)\)$'
    expect_line kvm out '^kvm: for host sessions: every counter is the host.s, guest time included$'
  fi
  # Hybrid PMUs in sysfs (a fixture tree) make it none whatever KVM says.
  hy=$fx/kvm/v6.12-alderlake-hybrid
  run kvm-hybrid 0 --print-kvm --sysfs-root "$hy" --procfs-root "$hy"
  expect_line kvm-hybrid out "^# kvm: sysfs read below $hy, procfs below $hy \(testing\); ioctl answers from this host's /dev/kvm\$"
  expect_line kvm-hybrid out '^kvm: vPMU flavour: none \(hybrid CPU \(perf PMUs cpu_core/cpu_atom instead of cpu\): KVM disables its vPMU\)$'
  expect_line kvm-hybrid out '^kvm:   /sys/bus/event_source/devices/cpu_core: present \(hybrid\)$'
else
  expect_line kvm out '^kvm:   open /dev/kvm: failed \(.+\)$'
  expect_line kvm out '^kvm: vPMU flavour: (unknown|none) '
fi

run list 0 --list-models
for m in icelake-8360y sapphirerapids zen4; do expect_line list out "^$m"; done
run help 0 --help
expect_line help out '^usage: vpmud'
expect_line help out '^  --print-kvm  '

# Refusals: exit code 2 and a message that says what is wrong.
run r-gp 2 --pmu icelake-8360y --print-guest-pmu --gp 9
expect_line r-gp err '9 general counters refused: the host has 8'
run r-fixed 2 --pmu icelake-8360y --print-guest-pmu --fixed 0x10 --guest-version 5
expect_line r-fixed err 'fixed mask 0x10 refused'
run r-ver 2 --pmu icelake-8360y --print-guest-pmu --guest-version 6
expect_line r-ver err 'guest version 6 refused'
run r-hole 2 --pmu icelake-8360y --print-guest-pmu --fixed 0x5
expect_line r-hole err 'a bitmap needs version 5'
run r-num 2 --pmu icelake-8360y --print-guest-pmu --gp -1
expect_line r-num err '^vpmud: --gp -1: must be a number'
run r-junk 2 --pmu icelake-8360y --print-guest-pmu --fixed 7x
expect_line r-junk err '^vpmud: --fixed 7x: must be a mask'
run r-unknown 2 --frobnicate
expect_line r-unknown err "unknown option '--frobnicate'"
run r-arg 2 --pmu
expect_line r-arg err '--pmu needs a value'
run r-model 2 --pmu haswell --print-pmu
expect_line r-model err 'unknown model "haswell"'
run r-badfile 2 --pmu "$fx/models/bad-num-gp.json" --print-pmu
expect_line r-badfile err 'bad-num-gp.json: field "num_gp": must be an integer 1..32'
run r-guestonly 2 --pmu icelake-8360y --print-pmu --gp 2
expect_line r-guestonly err 'go with --print-guest-pmu'
run r-two 2 --print-pmu --list-models
expect_line r-two err 'give one action only'
run r-kvm-gp 2 --print-kvm --gp 2
expect_line r-kvm-gp err 'go with --print-guest-pmu'
run r-kvm-two 2 --print-kvm --print-guest-pmu
expect_line r-kvm-two err 'give one action only'
# Without an action vpmud runs the daemon; a bad daemon option stops it at once.
run r-daemon-kvm 2 --kvm magic --socket /nonexistent/x.sock
expect_line r-daemon-kvm err 'refusing to start: --kvm: field "kvm": must be auto, ioctl, advisory or model'
run r-positional 2 --print-pmu extra
expect_line r-positional err "unexpected argument 'extra'"

if [ "$fails" -ne 0 ]; then
  echo "$fails failure(s)" >&2
  exit 1
fi
echo "it_vpmud_print: all checks passed"

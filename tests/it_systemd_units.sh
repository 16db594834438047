#!/bin/bash
# Check the shipped systemd units: `systemd-analyze verify` must be silent
# (it exits 0 on unknown keys and bad values, so any output is a failure),
# and the offline security exposure must stay <= 3.0.
set -uo pipefail
src=${VPMU_SOURCE_DIR:-$(cd "$(dirname "$0")/.." && pwd)}
build=${VPMU_BUILD_DIR:-$src/build}
max_exposure=3.0
command -v systemd-analyze >/dev/null || { echo "systemd-analyze not found: skipping"; exit 77; }
[ -x "$build/vpmud" ] || { echo "no $build/vpmud: build first"; exit 1; }

tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
# verify needs ExecStart= to exist; point it at the binary just built.
sed "s|^ExecStart=/usr/sbin/vpmud|ExecStart=$build/vpmud|" "$src/systemd/vpmud.service" >"$tmp/vpmud.service"
grep -q "^ExecStart=$build/vpmud\$" "$tmp/vpmud.service" || { echo "ExecStart= not found in vpmud.service"; exit 1; }
cp "$src/systemd/vpmud.socket" "$tmp/"

fail=0
out=$(cd "$tmp" && systemd-analyze verify --man=no ./vpmud.service ./vpmud.socket 2>&1)
rc=$?
if [ $rc -ne 0 ] || [ -n "$out" ]; then
	echo "systemd-analyze verify (rc=$rc):"
	echo "$out"
	fail=1
fi

sec=$(cd "$tmp" && systemd-analyze security --offline=true --no-pager ./vpmud.service 2>&1)
score=$(printf '%s\n' "$sec" | sed -n 's/.*Overall exposure level for vpmud.service: \([0-9.]*\).*/\1/p')
if [ -z "$score" ]; then
	echo "no exposure score in systemd-analyze security output:"
	echo "$sec"
	exit 1
fi
echo "vpmud.service exposure: $score (limit $max_exposure)"
if ! awk -v s="$score" -v m="$max_exposure" 'BEGIN { exit !(s <= m) }'; then
	printf '%s\n' "$sec" | grep '✗'
	fail=1
fi

# sysusers syntax: systemd-sysusers can check a file against a scratch root.
if command -v systemd-sysusers >/dev/null; then
	mkdir -p "$tmp/root/etc"
	# it narrates what it creates; only a failure or an ignored line is wrong
	if ! out=$(systemd-sysusers --root="$tmp/root" "$src/systemd/vpmu.sysusers.conf" 2>&1) ||
		printf '%s\n' "$out" | grep -qiE 'ignor|fail|invalid|unknown'; then
		echo "systemd-sysusers:"; echo "$out"; fail=1
	elif ! grep -q '^vpmu:' "$tmp/root/etc/group" || ! grep -q '^vpmud:' "$tmp/root/etc/passwd"; then
		echo "sysusers did not create group vpmu and user vpmud"; fail=1
	fi
fi
# D-Bus: well-formed policy, polkit action and interface XML; the activation
# file, the unit's BusName= and its alias must name the same service.
if command -v xmllint >/dev/null; then
	for f in "$src/systemd/org.vpmu.Broker1.conf" "$src/systemd/org.vpmu.broker1.policy" \
		"$src"/docs/org.vpmu.Broker1.*.xml; do
		xmllint --noout "$f" || { echo "$f is not well-formed XML"; fail=1; }
	done
fi
act="$src/systemd/org.vpmu.Broker1.service"
busname=$(sed -n 's/^BusName=//p' "$src/systemd/vpmud.service")
alias=$(sed -n 's/^Alias=//p' "$src/systemd/vpmud.service")
[ "$busname" = org.vpmu.Broker1 ] || { echo "vpmud.service: BusName=$busname, want org.vpmu.Broker1"; fail=1; }
grep -qx "Name=$busname" "$act" || { echo "$act: Name= does not match BusName=$busname"; fail=1; }
grep -qx "SystemdService=$alias" "$act" || { echo "$act: SystemdService= is not the unit's Alias=$alias"; fail=1; }
grep -q "own=\"$busname\"" "$src/systemd/org.vpmu.Broker1.conf" || { echo "bus policy does not let vpmud own $busname"; fail=1; }
exit $fail

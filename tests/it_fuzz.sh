#!/bin/bash
# Builds every libFuzzer target (tests/fuzz_<module>.c) with clang in a
# throw-away build tree and runs each briefly over a copy of its seed corpus
# tests/fuzz-corpus/<module>/ (with tests/fuzz-corpus/<module>.dict when
# there is one); any crash, leak, timeout or sanitizer report fails the test
# and prints the input. Longer runs by hand: docs/fuzzing.md.
#   VPMU_FUZZ_SECONDS   seconds per target (default 8)
#   VPMU_FUZZ_TARGETS   space-separated modules to run (default: all)
set -euo pipefail
src=${VPMU_SOURCE_DIR:-$(cd "$(dirname "$0")/.." && pwd)}
secs=${VPMU_FUZZ_SECONDS:-8}
command -v clang >/dev/null || { echo "clang not found: skipping"; exit 77; }
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
cmake -S "$src" -B "$tmp/build" -DVPMU_FUZZ=ON -DCMAKE_C_COMPILER=clang >"$tmp/cmake.log" 2>&1 \
	|| { cat "$tmp/cmake.log"; exit 1; }
cmake --build "$tmp/build" --target vpmu_fuzz -j2 >"$tmp/build.log" 2>&1 \
	|| { tail -50 "$tmp/build.log"; exit 1; }
targets=${VPMU_FUZZ_TARGETS:-$(cd "$src/tests" && ls fuzz_*.c | sed 's/^fuzz_//; s/\.c$//')}
fail=0
for t in $targets; do
	exe="$tmp/build/fuzz_$t"
	seeds="$src/tests/fuzz-corpus/$t"
	[ -x "$exe" ] || { echo "fuzz_$t: not built"; fail=1; continue; }
	[ -d "$seeds" ] && [ -n "$(ls -A "$seeds")" ] || { echo "fuzz_$t: no seed corpus in $seeds"; fail=1; continue; }
	# A copy: libFuzzer adds what it finds to the first corpus directory.
	mkdir -p "$tmp/corpus-$t" "$tmp/art-$t"
	cp "$seeds"/* "$tmp/corpus-$t/"
	dict=()
	[ -f "$src/tests/fuzz-corpus/$t.dict" ] && dict=(-dict="$src/tests/fuzz-corpus/$t.dict")
	if (cd "$tmp" && "$exe" -max_total_time="$secs" -max_len=16384 -timeout=10 -rss_limit_mb=2048 \
		"${dict[@]}" -artifact_prefix="$tmp/art-$t/" "$tmp/corpus-$t" >"$tmp/fuzz-$t.log" 2>&1); then
		echo "fuzz_$t: $(grep -E '^Done [0-9]+ runs' "$tmp/fuzz-$t.log" | tail -1) ($(ls "$seeds" | wc -l) seeds)"
	else
		tail -60 "$tmp/fuzz-$t.log"
		echo "fuzz_$t failed; the input (base64):"
		for f in "$tmp/art-$t"/*; do [ -e "$f" ] && { echo "$f"; base64 "$f"; }; done
		fail=1
	fi
done
exit $fail

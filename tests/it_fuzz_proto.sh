#!/bin/bash
# Build the proto libFuzzer target with clang in a throw-away build tree and
# run it briefly over the committed seed corpus; any crash, leak or sanitizer
# report fails the test. Longer runs by hand: see docs/protocol.md.
set -euo pipefail
src=${VPMU_SOURCE_DIR:-$(cd "$(dirname "$0")/.." && pwd)}
secs=${VPMU_FUZZ_SECONDS:-20}
command -v clang >/dev/null || { echo "clang not found: skipping"; exit 77; }
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
cmake -S "$src" -B "$tmp/build" -DVPMU_FUZZ=ON -DCMAKE_C_COMPILER=clang >"$tmp/cmake.log" 2>&1 \
	|| { cat "$tmp/cmake.log"; exit 1; }
cmake --build "$tmp/build" --target fuzz_proto -j2 >"$tmp/build.log" 2>&1 \
	|| { tail -50 "$tmp/build.log"; exit 1; }
# Work on a copy: libFuzzer adds new inputs to the first corpus directory.
mkdir "$tmp/corpus"
cp "$src"/tests/fuzz-corpus/proto/* "$tmp/corpus/"
cd "$tmp"
"$tmp/build/fuzz_proto" -max_total_time="$secs" -max_len=8192 -timeout=10 \
	-artifact_prefix="$tmp/" "$tmp/corpus" >"$tmp/fuzz.log" 2>&1 || {
	tail -60 "$tmp/fuzz.log"
	echo "fuzz_proto failed; crashing input (base64):"
	for f in "$tmp"/crash-* "$tmp"/leak-* "$tmp"/timeout-*; do [ -e "$f" ] && base64 "$f"; done
	exit 1
}
grep -E "^#[0-9]+.*DONE|Done [0-9]+ runs" "$tmp/fuzz.log" | tail -1
exit 0

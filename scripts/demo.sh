#!/usr/bin/env bash
# vpmud's main job on its embedded defaults. Grows with the daemon.
set -euo pipefail
b=${1:-build}
echo "== vpmud --print-pmu (this host)"
"$b/vpmud" --print-pmu
echo
echo "== vpmud --pmu icelake-8360y --print-pmu (built-in model, simulated)"
"$b/vpmud" --pmu icelake-8360y --print-pmu
echo
echo "== vpmud --pmu icelake-8360y --print-guest-pmu (what a KVM guest sees)"
"$b/vpmud" --pmu icelake-8360y --print-guest-pmu

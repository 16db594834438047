#!/usr/bin/env bash
# Admission, deadlines, back-pressure and descriptor exhaustion of vpmud's
# socket door: see it_admission.py.
exec python3 "$(dirname "$0")/it_admission.py" "$@"

#!/usr/bin/env bash
# vpmud's structured journal fields and MESSAGE_IDs over the native
# protocol, its stderr lines elsewhere, and the journal catalog: see
# it_journal.py.
exec python3 "$(dirname "$0")/it_journal.py" "$@"

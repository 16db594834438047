#!/usr/bin/env bash
# Issue 14, the files vpmud reads (its config, its state directory), against
# the real daemon: nothing there is waited on, what is not a regular file is
# refused by path and type, a failed reload keeps every setting, raw bytes
# never reach the log, and a restore keeps every byte it cannot use.
exec python3 "$(dirname "$0")/it_files.py"

#!/usr/bin/env bash
# The real vpmud over its socket: see it_daemon.py.
exec python3 "$(dirname "$0")/it_daemon.py"

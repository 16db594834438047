#!/usr/bin/env bash
# The real vpmud at the limits of what one client may ask: see it_daemon.py
# (test_limits_*, test_many_leases).
exec python3 "$(dirname "$0")/it_daemon.py" limits

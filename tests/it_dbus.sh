#!/usr/bin/env bash
# The real vpmud on a private bus with the shipped policy: see it_dbus.py.
# Debian's python3-dbus and python3-dbusmock live in the system python.
exec /usr/bin/python3 "$(dirname "$0")/it_dbus.py"

#!/usr/bin/env bash
# The metrics file for node_exporter, end to end (promtool, a real
# prometheus-node-exporter): see it_metrics.py.
exec python3 "$(dirname "$0")/it_metrics.py" "$@"

#!/bin/sh
# A KILL_ROUTE / KILL_RUN_CMD that fails: fail.sh ADDRESS MARKER_FILE
# Appends ADDRESS to MARKER_FILE (so the test can see that it ran), exits 3.
echo "${1:-}" >> "${2:-/dev/null}"
exit 3

#!/bin/sh
# A KILL_RUN_CMD for the system tests: record.sh FILE ARGS...
# Appends ARGS (one line) to FILE so the test can see how it was called; exits 0.
f="${1:?usage: record.sh FILE ARGS...}"
shift
echo "$*" >> "$f"

#!/usr/bin/env bash
# Stop the test sshds started by sshd-up.sh (keys and configs are kept, so the next
# sshd-up.sh is quick and clients' known_hosts stay valid).
set -uo pipefail

RUND=/run/hpcjobs-test
for name in login bastion; do
    pidf="$RUND/sshd-$name.pid"
    [ -s "$pidf" ] || continue
    pid=$(cat "$pidf")
    if kill -0 "$pid" 2>/dev/null; then
        kill "$pid"
        for _ in $(seq 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
    fi
    rm -f "$pidf"
done
exit 0

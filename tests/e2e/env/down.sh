#!/usr/bin/env bash
# Stop everything up.sh started (by recorded PID) and remove the /etc/hosts block.
#   down.sh WORKDIR [--purge]     --purge also deletes WORKDIR (the cached 256 MiB layout included)
set -uo pipefail
[ $# -ge 1 ] || { echo "usage: $0 WORKDIR [--purge]" >&2; exit 2; }
W=$1
if [ -d "$W/run" ]; then
  pids=()
  for f in "$W"/run/*.pid; do
    [ -e "$f" ] || continue
    pid=$(cat "$f"); rm -f "$f"
    [ -n "$pid" ] && kill -TERM "$pid" 2>/dev/null && pids+=("$pid")
  done
  for i in $(seq 1 50); do
    left=()
    for pid in "${pids[@]}"; do kill -0 "$pid" 2>/dev/null && left+=("$pid"); done
    [ ${#left[@]} -eq 0 ] && break
    sleep 0.1
  done
  for pid in "${left[@]}"; do kill -KILL "$pid" 2>/dev/null; done
fi
if grep -q '^# BEGIN registry-proxy-e2e$' /etc/hosts; then
  rest=$(sed '/^# BEGIN registry-proxy-e2e$/,/^# END registry-proxy-e2e$/d' /etc/hosts)
  printf '%s\n' "$rest" > /etc/hosts
fi
if [ "${2:-}" = --purge ]; then rm -rf "$W"; fi
echo "e2e-env: down"

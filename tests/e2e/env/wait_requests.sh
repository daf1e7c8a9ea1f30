#!/usr/bin/env bash
# Wait until count_requests.sh LOGFILE PATTERN [STATUS] reaches at least N (default timeout 5 s).
#   wait_requests.sh LOGFILE PATTERN N [TIMEOUT_S] [STATUS]   -> prints the count; exit 1 on timeout
set -uo pipefail
here=$(dirname "${BASH_SOURCE[0]}")
[ $# -ge 3 ] || { echo "usage: $0 LOGFILE PATTERN N [TIMEOUT_S] [STATUS]" >&2; exit 2; }
deadline=$(( $(date +%s%N) + ${4:-5} * 1000000000 ))
while :; do
  n=$("$here/count_requests.sh" "$1" "$2" "${5:-}")
  [ "$n" -ge "$3" ] && { echo "$n"; exit 0; }
  [ "$(date +%s%N)" -ge "$deadline" ] && { echo "$n"; exit 1; }
  sleep 0.05
done

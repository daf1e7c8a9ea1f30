#!/usr/bin/env bash
# Count access-log lines of a distribution registry log whose request line contains PATTERN.
#   count_requests.sh LOGFILE PATTERN [STATUS]
#     PATTERN: fixed string matched inside the request line, e.g. 'GET /v2/test/big/blobs/' or 'HEAD /v2/test/small/manifests/v1'
#     STATUS:  optional status regex, e.g. 200 or '2..'
# Access-log lines look like:  127.0.0.1 - alice [28/Nov/2026:02:35:55 +0000] "GET /v2/ HTTP/1.1" 200 2 "" "curl/7.88.1"
# (the line is written after the response ends: poll, or use wait_requests.sh, when expecting an increase)
set -euo pipefail
[ $# -ge 2 ] || { echo "usage: $0 LOGFILE PATTERN [STATUS]" >&2; exit 2; }
[ -e "$1" ] || { echo 0; exit 0; }
awk -v pat="$2" -v st="${3:-}" '
  /^[^ ]+ [^ ]+ [^ ]+ \[[^]]*\] "/ {
    i = index($0, "\""); rest = substr($0, i + 1); j = index(rest, "\"")
    req = substr(rest, 1, j - 1); split(substr(rest, j + 2), after, " ")
    if (index(req, pat) && (st == "" || after[1] ~ ("^(" st ")$"))) n++
  }
  END { print n + 0 }' "$1"

# Sourced by the *_pull.sh wrappers.  Usage of every wrapper:
#   WRAPPER PROXY_URL CA_DIR IMAGE [extra client args...]
#     PROXY_URL  http://127.0.0.1:PORT (set as HTTPS_PROXY/HTTP_PROXY on the process that fetches),
#                or '-' / '' for a direct pull (no proxy)
#     CA_DIR     directory of PEM roots added to SSL_CERT_DIR (/etc/ssl/certs:CA_DIR). With a proxy it
#                should hold the proxy CA as proxy-ca.pem; if that file is missing it is fetched from
#                PROXY_URL/ca.crt. For direct pulls pass WORKDIR/pki (holds upstream-ca.pem).
#     IMAGE      e.g. registry.test/test/small:v1, docker.io/library/small:v1
# Env: E2E_KEEP_STATE=1 keeps the client's temporary state dir (printed on stderr).
#      E2E_STATE_DIR=DIR uses (and keeps) DIR as the client's state dir, e.g. to pull twice into one store.
set -euo pipefail
[ $# -ge 3 ] || { echo "usage: $0 PROXY_URL CA_DIR IMAGE [client args...]" >&2; exit 2; }
PROXY_URL=$1 CA_DIR=$(cd "$2" && pwd) IMAGE=$3
shift 3
EXTRA=("$@")
[ "$PROXY_URL" = - ] && PROXY_URL=
if [ -n "$PROXY_URL" ] && [ ! -s "$CA_DIR/proxy-ca.pem" ]; then
  curl -fsS --noproxy '*' "$PROXY_URL/ca.crt" -o "$CA_DIR/proxy-ca.pem.tmp" && mv "$CA_DIR/proxy-ca.pem.tmp" "$CA_DIR/proxy-ca.pem"
fi
unset http_proxy https_proxy HTTP_PROXY HTTPS_PROXY all_proxy ALL_PROXY no_proxy NO_PROXY
# env assignments for the process that fetches: proxy and trust
if [ -n "$PROXY_URL" ]; then
  CLIENT_ENV=(HTTPS_PROXY="$PROXY_URL" HTTP_PROXY="$PROXY_URL" https_proxy="$PROXY_URL" http_proxy="$PROXY_URL"
              NO_PROXY= no_proxy= SSL_CERT_DIR="/etc/ssl/certs:$CA_DIR")
else
  CLIENT_ENV=(SSL_CERT_DIR="/etc/ssl/certs:$CA_DIR")
fi
# client_env CMD... : run CMD with CLIENT_ENV (env execs CMD, so `client_env daemon &` gives $! = daemon's PID)
client_env() { env "${CLIENT_ENV[@]}" "$@"; }
if [ -n "${E2E_STATE_DIR:-}" ]; then
  STATE=$E2E_STATE_DIR; mkdir -p "$STATE"; KEEP=1
else
  STATE=$(mktemp -d "${TMPDIR:-/tmp}/e2e-$(basename "$0" .sh).XXXXXX"); KEEP=${E2E_KEEP_STATE:-0}
fi
DAEMON_PID=
cleanup() {
  local rc=$?
  if [ -n "$DAEMON_PID" ] && kill -0 "$DAEMON_PID" 2>/dev/null; then
    kill -TERM "$DAEMON_PID" 2>/dev/null
    for _ in $(seq 1 100); do kill -0 "$DAEMON_PID" 2>/dev/null || break; sleep 0.1; done
    kill -KILL "$DAEMON_PID" 2>/dev/null || true
  fi
  extra_cleanup 2>/dev/null || true
  # dockerd leaves its data-root bind-mounted onto itself
  awk -v d="$STATE" 'index($2, d) == 1 {print $2}' /proc/mounts | sort -r | while read -r m; do umount -l "$m" 2>/dev/null; done
  if [ "$KEEP" = 1 ]; then echo "state kept in $STATE" >&2; else rm -rf "$STATE" || true; fi
  exit $rc
}
extra_cleanup() { :; }
trap cleanup EXIT
# fully qualified name for clients that do not normalize (ctr): small:v1 -> docker.io/library/small:v1
qualify() {
  local first=${1%%/*}
  if [[ "$1" != */* ]]; then echo "docker.io/library/$1"
  elif [[ "$first" != *.* && "$first" != *:* && "$first" != localhost ]]; then echo "docker.io/$1"
  else echo "$1"; fi
}
# wait_for SECONDS CMD... : poll CMD until it succeeds
wait_for() {
  local n=$(( $1 * 10 )); shift
  for _ in $(seq 1 "$n"); do "$@" >/dev/null 2>&1 && return 0; kill -0 "$DAEMON_PID" 2>/dev/null || return 1; sleep 0.1; done
  return 1
}

#!/usr/bin/env bash
# A stand-in intercepting proxy (squid-openssl, ssl-bump) to validate the client wrappers without
# registry-proxy, and a reference peer for benchmarks. Needs up.sh to have run (uses its PKI and hosts).
#   squid_standin.sh up   WORKDIR [PORT=3129]  -> proxy at http://127.0.0.1:PORT, its CA in WORKDIR/squid/cadir/proxy-ca.pem
#   squid_standin.sh down WORKDIR
# Caches (memory only). Gotchas: runs as user `proxy`; reads /etc/hosts only at start; does not cache
# responses to requests carrying Authorization.
set -euo pipefail
cmd=${1:?usage: $0 up|down WORKDIR [PORT]}; W=$(cd "${2:?WORKDIR}" && pwd); PORT=${3:-3129}
S=$W/squid
if [ "$cmd" = down ]; then
  pid=$(cat "$S/run.pid" 2>/dev/null || true)
  if [ -n "$pid" ] && kill -TERM "$pid" 2>/dev/null; then
    for _ in $(seq 1 100); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
    kill -KILL "$pid" 2>/dev/null || true
  fi
  rm -f "$S/run.pid"; exit 0
fi
command -v squid >/dev/null && [ -x /usr/lib/squid/security_file_certgen ] || {
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq squid-openssl >/dev/null; }
pid=$(cat "$S/run.pid" 2>/dev/null || true)
if [ -n "$pid" ] && kill -0 "$pid" 2>/dev/null; then exit 0; fi
mkdir -p "$S/cadir"
if [ ! -s "$S/cadir/proxy-ca.pem" ]; then
  openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes -days 3650 \
    -subj "/CN=squid stand-in proxy CA" -keyout "$S/ca.key" -out "$S/cadir/proxy-ca.pem" \
    -addext "basicConstraints=critical,CA:TRUE" -addext "keyUsage=critical,keyCertSign,cRLSign" 2>/dev/null
fi
rm -rf "$S/ssl_db"
/usr/lib/squid/security_file_certgen -c -s "$S/ssl_db" -M 16MB >/dev/null
cat > "$S/squid.conf" <<CONF
http_port 127.0.0.1:$PORT ssl-bump generate-host-certificates=on dynamic_cert_mem_cache_size=8MB tls-cert=$S/cadir/proxy-ca.pem tls-key=$S/ca.key
sslcrtd_program /usr/lib/squid/security_file_certgen -s $S/ssl_db -M 16MB
sslcrtd_children 2 startup=1 idle=1
acl step1 at_step SslBump1
ssl_bump peek step1
ssl_bump bump all
tls_outgoing_options cafile=$W/pki/upstream-ca.pem
http_access allow all
cache_mem 512 MB
maximum_object_size_in_memory 300 MB
maximum_object_size 300 MB
pid_filename $S/squid.pid
access_log stdio:$W/logs/squid-access.log
cache_log $W/logs/squid-cache.log
coredump_dir $S
cache_effective_user proxy
shutdown_lifetime 1 seconds
CONF
chown -R proxy:proxy "$S"; touch "$W/logs/squid-access.log" "$W/logs/squid-cache.log"
chown proxy:proxy "$W/logs/squid-access.log" "$W/logs/squid-cache.log"
squid -N -f "$S/squid.conf" >>"$W/logs/squid-cache.log" 2>&1 &
echo $! > "$S/run.pid"
for _ in $(seq 1 100); do
  curl -s -o /dev/null --max-time 1 "http://127.0.0.1:$PORT/" && exit 0
  kill -0 "$(cat "$S/run.pid")" 2>/dev/null || break; sleep 0.1
done
echo "squid did not start; see $W/logs/squid-cache.log" >&2; tail -5 "$W/logs/squid-cache.log" >&2; exit 1

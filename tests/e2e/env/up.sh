#!/usr/bin/env bash
# Start the real-peer environment for the e2e tests (idempotent; a re-run only starts what is down).
#   up.sh WORKDIR        env: E2E_SKIP_APT=1 skips the package check
# Afterwards: source WORKDIR/env.sh and WORKDIR/images.env. Stop with down.sh WORKDIR.
set -euo pipefail
HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
[ $# -ge 1 ] || { echo "usage: $0 WORKDIR" >&2; exit 2; }
mkdir -p "$1"
W=$(cd "$1" && pwd)
T0=$(date +%s)
log() { printf '[e2e-env +%ss] %s\n' "$(( $(date +%s) - T0 ))" "$*"; }
# Never route our own set-up traffic through a proxy inherited from the caller.
unset http_proxy https_proxy HTTP_PROXY HTTPS_PROXY all_proxy ALL_PROXY

# ---------------------------------------------------------------- 1. packages
if [ "${E2E_SKIP_APT:-0}" != 1 ]; then
  need=()
  for pair in docker-registry:docker-registry htpasswd:apache2-utils skopeo:skopeo containerd:containerd \
              ctr:containerd podman:podman dockerd:docker.io curl:curl openssl:openssl jq:jq; do
    command -v "${pair%%:*}" >/dev/null 2>&1 || need+=("${pair#*:}")
  done
  if ! python3 -c 'import cryptography' 2>/dev/null && ! /usr/bin/python3 -c 'import cryptography' 2>/dev/null; then
    need+=(python3-cryptography)
  fi
  if [ ${#need[@]} -gt 0 ]; then
    mapfile -t need < <(printf '%s\n' "${need[@]}" | sort -u)
    log "installing: ${need[*]}"
    # Keep package scripts from starting services (dockerd, containerd) on the host.
    rcd_created=0
    if [ ! -e /usr/sbin/policy-rc.d ]; then printf '#!/bin/sh\nexit 101\n' > /usr/sbin/policy-rc.d; chmod +x /usr/sbin/policy-rc.d; rcd_created=1; fi
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq
    apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
    [ $rcd_created = 1 ] && rm -f /usr/sbin/policy-rc.d
  fi
fi
# resolve the real interpreter (not a pyenv shim) so the recorded PID is python's
PY=$(python3 -c 'import cryptography, sys; print(sys.executable)' 2>/dev/null || echo /usr/bin/python3)

mkdir -p "$W"/{pki/ca,pki/certs,pki/token,conf,logs,run,storage}

# ---------------------------------------------------------------- 2. PKI
HOSTS=(registry.test basic.test token.test auth.test registry-1.docker.io auth.docker.io second.test)
P=$W/pki
if [ ! -s "$P/upstream-ca.pem" ]; then
  log "creating test CA"
  openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes -days 3650 \
    -subj "/CN=registry-proxy e2e test CA" -keyout "$P/ca/ca.key" -out "$P/ca/ca.pem.tmp" \
    -addext "basicConstraints=critical,CA:TRUE" -addext "keyUsage=critical,keyCertSign,cRLSign" 2>/dev/null
  mv "$P/ca/ca.pem.tmp" "$P/upstream-ca.pem"
  rm -f "$P"/certs/*
fi
for h in "${HOSTS[@]}"; do
  [ -s "$P/certs/$h.crt" ] && continue
  openssl req -new -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes -subj "/CN=$h" \
    -keyout "$P/certs/$h.key" -out "$P/certs/$h.csr" 2>/dev/null
  printf 'subjectAltName=DNS:%s\nbasicConstraints=critical,CA:FALSE\nkeyUsage=critical,digitalSignature\nextendedKeyUsage=serverAuth\nsubjectKeyIdentifier=hash\nauthorityKeyIdentifier=keyid\n' "$h" > "$P/certs/$h.ext"
  openssl x509 -req -in "$P/certs/$h.csr" -CA "$P/upstream-ca.pem" -CAkey "$P/ca/ca.key" -days 3650 \
    -set_serial "0x$(openssl rand -hex 8)" -extfile "$P/certs/$h.ext" -out "$P/certs/$h.crt.tmp" 2>/dev/null
  mv "$P/certs/$h.crt.tmp" "$P/certs/$h.crt"
  rm -f "$P/certs/$h.csr" "$P/certs/$h.ext"
done
if [ ! -s "$P/token/signing.crt" ]; then
  log "creating token signing key"
  openssl req -x509 -newkey rsa:2048 -nodes -days 3650 -subj "/CN=registry-proxy e2e token signer" \
    -keyout "$P/token/signing.key" -out "$P/token/signing.crt.tmp" 2>/dev/null
  mv "$P/token/signing.crt.tmp" "$P/token/signing.crt"
fi
[ -s "$W/conf/htpasswd" ] || htpasswd -Bbc "$W/conf/htpasswd" alice s3cret-basic 2>/dev/null

# ---------------------------------------------------------------- 3. /etc/hosts
BEGIN='# BEGIN registry-proxy-e2e'; END='# END registry-proxy-e2e'
block="$BEGIN
127.0.0.2 registry.test
127.0.0.3 basic.test
127.0.0.4 token.test
127.0.0.5 auth.test
127.0.0.6 registry-1.docker.io
127.0.0.7 auth.docker.io
127.0.0.8 second.test
$END"
current=$(sed -n "/^$BEGIN\$/,/^$END\$/p" /etc/hosts)
if [ "$current" != "$block" ]; then
  rest=$(sed "/^$BEGIN\$/,/^$END\$/d" /etc/hosts)
  # rewrite in place (no rename): /etc/hosts may be a bind mount
  printf '%s\n%s\n' "$rest" "$block" > /etc/hosts
  log "/etc/hosts updated"
fi

# ---------------------------------------------------------------- helpers
declare -A CMDS RESTARTED
alive() { # NAME -> 0 if the process recorded in run/NAME.pid runs (not a zombie)
  local pid st; pid=$(cat "$W/run/$1.pid" 2>/dev/null) || return 1
  [ -n "$pid" ] && kill -0 "$pid" 2>/dev/null || return 1
  st=$(sed 's/^.*) //' "/proc/$pid/stat" 2>/dev/null | cut -c1); [ -n "$st" ] && [ "$st" != Z ] && [ "$st" != X ]
}
start() { # NAME CMD... : start in the background (own session) unless running; log to logs/NAME.log
  local name=$1; shift
  CMDS[$name]=$(printf '%q ' "$@")
  alive "$name" && return 0
  setsid "$@" >>"$W/logs/$name.log" 2>&1 < /dev/null &
  echo $! > "$W/run/$name.pid"
  log "started $name (pid $!)"
}
wait_http() { # NAME URL : wait until URL answers with any HTTP status (restarts NAME once if it died)
  local i code
  for i in $(seq 1 100); do
    code=$(curl -s --noproxy '*' --cacert "$P/upstream-ca.pem" -o /dev/null -w '%{http_code}' --max-time 2 "$2" || true)
    [ "$code" != 000 ] && return 0
    if ! alive "$1"; then
      if [ -z "${RESTARTED[$1]:-}" ]; then RESTARTED[$1]=1; eval "start $1 ${CMDS[$1]}"; continue; fi
      echo "e2e-env: $1 died; see $W/logs/$1.log" >&2; tail -5 "$W/logs/$1.log" >&2; exit 1
    fi
    sleep 0.1
  done
  echo "e2e-env: $1 does not answer at $2" >&2; exit 1
}

# ---------------------------------------------------------------- one environment per machine
# An address held by a process this WORKDIR did not start (an environment in another WORKDIR) would
# make this one silently use that environment's registries, logs and storage: refuse instead.
for spec in token:127.0.0.5:443 token:127.0.0.7:443 push:127.0.0.1:5000 registry.test:127.0.0.2:443 \
            second.test:127.0.0.8:443 basic.test:127.0.0.3:443 token.test:127.0.0.4:443 \
            registry-1.docker.io:127.0.0.6:443; do
  name=${spec%%:*} hp=${spec#*:}
  alive "$name" && continue
  if (exec 3<>"/dev/tcp/${hp%:*}/${hp#*:}") 2>/dev/null; then
    echo "e2e-env: $hp ($name) is already served by a process not started for $W — another e2e" \
         "environment runs with a different WORKDIR (stop it with its down.sh, or use its WORKDIR):" >&2
    pgrep -a -f 'docker-registry serve|token_server.py' >&2 || true
    exit 1
  fi
done

# ---------------------------------------------------------------- 5. token server
# A token server started from an older token_server.py (other users, other policy) is restarted.
token_sig=$(cat "$HERE/token_server.py" | sha256sum | cut -d' ' -f1)
if alive token && [ "$(cat "$W/run/token.sig" 2>/dev/null)" != "$token_sig" ]; then
  pid=$(cat "$W/run/token.pid"); kill -TERM "$pid" 2>/dev/null
  for _ in $(seq 1 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
  kill -KILL "$pid" 2>/dev/null; rm -f "$W/run/token.pid"
  log "token_server.py changed: restarting the token server"
fi
echo "$token_sig" > "$W/run/token.sig"
start token "$PY" "$HERE/token_server.py" --cert "$P/token/signing.crt" --key "$P/token/signing.key" \
  --log "$W/logs/token.log" \
  --listen "127.0.0.5:443:$P/certs/auth.test.crt:$P/certs/auth.test.key" \
  --listen "127.0.0.7:443:$P/certs/auth.docker.io.crt:$P/certs/auth.docker.io.key"

# ---------------------------------------------------------------- 4. registries
registry_conf() { # NAME ADDR [TLSHOST] [AUTH-YAML]
  local name=$1 addr=$2 host=${3:-} auth=${4:-}
  {
    cat <<EOF
version: 0.1
log:
  level: info
  formatter: text
  accesslog:
    disabled: false
storage:
  filesystem:
    rootdirectory: $W/storage
  delete:
    enabled: true
  redirect:
    disable: true
  maintenance:
    uploadpurging:
      enabled: false
    readonly:
      enabled: false
http:
  addr: $addr
  secret: registry-proxy-e2e-shared-secret
  headers:
    X-Content-Type-Options: [nosniff]
EOF
    if [ -n "$host" ]; then
      printf '  tls:\n    certificate: %s\n    key: %s\n' "$P/certs/$host.crt" "$P/certs/$host.key"
    fi
    if [ -n "$auth" ]; then printf '%s\n' "$auth"; fi
  } > "$W/conf/$name.yml"
}
token_auth() { # REALM SERVICE
  printf 'auth:\n  token:\n    realm: %s\n    service: %s\n    issuer: registry-proxy-e2e-token-server\n    rootcertbundle: %s\n' \
    "$1" "$2" "$P/token/signing.crt"
}
registry_conf push 127.0.0.1:5000
registry_conf registry.test 127.0.0.2:443 registry.test
registry_conf second.test 127.0.0.8:443 second.test
registry_conf basic.test 127.0.0.3:443 basic.test \
  "$(printf 'auth:\n  htpasswd:\n    realm: basic.test\n    path: %s' "$W/conf/htpasswd")"
registry_conf token.test 127.0.0.4:443 token.test "$(token_auth https://auth.test/token token.test)"
registry_conf registry-1.docker.io 127.0.0.6:443 registry-1.docker.io \
  "$(token_auth https://auth.docker.io/token registry.docker.io)"

for n in push registry.test second.test basic.test token.test registry-1.docker.io; do
  start "$n" docker-registry serve "$W/conf/$n.yml"
done
wait_http push http://127.0.0.1:5000/v2/
for n in registry.test second.test basic.test token.test registry-1.docker.io; do
  wait_http "$n" "https://$n/v2/"
done
wait_http token https://auth.test/healthz
wait_http token https://auth.docker.io/healthz

# ---------------------------------------------------------------- 6. images
"$PY" "$HERE/seed.py" "$W"

# ---------------------------------------------------------------- env for the tests
cat > "$W/env.sh" <<EOF
# generated by tests/e2e/env/up.sh
export E2E_WORKDIR='$W'
export E2E_ENV_DIR='$HERE'
export E2E_PKI='$P'
export E2E_UPSTREAM_CA='$P/upstream-ca.pem'   # UPSTREAM_CA_FILE for the proxy
export E2E_SSL_CERT_DIR='/etc/ssl/certs:$P'   # SSL_CERT_DIR for Go clients talking to the registries directly
export E2E_LOGS='$W/logs'
export E2E_PUSH='127.0.0.1:5000'
export E2E_BASIC_USER=alice E2E_BASIC_PASSWORD=s3cret-basic
export E2E_TOKEN_USER=bob E2E_TOKEN_PASSWORD=s3cret-token
export E2E_TOKEN_NOPULL_USER=dave E2E_TOKEN_NOPULL_PASSWORD=s3cret-dave   # valid on token.test, granted nothing
export E2E_HUB_USER=carol E2E_HUB_PASSWORD=s3cret-hub
EOF
log "ready: source $W/env.sh $W/images.env"

#!/usr/bin/env bash
# Check the environment from up.sh without registry-proxy: every registry directly, auth accepted and
# refused, token server JWTs, request counting, each client wrapper directly and through the squid
# stand-in (skip that part with SELFTEST_NO_SQUID=1).   selftest.sh WORKDIR   (~15 s)
set -uo pipefail
HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
W=$(cd "${1:?usage: $0 WORKDIR}" && pwd)
source "$W/env.sh"; source "$W/images.env"
export SSL_CERT_DIR=$E2E_SSL_CERT_DIR
fails=0
ok()  { echo "ok   $*"; }
bad() { echo "FAIL $*"; fails=$((fails + 1)); }
check() { local d=$1; shift; if "$@" >/dev/null 2>&1; then ok "$d"; else bad "$d"; fi; }
refuse() { local d=$1; shift; if "$@" >/dev/null 2>&1; then bad "$d (was accepted)"; else ok "$d"; fi; }
S="skopeo --insecure-policy inspect --raw"
for r in registry.test second.test registry-1.docker.io; do check "$r anonymous inspect" $S "docker://$r/$SMALL_REF"; done
check "docker.io/small:v1 (emulated Hub, token)" $S docker://docker.io/small:v1
refuse "basic.test without creds"   $S "docker://basic.test/$SECRET_REF"
refuse "basic.test wrong password"  $S --creds alice:nope "docker://basic.test/$SECRET_REF"
check  "basic.test alice"           $S --creds "$E2E_BASIC_USER:$E2E_BASIC_PASSWORD" "docker://basic.test/$SECRET_REF"
refuse "token.test without creds"   $S "docker://token.test/$SECRET_REF"
refuse "token.test wrong password"  $S --creds bob:nope "docker://token.test/$SECRET_REF"
refuse "token.test dave (valid user, no access)" $S --creds "$E2E_TOKEN_NOPULL_USER:$E2E_TOKEN_NOPULL_PASSWORD" "docker://token.test/$SECRET_REF"
check  "token.test bob (JWT accepted)" $S --creds "$E2E_TOKEN_USER:$E2E_TOKEN_PASSWORD" "docker://token.test/$SECRET_REF"
[ "$($S "docker://registry.test/$MULTI_REF" | jq -r '.manifests | length')" = 2 ] && ok "multi is a 2-platform index" || bad "multi index"
[ "$($S "docker://registry.test/$SCHEMA2_REF" | jq -r .mediaType)" = application/vnd.docker.distribution.manifest.v2+json ] \
  && ok "schema2 media type" || bad "schema2 media type"
b=$("$HERE/count_requests.sh" "$E2E_LOGS/registry.test.log" "GET /v2/$BIG_REPO/blobs/$BIG_LAYER0_DIGEST")
out=$(mktemp -d)
check "skopeo copy big direct" skopeo --insecure-policy copy -q "docker://registry.test/$BIG_REF" "dir:$out"
rm -rf "$out"
n=$("$HERE/wait_requests.sh" "$E2E_LOGS/registry.test.log" "GET /v2/$BIG_REPO/blobs/$BIG_LAYER0_DIGEST" $((b + 1)))
[ "$n" = $((b + 1)) ] && ok "big layer GET counted once in registry.test.log" || bad "count big GETs ($b -> $n)"
for w in skopeo ctr podman dockerd; do
  check "${w}_pull.sh direct $SMALL_REF" "$HERE/${w}_pull.sh" - "$E2E_PKI" "registry.test/$SMALL_REF"
done
if [ "${SELFTEST_NO_SQUID:-0}" != 1 ]; then
  "$HERE/squid_standin.sh" up "$W" 3129
  for w in skopeo ctr podman dockerd; do
    c=$(wc -l < "$E2E_LOGS/squid-access.log")
    check "${w}_pull.sh via squid $MULTI_REF" "$HERE/${w}_pull.sh" http://127.0.0.1:3129 "$W/squid/cadir" "registry.test/$MULTI_REF"
    [ "$(wc -l < "$E2E_LOGS/squid-access.log")" -gt "$c" ] && ok "$w went through the proxy" || bad "$w bypassed the proxy"
  done
  "$HERE/squid_standin.sh" down "$W"
fi
echo "selftest: $fails failure(s)"; [ $fails = 0 ]

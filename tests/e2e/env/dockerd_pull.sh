#!/usr/bin/env bash
# Start a private dockerd (vfs, no networking, own data/exec root and socket) with the proxy environment
# on dockerd (the daemon fetches), then `docker pull`. See client_common.sh for the arguments.
# Extra args go to `docker pull` (e.g. --platform linux/arm64).
# DOCKERD_MIRRORS="http://127.0.0.1:PORT ..." sets registry-mirrors (Docker Hub images only, no ?ns=).
# DOCKER_CREDS=user:pass runs `docker login` for the image's registry first (client-side credentials).
# DOCKER_AUTH=user:pass writes the same credentials into the CLI's config.json without logging in
#   (`docker login` checks them against the registry itself, never a mirror); the CLI sends them with
#   the pull and dockerd offers them to every endpoint of that registry, registry-mirrors included.
source "$(dirname "${BASH_SOURCE[0]}")/client_common.sh"
mkdir -p "$STATE/data" "$STATE/exec" "$STATE/cli"
SOCK=$STATE/docker.sock
mirrors=$(for m in ${DOCKERD_MIRRORS:-}; do printf '"%s",' "$m"; done)
cat > "$STATE/daemon.json" <<JSON
{
  "data-root": "$STATE/data", "exec-root": "$STATE/exec", "pidfile": "$STATE/docker.pid",
  "hosts": ["unix://$SOCK"], "storage-driver": "vfs",
  "iptables": false, "ip6tables": false, "bridge": "none", "ip-forward": false, "ip-masq": false,
  "registry-mirrors": [${mirrors%,}]
}
JSON
env "${CLIENT_ENV[@]}" dockerd --config-file "$STATE/daemon.json" >"$STATE/dockerd.log" 2>&1 &
DAEMON_PID=$!
extra_cleanup() { # dockerd stops its managed containerd; make sure nothing is left if it was killed
  local p; p=$(cat "$STATE/exec/containerd/containerd.pid" 2>/dev/null) && kill -KILL "$p" 2>/dev/null; true
}
export DOCKER_CONFIG=$STATE/cli DOCKER_HOST=unix://$SOCK
wait_for 30 docker version || { echo "dockerd did not start:" >&2; tail -20 "$STATE/dockerd.log" >&2; exit 1; }
if [ -n "${DOCKER_CREDS:-}" ]; then
  reg=${IMAGE%%/*}; [[ "$IMAGE" == */* && ( "$reg" == *.* || "$reg" == *:* ) ]] || reg=docker.io
  echo "${DOCKER_CREDS#*:}" | docker login -u "${DOCKER_CREDS%%:*}" --password-stdin "$reg" >/dev/null 2>&1
fi
if [ -n "${DOCKER_AUTH:-}" ]; then
  reg=${IMAGE%%/*}; [[ "$IMAGE" == */* && ( "$reg" == *.* || "$reg" == *:* ) ]] || reg=https://index.docker.io/v1/
  printf '{"auths":{"%s":{"auth":"%s"}}}\n' "$reg" "$(printf %s "$DOCKER_AUTH" | base64 -w0)" > "$DOCKER_CONFIG/config.json"
fi
docker pull -q ${EXTRA[@]+"${EXTRA[@]}"} "$IMAGE" || { echo "--- dockerd log:" >&2; tail -20 "$STATE/dockerd.log" >&2; exit 1; }

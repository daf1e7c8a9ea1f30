#!/usr/bin/env bash
# A private dockerd for image tests: own data-root, exec-root, pidfile and unix socket under STATE, vfs
# storage, no iptables and no bridge (containers run with --network host). Never the system's daemon.
#   dockerd.sh up STATE     start it (idempotent), print DOCKER_HOST=unix://STATE/docker.sock
#   dockerd.sh down STATE   stop it by its recorded PID, unmount and remove what it left in STATE
set -euo pipefail
[ $# -eq 2 ] || { echo "usage: $0 up|down STATE" >&2; exit 2; }
cmd=$1
mkdir -p "$2"
S=$(cd "$2" && pwd)
SOCK=$S/docker.sock
pid_of() { cat "$S/$1" 2>/dev/null || true; }
alive() { [ -n "$1" ] && kill -0 "$1" 2>/dev/null; }

case "$cmd" in
up)
  if alive "$(pid_of dockerd.pid)" && DOCKER_HOST=unix://$SOCK docker version >/dev/null 2>&1; then
    echo "DOCKER_HOST=unix://$SOCK"; exit 0
  fi
  command -v dockerd >/dev/null || { echo "dockerd.sh: dockerd is not installed (Debian: docker.io)" >&2; exit 1; }
  mkdir -p "$S/data" "$S/exec"
  cat > "$S/daemon.json" <<JSON
{
  "data-root": "$S/data", "exec-root": "$S/exec", "pidfile": "$S/docker.pid",
  "hosts": ["unix://$SOCK"], "storage-driver": "vfs",
  "iptables": false, "ip6tables": false, "bridge": "none", "ip-forward": false, "ip-masq": false
}
JSON
  unset http_proxy https_proxy HTTP_PROXY HTTPS_PROXY
  dockerd --config-file "$S/daemon.json" >"$S/dockerd.log" 2>&1 &
  echo $! > "$S/dockerd.pid"
  for _ in $(seq 1 300); do
    DOCKER_HOST=unix://$SOCK docker version >/dev/null 2>&1 && { echo "DOCKER_HOST=unix://$SOCK"; exit 0; }
    alive "$(pid_of dockerd.pid)" || break
    sleep 0.1
  done
  echo "dockerd.sh: dockerd did not start; its log:" >&2; tail -20 "$S/dockerd.log" >&2
  "$0" down "$S" >/dev/null 2>&1 || true
  exit 1
  ;;
down)
  pid=$(pid_of dockerd.pid)
  if alive "$pid"; then
    kill -TERM "$pid"
    for _ in $(seq 1 150); do alive "$pid" || break; sleep 0.1; done
    alive "$pid" && kill -KILL "$pid"
  fi
  # dockerd stops its own containerd; make sure nothing is left if dockerd was killed
  cpid=$(cat "$S/exec/containerd/containerd.pid" 2>/dev/null || true)
  alive "$cpid" && kill -KILL "$cpid"
  # dockerd leaves its data-root bind-mounted onto itself
  awk -v d="$S/" 'index($2, d) == 1 {print $2}' /proc/mounts | sort -r | while read -r m; do umount -l "$m" 2>/dev/null || true; done
  rm -rf "$S/data" "$S/exec" "$S/daemon.json" "$S/dockerd.log" "$S/dockerd.pid" "$S/docker.pid" "$SOCK"
  rmdir "$S" 2>/dev/null || true
  ;;
*) echo "usage: $0 up|down STATE" >&2; exit 2 ;;
esac

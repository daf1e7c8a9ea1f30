#!/usr/bin/env bash
# Start a private containerd (own root/state/socket, CRI disabled), then `ctr images pull` with the proxy
# environment on ctr (ctr fetches, not containerd). See client_common.sh for the arguments.
# Extra args go to `ctr images pull`, e.g. --user bob:s3cret-token, --hosts-dir DIR, --all-platforms.
# Unpacks with the `native` snapshotter (override with CONTAINERD_SNAPSHOTTER).
source "$(dirname "${BASH_SOURCE[0]}")/client_common.sh"
mkdir -p "$STATE/root" "$STATE/state"
SOCK=$STATE/containerd.sock
cat > "$STATE/config.toml" <<TOML
version = 2
root = "$STATE/root"
state = "$STATE/state"
disabled_plugins = ["io.containerd.grpc.v1.cri"]
[grpc]
  address = "$SOCK"
[ttrpc]
  address = "$SOCK.ttrpc"
[debug]
  address = ""
[metrics]
  address = ""
TOML
containerd --config "$STATE/config.toml" >"$STATE/containerd.log" 2>&1 &
DAEMON_PID=$!
wait_for 20 ctr --address "$SOCK" version || { echo "containerd did not start:" >&2; tail -20 "$STATE/containerd.log" >&2; exit 1; }
client_env CONTAINERD_SNAPSHOTTER="${CONTAINERD_SNAPSHOTTER:-native}" \
  ctr --address "$SOCK" images pull ${EXTRA[@]+"${EXTRA[@]}"} "$(qualify "$IMAGE")" > "$STATE/ctr.out" 2>&1 \
  || { cat "$STATE/ctr.out" >&2; exit 1; }
tail -3 "$STATE/ctr.out"

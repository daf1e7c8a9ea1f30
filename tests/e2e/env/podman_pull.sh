#!/usr/bin/env bash
# podman pull with vfs storage in a private root (see client_common.sh for the arguments).
# Extra args go to `podman pull`, e.g. --creds bob:s3cret-token.  PODMAN_REGISTRIES_CONF=FILE sets
# CONTAINERS_REGISTRIES_CONF (mirror / path-prefix tests).
source "$(dirname "${BASH_SOURCE[0]}")/client_common.sh"
mkdir -p "$STATE/tmp"
conf=()
[ -n "${PODMAN_REGISTRIES_CONF:-}" ] && conf=(CONTAINERS_REGISTRIES_CONF="$PODMAN_REGISTRIES_CONF")
client_env ${conf[@]+"${conf[@]}"} TMPDIR="$STATE/tmp" podman --storage-driver vfs --root "$STATE/root" \
  --runroot "$STATE/runroot" --cgroup-manager cgroupfs --events-backend file --tmpdir "$STATE/tmp" \
  pull -q ${EXTRA[@]+"${EXTRA[@]}"} "$IMAGE"

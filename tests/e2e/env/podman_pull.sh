#!/usr/bin/env bash
# podman pull with vfs storage in a private root (see client_common.sh for the arguments).
# Extra args go to `podman pull`, e.g. --creds bob:s3cret-token.  PODMAN_REGISTRIES_CONF=FILE sets
# CONTAINERS_REGISTRIES_CONF (mirror / path-prefix tests).
# PODMAN_LOGIN="HOST user:pass" runs `podman login HOST` (TLS verification off, so HOST may be the plain
# HTTP mirror address) into the state's auth file first; the pull uses that file. containers/image
# sends the credentials of `--creds` only to the image's own registry, never to a mirror: a mirror's
# credentials come from the auth file, keyed by the mirror's location.
source "$(dirname "${BASH_SOURCE[0]}")/client_common.sh"
mkdir -p "$STATE/tmp"
[ -e "$STATE/auth.json" ] || echo "{}" > "$STATE/auth.json"   # a private auth file (podman login writes here)
conf=()
[ -n "${PODMAN_REGISTRIES_CONF:-}" ] && conf=(CONTAINERS_REGISTRIES_CONF="$PODMAN_REGISTRIES_CONF")
podman_() {
  client_env ${conf[@]+"${conf[@]}"} TMPDIR="$STATE/tmp" REGISTRY_AUTH_FILE="$STATE/auth.json" podman \
    --storage-driver vfs --root "$STATE/root" --runroot "$STATE/runroot" --cgroup-manager cgroupfs \
    --events-backend file --tmpdir "$STATE/tmp" "$@"
}
if [ -n "${PODMAN_LOGIN:-}" ]; then
  creds=${PODMAN_LOGIN#* }
  printf %s "${creds#*:}" | podman_ login --tls-verify=false -u "${creds%%:*}" --password-stdin "${PODMAN_LOGIN%% *}" >&2
fi
podman_ pull -q ${EXTRA[@]+"${EXTRA[@]}"} "$IMAGE"

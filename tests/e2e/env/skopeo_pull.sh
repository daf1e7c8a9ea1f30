#!/usr/bin/env bash
# skopeo copy docker://IMAGE dir:STATE/out through a proxy (see client_common.sh for the arguments).
# Extra args go to `skopeo copy`, e.g. --src-creds alice:s3cret-basic, --all.
source "$(dirname "${BASH_SOURCE[0]}")/client_common.sh"
[[ "$IMAGE" == *://* ]] || IMAGE="docker://$IMAGE"
client_env skopeo --insecure-policy copy -q ${EXTRA[@]+"${EXTRA[@]}"} "$IMAGE" "dir:$STATE/out"

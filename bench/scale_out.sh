# Scale-out phases of bench/run (issue 9), sourced by it: registry-proxy with its objects in an
# S3-compatible bucket (moto_server), several replicas sharing that bucket and their downloads, and
# the distribution registry's pull-through cache on the same bucket server. Every phase uses the herd
# layer (BENCH_HERD_MB, default 128 MiB): moto is a Python server, and a 1 GiB object would
# measure moto more than anything in front of it.
#
#   ours-bucket  one replica fills from upstream (cold) and serves local hits; then a second replica
#                with an empty disk on the same bucket serves bucket hits (a local miss read from
#                the bucket), 1 client (median of 3, an empty disk each time) and 16 clients at once
#   dist-s3      distribution pull-through with its S3 storage driver on the same moto: cold, then
#                warm 1 client (median of 3) and 16 clients (every warm read comes from the bucket)
#   replicas     32 clients spread over three replicas (PEERS, one bucket) on a cold blob, then the
#                same 32 once it is cached; against three independent caches (disk only, no peers)
#                under the same herd: upstream GETs, wall time, server CPU of the three processes
#
# Addresses (loopback, as the rest of bench/run): moto 127.0.0.44:9400, distribution on S3
# 127.0.0.44:5400, replicas 127.0.0.41:3140-3141 (ours-bucket) and 127.0.0.41:3150-3152 with peer
# ports 127.0.0.41:3160-3162 (replicas). Uses from bench/run: W P BIN UP_HOST HERD_BLOB HERD_PATH
# HERD_SIZE, PID R, log die stop_pid stop_proc wait_for now calc fetch_blob upstream_gets.

MOTO=127.0.0.44:9400
DIST_S3=127.0.0.44:5400
SCALE_SECRET=bench-peer-secret

# moto_server (PyPI moto[server], as scripts/test installs it), once per run; buckets made on demand
start_moto() {
  [ -n "${PID[moto]:-}" ] && return 0
  if ! have moto_server; then
    log "installing moto[server]"
    pip3 install -q 'moto[server]' 2>/dev/null || pip3 install -q --break-system-packages 'moto[server]'
  fi
  mkdir -p "$W/scale"
  moto_server -H "${MOTO%:*}" -p "${MOTO#*:}" >>"$W/logs/moto.log" 2>&1 &
  PID[moto]=$!
  wait_for "moto_server" curl -fsS -o /dev/null "http://$MOTO/"
}

make_bucket() { # name (moto answers an existing bucket with an error: check by listing)
  curl -sS -o /dev/null -X PUT "http://$MOTO/$1" || true
  curl -fsS -o /dev/null "http://$MOTO/$1?list-type=2&max-keys=1" || die "cannot create bucket $1 on moto"
}

# waits (up to 5 min) until the bucket holds `key` (moto lists without a signature)
wait_for_key() { # bucket key
  local i
  for i in $(seq 1 1500); do
    if curl -fsS "http://$MOTO/$1?list-type=2&prefix=$2" | grep -q "<Key>$2</Key>"; then return 0; fi
    sleep 0.2
  done
  die "$2 never reached bucket $1"
}

# a registry-proxy replica with its own cache and the run's shared CA
start_replica() { # name listen dir [VAR=value settings]
  local name=$1 listen=$2 dir=$3
  shift 3
  mkdir -p "$dir/cache" "$W/scale/ca"
  env LISTEN="$listen" CACHE_DIR="$dir/cache" CA_DIR="$W/scale/ca" REGISTRIES="$UP_HOST" \
    UPSTREAM_CA_FILE="$P/ca.pem" CACHE_MAX_SIZE=100g "$@" \
    "$BIN" >>"$W/logs/$name.log" 2>&1 &
  PID[$name]=$!
  wait_for "$name" curl -fsS -o /dev/null "http://$listen/healthz"
}

# the settings that put a replica's objects under `prefix` in the bench bucket
bucket_env() { # prefix
  S3ENV=(STORAGE="s3://bench-cache/$1" S3_ENDPOINT="http://$MOTO" S3_REGION=us-east-1
    AWS_ACCESS_KEY_ID=bench AWS_SECRET_ACCESS_KEY=bench-secret)
}

mirror_of() { # listen -> sets BASE QS CARGS for mirror-mode requests to that replica
  BASE=http://$1 QS="?ns=$UP_HOST" CARGS=()
}

median3() { python3 -c "import sys; print(sorted(map(float, sys.argv[1:]))[1])" "$@"; }

# 3 single warm pulls of the herd layer: prints "MB/s ttfb_seconds" (medians)
warm1_herd() {
  local t=() f=() i ttfb total code size
  for i in 1 2 3; do
    read -r ttfb total code size < <(fetch_blob "$HERD_PATH")
    [ "$code" = 200 ] && [ "$size" = "$HERD_SIZE" ] || echo "  warm: HTTP $code, $size bytes" >&2
    t+=("$total") f+=("$ttfb")
  done
  echo "$(calc "round($HERD_SIZE / $(median3 "${t[@]}") / 1e6)") $(median3 "${f[@]}")"
}

# n concurrent pulls of `path`, client i going to bases[i % len]; prints
# "wall_seconds failures median_ttfb max_ttfb"
fetch_spread() { # n tag path size base...
  local n=$1 tag=$2 path=$3 size=$4 i t0 t1 pids=()
  shift 4
  local bases=("$@")
  mkdir -p "$W/runs"
  rm -f "$W/runs/$tag".*
  t0=$(now)
  for i in $(seq 0 $((n - 1))); do
    (
      BASE=${bases[$((i % ${#bases[@]}))]}
      fetch_blob "$path"
    ) >"$W/runs/$tag.$i" &
    pids+=($!)
  done
  for i in "${pids[@]}"; do wait "$i" || true; done
  t1=$(now)
  cat "$W/runs/$tag".* | python3 -c "
import sys, statistics
rows = [l.split() for l in sys.stdin if l.strip()]
bad = sum(1 for r in rows if r[2] != '200' or int(r[3]) != $size) + ($n - len(rows))
ttfb = [float(r[0]) for r in rows] or [0]
print(f'{$t1 - $t0:.3f} {bad} {statistics.median(ttfb):.3f} {max(ttfb):.3f}')"
}

# CPU seconds used so far by the named processes together
cpu_of() { # name...
  local total=0 n
  for n in "$@"; do
    total=$(calc "$total + $(python3 "$BENCH/rss.py" cpu "${PID[$n]}")")
  done
  echo "$total"
}

run_ours_bucket() {
  log "ours-bucket (local hit vs bucket hit, ${HERD_MB} MiB layer)"
  start_moto
  make_bucket bench-cache
  local pre="ours-bucket-$$" a=127.0.0.41:3140 b=127.0.0.41:3141 c0 c1 i ttfb total code size
  local key="ours-bucket-$$/blobs/sha256/${HERD_BLOB:7:2}/${HERD_BLOB:7}" t_cold
  bucket_env "$pre"
  rm -rf "$W/scale/bkt-a" "$W/scale/bkt-b"
  start_replica bkt-a "$a" "$W/scale/bkt-a" "${S3ENV[@]}"
  mirror_of "$a"
  c0=$(upstream_gets "$HERD_PATH")
  t_cold=$(now)
  read -r ttfb total code size < <(fetch_blob "$HERD_PATH")
  [ "$code" = 200 ] && [ "$size" = "$HERD_SIZE" ] || echo "  cold: HTTP $code, $size bytes" >&2
  R[bucket.cold_ttfb]=$ttfb R[bucket.cold_total]=$total
  wait_for_key bench-cache "$key"
  R[bucket.settle]=$(calc "round($(now) - $t_cold, 2)")
  c1=$(upstream_gets "$HERD_PATH")
  R[bucket.cold_up]=$((c1 - c0))
  echo "  cold (upstream → local disk + bucket): ttfb ${ttfb}s total ${total}s, upstream GETs $((c1 - c0)); in the bucket ${R[bucket.settle]}s after the request" >&2

  # local hits on the replica that filled
  local cpu0 cpu1
  read -r R[bucket.local1] R[bucket.local_ttfb] < <(warm1_herd)
  cpu0=$(cpu_of bkt-a)
  read -r wall bad _ _ < <(fetch_spread 16 local16 "$HERD_PATH" "$HERD_SIZE" "$BASE")
  cpu1=$(cpu_of bkt-a)
  R[bucket.local16]=$(calc "round(16 * $HERD_SIZE / $wall / 1e6)") R[bucket.local16_bad]=$bad
  R[bucket.local16_cpu]=$(calc "round(($cpu1 - $cpu0) / (16 * $HERD_SIZE / 1e9), 2)")
  echo "  local hit: 1 client ${R[bucket.local1]} MB/s (ttfb ${R[bucket.local_ttfb]}s); 16 clients ${R[bucket.local16]} MB/s ($bad failed)" >&2
  stop_proc bkt-a

  # bucket hits: a replica with an empty disk each time
  local t=() f=()
  c0=$(upstream_gets "$HERD_PATH")
  for i in 1 2 3; do
    rm -rf "$W/scale/bkt-b"
    start_replica bkt-b "$b" "$W/scale/bkt-b" "${S3ENV[@]}"
    mirror_of "$b"
    read -r ttfb total code size < <(fetch_blob "$HERD_PATH")
    [ "$code" = 200 ] && [ "$size" = "$HERD_SIZE" ] || echo "  bucket hit: HTTP $code, $size bytes" >&2
    t+=("$total") f+=("$ttfb")
    stop_proc bkt-b
  done
  R[bucket.bucket1]=$(calc "round($HERD_SIZE / $(median3 "${t[@]}") / 1e6)")
  R[bucket.bucket_ttfb]=$(median3 "${f[@]}")
  rm -rf "$W/scale/bkt-b"
  start_replica bkt-b "$b" "$W/scale/bkt-b" "${S3ENV[@]}"
  mirror_of "$b"
  cpu0=$(cpu_of bkt-b)
  read -r wall bad _ _ < <(fetch_spread 16 bucket16 "$HERD_PATH" "$HERD_SIZE" "$BASE")
  cpu1=$(cpu_of bkt-b)
  R[bucket.bucket16]=$(calc "round(16 * $HERD_SIZE / $wall / 1e6)") R[bucket.bucket16_bad]=$bad
  R[bucket.bucket16_cpu]=$(calc "round(($cpu1 - $cpu0) / (16 * $HERD_SIZE / 1e9), 2)")
  stop_proc bkt-b
  c1=$(upstream_gets "$HERD_PATH")
  R[bucket.bucket_up]=$((c1 - c0))
  echo "  bucket hit (empty disk): 1 client ${R[bucket.bucket1]} MB/s (ttfb ${R[bucket.bucket_ttfb]}s); 16 clients ${R[bucket.bucket16]} MB/s ($bad failed); upstream GETs $((c1 - c0))" >&2
  rm -rf "$W/scale/bkt-a" "$W/scale/bkt-b"
}

run_dist_s3() {
  log "dist-s3 (distribution pull-through, S3 storage driver on moto, ${HERD_MB} MiB layer)"
  start_moto
  make_bucket dist-cache
  mkdir -p "$W/scale"
  # redirect disabled: the registry streams blobs itself, as registry-proxy does (clients need no
  # route to the bucket)
  cat >"$W/scale/dist-s3.yml" <<EOF
version: 0.1
log:
  level: warn
  accesslog:
    disabled: true
storage:
  s3:
    accesskey: bench
    secretkey: bench-secret
    region: us-east-1
    regionendpoint: http://$MOTO
    bucket: dist-cache
    secure: false
    v4auth: true
    rootdirectory: /dist
  redirect:
    disable: true
  delete:
    enabled: true
http:
  addr: $DIST_S3
  secret: registry-proxy-bench-dist-s3
proxy:
  remoteurl: https://$UP_HOST
EOF
  # (the AWS SDK inside fails to start when AWS_CA_BUNDLE is set, as it is on some machines)
  env -u AWS_CA_BUNDLE SSL_CERT_DIR="$P/trust" docker-registry serve "$W/scale/dist-s3.yml" >>"$W/logs/dist-s3.log" 2>&1 &
  PID[dist-s3]=$!
  wait_for "distribution on S3" curl -fsS -o /dev/null "http://$DIST_S3/v2/"
  BASE=http://$DIST_S3 QS="" CARGS=()
  local c0 c1 ttfb total code size cpu0 cpu1
  c0=$(upstream_gets "$HERD_PATH")
  local t_cold
  t_cold=$(now)
  read -r ttfb total code size < <(fetch_blob "$HERD_PATH")
  [ "$code" = 200 ] && [ "$size" = "$HERD_SIZE" ] || echo "  cold: HTTP $code, $size bytes" >&2
  R[dists3.cold_ttfb]=$ttfb R[dists3.cold_total]=$total
  c1=$(upstream_gets "$HERD_PATH")
  R[dists3.cold_up]=$((c1 - c0))
  # the registry finishes its copy into the bucket (upload, then a server-side move and the
  # repository link) well after the client's last byte: until then it goes upstream again
  wait_for_key dist-cache "dist/docker/registry/v2/repositories/bench/herd/_layers/sha256/${HERD_BLOB:7}/link"
  R[dists3.settle]=$(calc "round($(now) - $t_cold, 2)")
  echo "  cold: ttfb ${ttfb}s total ${total}s, upstream GETs $((c1 - c0)); in the bucket ${R[dists3.settle]}s after the request" >&2
  c0=$(upstream_gets "$HERD_PATH")
  read -r R[dists3.warm1] R[dists3.warm_ttfb] < <(warm1_herd)
  cpu0=$(cpu_of dist-s3)
  read -r wall bad _ _ < <(fetch_spread 16 dists3-16 "$HERD_PATH" "$HERD_SIZE" "$BASE")
  cpu1=$(cpu_of dist-s3)
  c1=$(upstream_gets "$HERD_PATH")
  R[dists3.warm16]=$(calc "round(16 * $HERD_SIZE / $wall / 1e6)") R[dists3.warm16_bad]=$bad
  R[dists3.warm16_cpu]=$(calc "round(($cpu1 - $cpu0) / (16 * $HERD_SIZE / 1e9), 2)")
  R[dists3.warm_up]=$((c1 - c0))
  echo "  warm (from the bucket): 1 client ${R[dists3.warm1]} MB/s (ttfb ${R[dists3.warm_ttfb]}s); 16 clients ${R[dists3.warm16]} MB/s ($bad failed); upstream GETs $((c1 - c0))" >&2
  stop_proc dist-s3
}

# every replica whose peer port is given sees all of them healthy and has found itself
members_settled() { # peer-addr...
  local a want=$#
  for a in "$@"; do
    curl -fsS --max-time 2 -H "Authorization: Bearer $SCALE_SECRET" "http://$a/peer/status" |
      python3 -c "import json, sys; s = json.load(sys.stdin); sys.exit(0 if s['me'] == '$a' and len(s['healthy']) == $want else 1)" ||
      return 1
  done
}

# one herd over three replicas (shared: bucket + peers, or independent): fills R[replicas.$tag.*]
herd_over_three() { # tag [shared]
  local tag=$1 shared=${2:-} i names=() bases=() peers="" c0 c1 cpu0 cpu1 m0 wall bad mttfb xttfb
  for i in 0 1 2; do peers+="127.0.0.41:316$i "; done
  for i in 0 1 2; do
    rm -rf "$W/scale/$tag-$i"
    if [ -n "$shared" ]; then
      bucket_env "replicas-$$"
      start_replica "$tag-$i" "127.0.0.41:315$i" "$W/scale/$tag-$i" "${S3ENV[@]}" \
        PEERS="${peers% }" PEER_LISTEN="127.0.0.41:316$i" PEER_SECRET="$SCALE_SECRET"
    else
      start_replica "$tag-$i" "127.0.0.41:315$i" "$W/scale/$tag-$i"
    fi
    names+=("$tag-$i") bases+=("http://127.0.0.41:315$i")
  done
  if [ -n "$shared" ]; then
    wait_for "three replicas finding each other" members_settled 127.0.0.41:3160 127.0.0.41:3161 127.0.0.41:3162
  fi
  QS="?ns=$UP_HOST" CARGS=()
  c0=$(upstream_gets "$HERD_PATH")
  cpu0=$(cpu_of "${names[@]}") m0=$(cpu_of moto)
  read -r wall bad mttfb xttfb < <(fetch_spread 32 "herd3-$tag" "$HERD_PATH" "$HERD_SIZE" "${bases[@]}")
  cpu1=$(cpu_of "${names[@]}")
  sleep 0.5
  R[replicas.$tag.moto]=$(calc "round($(cpu_of moto) - $m0, 2)")
  c1=$(upstream_gets "$HERD_PATH")
  R[replicas.$tag.up]=$((c1 - c0)) R[replicas.$tag.wall]=$wall R[replicas.$tag.bad]=$bad
  R[replicas.$tag.ttfb]=$mttfb R[replicas.$tag.cpu]=$(calc "round(($cpu1 - $cpu0) / (32 * $HERD_SIZE / 1e9), 2)")
  echo "  $tag, cold herd: ${wall}s, upstream GETs $((c1 - c0)), $bad failed, ttfb median ${mttfb}s max ${xttfb}s; CPU of the 3 replicas ${R[replicas.$tag.cpu]} s/GB, of moto ${R[replicas.$tag.moto]} s" >&2
  c0=$(upstream_gets "$HERD_PATH")
  read -r wall bad _ _ < <(fetch_spread 32 "herd3w-$tag" "$HERD_PATH" "$HERD_SIZE" "${bases[@]}")
  c1=$(upstream_gets "$HERD_PATH")
  R[replicas.$tag.wwall]=$wall R[replicas.$tag.wup]=$((c1 - c0)) R[replicas.$tag.wbad]=$bad
  echo "  $tag, cached herd: ${wall}s, upstream GETs $((c1 - c0)), $bad failed" >&2
  for i in "${names[@]}"; do stop_proc "$i"; done
  for i in 0 1 2; do rm -rf "${W:?}/scale/$tag-$i"; done
}

run_replicas() {
  log "replicas (32 clients over three replicas: one bucket and PEERS, vs three independent caches; ${HERD_MB} MiB layer)"
  start_moto
  make_bucket bench-cache
  herd_over_three shared 1
  herd_over_three independent
}

# the entry point bench/run calls for these phase names
run_scale_out() { # phase
  case $1 in
  ours-bucket) run_ours_bucket ;;
  dist-s3) run_dist_s3 ;;
  replicas) run_replicas ;;
  *) die "unknown scale-out phase $1" ;;
  esac
}

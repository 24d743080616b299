#!/usr/bin/env bash
# Benchmarks `shoal dev` pulling through an upstream registry (Debian's docker-registry, the
# distribution 2.8 server), release build, with its baselines in the same run:
#  (a) CLIENTS simultaneous GETs of one cold blob (BLOB_MIB) through shoal: how many GETs of
#      that blob the upstream served, counted from its access log (goal: exactly 1), and
#      whether every client got the whole blob with the right digest. The upstream side of
#      the fetch is slowed to INGRESS_MBIT by the backend's `bandwidth:` so every client's
#      request lands while the one fetch runs.
#  (b) a cold pull of a 3-layer image (3 x LAYER_MIB of incompressible data) with skopeo,
#      through a fresh `shoal dev` vs straight from the upstream; median of RUNS alternating
#      pairs (goal: shoal <= 1.1x the direct pull's time).
# Everything listens on 127.0.0.1 on free ports and is stopped on exit.
# Usage: bench/pullthrough.sh [CLIENTS (1000)] [BLOB_MIB (16)] [INGRESS_MBIT (100)]
#                             [LAYER_MIB (100)] [RUNS (3)]
set -euo pipefail
cd "$(dirname "$0")/.."
CLIENTS=${1:-1000}
BLOB_MIB=${2:-16}
INGRESS_MBIT=${3:-100}
LAYER_MIB=${4:-100}
RUNS=${5:-3}

source bench/lib.sh
need docker-registry skopeo curl python3 sha256sum xargs
build_shoal
bench_work pt

# --- the upstream, with an access log -------------------------------------------------------
start_upstream

# A shoal dev pulling `library/*` through the upstream; ingress limited when $1 is set.
start_shoal() { # DATA_DIR [INGRESS_BITS]
  local data=$1 bits=${2:-}
  local port; port=$(free_port)
  local bandwidth=""
  if [[ -n "$bits" ]]; then
    bandwidth="    bandwidth: {enable: true, ingress_bits_per_sec: $bits, egress_bits_per_sec: $bits}"
  fi
  cat >"$data.yaml" <<CONF
backends:
$(upstream_blobs)
$bandwidth
  - namespace: library/.*
    backend:
      registry_tag:
        address: $UP
        security: {tls: {client: {disabled: true}}}
CONF
  RUST_LOG=${SHOAL_LOG:-warn} "$SHOAL" dev --listen "127.0.0.1:$port" --data-dir "$data" --config "$data.yaml" \
    2>"$data.log" &
  SHOAL_PID=$!
  PIDS+=($SHOAL_PID)
  SHOAL_ADDR=127.0.0.1:$port
  wait_http "http://$SHOAL_ADDR/v2/"
}

# --- (a) CLIENTS simultaneous GETs of one cold blob -----------------------------------------
head -c $((BLOB_MIB * 1024 * 1024)) /dev/urandom >"$WORK/blob"
HEX=$(push_blob "$WORK/blob" library/big)
rm "$WORK/blob"
start_shoal "$WORK/shoal-a" $((INGRESS_MBIT * 1000 * 1000))
ulimit -n 65536 2>/dev/null || true
echo "== (a) $CLIENTS simultaneous GETs of a cold ${BLOB_MIB} MiB blob (upstream side at ${INGRESS_MBIT} Mbit/s)" >&2
START=$(now)
# Each client counts what it got (hashing in 1000 client processes would starve the two
# cores); a 200 of the full length is a verified blob, since shoal holds back the last byte
# until the digest matched. One more GET, once it is cached, checks the bytes themselves.
seq "$CLIENTS" | xargs -P "$CLIENTS" -I{} curl -sS -o /dev/null --max-time 600 \
  -w '%{http_code} %{size_download}\n' "http://$SHOAL_ADDR/v2/library/big/blobs/sha256:$HEX" \
  >"$WORK/got" || true
END=$(now)
GOOD=$(grep -c "^200 $((BLOB_MIB * 1024 * 1024))\$" "$WORK/got" || true)
SUM=$(curl -fsS "http://$SHOAL_ADDR/v2/library/big/blobs/sha256:$HEX" | sha256sum | cut -d' ' -f1)
[[ "$SUM" == "$HEX" ]] || { echo "(a) the cached blob hashes to $SUM, not $HEX" >&2; exit 1; }
UPSTREAM_GETS=$(grep -c "\"GET /v2/library/big/blobs/sha256:$HEX " "$WORK/access.log" || true)
printf '(a) clients given the whole blob: %d of %d, in %.1f s\n' "$GOOD" "$CLIENTS" \
  "$(echo "$END - $START" | bc -l)"
echo "(a) upstream GETs of the blob: $UPSTREAM_GETS (goal: exactly 1)"
kill "$SHOAL_PID"

# --- (b) cold pull of a 3-layer image -------------------------------------------------------
python3 - "$WORK/layout" "$LAYER_MIB" <<'PY'
import hashlib, io, json, os, sys, tarfile
root, mib = sys.argv[1], int(sys.argv[2])
blobs = os.path.join(root, "blobs", "sha256")
os.makedirs(blobs)
def put(data):
    d = hashlib.sha256(data).hexdigest()
    with open(os.path.join(blobs, d), "wb") as f:
        f.write(data)
    return "sha256:" + d, len(data)
layers = []
for i in range(3):
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tar:
        payload = os.urandom(mib << 20)
        info = tarfile.TarInfo(f"layer{i}.bin"); info.size = len(payload)
        tar.addfile(info, io.BytesIO(payload))
    layers.append(put(buf.getvalue()))
config = json.dumps({"architecture": "amd64", "os": "linux",
    "rootfs": {"type": "layers", "diff_ids": [d for d, _ in layers]}}).encode()
cd, cs = put(config)
manifest = json.dumps({"schemaVersion": 2, "mediaType": "application/vnd.oci.image.manifest.v1+json",
    "config": {"mediaType": "application/vnd.oci.image.config.v1+json", "digest": cd, "size": cs},
    "layers": [{"mediaType": "application/vnd.oci.image.layer.v1.tar", "digest": d, "size": s}
               for d, s in layers]}).encode()
md, ms = put(manifest)
with open(os.path.join(root, "index.json"), "w") as f:
    json.dump({"schemaVersion": 2, "manifests": [{"mediaType": "application/vnd.oci.image.manifest.v1+json",
        "digest": md, "size": ms, "annotations": {"org.opencontainers.image.ref.name": "v1"}}]}, f)
with open(os.path.join(root, "oci-layout"), "w") as f:
    json.dump({"imageLayoutVersion": "1.0.0"}, f)
PY
skopeo copy -q --dest-tls-verify=false "oci:$WORK/layout:v1" "docker://$UP/library/img:v1"
rm -rf "$WORK/layout"
sync

pull() { # FROM OUT
  rm -rf "$2"
  local t0; t0=$(now)
  skopeo copy -q --src-tls-verify=false "docker://$1/library/img:v1" "oci:$2:v1"
  echo "$(now) - $t0" | bc -l
}
DIRECT=()
SHOAL_T=()
for i in $(seq 1 "$RUNS"); do
  DIRECT+=("$(pull "$UP" "$WORK/out-direct")")
  start_shoal "$WORK/shoal-b$i"
  SHOAL_T+=("$(pull "$SHOAL_ADDR" "$WORK/out-shoal")")
  kill "$SHOAL_PID"
  cmp <(cd "$WORK/out-direct/blobs/sha256" && ls) <(cd "$WORK/out-shoal/blobs/sha256" && ls) \
    || { echo "the pulls differ" >&2; exit 1; }
  rm -rf "$WORK/shoal-b$i"
done
median() { printf '%s\n' "$@" | sort -n | awk '{a[NR]=$1} END {print a[int((NR+1)/2)]}'; }
MD=$(median "${DIRECT[@]}")
MS=$(median "${SHOAL_T[@]}")
echo "(b) cold pull of 3 x ${LAYER_MIB} MiB: direct ${DIRECT[*]} s; through shoal ${SHOAL_T[*]} s"
printf '(b) median: direct %.2f s, shoal %.2f s, shoal/direct %.2fx (goal <= 1.1x)\n' \
  "$MD" "$MS" "$(echo "$MS / $MD" | bc -l)"

#!/usr/bin/env bash
# Benchmarks the cluster as users run it (release build, `shoal devcluster` with 2 origins and 4
# agents) against `shoal dev`, in one run, and prints ratios:
#  (a) push of a 3-layer image (~300 MB) with skopeo: through the proxy (with credentials) vs
#      straight to `shoal dev` (ratio = dev time / proxy time: 1.0 means as fast);
#  (b) a cold pull of that image by 4 skopeo clients at once, each through its own agent, vs 4
#      pulls at once straight from `shoal dev` (ratio = dev time / agents time), and the
#      origins' piece egress over the image size.
# Everything listens on 127.0.0.1 and is stopped on exit.
# Usage: bench/cluster.sh [LAYER_MIB (default 100)]
set -euo pipefail
cd "$(dirname "$0")/.."
LAYER_MIB=${1:-100}
AGENTS=4

source bench/lib.sh
need skopeo curl python3
build_shoal
bench_work cluster
sk() { skopeo --insecure-policy "$@"; }

# --- the image: 3 layers of random bytes, an OCI layout -----------------------------------------
python3 - "$WORK/image" "$LAYER_MIB" <<'PY'
import hashlib, json, os, sys
root, mib = sys.argv[1], int(sys.argv[2])
os.makedirs(f"{root}/blobs/sha256")
def put(data):
    d = hashlib.sha256(data).hexdigest()
    open(f"{root}/blobs/sha256/{d}", "wb").write(data)
    return {"digest": f"sha256:{d}", "size": len(data)}
layers = [put(os.urandom(mib << 20)) for _ in range(3)]
config = put(json.dumps({"architecture": "amd64", "os": "linux",
    "rootfs": {"type": "layers", "diff_ids": [l["digest"] for l in layers]}}).encode())
manifest = put(json.dumps({"schemaVersion": 2,
    "mediaType": "application/vnd.oci.image.manifest.v1+json",
    "config": {"mediaType": "application/vnd.oci.image.config.v1+json", **config},
    "layers": [{"mediaType": "application/vnd.oci.image.layer.v1.tar", **l} for l in layers]}).encode())
json.dump({"schemaVersion": 2, "manifests": [{"mediaType": "application/vnd.oci.image.manifest.v1+json",
    **manifest, "annotations": {"org.opencontainers.image.ref.name": "v1"}}]}, open(f"{root}/index.json", "w"))
open(f"{root}/oci-layout", "w").write('{"imageLayoutVersion":"1.0.0"}')
PY
SIZE=$(du -cb "$WORK"/image/blobs/sha256/* | tail -1 | cut -f1)

# --- servers ----------------------------------------------------------------------------------
DEV_PORT=$(free_port)
RUST_LOG=warn "$SHOAL" dev --listen "127.0.0.1:$DEV_PORT" --data-dir "$WORK/dev" 2>"$WORK/dev.log" &
PIDS+=($!)
# A base port whose layout is free: proxy +0, origins +1..+12, tracker +3, build-index +4,
# agents +1000..
BASE=$(python3 - <<'PY'
import socket
for base in range(30000, 60000, 97):
    ports = [base, base+1, base+2, base+3, base+4, base+11, base+12] + [base+1000+k for k in range(8)]
    try:
        socks = []
        for p in ports:
            s = socket.socket(); s.bind(("127.0.0.1", p)); socks.append(s)
        print(base); break
    except OSError:
        continue
PY
)
RUST_LOG=warn "$SHOAL" devcluster --agents $AGENTS --origins 2 --base-port "$BASE" \
  --data-dir "$WORK/cluster" >"$WORK/cluster.out" 2>"$WORK/cluster.err" &
PIDS+=($!)
wait_http "http://127.0.0.1:$DEV_PORT/v2/"
for _ in $(seq 1 600); do grep -q '^agent agent-'$AGENTS' ' "$WORK/cluster.out" 2>/dev/null && break; sleep 0.1; done
grep -q '^agent agent-'$AGENTS' ' "$WORK/cluster.out" || { cat "$WORK/cluster.err" >&2; exit 1; }
addr() { awk -v n="$1" '$2 == n { print $3 }' "$WORK/cluster.out"; }
PROXY=$(addr proxy-1)
CREDS=()
if grep -q '^credentials ' "$WORK/cluster.out"; then
  CREDS=(--dest-creds "$(awk '$1 == "credentials" { print $2 ":" $3 }' "$WORK/cluster.out")")
fi

# --- (a) push -----------------------------------------------------------------------------------
sync
t0=$(now)
sk copy -q --preserve-digests --dest-tls-verify=false "oci:$WORK/image:v1" "docker://127.0.0.1:$DEV_PORT/bench/app:v1"
t1=$(now)
sk copy -q --preserve-digests --dest-tls-verify=false "${CREDS[@]}" "oci:$WORK/image:v1" "docker://$PROXY/bench/app:v1"
t2=$(now)
DEV_PUSH=$(python3 -c "print($t1-$t0)")
PROXY_PUSH=$(python3 -c "print($t2-$t1)")

# --- (b) cold pull, 4 at once --------------------------------------------------------------------
pull_all() { # pull_all NAME ADDR...
  local name=$1; shift
  local i=0 pids=()
  for a in "$@"; do
    i=$((i + 1))
    sk copy -q --src-tls-verify=false "docker://$a/bench/app:v1" "dir:$WORK/out-$name-$i" &
    pids+=($!)
  done
  for p in "${pids[@]}"; do wait "$p"; done
}
sync
t0=$(now)
pull_all dev $(for _ in $(seq 1 $AGENTS); do echo "127.0.0.1:$DEV_PORT"; done)
t1=$(now)
pull_all agents $(for k in $(seq 1 $AGENTS); do addr agent-$k; done)
t2=$(now)
DEV_PULL=$(python3 -c "print($t1-$t0)")
AGENT_PULL=$(python3 -c "print($t2-$t1)")
for k in $(seq 1 $AGENTS); do
  cmp -s "$WORK/out-agents-$k/manifest.json" "$WORK/out-dev-1/manifest.json" || { echo "agent-$k pulled another manifest" >&2; exit 1; }
done
SENT=0
for o in origin-1 origin-2; do
  s=$(metric "$(addr $o)" shoal_p2p_piece_bytes_sent_total)
  SENT=$((SENT + ${s%.*}))
done

python3 - <<PY
size, mib = $SIZE, $SIZE / 1048576
print(f"image: 3 layers, {mib:.0f} MiB")
print(f"(a) push  shoal dev {$DEV_PUSH:.2f} s ({mib/$DEV_PUSH:.0f} MiB/s); proxy {$PROXY_PUSH:.2f} s ({mib/$PROXY_PUSH:.0f} MiB/s); proxy/dev speed ratio {$DEV_PUSH/$PROXY_PUSH:.2f}")
print(f"(b) cold pull x$AGENTS  shoal dev {$DEV_PULL:.2f} s; through $AGENTS agents {$AGENT_PULL:.2f} s; agents/dev speed ratio {$DEV_PULL/$AGENT_PULL:.2f}; origin piece egress {$SENT/size:.2f} x the image")
PY

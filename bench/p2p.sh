#!/usr/bin/env bash
# P2P fan-out benchmark (issue 6), release build, baseline in the same run:
#  (a) baseline: one agent pulls a BLOB_MIB blob straight from one origin;
#  (b) fan-out: AGENTS agents pull the same-sized (other) blob at once from one origin.
# Every agent's ingress is capped at B (MBIT_PER_SEC) by shoal's built-in token bucket
# (scheduler.conn.bandwidth; no tc/netns here: every process shares loopback). Origins are not
# capped. Prints, per agent, its rate against B (goal >= 0.8), the origin's piece egress
# divided by the blob size (goal <= 1.5), and the CPU seconds every process used.
# Every process gets its own 127.0.0.x address and free ports; all are stopped on exit.
# Usage: bench/p2p.sh [BLOB_MIB (default 1024)] [AGENTS (default 8)] [MBIT_PER_SEC (default 400)]
set -euo pipefail
cd "$(dirname "$0")/.."
BLOB_MIB=${1:-1024}
AGENTS=${2:-8}
MBIT=${3:-400}
B_BYTES=$((MBIT * 1000 * 1000 / 8))

for tool in curl python3 sha256sum; do
  command -v "$tool" >/dev/null || { echo "missing $tool" >&2; exit 1; }
done
cargo build --release --bin shoal >&2
SHOAL=$PWD/target/release/shoal

WORK=$(mktemp -d /tmp/shoal-p2p-bench.XXXXXX)
PIDS=()
cleanup() {
  for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done
  wait 2>/dev/null || true
  rm -rf "$WORK"
}
trap cleanup EXIT

free_port() { python3 -c "import socket; s=socket.socket(); s.bind(('$1',0)); print(s.getsockname()[1])"; }
wait_http() { for _ in $(seq 1 400); do curl -fsS -o /dev/null "$1" 2>/dev/null && return 0; sleep 0.05; done; echo "no answer from $1" >&2; return 1; }
metric() { curl -fsS "http://$1/metrics" | awk -v k="$2" '$1 == k { print $2 }'; }
cpu_secs() { # utime + stime of a pid, in seconds
  awk -v hz="$(getconf CLK_TCK)" '{ printf "%.1f", ($14 + $15) / hz }' "/proc/$1/stat"
}

# One cluster: 1 tracker, 1 origin, N agents under $WORK/$1. Sets TRACKER, ORIGIN, AGENT_HTTP[].
start_cluster() {
  local dir=$WORK/$1 n=$2 base=$3
  mkdir -p "$dir/backend"
  local tip=127.0.$base.1 oip=127.0.$base.2
  TRACKER=$tip:$(free_port "$tip")
  ORIGIN=$oip:$(free_port "$oip")
  local opeer=$oip:$(free_port "$oip")
  local sched="scheduler:
  announce_interval: 500ms"
  local client="tracker:
  hosts:
    static: [\"$TRACKER\"]"
  cat >"$dir/tracker.yaml" <<EOF
listen: "$TRACKER"
announce_interval: 500ms
origin:
  hosts:
    static: ["$ORIGIN"]
log:
  level: warn
EOF
  cat >"$dir/origin.yaml" <<EOF
listen: "$ORIGIN"
peer:
  listen: "$opeer"
cluster:
  hosts:
    static: ["$ORIGIN"]
hashring:
  max_replica: 1
backends:
  - namespace: .*
    backend:
      fs:
        root: $dir/backend
$client
$sched
log:
  level: warn
EOF
  "$SHOAL" tracker --config "$dir/tracker.yaml" --data-dir "$dir/t" 2>"$dir/tracker.log" &
  PIDS+=($!); TRACKER_PID=$!
  "$SHOAL" origin --config "$dir/origin.yaml" --data-dir "$dir/o" 2>"$dir/origin.log" &
  PIDS+=($!); ORIGIN_PID=$!
  AGENT_HTTP=(); AGENT_PIDS=()
  for i in $(seq 1 "$n"); do
    local aip=127.0.$base.$((10 + i))
    local http=$aip:$(free_port "$aip") peer=$aip:$(free_port "$aip")
    cat >"$dir/agent$i.yaml" <<EOF
registry:
  listen: "$http"
peer:
  listen: "$peer"
$client
$sched
  conn:
    bandwidth:
      enable: true
      ingress_bits_per_sec: $((MBIT * 1000 * 1000))
      egress_bits_per_sec: 100000000000
log:
  level: warn
EOF
    "$SHOAL" agent --config "$dir/agent$i.yaml" --data-dir "$dir/a$i" 2>"$dir/agent$i.log" &
    PIDS+=($!); AGENT_PIDS+=($!); AGENT_HTTP+=("$http")
  done
  wait_http "http://$TRACKER/health"
  wait_http "http://$ORIGIN/health"
  for a in "${AGENT_HTTP[@]}"; do wait_http "http://$a/v2/"; done
}

# Pushes $BLOB_MIB MiB of fresh random bytes to the origin; sets DIGEST.
push_blob() {
  local file=$WORK/$1.blob
  head -c $((BLOB_MIB << 20)) /dev/urandom >"$file"
  DIGEST=sha256:$(sha256sum "$file" | cut -d' ' -f1)
  curl -fsS -T "$file" "http://$ORIGIN/namespace/bench%2Fblob/blobs/$DIGEST" >/dev/null
  rm -f "$file"
}

# Pulls DIGEST through every agent at once; prints per-agent seconds and rate/B.
pull_all() {
  local label=$1 size=$((BLOB_MIB << 20))
  local i=0 pids=()
  for a in "${AGENT_HTTP[@]}"; do
    i=$((i + 1))
    ( curl -fsS -o /dev/null -w '%{time_total}\n' "http://$a/v2/bench/blob/blobs/$DIGEST" >"$WORK/$label.time$i" ) &
    pids+=($!)
  done
  for p in "${pids[@]}"; do wait "$p"; done
  i=0
  local worst=999
  for a in "${AGENT_HTTP[@]}"; do
    i=$((i + 1))
    local t; t=$(cat "$WORK/$label.time$i")
    local r; r=$(python3 -c "print(f'{$size / $t / $B_BYTES:.2f}')")
    printf '  %s agent%d: %6.1f s  %6.1f MB/s  = %s of B\n' "$label" "$i" "$t" "$(python3 -c "print($size/$t/1e6)")" "$r"
    worst=$(python3 -c "print(min($worst, $r))")
  done
  local sent; sent=$(metric "$ORIGIN" shoal_p2p_piece_bytes_sent_total)
  printf '  %s: slowest agent %s of B; origin piece egress %.2f x the blob\n' "$label" "$worst" "$(python3 -c "print($sent/$size)")"
  local cpu="tracker $(cpu_secs "$TRACKER_PID") s, origin $(cpu_secs "$ORIGIN_PID") s, agents"
  for p in "${AGENT_PIDS[@]}"; do cpu="$cpu $(cpu_secs "$p")"; done
  echo "  $label CPU: $cpu s"
}

echo "blob ${BLOB_MIB} MiB, agents' ingress cap B = ${MBIT} Mbit/s (${B_BYTES} B/s), built-in limiter"
start_cluster baseline 1 1
push_blob baseline
pull_all baseline
start_cluster fanout "$AGENTS" 2
push_blob fanout
pull_all fanout

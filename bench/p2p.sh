#!/usr/bin/env bash
# P2P fan-out benchmark (issues 6 and 16), release build, baseline in the same run:
#  (a) baseline: one agent pulls a BLOB_MIB blob straight from one origin;
#  (b) fan-out: AGENTS agents pull the same-sized (other) blob at once from ORIGINS origins
#      (each holding it: `max_replica: ORIGINS`), ROUNDS times with a fresh blob each round.
# Every agent's ingress is capped at B (MBIT_PER_SEC) by shoal's built-in token bucket
# (scheduler.conn.bandwidth; no tc/netns here: every process shares loopback). Origins are not
# capped. Prints, per agent, its rate against B and when its client got the first byte (an
# agent streams the blob's verified front while it downloads; the baseline also prints the
# first byte of a GET straight from the origin that holds the blob), the origins' piece egress
# divided by the blob size (per round), the CPU seconds and peak resident size every process
# used, and the floor under them: what `dd` spends writing the same bytes into fresh page cache
# here.
# With COLD=1 the fan-out's origins are restarted with empty piece stores after the push was
# written back to their (shared `fs`) backend, so the agents' pulls make each origin fetch the
# blob from the backend and seed it while it lands (an origin's first pull of a blob).
# Every process gets its own 127.0.0.x address and free ports; all are stopped on exit.
# PIPELINE=N sets every node's `scheduler.dispatch.pipeline_limit` (default: the config's, 3).
# Usage: bench/p2p.sh [BLOB_MIB (default 1024)] [AGENTS (default 8)] [MBIT_PER_SEC (default 400)]
#                     [ORIGINS (default 1)] [ROUNDS (default 1)] [COLD (default 0)]
set -euo pipefail
cd "$(dirname "$0")/.."
BLOB_MIB=${1:-1024}
AGENTS=${2:-8}
MBIT=${3:-400}
ORIGINS=${4:-1}
ROUNDS=${5:-1}
COLD=${6:-0}
B_BYTES=$((MBIT * 1000 * 1000 / 8))

source bench/lib.sh
need curl python3 sha256sum
build_shoal
bench_work p2p

# One cluster: 1 tracker, NO origins, N agents under $WORK/$1. Sets TRACKER, ORIGIN (the first),
# ORIGIN_HTTP[], ORIGIN_PIDS[], AGENT_HTTP[].
start_cluster() {
  local dir=$WORK/$1 n=$2 base=$3 no=${4:-1}
  mkdir -p "$dir/backend"
  local tip=127.0.$base.1
  TRACKER=$tip:$(free_port "$tip")
  ORIGIN_HTTP=(); ORIGIN_PIDS=()
  local k
  for k in $(seq 1 "$no"); do
    local oip=127.0.$base.$((1 + k))
    ORIGIN_HTTP+=("$oip:$(free_port "$oip")")
  done
  ORIGIN=${ORIGIN_HTTP[0]}
  local origins; origins=$(printf '"%s", ' "${ORIGIN_HTTP[@]}"); origins="[${origins%, }]"
  local sched="scheduler:
  announce_interval: 500ms"
  if [[ -n "${PIPELINE:-}" ]]; then
    sched="$sched
  dispatch:
    pipeline_limit: $PIPELINE"
  fi
  local client="tracker:
  hosts:
    static: [\"$TRACKER\"]"
  cat >"$dir/tracker.yaml" <<EOF
listen: "$TRACKER"
announce_interval: 500ms
origin:
  hosts:
    static: $origins
log:
  level: warn
EOF
  "$SHOAL" tracker --config "$dir/tracker.yaml" --data-dir "$dir/t" 2>"$dir/tracker.log" &
  PIDS+=($!); TRACKER_PID=$!
  for k in $(seq 1 "$no"); do
  local ohttp=${ORIGIN_HTTP[$((k - 1))]}
  local opeer=${ohttp%:*}:$(free_port "${ohttp%:*}")
  cat >"$dir/origin$k.yaml" <<EOF
listen: "$ohttp"
peer:
  listen: "$opeer"
cluster:
  hosts:
    static: $origins
hashring:
  max_replica: $no
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
  "$SHOAL" origin --config "$dir/origin$k.yaml" --data-dir "$dir/o$k" 2>"$dir/origin$k.log" &
  PIDS+=($!); ORIGIN_PIDS+=($!)
  done
  CLUSTER_DIR=$dir
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
  for o in "${ORIGIN_HTTP[@]}"; do wait_http "http://$o/health"; done
  for a in "${AGENT_HTTP[@]}"; do wait_http "http://$a/v2/"; done
}

# Pushes $BLOB_MIB MiB of fresh random bytes to the origin; sets DIGEST.
push_blob() {
  local file=$WORK/$1.blob
  head -c $((BLOB_MIB << 20)) /dev/urandom >"$file"
  DIGEST=sha256:$(sha256sum "$file" | cut -d' ' -f1)
  curl -fsS -T "$file" "http://$ORIGIN/namespace/bench%2Fblob/blobs/$DIGEST" >/dev/null
  rm -f "$file"
  # Every origin holds it (replication) in its piece store before the agents ask.
  local o
  for o in "${ORIGIN_HTTP[@]}"; do
    for _ in $(seq 1 1200); do
      curl -fsS -o /dev/null -I "http://$o/namespace/bench%2Fblob/blobs/$DIGEST?local=true" 2>/dev/null && break
      sleep 0.05
    done
  done
}

# COLD: waits until the backend holds DIGEST whole (the origin's write-back), then restarts
# every origin of the current cluster with an empty piece store.
cold_origins() {
  local dir=$CLUSTER_DIR hex=${DIGEST#sha256:} size=$((BLOB_MIB << 20))
  for _ in $(seq 1 1200); do
    local f; f=$(find "$dir/backend" -type f -name "*$hex*" -size "${size}c" 2>/dev/null | head -1)
    [ -n "$f" ] && break
    sleep 0.1
  done
  [ -n "$f" ] || { echo "the backend never held $DIGEST" >&2; exit 1; }
  local k pids=()
  for k in "${!ORIGIN_PIDS[@]}"; do
    kill "${ORIGIN_PIDS[$k]}"; wait "${ORIGIN_PIDS[$k]}" 2>/dev/null || true
    rm -rf "$dir/o$((k + 1))"
    "$SHOAL" origin --config "$dir/origin$((k + 1)).yaml" --data-dir "$dir/o$((k + 1))" \
      2>>"$dir/origin$((k + 1)).log" &
    PIDS+=($!); pids+=($!)
  done
  ORIGIN_PIDS=("${pids[@]}")
  for o in "${ORIGIN_HTTP[@]}"; do wait_http "http://$o/health"; done
}

# The origins' piece bytes sent so far, summed.
origin_sent() {
  local o total=0
  for o in "${ORIGIN_HTTP[@]}"; do total=$((total + $(metric "$o" shoal_p2p_piece_bytes_sent_total))); done
  echo "$total"
}

# Each origin's piece bytes sent so far, in MiB.
origin_each() {
  local o out=""
  for o in "${ORIGIN_HTTP[@]}"; do out="$out $(( $(metric "$o" shoal_p2p_piece_bytes_sent_total) >> 20 ))"; done
  echo "$out"
}

# GETs URL, discarding the body; prints the seconds to the body's first byte and to its end.
timed_get() {
  local start first end
  start=$(now)
  curl -fsS "$1" | {
    head -c1 >/dev/null
    first=$(now)
    cat >/dev/null
    end=$(now)
    python3 -c "print(f'{$first - $start:.3f} {$end - $start:.3f}')"
  }
}

# Pulls DIGEST through every agent at once; prints per-agent seconds and rate/B.
pull_all() {
  local label=$1 size=$((BLOB_MIB << 20))
  local i=0 pids=() before; before=$(origin_sent)
  local each_before; each_before=$(origin_each)
  local got_before=() a
  for a in "${AGENT_HTTP[@]}"; do got_before+=("$(metric "$a" shoal_p2p_piece_bytes_received_total)"); done
  for a in "${AGENT_HTTP[@]}"; do
    i=$((i + 1))
    ( timed_get "http://$a/v2/bench/blob/blobs/$DIGEST" >"$WORK/$label.time$i" ) &
    pids+=($!)
  done
  for p in "${pids[@]}"; do wait "$p"; done
  i=0
  local worst=999
  for a in "${AGENT_HTTP[@]}"; do
    i=$((i + 1))
    local first t; read -r first t <"$WORK/$label.time$i"
    local r; r=$(python3 -c "print(f'{$size / $t / $B_BYTES:.2f}')")
    printf '  %s agent%d: %6.1f s  %6.1f MB/s  = %s of B  (first byte after %.2f s)\n' "$label" "$i" "$t" "$(python3 -c "print($size/$t/1e6)")" "$r" "$first"
    worst=$(python3 -c "print(min($worst, $r))")
  done
  local sent; sent=$(( $(origin_sent) - before ))
  printf '  %s: slowest agent %s of B; origin piece egress %.2f x the blob (MiB sent by each origin, before:%s after:%s)\n' "$label" "$worst" "$(python3 -c "print($sent/$size)")" "$each_before" "$(origin_each)"
  # Piece bytes each agent received over the blob: above 1.00 is pieces received twice.
  local got="" k=0
  for a in "${AGENT_HTTP[@]}"; do
    got="$got $(python3 -c "print(f'{($(metric "$a" shoal_p2p_piece_bytes_received_total) - ${got_before[$k]}) / $size:.3f}')")"
    k=$((k + 1))
  done
  echo "  $label piece bytes received / blob, per agent:$got"
  local cpu="tracker $(cpu_secs "$TRACKER_PID") s, origins" p
  for p in "${ORIGIN_PIDS[@]}"; do cpu="$cpu $(cpu_secs "$p")"; done
  cpu="$cpu s, agents"
  for p in "${AGENT_PIDS[@]}"; do cpu="$cpu $(cpu_secs "$p")"; done
  echo "  $label CPU: $cpu s"
  local hwm="origins" p
  for p in "${ORIGIN_PIDS[@]}"; do hwm="$hwm $(( $(rss_kb "$p" VmHWM) / 1024 ))"; done
  hwm="$hwm MB, agents"
  for p in "${AGENT_PIDS[@]}"; do hwm="$hwm $(( $(rss_kb "$p" VmHWM) / 1024 ))"; done
  echo "  $label peak resident size (VmHWM): $hwm MB"
}

echo "blob ${BLOB_MIB} MiB, agents' ingress cap B = ${MBIT} Mbit/s (${B_BYTES} B/s), built-in limiter"
# The floor under an agent's CPU per GiB that no user-space change moves: the kernel's cost of
# writing the blob into fresh page cache, measured by dd beside the agents' data in this run.
dd_secs=$( { /usr/bin/time -f '%S %U' dd if=/dev/zero of="$WORK/floor" bs=4M count=$((BLOB_MIB / 4)) status=none; } 2>&1 | awk '{ printf "%.2f", $1 + $2 }')
rm -f "$WORK/floor"
echo "  floor: dd writing ${BLOB_MIB} MiB into a new file here used ${dd_secs} CPU-s"
start_cluster baseline 1 1
push_blob baseline
pull_all baseline
read -r first _ <<<"$(timed_get "http://$ORIGIN/namespace/bench%2Fblob/blobs/$DIGEST")"
printf '  baseline: first byte of a GET straight from the origin after %.3f s\n' "$first"
start_cluster fanout "$AGENTS" 2 "$ORIGINS"
for r in $(seq 1 "$ROUNDS"); do
  push_blob fanout
  label=fanout; [ "$ROUNDS" -gt 1 ] && label="round$r"
  if [ "$COLD" = 1 ]; then cold_origins; label="cold-$label"; fi
  pull_all "$label"
done

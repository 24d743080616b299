#!/usr/bin/env bash
# Benchmarks an origin's first GET of a cold blob (release build): the origin fetches it from
# an upstream registry (Debian's docker-registry, the distribution 2.8 server, through the
# `registry_blob` backend) and streams it to the client while it lands. For each of RUNS blobs
# of BLOB_MIB random bytes, in one run: time to first byte and total time of a GET straight
# from the upstream (the baseline) and of the origin's cold GET, then of a second (warm) GET
# served from the origin's piece store, with the origin's CPU seconds for each; the bodies are
# hashed.
# Goal (issue 16): the origin's time to first byte <= 2x the upstream's own.
# Everything listens on 127.0.0.1 on free ports and is stopped on exit.
# Usage: bench/origin_ttfb.sh [BLOB_MIB (1024)] [RUNS (3)]
set -euo pipefail
cd "$(dirname "$0")/.."
BLOB_MIB=${1:-1024}
RUNS=${2:-3}

source bench/lib.sh
need docker-registry curl python3 sha256sum
build_shoal
bench_work ttfb

# --- the upstream, holding RUNS blobs ---------------------------------------------------------
start_upstream
HEXES=()
for i in $(seq 1 "$RUNS"); do
  head -c $((BLOB_MIB * 1024 * 1024)) /dev/urandom >"$WORK/blob"
  HEXES+=("$(push_blob "$WORK/blob" library/big)")
done
rm -f "$WORK/blob"
sync

# --- one origin over it, and the tracker it announces to ---------------------------------------
HTTP=127.0.0.1:$(free_port)
TRACKER=127.0.0.1:$(free_port)
cat >"$WORK/tracker.yaml" <<CONF
listen: $TRACKER
origin:
  hosts:
    static: ["$HTTP"]
CONF
RUST_LOG=${SHOAL_LOG:-warn} "$SHOAL" tracker --config "$WORK/tracker.yaml" --data-dir "$WORK/tracker" \
  2>"$WORK/tracker.log" &
PIDS+=($!)
cat >"$WORK/origin.yaml" <<CONF
listen: $HTTP
tracker:
  hosts:
    static: ["$TRACKER"]
peer:
  listen: 127.0.0.1:$(free_port)
  ip: 127.0.0.1
cluster:
  hosts:
    static: ["$HTTP"]
hashring:
  max_replica: 1
backends:
$(upstream_blobs)
CONF
RUST_LOG=${SHOAL_LOG:-warn} "$SHOAL" origin --config "$WORK/origin.yaml" --data-dir "$WORK/origin" \
  2>"$WORK/origin.log" &
PIDS+=($!); ORIGIN_PID=$!
wait_http "http://$HTTP/health"

# GET URL: "TTFB TOTAL HEX", the body hashed as it arrives.
get() {
  local sum
  sum=$(curl -fsS -w '%{stderr}%{time_starttransfer} %{time_total}' "$1" 2>"$WORK/times" |
    sha256sum | cut -d' ' -f1)
  echo "$(cat "$WORK/times") $sum"
}
RATIOS=()
for HEX in "${HEXES[@]}"; do
  read -r UT UTOT USUM <<<"$(get "http://$UP/v2/library/big/blobs/sha256:$HEX")"
  C0=$(cpu_secs "$ORIGIN_PID")
  read -r OT OTOT OSUM <<<"$(get "http://$HTTP/namespace/library%2Fbig/blobs/sha256:$HEX")"
  C1=$(cpu_secs "$ORIGIN_PID")
  # Again, now that the origin holds it: served from its piece store.
  read -r WT WTOT WSUM <<<"$(get "http://$HTTP/namespace/library%2Fbig/blobs/sha256:$HEX")"
  C2=$(cpu_secs "$ORIGIN_PID")
  [[ "$USUM" == "$HEX" && "$OSUM" == "$HEX" && "$WSUM" == "$HEX" ]] || { echo "a body hashes wrong: $USUM $OSUM $WSUM, not $HEX" >&2; exit 1; }
  R=$(echo "$OT / $UT" | bc -l)
  RATIOS+=("$R")
  printf 'cold %d MiB GET: upstream first byte %.1f ms (total %.2f s); origin first byte %.1f ms (total %.2f s); first byte %.2fx\n' \
    "$BLOB_MIB" "$(echo "$UT * 1000" | bc -l)" "$UTOT" "$(echo "$OT * 1000" | bc -l)" "$OTOT" "$R"
  printf '  origin CPU: cold GET %.2f s; warm GET %.2f s (first byte %.1f ms, total %.2f s)\n' \
    "$(echo "$C1 - $C0" | bc -l)" "$(echo "$C2 - $C1" | bc -l)" "$(echo "$WT * 1000" | bc -l)" "$WTOT"
done
MED=$(printf '%s\n' "${RATIOS[@]}" | sort -n | awk '{a[NR]=$1} END {print a[int((NR+1)/2)]}')
printf 'median time-to-first-byte ratio, origin / upstream: %.2fx (goal <= 2x)\n' "$MED"

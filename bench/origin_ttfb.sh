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

# --- the upstream holding RUNS blobs, one origin over it, and its tracker ---------------------
start_origin_over_upstream
HTTP=$ORIGIN

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

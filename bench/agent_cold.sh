#!/usr/bin/env bash
# Benchmarks an agent's first GET of a blob no node holds yet (release build): the agent asks
# the tracker for the metainfo, the origin fetches the blob from an upstream registry (Debian's
# docker-registry through the `registry_blob` backend) and seeds each piece as it lands (it
# answers 202 until a first piece is whole, then the hashes known so far); the agent downloads
# the pieces from the origin and streams them to the client. For each of RUNS blobs of
# BLOB_MIB random bytes, in one run: a GET straight from the upstream (the baseline: about
# what the origin's fetch takes, without its hashing and writing), then the agent's cold GET:
# when the origin held the whole blob (its log line), the client's first byte and its end,
# and the first byte's time from the origin holding the blob (negative: before it). Ratios
# against the upstream GET's total: the agent's first byte (before streaming, the origin's
# whole fetch came first: above 1) and its total. The agent's body is hashed.
# Everything listens on 127.0.0.1 on free ports and is stopped on exit.
# Usage: bench/agent_cold.sh [BLOB_MIB (256)] [RUNS (5)]
set -euo pipefail
cd "$(dirname "$0")/.."
BLOB_MIB=${1:-256}
RUNS=${2:-5}

source bench/lib.sh
need docker-registry curl python3 sha256sum bc
build_shoal
bench_work agentcold

# --- the upstream holding RUNS blobs, one origin over it, its tracker, one agent -----------------
# The origin at info: its "fetched from the storage backend" line says when it holds each blob.
ORIGIN_LOG=${ORIGIN_LOG:-info} start_origin_over_upstream
AGENT=127.0.0.1:$(free_port)
cat >"$WORK/agent.yaml" <<CONF
registry:
  listen: $AGENT
peer:
  listen: 127.0.0.1:$(free_port)
  ip: 127.0.0.1
tracker:
  hosts:
    static: ["$TRACKER"]
CONF
RUST_LOG=${SHOAL_LOG:-warn} "$SHOAL" agent --config "$WORK/agent.yaml" --data-dir "$WORK/agent" \
  2>"$WORK/agent.log" &
PIDS+=($!)
wait_http "http://$AGENT/v2/"

# GET URL: "FIRST_BYTE TOTAL HEX" in seconds, the body hashed as it arrives. The first byte is
# the body's (curl's time_starttransfer is the headers, which an agent sends once it has the
# metainfo).
get() {
  local start; start=$(now)
  curl -fsS "$1" | {
    head -c1 >"$WORK/head"
    local first; first=$(now)
    local sum; sum=$(cat "$WORK/head" - | sha256sum | cut -d' ' -f1)
    local end; end=$(now)
    python3 -c "print(f'{$first - $start:.3f} {$end - $start:.3f} $sum')"
  }
}
# When the origin logged that it holds sha256:HEX, in seconds since the epoch.
fetched_at() {
  python3 - "$WORK/origin.log" "$1" <<'PY'
import re, sys
from datetime import datetime
for line in open(sys.argv[1], errors="replace"):
    line = re.sub(r"\x1b\[[0-9;]*m", "", line)
    if "fetched from the storage backend" in line and sys.argv[2] in line:
        print(datetime.fromisoformat(line.split()[0].replace("Z", "+00:00")).timestamp())
        break
PY
}
GAPS=()
FIRSTS=()
TOTALS=()
for HEX in "${HEXES[@]}"; do
  UTOT=$(curl -fsS -o /dev/null -w '%{time_total}' "http://$UP/v2/library/big/blobs/sha256:$HEX")
  START=$(now)
  read -r AT ATOT ASUM <<<"$(get "http://$AGENT/v2/library/big/blobs/sha256:$HEX")"
  [[ "$ASUM" == "$HEX" ]] || { echo "the agent's body hashes to $ASUM, not $HEX" >&2; exit 1; }
  HELD=$(fetched_at "$HEX")
  [[ -n "$HELD" ]] || { echo "the origin did not log its fetch of $HEX" >&2; exit 1; }
  FETCH=$(echo "$HELD - $START" | bc -l)
  GAP=$(echo "$START + $AT - $HELD" | bc -l)
  GAPS+=("$GAP")
  FIRSTS+=("$(echo "$AT / $UTOT" | bc -l)")
  TOTALS+=("$(echo "$ATOT / $UTOT" | bc -l)")
  printf 'cold %d MiB: upstream GET %.2f s; origin held it after %.2f s; agent first byte %.2f s (total %.2f s): %.2f s after the origin held it; first byte %.2fx, total %.2fx the upstream GET\n' \
    "$BLOB_MIB" "$UTOT" "$FETCH" "$AT" "$ATOT" "$GAP" "${FIRSTS[-1]}" "${TOTALS[-1]}"
done
median() { printf '%s\n' "$@" | sort -g | awk '{a[NR]=$1} END {print a[int((NR+1)/2)]}'; }
printf 'agent first byte / upstream GET: median %.2fx; agent total / upstream GET: median %.2fx\n' \
  "$(median "${FIRSTS[@]}")" "$(median "${TOTALS[@]}")"
MED=$(median "${GAPS[@]}")
MAX=$(printf '%s\n' "${GAPS[@]}" | sort -g | tail -1)
printf 'agent first byte after the origin held the blob: median %.2f s, max %.2f s\n' "$MED" "$MAX"

#!/usr/bin/env bash
# Benchmarks the s3 plugin against native aws-sdk-s3, both talking to one moto server on
# 127.0.0.1, in one run (bench/s3, a crate outside the workspace, release build):
#  - download of a SIZE_MIB blob (default 1 GiB): plugin (GetObject body handed to the host)
#    vs aws-sdk-s3 GetObject; goal >= 0.9x;
#  - upload of the same size: plugin (host stream spliced into each UploadPart) vs aws-sdk-s3
#    UploadPart, both 64 MiB parts; goal >= 0.9x.
# Runs alternate which side goes first and print each pair's ratio. Then curl downloads the
# same object straight from moto, the ceiling both clients share: moto is Python, and when
# it is the bottleneck the ratios say little about the clients.
# Usage: bench/s3.sh [SIZE_MIB (default 1024)] [RUNS (default 3)]
set -euo pipefail
cd "$(dirname "$0")/.."
SIZE_MIB=${1:-1024}
RUNS=${2:-3}

python3 -c 'import moto.server' 2>/dev/null || { echo "missing moto[server]: run scripts/install-test-deps" >&2; exit 1; }
command -v curl >/dev/null || { echo "missing curl" >&2; exit 1; }
# Its own target dir: the crate is not a workspace member and CI never builds it.
(cd bench/s3 && cargo build --release --target-dir target >&2)
BENCH=bench/s3/target/release/shoal-bench-s3

source bench/lib.sh
bench_work s3
PORT=$(free_port)
ENDPOINT="http://127.0.0.1:$PORT"
# AWS_CA_BUNDLE (set here) is no use against plain HTTP and trips some clients.
env -u AWS_CA_BUNDLE python3 -m moto.server -H 127.0.0.1 -p "$PORT" >"$WORK/moto.log" 2>&1 &
MOTO_PID=$!
PIDS+=($MOTO_PID)
wait_http "$ENDPOINT/"
curl -fsS -X PUT -o /dev/null "$ENDPOINT/bench"

echo "== s3 plugin vs aws-sdk-s3 on moto $(python3 -c 'import moto; print(moto.__version__)'), ${SIZE_MIB} MiB, $RUNS runs"
env -u AWS_CA_BUNDLE RUST_LOG=warn "$BENCH" "$ENDPOINT" bench "$SIZE_MIB" "$RUNS"

echo "== the ceiling: curl GET of the same object straight from moto"
for _ in 1 2; do
  curl -fsS -o /dev/null -w '%{speed_download}\n' "$ENDPOINT/bench/bench/blob" |
    awk '{ printf "curl download: %.0f MB/s\n", $1 / 1e6 }'
done
echo "moto CPU (user+sys s): $(cpu_secs $MOTO_PID)"

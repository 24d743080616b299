#!/usr/bin/env bash
# Benchmarks shoal dev (release build) against its baselines, in one run, and prints ratios:
#  (a) GET of a cached 1 GiB blob: shoal vs Debian's nginx serving the same file from disk
#      (same client, curl to /dev/null; median of N runs each; goal >= 0.9x nginx);
#  (b) manifest GET by tag, requests/s with wrk: shoal vs Debian's docker-registry
#      (distribution 2.8) holding the same manifest (goal >= 2x), and vs nginx serving that
#      manifest as a static file (goal >= 0.5x, shoal's p99 < 5 ms);
#  (c) four clients reading the 1 GiB blob from shoal at once: shoal's peak resident size
#      (VmHWM, reset before the reads; goal <= 64 MB).
# Everything listens on 127.0.0.1 with free ports and is stopped on exit.
# Usage: bench/registry.sh [BLOB_MIB (default 1024)] [RUNS (default 5)] [WRK_SECONDS (default 10)]
set -euo pipefail
cd "$(dirname "$0")/.."
BLOB_MIB=${1:-1024}
RUNS=${2:-5}
WRK_SECS=${3:-10}

source bench/lib.sh
need nginx wrk docker-registry curl python3
build_shoal
bench_work registry
chmod 755 "$WORK" # nginx workers run as an unprivileged user

# --- servers -------------------------------------------------------------------------------
SHOAL_PORT=$(free_port)
RUST_LOG=warn "$SHOAL" dev --listen "127.0.0.1:$SHOAL_PORT" --data-dir "$WORK/shoal" 2>"$WORK/shoal.log" &
PIDS+=($!)
NGINX_PORT=$(free_port)
mkdir -p "$WORK/nginx/www" "$WORK/nginx/tmp"
cat >"$WORK/nginx/nginx.conf" <<CONF
worker_processes 2;
error_log $WORK/nginx/error.log warn;
pid $WORK/nginx/nginx.pid;
daemon off;
events { worker_connections 1024; }
http {
  access_log off;
  sendfile on;
  tcp_nopush on;
  client_body_temp_path $WORK/nginx/tmp; proxy_temp_path $WORK/nginx/tmp;
  fastcgi_temp_path $WORK/nginx/tmp; uwsgi_temp_path $WORK/nginx/tmp; scgi_temp_path $WORK/nginx/tmp;
  server { listen 127.0.0.1:$NGINX_PORT; root $WORK/nginx/www; }
}
CONF
nginx -c "$WORK/nginx/nginx.conf" &
PIDS+=($!)
REG_PORT=$(free_port)
cat >"$WORK/registry.yml" <<CONF
version: 0.1
log: { level: error, accesslog: { disabled: true } }
storage: { filesystem: { rootdirectory: $WORK/distribution }, delete: { enabled: true } }
http: { addr: 127.0.0.1:$REG_PORT }
CONF
docker-registry serve "$WORK/registry.yml" 2>"$WORK/registry.log" &
PIDS+=($!)
wait_http "http://127.0.0.1:$SHOAL_PORT/v2/"
wait_http "http://127.0.0.1:$REG_PORT/v2/"
for _ in $(seq 1 100); do curl -s -o /dev/null "http://127.0.0.1:$NGINX_PORT/" && break; sleep 0.05; done

# --- (a) 1 GiB blob --------------------------------------------------------------------------
head -c $((BLOB_MIB * 1024 * 1024)) /dev/urandom >"$WORK/blob"
DIGEST="sha256:$(sha256sum "$WORK/blob" | cut -d' ' -f1)"
curl -fsS -X POST -T - <"$WORK/blob" -H 'Content-Type: application/octet-stream' \
  "http://127.0.0.1:$SHOAL_PORT/v2/bench/blob/blobs/uploads/?digest=$DIGEST" -o /dev/null
cp "$WORK/blob" "$WORK/nginx/www/blob"
rm "$WORK/blob"
sync
median() { sort -g | awk '{a[NR]=$1} END {print a[int((NR+1)/2)]}'; }
# Runs alternate between the two servers so both see the same background load; the ratio is
# the median of the per-pair ratios.
S_URL="http://127.0.0.1:$SHOAL_PORT/v2/bench/blob/blobs/$DIGEST"
N_URL="http://127.0.0.1:$NGINX_PORT/blob"
speed() { curl -fsS -o /dev/null -w '%{speed_download}\n' "$1"; }
speed "$S_URL" >/dev/null; speed "$N_URL" >/dev/null # warm the page cache for both
: >"$WORK/pairs"
for _ in $(seq 1 "$RUNS"); do echo "$(speed "$S_URL") $(speed "$N_URL")" >>"$WORK/pairs"; done
S_BLOB=$(awk '{print $1}' "$WORK/pairs" | median)
N_BLOB=$(awk '{print $2}' "$WORK/pairs" | median)
BLOB_RATIO=$(awk '{print $1/$2}' "$WORK/pairs" | median)

# --- (c) peak resident size under four readers of the blob -----------------------------------
SHOAL_PID=${PIDS[0]}
RSS_BEFORE=$(rss_kb "$SHOAL_PID" VmRSS)
echo 5 >"/proc/$SHOAL_PID/clear_refs" # resets VmHWM to the current resident size
READERS=()
for _ in 1 2 3 4; do curl -fsS -o /dev/null "$S_URL" & READERS+=($!); done
for p in "${READERS[@]}"; do wait "$p"; done
HWM=$(rss_kb "$SHOAL_PID" VmHWM)

# --- (b) manifest GET rps --------------------------------------------------------------------
push_image() { # BASE_URL: pushes a config + layer + manifest as bench/app:v1 through the upload API
  local base=$1 cfg='{"architecture":"amd64","os":"linux","rootfs":{"type":"layers","diff_ids":[]}}' d_cfg d_layer loc
  local layer="$WORK/layer.bin"
  d_cfg="sha256:$(printf '%s' "$cfg" | sha256sum | cut -d' ' -f1)"
  d_layer="sha256:$(sha256sum "$layer" | cut -d' ' -f1)"
  for pair in "$d_cfg|cfg" "$d_layer|layer"; do
    local d=${pair%%|*} kind=${pair##*|}
    loc=$(curl -fsS -X POST -D - -o /dev/null "$base/v2/bench/app/blobs/uploads/" | tr -d '\r' | awk 'tolower($1)=="location:"{print $2}')
    case "$loc" in http*) ;; *) loc="$base$loc" ;; esac
    case "$loc" in *\?*) sep='&' ;; *) sep='?' ;; esac
    if [ "$kind" = cfg ]; then
      printf '%s' "$cfg" | curl -fsS -X PUT --data-binary @- -H 'Content-Type: application/octet-stream' "$loc${sep}digest=$d" -o /dev/null
    else
      curl -fsS -X PUT --data-binary @"$layer" -H 'Content-Type: application/octet-stream' "$loc${sep}digest=$d" -o /dev/null
    fi
  done
  printf '{"schemaVersion":2,"mediaType":"application/vnd.oci.image.manifest.v1+json","config":{"mediaType":"application/vnd.oci.image.config.v1+json","digest":"%s","size":%d},"layers":[{"mediaType":"application/vnd.oci.image.layer.v1.tar","digest":"%s","size":4096}]}' \
    "$d_cfg" "${#cfg}" "$d_layer" >"$WORK/manifest.json"
  curl -fsS -X PUT --data-binary @"$WORK/manifest.json" -H 'Content-Type: application/vnd.oci.image.manifest.v1+json' \
    "$base/v2/bench/app/manifests/v1" -o /dev/null
}
head -c 4096 /dev/urandom >"$WORK/layer.bin"
push_image "http://127.0.0.1:$SHOAL_PORT"
push_image "http://127.0.0.1:$REG_PORT"
ACCEPT='Accept: application/vnd.oci.image.manifest.v1+json, application/vnd.docker.distribution.manifest.v2+json'
for url in "http://127.0.0.1:$SHOAL_PORT" "http://127.0.0.1:$REG_PORT"; do
  cmp <(curl -fsS -H "$ACCEPT" "$url/v2/bench/app/manifests/v1") "$WORK/manifest.json" \
    || { echo "manifest differs on $url" >&2; exit 1; }
done
rps() { # URL -> requests/s; refuses a run with any non-2xx answer
  local out; out=$(wrk -t2 -c32 -d"${WRK_SECS}s" -H "$ACCEPT" "$1/v2/bench/app/manifests/v1")
  if grep -q "Non-2xx" <<<"$out"; then echo "non-2xx answers from $1:" >&2; echo "$out" >&2; exit 1; fi
  awk '/Requests\/sec/ {print $2}' <<<"$out"
}
S_RPS=$(rps "http://127.0.0.1:$SHOAL_PORT")
R_RPS=$(rps "http://127.0.0.1:$REG_PORT")
cp "$WORK/manifest.json" "$WORK/nginx/www/manifest.json"
nginx_rps() {
  local out; out=$(wrk -t2 -c32 -d"${WRK_SECS}s" --latency "http://127.0.0.1:$NGINX_PORT/manifest.json")
  if grep -q "Non-2xx" <<<"$out"; then echo "non-2xx answers from nginx:" >&2; echo "$out" >&2; exit 1; fi
  awk '/Requests\/sec/ {print $2}' <<<"$out"
}
p99_ms() { # URL -> shoal's 99th percentile latency in ms
  local out; out=$(wrk -t2 -c32 -d"${WRK_SECS}s" --latency -H "$ACCEPT" "$1/v2/bench/app/manifests/v1")
  awk '$1=="99%" {v=$2; if (v ~ /us$/) {sub(/us$/,"",v); v/=1000} else if (v ~ /ms$/) {sub(/ms$/,"",v)} else if (v ~ /s$/) {sub(/s$/,"",v); v*=1000}; print v}' <<<"$out"
}
N_RPS=$(nginx_rps)
S_P99=$(p99_ms "http://127.0.0.1:$SHOAL_PORT")

# --- report ----------------------------------------------------------------------------------
python3 - "$BLOB_MIB" "$S_BLOB" "$N_BLOB" "$S_RPS" "$R_RPS" "$BLOB_RATIO" "$RUNS" "$N_RPS" "$S_P99" "$RSS_BEFORE" "$HWM" <<'PY'
import sys
mib = sys.argv[1]
s_blob, n_blob, s_rps, r_rps, blob_ratio, runs, n_rps, s_p99, rss_before, hwm = map(float, sys.argv[2:])
print(f"(a) GET of a cached {mib} MiB blob, {runs:.0f} alternating runs, median MB/s: shoal {s_blob/1e6:.0f}, "
      f"nginx {n_blob/1e6:.0f}, median per-pair ratio {blob_ratio:.2f}x (goal >= 0.9x)")
print(f"(b) manifest GET req/s (wrk -t2 -c32): shoal {s_rps:.0f}, docker-registry {r_rps:.0f}, "
      f"ratio {s_rps/r_rps:.2f}x (goal >= 2x)")
print(f"    vs nginx serving the manifest as a static file: nginx {n_rps:.0f}, ratio {s_rps/n_rps:.2f}x "
      f"(goal >= 0.5x); shoal p99 {s_p99:.2f} ms (goal < 5 ms)")
print(f"(c) four clients reading the {mib} MiB blob at once: shoal peak resident size {hwm/1024:.0f} MB "
      f"(resident before: {rss_before/1024:.0f} MB; goal <= 64 MB)")
PY

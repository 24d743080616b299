# Shared by the bench scripts that source it: a work folder and the processes to stop on exit,
# free loopback ports, waiting for an HTTP server, reading a metric and a process's CPU time,
# and Debian's docker-registry as an upstream.
# Usage: source bench/lib.sh; bench_work NAME (sets WORK; `PIDS+=($!)` for each server started).

free_port() { python3 -c "import socket; s=socket.socket(); s.bind(('${1:-127.0.0.1}',0)); print(s.getsockname()[1])"; } # [IP]
wait_http() { for _ in $(seq 1 400); do curl -fsS -o /dev/null "$1" 2>/dev/null && return 0; sleep 0.05; done; echo "no answer from $1" >&2; return 1; }
now() { date +%s.%N; }
# Exits naming the first missing command.
need() { # COMMAND...
  local tool
  for tool in "$@"; do
    command -v "$tool" >/dev/null || { echo "missing $tool: run scripts/install-test-deps" >&2; exit 1; }
  done
}
# Sets SHOAL to the release build of shoal, built first; or to SHOAL_BIN (another build, to
# compare), built by nobody.
build_shoal() {
  if [[ -n "${SHOAL_BIN:-}" ]]; then
    SHOAL=$SHOAL_BIN
  else
    cargo build --release --bin shoal >&2
    SHOAL=$PWD/target/release/shoal
  fi
}
# The `backends:` entry serving `library/*` blobs from the upstream (UP) over plain HTTP.
upstream_blobs() {
  cat <<CONF
  - namespace: library/.*
    backend:
      registry_blob:
        address: $UP
        security: {tls: {client: {disabled: true}}}
CONF
}
metric() { curl -fsS "http://$1/metrics" | awk -v k="$2" '$1 == k { print $2 }'; } # HOST:PORT NAME
rss_kb() { # PID FIELD: a size from /proc/PID/status (VmRSS, VmHWM), in KiB
  awk -v k="$2:" '$1==k {print $2}' "/proc/$1/status"
}

cpu_secs() { # utime + stime of a pid, in seconds
  awk -v hz="$(getconf CLK_TCK)" '{ printf "%.2f", ($14 + $15) / hz }' "/proc/$1/stat"
}

# A fresh /tmp/shoal-bench-NAME.* as WORK, removed on exit (kept when KEEP is set) after every
# process in PIDS is stopped.
bench_work() { # NAME
  WORK=$(mktemp -d "/tmp/shoal-bench-$1.XXXXXX")
  PIDS=()
  trap bench_cleanup EXIT
}
bench_cleanup() {
  for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done
  wait 2>/dev/null || true
  [[ -n "${KEEP:-}" ]] || rm -rf "$WORK"
}

# Debian's docker-registry (distribution 2.8) on a free port, its storage and access log
# ($WORK/access.log) under WORK; sets UP to its host:port.
start_upstream() {
  UP=127.0.0.1:$(free_port)
  cat >"$WORK/registry.yml" <<CONF
version: 0.1
log: { level: error, accesslog: { disabled: false } }
storage: { filesystem: { rootdirectory: $WORK/distribution } }
http: { addr: $UP }
CONF
  docker-registry serve "$WORK/registry.yml" >"$WORK/access.log" 2>"$WORK/registry.log" &
  PIDS+=($!)
  wait_http "http://$UP/v2/"
}

# UP with RUNS blobs of BLOB_MIB random bytes in library/big (HEXES: their hex digests), a
# tracker and one origin over UP through `registry_blob`, started and healthy. Sets TRACKER,
# ORIGIN (its HTTP host:port) and ORIGIN_PID; the origin logs at ORIGIN_LOG (default warn) to
# $WORK/origin.log.
start_origin_over_upstream() {
  start_upstream
  HEXES=()
  local i
  for i in $(seq 1 "$RUNS"); do
    head -c $((BLOB_MIB * 1024 * 1024)) /dev/urandom >"$WORK/blob"
    HEXES+=("$(push_blob "$WORK/blob" library/big)")
  done
  rm -f "$WORK/blob"
  sync
  ORIGIN=127.0.0.1:$(free_port)
  TRACKER=127.0.0.1:$(free_port)
  cat >"$WORK/tracker.yaml" <<CONF
listen: $TRACKER
origin:
  hosts:
    static: ["$ORIGIN"]
CONF
  RUST_LOG=${SHOAL_LOG:-warn} "$SHOAL" tracker --config "$WORK/tracker.yaml" --data-dir "$WORK/tracker" \
    2>"$WORK/tracker.log" &
  PIDS+=($!)
  cat >"$WORK/origin.yaml" <<CONF
listen: $ORIGIN
tracker:
  hosts:
    static: ["$TRACKER"]
peer:
  listen: 127.0.0.1:$(free_port)
  ip: 127.0.0.1
cluster:
  hosts:
    static: ["$ORIGIN"]
hashring:
  max_replica: 1
backends:
$(upstream_blobs)
CONF
  RUST_LOG=${ORIGIN_LOG:-${SHOAL_LOG:-warn}} "$SHOAL" origin --config "$WORK/origin.yaml" \
    --data-dir "$WORK/origin" 2>"$WORK/origin.log" &
  PIDS+=($!); ORIGIN_PID=$!
  wait_http "http://$TRACKER/health"
  wait_http "http://$ORIGIN/health"
}

# Pushes FILE as a blob of REPO to the upstream; prints its hex digest.
push_blob() { # FILE REPO
  local hex location sep
  hex=$(sha256sum "$1" | cut -d' ' -f1)
  # distribution 2.8 ignores a body on the POST: start a session, then PUT the blob into it.
  location=$(curl -fsS -X POST -D - -o /dev/null "http://$UP/v2/$2/blobs/uploads/" |
    tr -d '\r' | awk 'tolower($1) == "location:" {print $2}')
  [[ "$location" == http* ]] || location="http://$UP$location"
  sep='?'; [[ "$location" == *\?* ]] && sep='&'
  curl -fsS -X PUT -T - <"$1" -H 'Content-Type: application/octet-stream' \
    "$location${sep}digest=sha256:$hex" -o /dev/null
  echo "$hex"
}

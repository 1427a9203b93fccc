#!/usr/bin/env bash
# The same events loaded by TLS into a node on local disk and into a node writing to a bucket
# (s3s-fs on loopback), alternating chunk by chunk: ingest rates side by side. Then the six
# queries of benches/query-bench.sh, each with its ratio to the local-disk node:
#   1. on the local-disk node (the reference),
#   2. on the ingest node that wrote the bucket (its own local copies),
#   3. on a query node with an empty cache (first runs: cold; then warm),
#   4. on a query node handing them to a Ballista scheduler with two executors (all processes
#      of this binary, on this machine), plus a query matching nothing (planning and dispatch).
#
#   benches/cluster-bench.sh [MILLIONS]     (default 100; RUNS=N times each warm query, default 5)
#
# Needs the release build, s3s-fs and the ADBC venv (scripts/install-test-deps).
set -euo pipefail
cd "$(dirname "$0")/.."
millions="${1:-100}"
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/logwarden/target}"
venv="${LOGWARDEN_VENV:-$HOME/.cache/logwarden/venv}"
bin="$CARGO_TARGET_DIR/release"
cargo build --release --bins -q

work="$(mktemp -d "${LW_BENCH_TMP:-$HOME/.cache/logwarden}/cluster-bench.XXXXXX")"
pids=()
cleanup() {
  for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
  wait 2>/dev/null || true
  rm -rf "$work"
}
trap cleanup EXIT

. benches/s3s-fs.sh
start_s3 "$work"
pids+=("$s3pid")

free_port() { "$venv/bin/python" -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }

# node NAME ROLE EXTRA: write its config and start it; waits for listeners.json.
node() {
  local name="$1" role="$2" extra="$3" dir="$work/$1"
  mkdir -p "$dir"
  {
    printf 'data_dir = "%s/data"\n[log]\nlevel = "warn"\n' "$dir"
    if [ "$role" != query ]; then
      printf '[[stream]]\nname = "syslog"\naddress = "127.0.0.1:0"\n[[http]]\nname = "http"\naddress = "127.0.0.1:0"\n'
    fi
    printf '[admin]\naddress = "127.0.0.1:0"\n[flight]\naddress = "127.0.0.1:0"\n'
    printf '[storage]\nflush_interval = "5s"\nretention_max_age = "3650days"\n'
    if [ "$role" != local ]; then
      printf 'url = "s3://bench/site"\ncache_max_bytes = "64GiB"\n'
      printf '[cluster]\nnode_id = "%s"\nrole = "%s"\n' "$name" "$role"
    fi
    printf '%s' "$extra"
  } >"$dir/logwarden.toml"
  "$bin/logwarden" serve --config "$dir/logwarden.toml" 2>"$dir/daemon.log" &
  pids+=($!)
  for _ in $(seq 600); do [ -f "$dir/data/listeners.json" ] && break; sleep 0.1; done
}
addr() { "$venv/bin/python" -c "import json,sys; print(json.load(open(sys.argv[1]))[sys.argv[2]])" "$work/$1/data/listeners.json" "$2"; }
metric() { curl -s "http://$(addr "$1" admin)/metrics" | awk -v m="$2" '$1 == m {print $2}'; }
queries() {
  local n="$1"; shift
  "$venv/bin/python" benches/flight_queries.py --uri "grpc+tls://localhost:$(addr "$n" flight | sed 's/.*://')" \
    --ca "$work/$n/data/tls/ca.pem" --token "$(cat "$work/$n/data/flight.token")" --segments /nonexistent --no-duckdb --runs "${RUNS:-5}" "$@"
}
# load NODE EVENTS SEED: TLS ingest until durable; prints and records the events/s.
load() {
  "$bin/logwarden-loadgen" --target "$(addr "$1" syslog)" --ca "$work/$1/data/tls/ca.pem" \
    --admin "$(addr "$1" admin)" --events "$2" --connections 8 --seed "$3" | grep -E "durable" |
    tee -a "$work/$1.rates"
}
# mean NODE: the mean of the events/s of its loads.
mean() { sed -n 's|.*: \([0-9]*\) events/s.*|\1|p' "$work/$1.rates" | awk '{s += $1} END {printf "%.0f", s / NR}'; }

node local local ""
node ingest both ""
wanted=$((millions * 1000000))
echo "loading $millions M events through TLS ingest into a local-disk node and a bucket node, alternating"
chunk=10000000
for ((done = 0, seed = 1; done < wanted; done += chunk, seed++)); do
  n=$((wanted - done < chunk ? wanted - done : chunk))
  printf 'local disk: '; load local "$n" "$seed"
  printf 'bucket:     '; load ingest "$n" "$seed"
done
echo "ingest, mean events/s: local disk $(mean local), bucket $(mean ingest)" \
  "($(awk -v b="$(mean ingest)" -v l="$(mean local)" 'BEGIN {printf "%.1f", 100 * b / l}')% of local disk)"
echo "waiting until every event is in a segment (and, for the bucket node, uploaded)"
for _ in $(seq 2400); do
  rows=$(metric ingest logwarden_storage_rows)
  local_rows=$(metric local logwarden_storage_rows)
  backlog=$(metric ingest logwarden_upload_backlog_segments)
  [ "${rows%.*}" -ge "$wanted" ] 2>/dev/null && [ "${local_rows%.*}" -ge "$wanted" ] 2>/dev/null &&
    [ "${backlog%.*}" = 0 ] && break
  sleep 0.5
done
echo "bucket: $(metric ingest logwarden_storage_bytes) bytes in $(metric ingest logwarden_storage_segments) segments"

echo "== local-disk node (the reference for the ratios)"
queries local --small --save "$work/local.json"
echo "== ingest node, local copies (warm cache)"
queries ingest --small --against "$work/local.json"

node query query ""
echo "== query node, empty cache (first runs read the bucket)"
queries query --cold --against "$work/local.json"
echo "waiting for the query node's cache to fill"
for _ in $(seq 1200); do
  [ "$(metric query logwarden_segment_cache_bytes)" = "$(metric ingest logwarden_storage_bytes)" ] && break
  sleep 0.5
done
echo "== query node, warm cache"
queries query --small --against "$work/local.json"

sched=$(free_port)
"$bin/logwarden" scheduler --config "$work/ingest/logwarden.toml" --bind "127.0.0.1:$sched" 2>"$work/scheduler.log" &
pids+=($!)
for i in 1 2; do
  mkdir -p "$work/executor-$i"
  "$bin/logwarden" executor --config "$work/ingest/logwarden.toml" --scheduler "df://127.0.0.1:$sched" \
    --port "$(free_port)" --grpc-port "$(free_port)" --concurrent-tasks 1 --work-dir "$work/executor-$i" \
    2>"$work/executor-$i.log" &
  pids+=($!)
done
node ballista query "$(printf '[query]\nengine = "ballista"\nscheduler = "df://127.0.0.1:%s"\n' "$sched")"
echo "== Ballista: scheduler + 2 executors (1 task each) on this machine"
queries ballista --small --runs 3 --against "$work/local.json"

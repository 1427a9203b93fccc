#!/usr/bin/env bash
# Query benchmark: load N million generated events (about 180 bytes each) through the TLS
# ingest path into a daemon, then time log-shaped SQL over Flight SQL and the same SQL in
# DuckDB over the same Parquet files.
#
#   benches/query-bench.sh [MILLIONS]     (default 100; the loaded data is kept and reused)
#
# Needs: scripts/install-test-deps (the ADBC venv); duckdb is added to that venv here.
set -euo pipefail
cd "$(dirname "$0")/.."
millions="${1:-100}"
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/logwarden/target}"
venv="${LOGWARDEN_VENV:-$HOME/.cache/logwarden/venv}"
dir="${LW_BENCH_DIR:-$HOME/.cache/logwarden/query-bench/${millions}M}"
bin="$CARGO_TARGET_DIR/release"

cargo build --release --bins -q
"$venv/bin/python" -c 'import duckdb' 2>/dev/null || "$venv/bin/pip" install -q --disable-pip-version-check duckdb

mkdir -p "$dir"
cat > "$dir/logwarden.toml" <<TOML
data_dir = "$dir/data"
[log]
level = "warn"
[[stream]]
name = "syslog"
address = "127.0.0.1:0"
[[http]]
name = "http"
address = "127.0.0.1:0"
[admin]
address = "127.0.0.1:0"
[flight]
address = "127.0.0.1:0"
[storage]
flush_interval = "5s"
retention_max_age = "3650days"
TOML

rm -f "$dir/data/listeners.json"
"$bin/logwarden" serve --config "$dir/logwarden.toml" 2> "$dir/daemon.log" &
daemon=$!
trap 'kill $daemon 2>/dev/null; wait $daemon 2>/dev/null || true' EXIT
for _ in $(seq 600); do [ -f "$dir/data/listeners.json" ] && break; sleep 0.1; done
addr() { "$venv/bin/python" -c "import json,sys; print(json.load(open(sys.argv[1]))[sys.argv[2]])" "$dir/data/listeners.json" "$1"; }
metric() { curl -s "http://$(addr admin)/metrics" | awk -v m="$1" '$1 == m {print $2}'; }
wanted=$((millions * 1000000))

loaded=$(cat "$dir/loaded" 2>/dev/null || echo 0)
if [ "$loaded" != "$wanted" ]; then
  echo "loading $millions M events through TLS ingest (10 M per loadgen run)"
  chunk=10000000
  for ((done = 0, seed = 1; done < wanted; done += chunk, seed++)); do
    n=$((wanted - done < chunk ? wanted - done : chunk))
    "$bin/logwarden-loadgen" --target "$(addr syslog)" --ca "$dir/data/tls/ca.pem" --admin "$(addr admin)" \
      --events "$n" --connections 8 --seed "$seed" | grep -E "durable"
  done
  echo "$wanted" > "$dir/loaded"
fi
echo "waiting until every event is in a Parquet segment"
for _ in $(seq 1200); do
  rows=$(metric logwarden_storage_rows)
  [ "${rows%.*}" -ge "$wanted" ] 2>/dev/null && break
  sleep 0.5
done
echo "parquet: $(metric logwarden_storage_bytes) bytes in $(metric logwarden_storage_segments) segments"

"$venv/bin/python" benches/flight_queries.py --uri "grpc+tls://localhost:$(addr flight | sed 's/.*://')" \
  --ca "$dir/data/tls/ca.pem" --token "$(cat "$dir/data/flight.token")" --segments "$dir/data/segments"

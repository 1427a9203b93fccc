#!/usr/bin/env bash
# TLS ingest into a node that stores its segments in a bucket (s3s-fs on loopback), beside the
# same load on local disk, alternating, in one run: uploads are off the acknowledgement path, so
# the two should ingest alike. Usage: benches/bucket-bench.sh [EVENTS] [ROUNDS]
# Needs the release build (cargo build --release --bin logwarden --bin logwarden-loadgen) and
# s3s-fs (scripts/install-test-deps installs it).
set -euo pipefail
cd "$(dirname "$0")/.."
bin="${CARGO_TARGET_DIR:-$HOME/.cache/logwarden/target}/release"
events="${1:-2000000}"
rounds="${2:-3}"

work="$(mktemp -d)"
s3pid=""
cleanup() {
  [ -n "$s3pid" ] && kill "$s3pid" 2>/dev/null || true
  rm -rf "$work"
}
trap cleanup EXIT
. benches/s3s-fs.sh
start_s3 "$work"

for r in $(seq "$rounds"); do
  printf 'url = "s3://bench/round-%s"\n[cluster]\nnode_id = "bench"\n' "$r" >"$work/bucket.toml"
  echo "== round $r: local disk"
  "$bin/logwarden-loadgen" --events "$events" --connections 4 | grep -E '^(sent|durable)'
  echo "== round $r: bucket s3://bench/round-$r"
  "$bin/logwarden-loadgen" --events "$events" --connections 4 --extra-config "$work/bucket.toml" |
    grep -E '^(sent|durable)'
  echo "objects in the bucket: $(find "$work/s3/bench/round-$r" -name '*.parquet' | wc -l) segments"
done

#!/usr/bin/env bash
# What the seal costs ingest, and how fast `verify` reads: logwarden-loadgen (release) with the
# seal on (the default) and off (benches/seal-off.toml), alternating within each round so that
# the machine's drift hits both alike; the median durable events/s of each; then `verify` over a
# data directory the last sealed run kept, its GB/s.
#   benches/seal-bench.sh [EVENTS] [ROUNDS] [CONNECTIONS] [PROTOCOL]
set -euo pipefail
cd "$(dirname "$0")/.."
events="${1:-2000000}"
rounds="${2:-5}"
conns="${3:-4}"
protocol="${4:-syslog}"
target="${CARGO_TARGET_DIR:-$HOME/.cache/logwarden/target}"
cargo build --release --bin logwarden --bin logwarden-loadgen >&2
loadgen="$target/release/logwarden-loadgen"
kept=""
log="$(mktemp)"
trap 'rm -f "$log"; [ -n "$kept" ] && rm -rf "${kept%/data}"' EXIT
declare -A rates
for r in $(seq "$rounds"); do
  for mode in on off; do
    flags=(--protocol "$protocol")
    [ "$mode" = off ] && flags+=(--extra-config benches/seal-off.toml)
    [ "$mode" = on ] && [ "$r" = "$rounds" ] && flags+=(--keep-data)
    rate=$("$loadgen" --events "$events" --connections "$conns" "${flags[@]}" 2>"$log" |
      sed -n 's/^durable and queryable in [0-9.]*s: \([0-9]*\) events\/s.*/\1/p')
    kept="${kept:-$(sed -n 's/^data kept in //p' "$log")}"
    echo "round $r seal-$mode ${rate:-failed}"
    rates[$mode]="${rates[$mode]:-} ${rate:-0}"
  done
done
echo
for mode in on off; do
  median=$(tr ' ' '\n' <<<"${rates[$mode]}" | grep -v '^$' | sort -n | awk '{a[NR]=$1} END {print a[int((NR+1)/2)]}')
  printf 'seal-%-4s median %10s ev/s   runs:%s\n' "$mode" "$median" "${rates[$mode]}"
done
kept="${kept:+$kept/data}"
if [ -n "$kept" ] && [ -d "$kept/seal" ]; then
  echo
  du -sh "$kept" | sed 's/^/data directory: /'
  # Twice: the first read may come from disk, the second from the page cache.
  for pass in 1 2; do
    "$target/release/logwarden" verify --quiet --data-dir "$kept" --cert "$kept/tls/server.pem" | tail -1 |
      sed "s/^/verify pass $pass: /" || true
  done
fi

#!/usr/bin/env bash
# Ingest rate per protocol on the same events: logwarden-loadgen (release) run once per
# protocol per round, the protocols alternating within each round so that the machine's drift
# hits them alike; prints each run's durable events/s and the median per protocol.
#   benches/protocols-bench.sh [EVENTS] [ROUNDS] [CONNECTIONS]
set -euo pipefail
events="${1:-1000000}"
rounds="${2:-3}"
conns="${3:-4}"
target="${CARGO_TARGET_DIR:-$HOME/.cache/logwarden/target}"
cargo build --release --bin logwarden --bin logwarden-loadgen >&2
loadgen="$target/release/logwarden-loadgen"
# relp-1024: RELP with omrelp's windowSize="1024" instead of librelp's default 128.
protocols=(syslog relp relp-1024 ndjson otlp-http otlp-grpc bulk loki hec)
declare -A rates
for r in $(seq "$rounds"); do
  for p in "${protocols[@]}"; do
    case "$p" in
      relp-1024) flags=(--protocol relp --relp-window 1024) ;;
      *) flags=(--protocol "$p") ;;
    esac
    rate=$("$loadgen" --events "$events" --connections "$conns" "${flags[@]}" 2>/dev/null |
      sed -n 's/^durable and queryable in [0-9.]*s: \([0-9]*\) events\/s.*/\1/p')
    echo "round $r $p ${rate:-failed}"
    rates[$p]="${rates[$p]:-} ${rate:-0}"
  done
done
echo
printf '%-10s %12s   %s\n' protocol "median ev/s" "runs"
for p in "${protocols[@]}"; do
  median=$(tr ' ' '\n' <<<"${rates[$p]}" | grep -v '^$' | sort -n | awk '{a[NR]=$1} END {print a[int((NR+1)/2)]}')
  printf '%-10s %12s  %s\n' "$p" "$median" "${rates[$p]}"
done

#!/usr/bin/env bash
# The FIPS build against the default one: full TLS 1.3 handshakes per second (1 and 4 client
# connections in a loop, the daemon pinned to CPU 0 and the client to CPU 1) and ingest
# throughput over mutual TLS (4 connections, unpinned), with the same EC P-256 key in a file.
#
#   benches/fips-bench.sh [SECONDS] [EVENTS] [ROUNDS]
#
# Defaults: 10 s per handshake run, 2 M events, 3 rounds; the table gives the median of the
# rounds, each round measuring both builds. The client (logwarden-loadgen) is the default
# build's in every run, so only the daemon's cryptography differs. Builds both flavours in
# release (the FIPS one needs CMake and Go: scripts/install-test-deps installs them).
set -euo pipefail
cd "$(dirname "$0")/.."
# shellcheck source=benches/tls-bench-lib.sh
source "$PWD/benches/tls-bench-lib.sh"
seconds="${1:-10}"
events="${2:-2000000}"
rounds="${3:-3}"
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/logwarden/target}"
dir="$(mktemp -d)"
trap 'kill "$(cat "$dir/pid" 2>/dev/null)" 2>/dev/null || true; rm -rf "$dir"' EXIT

# Both flavours write release/logwarden: each is copied out, the default one built last.
cargo build --release --locked -q --no-default-features --features fips --bin logwarden
cp "$CARGO_TARGET_DIR/release/logwarden" "$dir/logwarden-fips"
cargo build --release --locked -q --bins
cp "$CARGO_TARGET_DIR/release/logwarden" "$dir/logwarden-default"
loadgen="$CARGO_TARGET_DIR/release/logwarden-loadgen"

cd "$dir"
openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -keyout ca.key -out ca.pem \
    -subj "/CN=bench CA" -days 2 2> /dev/null
printf 'subjectAltName=DNS:localhost,IP:127.0.0.1\nkeyUsage=digitalSignature\nextendedKeyUsage=serverAuth\n' > server.cnf
printf 'keyUsage=digitalSignature\nextendedKeyUsage=clientAuth\n' > client.cnf
openssl req -new -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -keyout server.key -subj /CN=localhost \
    2> /dev/null | openssl x509 -req -CA ca.pem -CAkey ca.key -extfile server.cnf -days 2 -out server.pem 2> /dev/null
openssl req -new -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -keyout client.key -subj /CN=web-01.example.org \
    2> /dev/null | openssl x509 -req -CA ca.pem -CAkey ca.key -extfile client.cnf -days 2 -out client.pem 2> /dev/null

# Start the daemon of flavour $1 (pinned by the command in $2); sets $syslog, $mtls and $admin.
start() {
    local fips=false
    [ "$1" = fips ] && fips=true
    rm -rf data && mkdir data
    cat > logwarden.toml <<TOML
data_dir = "$dir/data"
[log]
level = "warn"
[tls]
cert_file = "$dir/server.pem"
key_file = "$dir/server.key"
client_ca_file = "$dir/ca.pem"
fips = $fips
[[stream]]
name = "syslog"
address = "127.0.0.1:0"
[[stream]]
name = "mtls"
address = "127.0.0.1:0"
client_auth = "required"
[admin]
address = "127.0.0.1:0"
[flight]
enabled = false
[storage]
flush_interval = "5s"
TOML
    $2 "./logwarden-$1" serve --config logwarden.toml > daemon.log 2>&1 &
    echo $! > pid
    await_daemon
}


declare -A result
for round in $(seq "$rounds"); do
    for flavour in default fips; do
        echo "round $round, $flavour build" >&2
        start "$flavour" "taskset -c 0"
        lg=(taskset -c 1 "$loadgen" --target "$syslog" --ca ca.pem --admin "$admin" --handshakes "${seconds}s")
        result[$flavour,full1]+="$("${lg[@]}" --connections 1 | tee /dev/stderr | rate) "
        result[$flavour,full4]+="$("${lg[@]}" --connections 4 | tee /dev/stderr | rate) "
        stop
        start "$flavour" ""
        result[$flavour,ingest]+="$("$loadgen" --target "$mtls" --ca ca.pem --admin "$admin" \
            --cert client.pem --key client.key --events "$events" --connections 4 | tee /dev/stderr | ingest) "
        stop
    done
done

median() { python3 -c 'import statistics, sys; print(round(statistics.median(float(x) for x in sys.argv[1:])))' $1; }
ratio() { python3 -c "print(f'{$2 / $1:.3f}')"; }

echo
echo "Median of $rounds rounds (handshakes: daemon pinned to CPU 0, client to CPU 1)."
echo
echo "| | default (ring) | FIPS (AWS-LC FIPS module) | FIPS / default |"
echo "|---|---|---|---|"
for row in "full1:full TLS 1.3 handshakes/s, 1 client" "full4:full TLS 1.3 handshakes/s, 4 clients" \
    "ingest:mTLS ingest, events/s durable (4 connections)"; do
    k="${row%%:*}"
    d="$(median "${result[default,$k]}")"
    f="$(median "${result[fips,$k]}")"
    echo "| ${row#*:} | $d | $f | $(ratio "$d" "$f") |"
done
echo
echo "runs: default ${result[default,ingest]}/ fips ${result[fips,ingest]}(events/s)"

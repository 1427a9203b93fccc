#!/usr/bin/env bash
# TLS benchmark with the server key on a SoftHSM2 token against a key in a file: full TLS 1.3
# handshakes per second (1 and 2 client connections in a loop), resumed handshakes, and
# ingest throughput over mutual TLS (client certificate required) once connections are up.
#
#   benches/handshake-bench.sh [SECONDS] [EVENTS] [ROUNDS]
#
# Defaults: 10 s per handshake run, 2 M events, 3 rounds. Each round measures the file key and
# then the token key; the table gives the median of the rounds, since one run on a 2-core
# machine can be off by 20%.
#
# For the handshake runs the daemon is pinned to CPU 0 and the client to CPU 1, so the figure is
# what one daemon core does; the daemon's CPU time over each run is read from /proc and reported
# as handshakes per daemon CPU-second. The ingest run leaves both unpinned.
#
# Both keys are EC P-256 (the token's is generated on the token, never extractable). Needs
# softhsm2, opensc and openssl (scripts/install-test-deps installs them).
set -euo pipefail
cd "$(dirname "$0")/.."
# shellcheck source=benches/tls-bench-lib.sh
source "$PWD/benches/tls-bench-lib.sh"
seconds="${1:-10}"
events="${2:-2000000}"
rounds="${3:-3}"
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/logwarden/target}"
bin="$CARGO_TARGET_DIR/release"
module=/usr/lib/softhsm/libsofthsm2.so
cargo build --release --bins -q

dir="$(mktemp -d)"
trap 'kill "$(cat "$dir/pid" 2>/dev/null)" 2>/dev/null || true; rm -rf "$dir"' EXIT
cd "$dir"
mkdir tokens
printf 'directories.tokendir = %s/tokens\nobjectstore.backend = file\nlog.level = ERROR\n' "$dir" > softhsm2.conf
export SOFTHSM2_CONF="$dir/softhsm2.conf"
echo 314159 > pin
softhsm2-util --init-token --free --label bench --so-pin 27182818 --pin 314159 > /dev/null
pkcs11-tool --module "$module" --token-label bench --login --pin 314159 \
    --keypairgen --key-type EC:prime256v1 --id 01 --label server > /dev/null 2>&1
pkcs11-tool --module "$module" --token-label bench --read-object --type pubkey --label server -o token.der > /dev/null
openssl pkey -pubin -inform DER -in token.der -out token.pub
openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -keyout ca.key -out ca.pem \
    -subj "/CN=bench CA" -days 2 2> /dev/null
printf 'subjectAltName=DNS:localhost,IP:127.0.0.1\nkeyUsage=digitalSignature\nextendedKeyUsage=serverAuth\n' > server.cnf
printf 'keyUsage=digitalSignature\nextendedKeyUsage=clientAuth\n' > client.cnf
openssl x509 -new -subj /CN=localhost -force_pubkey token.pub -CA ca.pem -CAkey ca.key \
    -extfile server.cnf -days 2 -out token.pem 2> /dev/null
openssl req -new -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -keyout file.key -subj /CN=localhost \
    2> /dev/null | openssl x509 -req -CA ca.pem -CAkey ca.key -extfile server.cnf -days 2 -out file.pem 2> /dev/null
openssl req -new -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -keyout client.key -subj /CN=web-01.example.org \
    2> /dev/null | openssl x509 -req -CA ca.pem -CAkey ca.key -extfile client.cnf -days 2 -out client.pem 2> /dev/null

# Start the daemon with the [tls] lines in $1; sets $syslog, $mtls and $admin.
start() {
    rm -rf data && mkdir data
    cat > logwarden.toml <<TOML
data_dir = "$dir/data"
[log]
level = "warn"
$1
client_ca_file = "$dir/ca.pem"
[[stream]]
name = "syslog"
address = "127.0.0.1:0"
[[stream]]
name = "mtls"
address = "127.0.0.1:0"
client_auth = "required"
[[http]]
name = "http"
address = "127.0.0.1:0"
[admin]
address = "127.0.0.1:0"
[flight]
enabled = false
[storage]
flush_interval = "5s"
TOML
    $2 "$bin/logwarden" serve --config logwarden.toml > daemon.log 2>&1 &
    echo $! > pid
    await_daemon
}

# The daemon's user + system CPU time so far, in clock ticks.
ticks() { awk '{ print $14 + $15 }' "/proc/$(cat pid)/stat"; }
hz=$(getconf CLK_TCK)

# Handshakes/s of one loadgen run ($@ are extra flags), pinned to CPU 1; stores "rate per-cpu-second".
handshake_run() {
    local before after out r
    before=$(ticks)
    out=$(taskset -c 1 "${lg[@]}" --handshakes "${seconds}s" "$@" | tee /dev/stderr)
    after=$(ticks)
    r=$(echo "$out" | rate)
    local n
    n=$(echo "$out" | sed -n 's/^handshakes: \([0-9]*\) .*/\1/p')
    echo "$r $(python3 -c "print(round($n / (($after - $before) / $hz)))")"
}

declare -A result
for round in $(seq "$rounds"); do
    for key in file token; do
        echo "round $round, key in a $key" >&2
        if [ "$key" = file ]; then
            tls="[tls]
cert_file = \"$dir/file.pem\"
key_file = \"$dir/file.key\""
        else
            tls="[tls]
key = \"pkcs11:token=bench;object=server\"
pkcs11_module = \"$module\"
pin_file = \"$dir/pin\"
cert_file = \"$dir/token.pem\""
        fi
        start "$tls" "taskset -c 0"
        lg=("$bin/logwarden-loadgen" --target "$syslog" --ca ca.pem --admin "$admin")
        result[$key,full1]+="$(handshake_run --connections 1);"
        result[$key,full4]+="$(handshake_run --connections 4);"
        result[$key,resumed]+="$(handshake_run --connections 4 --resume);"
        stop
        start "$tls" ""
        result[$key,ingest]+="$("$bin/logwarden-loadgen" --target "$mtls" --ca ca.pem --admin "$admin" \
            --cert client.pem --key client.key --events "$events" --connections 4 | tee /dev/stderr | ingest);"
        stop
    done
done

# "a b;a b;..." -> the median of each column, space-separated.
median() {
    python3 -c '
import statistics, sys
runs = [r.split() for r in sys.argv[1].split(";") if r.strip()]
print(" ".join(str(round(statistics.median(float(r[i]) for r in runs))) for i in range(len(runs[0]))))
' "$1"
}
ratio() { python3 -c "print(f'{$2 / $1:.3f}')"; }

echo
echo "Median of $rounds rounds. Handshakes: daemon pinned to CPU 0, client to CPU 1;"
echo "each cell is handshakes/s measured / handshakes per daemon CPU-second."
echo
echo "| | key in a file | key on SoftHSM2 | token / file |"
echo "|---|---|---|---|"
for row in "full1:full TLS 1.3 handshakes/s, 1 client" "full4:full TLS 1.3 handshakes/s, 4 clients" \
    "resumed:resumed handshakes/s, 4 clients"; do
    k="${row%%:*}"
    read -r f fc <<< "$(median "${result[file,$k]}")"
    read -r t tc <<< "$(median "${result[token,$k]}")"
    echo "| ${row#*:} | $f / $fc | $t / $tc | $(ratio "$f" "$t") / $(ratio "$fc" "$tc") |"
done
f="$(median "${result[file,ingest]}")"
t="$(median "${result[token,ingest]}")"
echo "| mTLS ingest, events/s durable (4 connections, unpinned) | $f | $t | $(ratio "$f" "$t") |"
echo
echo "ingest runs (events/s): file ${result[file,ingest]} token ${result[token,ingest]}"

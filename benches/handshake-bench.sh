#!/usr/bin/env bash
# TLS benchmark with the server key on a SoftHSM2 token against a key in a file: full TLS 1.3
# handshakes per second (1 and 2 client connections in a loop), resumed handshakes, and
# ingest throughput over mutual TLS (client certificate required) once connections are up.
#
#   benches/handshake-bench.sh [SECONDS] [EVENTS]     (defaults: 10 s per handshake run, 2 M events)
#
# Both keys are EC P-256 (the token's is generated on the token, never extractable). Needs
# softhsm2, opensc and openssl (scripts/install-test-deps installs them).
set -euo pipefail
cd "$(dirname "$0")/.."
seconds="${1:-10}"
events="${2:-2000000}"
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
    "$bin/logwarden" serve --config logwarden.toml > daemon.log 2>&1 &
    echo $! > pid
    for _ in $(seq 600); do [ -f data/listeners.json ] && break; sleep 0.1; done
    [ -f data/listeners.json ] || { cat daemon.log; exit 1; }
    syslog=$(python3 -c 'import json,sys; print(json.load(open("data/listeners.json"))["syslog"])')
    mtls=$(python3 -c 'import json,sys; print(json.load(open("data/listeners.json"))["mtls"])')
    admin=$(python3 -c 'import json,sys; print(json.load(open("data/listeners.json"))["admin"])')
}

stop() {
    kill "$(cat pid)"
    wait "$(cat pid)" 2> /dev/null || true
}

rate() { sed -n 's/.*: \([0-9]*\)\/s.*/\1/p'; }
ingest() { sed -n 's/^durable and queryable in .*: \([0-9]*\) events\/s.*/\1/p'; }

declare -A result
for key in file token; do
    if [ "$key" = file ]; then
        start "[tls]
cert_file = \"$dir/file.pem\"
key_file = \"$dir/file.key\""
    else
        start "[tls]
key = \"pkcs11:token=bench;object=server\"
pkcs11_module = \"$module\"
pin_file = \"$dir/pin\"
cert_file = \"$dir/token.pem\""
    fi
    lg=("$bin/logwarden-loadgen" --target "$syslog" --ca ca.pem --admin "$admin")
    result[$key,full1]=$("${lg[@]}" --handshakes "${seconds}s" --connections 1 | tee /dev/stderr | rate)
    result[$key,full2]=$("${lg[@]}" --handshakes "${seconds}s" --connections 2 | tee /dev/stderr | rate)
    result[$key,resumed]=$("${lg[@]}" --handshakes "${seconds}s" --connections 2 --resume | tee /dev/stderr | rate)
    result[$key,ingest]=$("$bin/logwarden-loadgen" --target "$mtls" --ca ca.pem --admin "$admin" \
        --cert client.pem --key client.key --events "$events" --connections 4 | tee /dev/stderr | ingest)
    stop
done

echo
echo "| | key in a file | key on SoftHSM2 | token / file |"
echo "|---|---|---|---|"
for row in "full1:full TLS 1.3 handshakes/s, 1 client" "full2:full TLS 1.3 handshakes/s, 2 clients" \
    "resumed:resumed handshakes/s, 2 clients" "ingest:mTLS ingest, events/s durable (4 connections)"; do
    k="${row%%:*}"
    f="${result[file,$k]}"
    t="${result[token,$k]}"
    echo "| ${row#*:} | $f | $t | $(python3 -c "print(f'{$t / $f:.3f}')") |"
done

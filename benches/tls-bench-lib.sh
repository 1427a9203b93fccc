# Shared by the TLS benchmarks (handshake-bench.sh, fips-bench.sh), sourced from the directory
# holding the daemon's config: waiting for a started daemon, stopping it, reading loadgen's
# figures.

# Wait until the daemon started in the background (its pid in ./pid) has bound its listeners;
# sets $syslog, $mtls and $admin from data/listeners.json.
await_daemon() {
    for _ in $(seq 600); do [ -f data/listeners.json ] && break; sleep 0.1; done
    [ -f data/listeners.json ] || { cat daemon.log; exit 1; }
    syslog=$(python3 -c 'import json; print(json.load(open("data/listeners.json"))["syslog"])')
    mtls=$(python3 -c 'import json; print(json.load(open("data/listeners.json"))["mtls"])')
    admin=$(python3 -c 'import json; print(json.load(open("data/listeners.json"))["admin"])')
}

stop() {
    kill "$(cat pid)"
    wait "$(cat pid)" 2> /dev/null || true
}

# loadgen's handshakes/s and durable events/s, from its report.
rate() { sed -n 's/.*: \([0-9]*\)\/s.*/\1/p'; }
ingest() { sed -n 's/^durable and queryable in .*: \([0-9]*\) events\/s.*/\1/p'; }

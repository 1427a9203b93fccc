//! Decoder throughput, one event per iteration, on typical ~180-byte frames of each format.

use std::hint::black_box;

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use logwarden::ingest::decode;

/// 2023-10-12T00:00:00Z, so RFC 3164 year inference does real work.
const RECEIVED_AT_NS: i64 = 1_697_068_800_000_000_000;

const RFC5424: &str = "<165>1 2023-10-11T22:14:15.003Z web-03.prod.example.com payment-api 48213 TXN4 - Completed charge 7f3a9c for customer 88412 in 142 ms (card=visa, region=eu-west-1, retries=0)";
const RFC5424_SD: &str = r#"<165>1 2023-10-11T22:14:15.003Z web-03.prod.example.com payment-api 48213 TXN4 [meta@32473 region="eu-west-1" build="2024.10.3" trace="7f3a9c"] Completed charge for customer 88412"#;
const RFC3164: &str = "<30>Oct 11 22:14:15 web-03.prod.example.com nginx[812]: 10.1.2.3 - - \"GET /api/v2/orders/88412?expand=items HTTP/1.1\" 200 5120 \"-\" \"Mozilla/5.0 (X11; Linux x86_64)\"";
const JSON: &str = r#"{"@timestamp":"2023-10-11T22:14:15.003Z","level":"info","service":"payment-api","host":"web-03","pid":48213,"msg":"Completed charge 7f3a9c","customer":88412,"ms":142}"#;

fn bench(c: &mut Criterion) {
    let mut group = c.benchmark_group("decode");
    group.throughput(Throughput::Elements(1));
    for (name, frame) in
        [("rfc5424", RFC5424), ("rfc5424_sd", RFC5424_SD), ("rfc3164", RFC3164), ("json", JSON)]
    {
        assert_ne!(decode::decode(frame.as_bytes(), RECEIVED_AT_NS).format.as_str(), "raw");
        group.bench_function(format!("{name}/{}B", frame.len()), |b| {
            b.iter(|| decode::decode(black_box(frame.as_bytes()), black_box(RECEIVED_AT_NS)))
        });
    }
    group.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);

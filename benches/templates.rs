//! Template mining on the Loghub 2k samples: grouping accuracy per dataset (printed first, one
//! configuration for all of them), then mining throughput in lines per second.
//!
//!   cargo bench --bench templates                  (data: ../shared/data/loghub, or $LOGHUB)
//!
//! The miner sees each line's `Content` (the message once the log's own header, timestamp and
//! level are parsed off, as the daemon's decoders do for syslog), and the ground truth is
//! Loghub's `EventId`. Loghub is not in the repository (its licence does not allow it).
#![allow(clippy::unwrap_used)]

use std::hint::black_box;
use std::path::{Path, PathBuf};

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use logwarden::detect::templates::{Miner, MinerConfig, grouping_accuracy};

const DATASETS: &[&str] = &["HDFS", "Hadoop", "Spark", "Zookeeper", "BGL", "HPC", "Thunderbird", "Windows"];

fn loghub_dir() -> PathBuf {
    std::env::var_os("LOGHUB")
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("../shared/data/loghub"))
}

/// (content, event id) of each line of `<dir>/<name>/<name>_2k.log_structured.csv`.
fn load(dir: &Path, name: &str) -> Vec<(String, String)> {
    let path = dir.join(name).join(format!("{name}_2k.log_structured.csv"));
    let mut reader = csv::Reader::from_path(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    let headers = reader.headers().unwrap().clone();
    let col = |n: &str| {
        headers.iter().position(|h| h == n).unwrap_or_else(|| panic!("no {n} in {}", path.display()))
    };
    let (content, event) = (col("Content"), col("EventId"));
    reader
        .byte_records()
        .map(|r| {
            let r = r.unwrap();
            (
                String::from_utf8_lossy(&r[content]).into_owned(),
                String::from_utf8_lossy(&r[event]).into_owned(),
            )
        })
        .collect()
}

fn bench(c: &mut Criterion) {
    let dir = loghub_dir();
    if !dir.join("HDFS").is_dir() {
        eprintln!("templates bench: no Loghub data in {} (set LOGHUB=DIR); skipped", dir.display());
        return;
    }
    let data: Vec<(&str, Vec<(String, String)>)> = DATASETS.iter().map(|d| (*d, load(&dir, d))).collect();

    println!("grouping accuracy, default configuration:");
    let mut sum = 0.0;
    for (name, rows) in &data {
        let (acc, templates) = accuracy(rows, &MinerConfig::default());
        sum += acc;
        println!("  {name:<12} {acc:.3}  ({templates} templates mined)");
    }
    println!("  {:<12} {:.3}", "average", sum / data.len() as f64);
    leave_one_out(&data);

    let lines: Vec<&str> = data.iter().flat_map(|(_, rows)| rows.iter().map(|(c, _)| c.as_str())).collect();
    let mut group = c.benchmark_group("templates");
    group.throughput(Throughput::Elements(lines.len() as u64));
    // Learning from nothing: every template is new once.
    group.bench_function("loghub_16k/learn", |b| {
        b.iter(|| {
            let mut miner = Miner::default();
            for l in &lines {
                black_box(miner.add(black_box(l), 0));
            }
        })
    });
    // Steady state: the templates are known, as in a daemon that has run for a while.
    let mut warm = Miner::default();
    for l in &lines {
        warm.add(l, 0);
    }
    group.bench_function("loghub_16k/steady", |b| {
        b.iter(|| {
            for l in &lines {
                black_box(warm.add(black_box(l), 0));
            }
        })
    });
    group.finish();
}

/// Grouping accuracy of a miner with `cfg` over `rows`, and the templates it mined.
fn accuracy(rows: &[(String, String)], cfg: &MinerConfig) -> (f64, usize) {
    let mut miner = Miner::new(cfg.clone());
    let predicted: Vec<u32> = rows.iter().map(|(content, _)| miner.add(content, 0).id()).collect();
    let truth: Vec<&str> = rows.iter().map(|(_, e)| e.as_str()).collect();
    (grouping_accuracy(&predicted, &truth), miner.templates().len())
}

/// How the default would do on logs it was not chosen on: for each dataset, the configuration
/// (of a grid over the similarity threshold, the tree depth and the plain-word rule) with the
/// best average on the other seven is scored on it. The in-sample figure beside it is the best
/// configuration chosen on all eight.
fn leave_one_out(data: &[(&str, Vec<(String, String)>)]) {
    let mut grid = Vec::new();
    for similarity in [0.4, 0.5, 0.6, 0.7, 0.8] {
        for depth in [3, 4, 5] {
            for words_split in [true, false] {
                grid.push(MinerConfig { similarity, depth, words_split, ..MinerConfig::default() });
            }
        }
    }
    // scores[c][d]: configuration c on dataset d.
    let scores: Vec<Vec<f64>> =
        grid.iter().map(|cfg| data.iter().map(|(_, rows)| accuracy(rows, cfg).0).collect()).collect();
    let best_on = |held_out: Option<usize>| {
        let mean = |c: usize| {
            let kept: Vec<f64> =
                (0..data.len()).filter(|&d| Some(d) != held_out).map(|d| scores[c][d]).collect();
            kept.iter().sum::<f64>() / kept.len() as f64
        };
        (0..grid.len()).max_by(|&a, &b| mean(a).total_cmp(&mean(b))).unwrap_or(0)
    };
    let show = |c: &MinerConfig| {
        format!("similarity {} depth {} words_split {}", c.similarity, c.depth, c.words_split)
    };
    let all = best_on(None);
    println!("leave-one-dataset-out ({} configurations; in-sample: {}):", grid.len(), show(&grid[all]));
    let (mut inside, mut outside) = (0.0, 0.0);
    for (d, (name, _)) in data.iter().enumerate() {
        let chosen = best_on(Some(d));
        inside += scores[all][d];
        outside += scores[chosen][d];
        println!(
            "  {name:<12} in-sample {:.3}  held out {:.3}  (chosen on the other seven: {})",
            scores[all][d],
            scores[chosen][d],
            show(&grid[chosen])
        );
    }
    let n = data.len() as f64;
    println!("  {:<12} in-sample {:.3}  held out {:.3}", "average", inside / n, outside / n);
}

/// Messages shaped like the load generator's (web, sshd, database, job queue, with the tails
/// real lines end in), for the per-event cost of mining on the ingest path. The values vary
/// per message as the load generator's do: ids, sizes, latencies, addresses, ports, hashes.
fn syslog_like(n: usize) -> Vec<String> {
    const TAILS: &[&str] = &[
        " ua=\"Mozilla/5.0 (X11; Linux x86_64; rv:128.0) Gecko/20100101 Firefox/128.0\"",
        " ua=\"curl/8.5.0\" env=prod region=eu-west-1",
        " env=prod region=us-east-2 cluster=green deploy=2026.11.2",
    ];
    let mut x: u64 = 0x9E37_79B9_7F4A_7C15;
    let mut next = move |m: u64| {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        x % m
    };
    (0..n)
        .map(|i| {
            let mut m = match i % 4 {
                0 => format!(
                    "GET /api/v1/orders/{} {} {} rt={}.{:03} client=10.{}.{}.{}",
                    next(100_000),
                    [200, 304, 404, 500][next(4) as usize],
                    120 + next(90_000),
                    next(2),
                    next(1000),
                    next(4),
                    next(32),
                    next(32)
                ),
                1 => format!(
                    "Accepted publickey for deploy from 192.168.{}.{} port {} ssh2: ED25519 SHA256:{:08x}",
                    next(128),
                    next(32),
                    1024 + next(64_000),
                    next(u64::from(u32::MAX))
                ),
                2 => format!(
                    "duration: {}.{:03} ms  statement: SELECT * FROM orders WHERE id = {} AND tenant = {}",
                    next(100),
                    next(1000),
                    next(10_000_000),
                    next(500)
                ),
                _ => format!(
                    "job {:08x} finished state=ok items={} retries={} queue=q{}",
                    next(u64::from(u32::MAX)),
                    next(5000),
                    next(3),
                    next(16)
                ),
            };
            m.push_str(TAILS[next(TAILS.len() as u64) as usize]);
            m
        })
        .collect()
}

fn bench_syslog_like(c: &mut Criterion) {
    // Enough messages that the masker's value cache sees each value once per pass, as it
    // does under load, where values (ids, ports, latencies) rarely recur.
    let messages = syslog_like(1 << 16);
    let mut miner = Miner::default();
    let mut group = c.benchmark_group("templates");
    group.throughput(Throughput::Elements(messages.len() as u64));
    group.bench_function("syslog_like/steady", |b| {
        b.iter(|| {
            for l in &messages {
                black_box(miner.add(black_box(l), 0));
            }
        })
    });
    group.finish();
}

criterion_group!(benches, bench, bench_syslog_like);
criterion_main!(benches);

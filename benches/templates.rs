//! Template mining: grouping accuracy on the Loghub 2k samples and on generated syslog-shaped
//! corpora (printed first), then mining throughput in lines per second.
//!
//!   cargo bench --bench templates        (data: ../shared/data/loghub, or $LOGHUB)
//!
//! Every `NAME/NAME_2k.log_structured.csv` under the Loghub directory is scored, so another set
//! of Loghub samples can be measured the same way (`LOGHUB=DIR`). The miner sees each line's
//! `Content` (the message once the log's own header, timestamp and level are parsed off, as the
//! daemon's decoders do for syslog), and the ground truth is Loghub's `EventId`. A line counts
//! as grouped with the template it ended up in (templates found to be one statement merge).
//! Loghub is not in the repository (its licence does not allow it).
//!
//! The generated corpora come from `scripts/gen-template-corpora` (or `$TEMPLATE_CORPORA`, a
//! directory it wrote): logs the rules were not written from.
#![allow(clippy::unwrap_used)]

use std::hint::black_box;
use std::path::{Path, PathBuf};

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use logwarden::detect::templates::{MaskRules, Miner, MinerConfig, grouping_accuracy};

/// The Loghub samples this project has, in the order they are printed (others follow, sorted).
const LOGHUB: &[&str] = &["HDFS", "Hadoop", "Spark", "Zookeeper", "BGL", "HPC", "Thunderbird", "Windows"];

type Dataset = (String, Vec<(String, String)>);

fn loghub_dir() -> PathBuf {
    std::env::var_os("LOGHUB")
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("../shared/data/loghub"))
}

/// Every `NAME/NAME_2k.log_structured.csv` under `dir`, those of `first` first.
fn datasets(dir: &Path, first: &[&str]) -> Vec<Dataset> {
    let mut names: Vec<String> = std::fs::read_dir(dir)
        .map(|entries| {
            entries
                .filter_map(|e| e.ok()?.file_name().into_string().ok())
                .filter(|n| dir.join(n).join(format!("{n}_2k.log_structured.csv")).is_file())
                .collect()
        })
        .unwrap_or_default();
    names.sort_by_key(|n| (first.iter().position(|f| f == n).unwrap_or(first.len()), n.clone()));
    names.into_iter().map(|n| (n.clone(), load(dir, &n))).collect()
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

/// The generated corpora: `$TEMPLATE_CORPORA`, or written by the script now.
fn generated() -> Vec<Dataset> {
    let dir = match std::env::var_os("TEMPLATE_CORPORA") {
        Some(dir) => PathBuf::from(dir),
        None => {
            let dir = Path::new(env!("CARGO_TARGET_TMPDIR")).join("template-corpora");
            let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("scripts/gen-template-corpora");
            match std::process::Command::new("python3").arg(&script).arg(&dir).output() {
                Ok(out) if out.status.success() => dir,
                Ok(out) => {
                    eprintln!(
                        "templates bench: {} failed: {}",
                        script.display(),
                        String::from_utf8_lossy(&out.stderr)
                    );
                    return Vec::new();
                }
                Err(e) => {
                    eprintln!("templates bench: cannot run python3 for the generated corpora: {e}");
                    return Vec::new();
                }
            }
        }
    };
    datasets(&dir, &[])
}

fn bench(c: &mut Criterion) {
    let dir = loghub_dir();
    let data = datasets(&dir, LOGHUB);
    if data.is_empty() {
        eprintln!("templates bench: no Loghub data in {} (set LOGHUB=DIR); skipped", dir.display());
        return;
    }
    let corpora = generated();
    // `cargo test --benches` runs this once in a debug build: the default configuration only;
    // the rules one by one and the leave-one-out grid are for `cargo bench`.
    let full = std::env::args().any(|a| a == "--bench");
    accuracy_report(&data, &corpora, full);

    let lines: Vec<&str> = data
        .iter()
        .filter(|(name, _)| LOGHUB.contains(&name.as_str()))
        .flat_map(|(_, rows)| rows.iter().map(|(c, _)| c.as_str()))
        .collect();
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

/// Grouping accuracy of a miner with `cfg` over `rows` (each line counted in the template it
/// ended up in), and the templates messages are given at the end.
fn accuracy(rows: &[(String, String)], cfg: &MinerConfig) -> (f64, usize) {
    let mut miner = Miner::new(cfg.clone());
    let given: Vec<u32> = rows.iter().map(|(content, _)| miner.add(content, 0).id()).collect();
    let predicted: Vec<u32> = given.into_iter().map(|id| miner.canonical(id)).collect();
    let truth: Vec<&str> = rows.iter().map(|(_, e)| e.as_str()).collect();
    (grouping_accuracy(&predicted, &truth), miner.live())
}

fn mean(xs: impl IntoIterator<Item = f64>) -> f64 {
    let (sum, n) = xs.into_iter().fold((0.0, 0usize), |(s, n), x| (s + x, n + 1));
    sum / n.max(1) as f64
}

/// The default configuration on every dataset; what each rule is worth (the default with it
/// off); a leave-one-dataset-out over the Loghub samples: for each, the configuration (of a
/// grid over the settings and the rules) with the best average on the others, scored on it.
/// The generated corpora are held out of every choice.
fn accuracy_report(data: &[Dataset], corpora: &[Dataset], full: bool) {
    let default = MinerConfig::default();
    println!("grouping accuracy, default configuration:");
    for (name, rows) in data.iter().chain(corpora) {
        let (acc, templates) = accuracy(rows, &default);
        println!("  {name:<14} {acc:.3}  ({templates} templates)");
    }
    let avg = |set: &[Dataset], cfg: &MinerConfig| mean(set.iter().map(|(_, rows)| accuracy(rows, cfg).0));
    println!("  {:<14} {:.3}", "Loghub average", avg(data, &default));
    if !corpora.is_empty() {
        println!("  {:<14} {:.3}", "generated avg.", avg(corpora, &default));
    }

    if !full {
        return;
    }
    println!("each rule off (Loghub average, generated average):");
    let off: [(&str, MinerConfig); 8] = [
        ("plain-word split", MinerConfig { words_split: false, ..default.clone() }),
        ("merge variants", MinerConfig { merge_after: 0, ..default.clone() }),
        ("codes apart", MinerConfig { codes_split: false, ..default.clone() }),
        ("dotted names", MinerConfig { mask: MaskRules { names: false, ..default.mask }, ..default.clone() }),
        (
            "field values",
            MinerConfig { mask: MaskRules { fields: false, ..default.mask }, ..default.clone() },
        ),
        ("runs collapse", MinerConfig { mask: MaskRules { runs: false, ..default.mask }, ..default.clone() }),
        ("units join", MinerConfig { mask: MaskRules { units: false, ..default.mask }, ..default.clone() }),
        (
            "none of them",
            MinerConfig {
                words_split: false,
                merge_after: 0,
                codes_split: false,
                mask: MaskRules { names: false, fields: false, runs: false, units: false },
                ..default.clone()
            },
        ),
    ];
    for (what, cfg) in &off {
        println!("  {what:<18} {:.3}  {:.3}", avg(data, cfg), avg(corpora, cfg));
    }
    leave_one_out(data, corpora);
}

fn leave_one_out(data: &[Dataset], corpora: &[Dataset]) {
    let mut grid = Vec::new();
    for similarity in [0.5, 0.6, 0.7] {
        for depth in [3, 4, 5] {
            for rules in 0u32..128 {
                let bit = |b: u32| rules & (1 << b) != 0;
                let words_split = bit(0);
                // Without the plain-word split, merging and codes change nothing.
                if !words_split && (bit(1) || bit(2)) {
                    continue;
                }
                grid.push(MinerConfig {
                    similarity,
                    depth,
                    words_split,
                    merge_after: if bit(1) { 3 } else { 0 },
                    codes_split: bit(2),
                    mask: MaskRules { names: bit(3), fields: bit(4), runs: bit(5), units: bit(6) },
                    ..MinerConfig::default()
                });
            }
        }
    }
    let all: Vec<&Dataset> = data.iter().chain(corpora).collect();
    // scores[c][d]: configuration c on dataset d (the Loghub samples first).
    let scores: Vec<Vec<f64>> =
        grid.iter().map(|cfg| all.iter().map(|(_, rows)| accuracy(rows, cfg).0).collect()).collect();
    // The configuration with the best average over `pool` but `held_out`.
    let best_on = |pool: std::ops::Range<usize>, held_out: Option<usize>| {
        let kept = |c: usize| mean(pool.clone().filter(|&d| Some(d) != held_out).map(|d| scores[c][d]));
        (0..grid.len()).max_by(|&a, &b| kept(a).total_cmp(&kept(b))).unwrap_or(0)
    };
    let show = |c: &MinerConfig| {
        let m = &c.mask;
        format!(
            "similarity {} depth {} words {} merge {} codes {} names {} fields {} runs {} units {}",
            c.similarity,
            c.depth,
            c.words_split,
            c.merge_after,
            c.codes_split,
            m.names,
            m.fields,
            m.runs,
            m.units
        )
    };
    let report = |title: &str, pool: std::ops::Range<usize>| {
        let chosen_on_all = best_on(pool.clone(), None);
        println!("{title} ({} configurations; in-sample: {}):", grid.len(), show(&grid[chosen_on_all]));
        let (mut inside, mut outside) = (Vec::new(), Vec::new());
        for d in pool.clone() {
            let chosen = best_on(pool.clone(), Some(d));
            inside.push(scores[chosen_on_all][d]);
            outside.push(scores[chosen][d]);
            println!(
                "  {:<14} in-sample {:.3}  held out {:.3}  (chosen on the others: {})",
                all[d].0,
                scores[chosen_on_all][d],
                scores[chosen][d],
                show(&grid[chosen])
            );
        }
        println!("  {:<14} in-sample {:.3}  held out {:.3}", "average", mean(inside), mean(outside));
        chosen_on_all
    };
    let loghub = report("leave-one-dataset-out over the Loghub samples", 0..data.len());
    if !corpora.is_empty() {
        let generated = mean((data.len()..all.len()).map(|d| scores[loghub][d]));
        println!("  generated corpora with the configuration chosen on the Loghub samples: {generated:.3}");
        report("leave-one-dataset-out over the Loghub samples and the generated corpora", 0..all.len());
    }
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

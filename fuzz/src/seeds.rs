//! Seed corpora made from real log lines (Loghub samples, when given) and from the encoders the
//! daemon itself uses (statement handles): a few inputs per shape, since afl-fuzz works best
//! from a small, varied corpus. Hand-written seeds are committed under `fuzz/seeds/`;
//! `scripts/fuzz` adds them and the shipped example configs.

use std::io::Write;
use std::path::Path;
use std::sync::Arc;

use arrow::array::{ArrayRef, BooleanArray, Float64Array, Int64Array, RecordBatch, StringArray};
use flate2::Compression;
use flate2::write::GzEncoder;
use logwarden::serve::flight::handle::Statement;

/// Which lines of each Loghub sample become seeds: a few, spread over the file.
const PICKS: [usize; 3] = [0, 700, 1400];

pub fn write(out: &Path, loghub: Option<&Path>) -> std::io::Result<()> {
    let lines = match loghub {
        Some(dir) => loghub_lines(dir)?,
        None => Vec::new(),
    };
    let mut n = 0;
    for (i, (dataset, line)) in lines.iter().enumerate() {
        let ts = "2023-10-11T22:14:15.003Z";
        let forms = [
            line.clone(),
            format!("<165>1 {ts} {dataset}-host app 4242 ID47 [meta@32473 seq=\"{i}\" quote=\"a\\\"b\\]\"] {line}"),
            format!("<13>Oct 11 22:14:15 {dataset}-host app[4242]: {line}"),
            serde_json::json!({"timestamp": ts, "level": "info", "host": dataset, "app": "loghub", "message": line, "seq": i}).to_string(),
        ];
        for (j, form) in forms.iter().enumerate() {
            put(out, "decode", &format!("loghub-{dataset}-{i}-{j}"), form.as_bytes())?;
            n += 1;
        }
    }
    for (d, chunk) in lines.chunks(PICKS.len()).enumerate() {
        let texts: Vec<&str> = chunk.iter().map(|(_, l)| l.as_str()).collect();
        let dataset = &chunk[0].0;
        // Framing: octet-counted, LF and CRLF frames mixed; max_frame_bytes 64, then 20.
        let mut stream = Vec::new();
        for (k, t) in texts.iter().enumerate() {
            match k % 3 {
                0 => stream.extend_from_slice(format!("{} {t}", t.len()).as_bytes()),
                1 => stream.extend_from_slice(format!("{t}\n").as_bytes()),
                _ => stream.extend_from_slice(format!("{t}\r\n").as_bytes()),
            }
        }
        for max in [63u8, 19] {
            put(
                out,
                "framing",
                &format!("loghub-{dataset}-{max}"),
                &[&[max, d as u8][..], &stream].concat(),
            )?;
        }
        // HTTP: an NDJSON body (one CRLF line, one blank line), and one with a line of text.
        let json: Vec<String> =
            texts.iter().map(|t| serde_json::json!({"message": t, "host": dataset}).to_string()).collect();
        let body = format!("{}\r\n\n{}\n", json[0], json[1..].join("\n"));
        put(out, "http_body", &format!("loghub-{dataset}"), &[&[128, 0][..], body.as_bytes()].concat())?;
        let bad = format!("{}\n{}\n", json[0], texts[texts.len() - 1]);
        put(out, "http_body", &format!("loghub-{dataset}-bad"), &[&[64, 40][..], bad.as_bytes()].concat())?;
        n += 4;
    }
    for (k, h) in handles(&lines).iter().enumerate() {
        put(out, "handle", &format!("handle-{k}"), h)?;
        n += 1;
    }
    // One gzip body as the raw input (the target also inflates its input as it is).
    let mut gz = GzEncoder::new(Vec::new(), Compression::default());
    gz.write_all(b"{\"message\":\"compressed\"}\n")?;
    put(out, "http_body", "gzip-input", &[&[200, 0][..], &gz.finish()?].concat())?;
    eprintln!("logwarden-fuzz: wrote {} seeds into {}", n + 1, out.display());
    Ok(())
}

fn put(out: &Path, target: &str, name: &str, data: &[u8]) -> std::io::Result<()> {
    let dir = out.join(target);
    std::fs::create_dir_all(&dir)?;
    std::fs::write(dir.join(name), data)
}

/// `(dataset, line)` for [`PICKS`] of every `*/*_2k.log` under `dir`.
fn loghub_lines(dir: &Path) -> std::io::Result<Vec<(String, String)>> {
    let mut datasets: Vec<_> = std::fs::read_dir(dir)?.filter_map(Result::ok).map(|e| e.path()).collect();
    datasets.sort();
    let mut out = Vec::new();
    for d in datasets {
        let Some(name) = d.file_name().and_then(|n| n.to_str()).map(str::to_owned) else { continue };
        let Ok(text) = std::fs::read(d.join(format!("{name}_2k.log"))) else { continue };
        let text = String::from_utf8_lossy(&text);
        let lines: Vec<&str> = text.lines().collect();
        for i in PICKS {
            if let Some(l) = lines.get(i) {
                out.push((name.clone(), l.trim_end_matches('\r').to_owned()));
            }
        }
    }
    Ok(out)
}

/// Statement handles as the server writes them: SQL alone, and with one row of parameters of
/// each kind a client binds.
fn handles(lines: &[(String, String)]) -> Vec<Vec<u8>> {
    let text = lines.first().map_or("sshd", |(_, l)| l.as_str());
    let sql = "SELECT host, count(*) FROM logs WHERE severity <= $1 AND message LIKE $2 GROUP BY host";
    let row = |cols: Vec<(&str, ArrayRef)>| RecordBatch::try_from_iter(cols).expect("a one-row batch");
    let batches = [
        row(vec![
            ("0", Arc::new(Int64Array::from(vec![3])) as ArrayRef),
            ("1", Arc::new(StringArray::from(vec![text]))),
        ]),
        row(vec![("0", Arc::new(Float64Array::from(vec![f64::NAN])) as ArrayRef)]),
        row(vec![("0", Arc::new(BooleanArray::from(vec![None])) as ArrayRef)]),
        row(vec![("a", Arc::new(StringArray::from(vec![Some("x"), None])) as ArrayRef)]),
    ];
    let mut out = vec![Statement::new(sql).encode().to_vec(), Statement::new("").encode().to_vec()];
    for b in batches {
        match Statement::new(sql).with_params(b) {
            Ok(s) => out.push(s.encode().to_vec()),
            Err(e) => eprintln!("logwarden-fuzz: a seed statement was refused: {e}"),
        }
    }
    out
}

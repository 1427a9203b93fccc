//! Durability: every event acknowledged over HTTPS survives `kill -9`, exactly once, including
//! across WAL-to-Parquet flushes that the crash may interrupt.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use crate::client::post;
use crate::daemon::Daemon;

const PER_REQUEST: usize = 200;

#[tokio::test(flavor = "multi_thread")]
async fn acknowledged_events_survive_kill_9_exactly_once() {
    // Small flush thresholds so segments are written (and possibly interrupted) during the run.
    let mut d = Daemon::start_with("[storage]\nflush_interval = \"300ms\"\nflush_bytes = \"2MiB\"\n");
    let addr = d.addr("http");
    let ca = d.ca_file();
    let acked: Arc<Mutex<Vec<usize>>> = Arc::default();
    let mut senders = Vec::new();
    for worker in 0..4usize {
        let (ca, acked) = (ca.clone(), acked.clone());
        senders.push(tokio::spawn(async move {
            // Bounded: stops by itself after 400 requests or the first failure (the crash).
            for n in 0..400usize {
                let req = worker * 1000 + n;
                let body: String = (0..PER_REQUEST)
                    .map(|i| format!("{{\"message\":\"crash {req} {i}\",\"req\":{req}}}\n"))
                    .collect();
                let sent = tokio::spawn(post(addr, ca.clone(), "/v1/logs", vec![], body.into_bytes()));
                match tokio::time::timeout(Duration::from_secs(10), sent).await {
                    Ok(Ok(r)) if r.status == 200 => acked.lock().unwrap().push(req),
                    _ => break,
                }
            }
        }));
    }
    crate::daemon::wait_until_async(Duration::from_secs(60), "60 acknowledged requests", || {
        let n = acked.lock().unwrap().len();
        async move { n >= 60 }
    })
    .await;
    d.kill9();
    for s in senders {
        // Requests in flight at the crash fail; their tasks end.
        let _ = s.await;
    }
    let acked = acked.lock().unwrap().clone();
    assert!(acked.len() >= 60);

    d.spawn();
    let dupes =
        d.query("SELECT message, count(*) AS n FROM logs GROUP BY message HAVING count(*) > 1 LIMIT 5");
    assert!(dupes.is_empty(), "duplicated events after recovery: {dupes:?}");
    let per_req = d.query("SELECT split_part(message, ' ', 2) AS req, count(*) AS n FROM logs WHERE message LIKE 'crash %' GROUP BY 1");
    let counts: std::collections::HashMap<String, i64> =
        per_req.iter().map(|r| (r["req"].as_str().unwrap().to_string(), r["n"].as_i64().unwrap())).collect();
    for req in &acked {
        assert_eq!(
            counts.get(&req.to_string()),
            Some(&(PER_REQUEST as i64)),
            "acknowledged request {req} lost events after kill -9"
        );
    }
    // Still writable after recovery.
    let r =
        post(d.addr("http"), d.ca_file(), "/v1/logs", vec![], b"{\"message\":\"after crash\"}\n".to_vec())
            .await;
    assert_eq!(r.status, 200);
    assert_eq!(d.count("message = 'after crash'"), 1);
}

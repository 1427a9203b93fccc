//! Distributed queries: a Ballista scheduler and two executors, all run from the logwarden
//! binary on loopback, answer the six queries of `benches/query-bench.sh` over the bucket with
//! exactly the results of a single node.

use std::net::{Ipv4Addr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use serde_json::Value;

use crate::bucket::{S3Server, SECRET_KEY, server_query, server_query_result, start_node, wait_uploaded};
use crate::daemon::{BIN, Daemon, wait_until};

/// The queries of benches/flight_queries.py.
const QUERIES: [&str; 6] = [
    "SELECT count(*) AS n FROM logs",
    "SELECT count(*) AS n FROM logs WHERE severity <= 3",
    "SELECT host, count(*) AS n FROM logs GROUP BY host",
    "SELECT app, severity, count(*) AS n FROM logs GROUP BY app, severity",
    "SELECT count(*) AS n FROM logs WHERE message LIKE '%SHA256:0000%'",
    "SELECT * FROM logs WHERE message LIKE '%items=4999 %' ORDER BY timestamp DESC LIMIT 100",
];

/// A process of the cluster, killed when dropped; its output goes to `log`.
struct Proc {
    child: Child,
    log: PathBuf,
}

impl Proc {
    fn spawn(args: &[&str], env: &[(&'static str, String)], log: PathBuf) -> Proc {
        let out = std::fs::File::create(&log).unwrap();
        let child = Command::new(BIN)
            .args(args)
            .envs(env.iter().map(|(k, v)| (*k, v.as_str())))
            .stdin(Stdio::null())
            .stdout(out.try_clone().unwrap())
            .stderr(out)
            .spawn()
            .unwrap();
        Proc { child, log }
    }

    fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        if std::thread::panicking() {
            eprintln!("--- {} ---\n{}", self.log.display(), self.log_text());
        }
    }
}

/// A port free right now (Ballista's processes announce their ports, so they cannot take 0).
fn free_port() -> u16 {
    TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).unwrap().local_addr().unwrap().port()
}

fn listening(port: u16) -> bool {
    TcpStream::connect((Ipv4Addr::LOCALHOST, port)).is_ok()
}

/// Rows as sorted JSON texts: equal results compare equal whatever order they came in.
fn rows(d: &Daemon, sql: &str) -> Vec<String> {
    let mut rows: Vec<String> = server_query(d, sql).iter().map(Value::to_string).collect();
    rows.sort();
    rows
}

fn load(d: &Daemon, events: u64) {
    let loadgen = Path::new(BIN).with_file_name("logwarden-loadgen");
    let out = Command::new(loadgen)
        .args(["--target", &d.addr("syslog").to_string(), "--ca"])
        .arg(d.ca_file())
        .args(["--admin", &d.addr("admin").to_string(), "--events", &events.to_string()])
        .args(["--connections", "2", "--seed", "7"])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
}

#[tokio::test(flavor = "multi_thread")]
async fn a_scheduler_and_two_executors_give_the_single_node_results() {
    let s3 = S3Server::start();
    s3.create_bucket("logs");
    let env = s3.env(SECRET_KEY);
    let n1 = start_node(&s3, "n1", "", "");
    load(&n1, 200_000);
    wait_uploaded(&n1);

    let dir = tempfile::tempdir().unwrap();
    let config = n1.config.to_str().unwrap().to_owned();
    let sched = free_port();
    let scheduler = Proc::spawn(
        &["scheduler", "--config", &config, "--bind", &format!("127.0.0.1:{sched}")],
        &env,
        dir.path().join("scheduler.log"),
    );
    wait_until(Duration::from_secs(60), "the scheduler to listen", || listening(sched));
    let mut executors = Vec::new();
    for i in 0..2 {
        let (port, grpc) = (free_port(), free_port());
        let work = dir.path().join(format!("executor-{i}"));
        std::fs::create_dir(&work).unwrap();
        executors.push(Proc::spawn(
            &[
                "executor",
                "--config",
                &config,
                "--scheduler",
                &format!("df://127.0.0.1:{sched}"),
                "--port",
                &port.to_string(),
                "--grpc-port",
                &grpc.to_string(),
                // One task slot each: a stage's tasks land on both executors, so the next
                // stage reads shuffle partitions from the other executor over the network,
                // as on separate machines.
                "--concurrent-tasks",
                "1",
                "--work-dir",
                work.to_str().unwrap(),
            ],
            &env,
            dir.path().join(format!("executor-{i}.log")),
        ));
        wait_until(Duration::from_secs(60), "an executor to listen", || listening(port));
    }

    // A query node that hands its queries over `logs` to the scheduler.
    let q = start_node(
        &s3,
        "q",
        "role = \"query\"\n",
        &format!("[query]\nengine = \"ballista\"\nscheduler = \"df://127.0.0.1:{sched}\"\n"),
    );
    // Sorts carrying the dictionary columns (host, app, ...) through an ordered exchange.
    let sorts = ["SELECT timestamp, host, app, peer FROM logs ORDER BY timestamp DESC LIMIT 500"];
    for sql in QUERIES.iter().chain(&sorts) {
        let single = rows(&n1, sql);
        assert!(!single.is_empty(), "{sql}");
        assert_eq!(rows(&q, sql), single, "{sql}");
    }
    assert_eq!(server_query(&q, QUERIES[0])[0]["n"], 200_000);
    // They ran on the cluster: one job each, the six of the query node and the count after.
    let jobs = scheduler.log_text().matches("Job finished successfully").count();
    assert!(jobs > QUERIES.len() + sorts.len(), "{jobs} jobs:\n{}", scheduler.log_text());
    assert!(q.log_text().contains("run on the Ballista cluster"), "{}", q.log_text());

    // A query abandoned at its time limit is cancelled on the cluster: the node asks the
    // scheduler, which tells the executors running its tasks to abort them. (A task stops at
    // its next yield: this join's tasks compare all of one side per batch of the other, so
    // here that takes a while; a scan stops within a batch.)
    let q2 = start_node(
        &s3,
        "q2",
        "role = \"query\"\n",
        &format!(
            "[query]\nengine = \"ballista\"\nscheduler = \"df://127.0.0.1:{sched}\"\n[flight.limits]\ntimeout = \"4s\"\n"
        ),
    );
    let endless = "SELECT count(*) AS n FROM logs a, logs b WHERE a.message < b.message";
    let refused = server_query_result(&q2, endless).expect_err("the join ended within its time limit");
    assert!(refused.contains("time limit"), "{refused}");
    let mut job = String::new();
    wait_until(Duration::from_secs(30), "the node to cancel the job", || {
        let log = q2.log_text();
        let Some(line) = log.lines().find(|l| l.contains("distributed query cancelled on the cluster"))
        else {
            return false;
        };
        job = line.split("job=").nth(1).unwrap_or("").split_whitespace().next().unwrap_or("").to_owned();
        true
    });
    // The scheduler answers the node and tells the executors in its own time.
    wait_until(Duration::from_secs(30), "the scheduler to cancel the job", || {
        scheduler.log_text().contains(&format!("Job cancelled: [{job}]"))
    });
    wait_until(Duration::from_secs(30), "an executor to be told", || {
        executors.iter().any(|e| e.log_text().contains(&format!("job_id: \"{job}\"")))
    });

    // A scheduler that is gone: the query fails as unavailable, and nothing of the transport's
    // internals or the cluster's addresses reaches the client.
    drop(scheduler);
    let refused = server_query_result(&q2, QUERIES[0]).expect_err("a query without its scheduler");
    assert!(refused.contains("the query cluster is unavailable"), "{refused}");
    let leaked = ["tonic", "Status {", &sched.to_string()];
    assert!(!leaked.iter().any(|l| refused.contains(l)), "{refused}");
}

//! The shipping artefacts under deploy/, checked by the tools that consume them: promtool for
//! the alerting rules and the Prometheus config, amtool for Alertmanager's, docker-compose for
//! the compose stack, kubernetes-validate (Kubernetes' own schemas) for the manifests, and the
//! Grafana dashboard parsed as JSON, the Containerfile read by a Dockerfile parser
//! (dockerfile-parse) and held to the container config. Every metric they name must be one
//! the daemon defines.

use std::path::{Path, PathBuf};
use std::process::Command;

use crate::daemon::run_ok;

fn deploy() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("deploy")
}

/// `logwarden_*` names in `text` (histogram series reduced to the metric) that src/metrics.rs
/// does not define.
fn undefined_metrics(text: &str) -> (usize, Vec<String>) {
    let defined = include_str!("../../src/metrics.rs");
    let mut names: Vec<&str> = text
        .split(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
        .filter_map(|w| w.strip_prefix("logwarden_"))
        .map(|n| n.strip_suffix("_bucket").unwrap_or(n))
        .collect();
    names.sort_unstable();
    names.dedup();
    let missing =
        names.iter().filter(|n| !defined.contains(&format!("\"{n}\""))).map(|n| format!("logwarden_{n}"));
    (names.len(), missing.collect())
}

#[test]
fn prometheus_rules_and_config_pass_promtool() {
    let dir = deploy().join("prometheus");
    run_ok(Command::new("promtool").args(["check", "rules", "logwarden-alerts.yml"]).current_dir(&dir));
    run_ok(Command::new("promtool").args(["test", "rules", "logwarden-alerts.test.yml"]).current_dir(&dir));
    // The config names the rules file where the compose stack mounts it: check a copy that
    // names it where it is here.
    let tmp = tempfile::tempdir().unwrap();
    let config = std::fs::read_to_string(dir.join("prometheus.yml"))
        .unwrap()
        .replace("/etc/prometheus/logwarden-alerts.yml", dir.join("logwarden-alerts.yml").to_str().unwrap());
    std::fs::write(tmp.path().join("prometheus.yml"), config).unwrap();
    run_ok(Command::new("promtool").arg("check").arg("config").arg(tmp.path().join("prometheus.yml")));

    let rules = std::fs::read_to_string(dir.join("logwarden-alerts.yml")).unwrap();
    let (n, missing) = undefined_metrics(&rules);
    assert!(n >= 8 && missing.is_empty(), "{n} metrics named; not defined by the daemon: {missing:?}");
}

#[test]
fn alertmanager_config_passes_amtool() {
    run_ok(Command::new("amtool").arg("check-config").arg(deploy().join("alertmanager/alertmanager.yml")));
}

#[test]
fn compose_stack_is_valid() {
    // Compose v2 where Docker has it, else the docker-compose package.
    let v2 = Command::new("docker").args(["compose", "version"]).output().is_ok_and(|o| o.status.success());
    let mut cmd = if v2 {
        let mut c = Command::new("docker");
        c.arg("compose");
        c
    } else {
        Command::new("docker-compose")
    };
    run_ok(cmd.args(["-f", "compose.yaml", "config", "-q"]).current_dir(deploy()));
    let compose = std::fs::read_to_string(deploy().join("compose.yaml")).unwrap();
    for file in
        compose.lines().filter_map(|l| l.trim().strip_prefix("- ./")).map(|l| l.split(':').next().unwrap())
    {
        assert!(deploy().join(file).exists(), "compose.yaml mounts {file}, which deploy/ does not have");
        // Every logwarden config it mounts is one the daemon accepts.
        if file.ends_with(".toml") {
            run_ok(Command::new(crate::daemon::BIN).arg("validate").arg(deploy().join(file)));
        }
    }
}

/// The Python venv scripts/install-test-deps fills.
fn venv() -> PathBuf {
    std::env::var_os("LOGWARDEN_VENV").map(PathBuf::from).unwrap_or_else(|| {
        PathBuf::from(std::env::var_os("HOME").expect("HOME")).join(".cache/logwarden/venv")
    })
}

#[test]
fn containerfile_matches_the_container_config() {
    // Parsed as Docker does (instructions, continuations, JSON forms), then compared with
    // what the image runs: deploy/logwarden.container.toml.
    let script = r#"
import json, sys
from dockerfile_parse import DockerfileParser
p = DockerfileParser(fileobj=open(sys.argv[1], "rb"))
print(json.dumps([[i["instruction"], i["value"]] for i in p.structure if i["instruction"] != "COMMENT"]))
"#;
    let out = Command::new(venv().join("bin/python"))
        .args(["-c", script])
        .arg(deploy().join("Containerfile"))
        .output()
        .expect("python in the test venv: run scripts/install-test-deps");
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let steps: Vec<(String, String)> = serde_json::from_slice(&out.stdout).unwrap();
    let all =
        |what: &str| steps.iter().filter(|(i, _)| i == what).map(|(_, v)| v.as_str()).collect::<Vec<_>>();

    // Two stages; the image runs as a numeric non-root user.
    let from = all("FROM");
    assert_eq!(from.len(), 2, "{from:?}");
    let rust = from[0].split(':').nth(1).and_then(|t| t.split('-').next()).unwrap();
    let msrv =
        include_str!("../../Cargo.toml").lines().find_map(|l| l.strip_prefix("rust-version = ")).unwrap();
    assert_eq!(format!("\"{rust}\""), msrv, "the build image's Rust is not the crate's rust-version");
    let user = all("USER");
    let uid: u32 = user.last().unwrap().split(':').next().unwrap().parse().unwrap();
    assert!(uid >= 1000, "runs as uid {uid}");
    // Every COPY from the context names a file of the repository.
    for v in all("COPY").iter().filter(|v| !v.starts_with("--from")) {
        let src = v.split_whitespace().next().unwrap();
        assert!(Path::new(env!("CARGO_MANIFEST_DIR")).join(src).exists(), "COPY {src}: no such file");
    }

    // The config it ships: EXPOSE lists its ports; the health check asks its admin port's /readyz.
    let config = std::fs::read_to_string(deploy().join("logwarden.container.toml")).unwrap();
    let mut ports: Vec<u16> = config
        .lines()
        .filter_map(|l| l.strip_prefix("address = \""))
        .map(|a| a.trim_end_matches('"').rsplit(':').next().unwrap().parse().unwrap())
        .collect();
    ports.sort_unstable();
    let mut exposed: Vec<u16> =
        all("EXPOSE").iter().flat_map(|v| v.split_whitespace()).map(|p| p.parse().unwrap()).collect();
    exposed.sort_unstable();
    assert_eq!(exposed, ports, "EXPOSE against the listeners of logwarden.container.toml");
    let admin = config.split("[admin]").nth(1).unwrap();
    let admin_port =
        admin.lines().find_map(|l| l.strip_prefix("address = \"")).unwrap().trim_end_matches('"');
    let admin_port = admin_port.rsplit(':').next().unwrap();
    let health = all("HEALTHCHECK");
    assert!(health[0].contains(&format!("127.0.0.1:{admin_port}/readyz")), "{health:?}");
    let cmd = all("CMD");
    assert!(cmd[0].contains("/etc/logwarden/logwarden.toml"), "{cmd:?}");

    // The build context leaves out build output and the development data (its server key).
    let ignore =
        std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join(".dockerignore")).unwrap();
    for entry in ["target", "logwarden-data", ".git"] {
        assert!(ignore.lines().any(|l| l.trim() == entry), ".dockerignore lacks {entry}");
    }
}

/// `kubernetes-validate --strict` over the files of `deploy/DIR`: the report, after checking
/// that it passed and covers `kinds`; and every ConfigMap's config passes `logwarden validate`.
fn validate_kubernetes(dir: &str, kinds: &[&str]) {
    let venv = venv();
    let dir = deploy().join(dir);
    let mut files: Vec<PathBuf> = std::fs::read_dir(&dir).unwrap().map(|e| e.unwrap().path()).collect();
    files.sort();
    let out = Command::new(venv.join("bin/kubernetes-validate"))
        .arg("--strict")
        .args(&files)
        .output()
        .expect("kubernetes-validate in the test venv: run scripts/install-test-deps");
    let report = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    assert!(out.status.success(), "{report}");
    for kind in kinds {
        assert!(report.contains(&format!("passed for resource {kind}")), "{kind} not validated:\n{report}");
    }
    // Each ConfigMap's config is one the daemon accepts.
    let tmp = tempfile::tempdir().unwrap();
    let mut configs = 0;
    for file in &files {
        let manifest = std::fs::read_to_string(file).unwrap();
        for (i, part) in manifest.split("logwarden.toml: |").skip(1).enumerate() {
            let toml: String = part
                .lines()
                .skip(1)
                .take_while(|l| l.starts_with("    ") || l.is_empty())
                .map(|l| format!("{}\n", l.strip_prefix("    ").unwrap_or(l)))
                .collect();
            let path = tmp.path().join(format!("k8s-{configs}-{i}.toml"));
            std::fs::write(&path, toml).unwrap();
            run_ok(Command::new(crate::daemon::BIN).arg("validate").arg(&path));
            configs += 1;
        }
    }
    assert!(configs > 0, "no ConfigMap with a logwarden.toml in {}", dir.display());
}

#[test]
fn kubernetes_manifests_pass_kubernetes_schemas() {
    validate_kubernetes("kubernetes", &["statefulset/logwarden", "service/logwarden", "configmap/logwarden"]);
}

#[test]
fn kubernetes_object_storage_manifests_pass_kubernetes_schemas() {
    validate_kubernetes(
        "kubernetes-bucket",
        &[
            "statefulset/logwarden-ingest",
            "deployment/logwarden-query",
            "service/logwarden-ingest",
            "service/logwarden-query",
            "configmap/logwarden-ingest",
            "configmap/logwarden-query",
            "deployment/logwarden-scheduler",
            "deployment/logwarden-executor",
            "service/logwarden-scheduler",
            "networkpolicy/logwarden-scheduler",
            "networkpolicy/logwarden-executor",
        ],
    );
    // Ingest nodes keep their node id (the pod's stable host name) and their volume; query
    // nodes write nothing to the bucket, so their cache may be an emptyDir.
    let manifest = std::fs::read_to_string(deploy().join("kubernetes-bucket/logwarden.yaml")).unwrap();
    assert!(manifest.contains("role = \"ingest\"") && manifest.contains("role = \"query\""));
    assert!(!manifest.contains("node_id"), "a fixed node_id would be shared by every replica");
    // Only the ingest nodes hold credentials that write; the rest (query nodes, Ballista's
    // processes, which authenticate no one) read.
    assert_eq!(manifest.matches("secretRef: {name: logwarden-s3}").count(), 1, "{manifest}");
    assert_eq!(manifest.matches("secretRef: {name: logwarden-s3-read}").count(), 3, "{manifest}");
}

#[test]
fn grafana_dashboard_loads_and_names_real_metrics() {
    let text = std::fs::read_to_string(deploy().join("grafana/dashboards/logwarden.json")).unwrap();
    let dash: serde_json::Value = serde_json::from_str(&text).expect("dashboard JSON");
    assert_eq!(dash["uid"], "logwarden");
    let panels = dash["panels"].as_array().expect("panels");
    assert!(panels.len() >= 10);
    for p in panels {
        let targets = p["targets"].as_array().expect("targets");
        assert!(
            !targets.is_empty() && targets.iter().all(|t| t["expr"].as_str().is_some_and(|e| !e.is_empty())),
            "{p}"
        );
    }
    let exprs: String = panels
        .iter()
        .flat_map(|p| p["targets"].as_array().unwrap())
        .map(|t| t["expr"].as_str().unwrap())
        .collect::<Vec<_>>()
        .join("\n");
    let (n, missing) = undefined_metrics(&exprs);
    assert!(n >= 10 && missing.is_empty(), "{n} metrics named; not defined by the daemon: {missing:?}");
    // Provisioning points Grafana at the directory compose mounts the dashboard in.
    let provider =
        std::fs::read_to_string(deploy().join("grafana/provisioning/dashboards/logwarden.yaml")).unwrap();
    assert!(provider.contains("/var/lib/grafana/dashboards"));
}

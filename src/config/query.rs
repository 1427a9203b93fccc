//! `[query]`: where SQL over `logs` runs: in this process, or on a Ballista cluster.

use serde::Deserialize;

use super::{Problem, StorageUrl};

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct QueryConfig {
    pub engine: Engine,
    /// With `engine = "ballista"`: the scheduler, `df://HOST:PORT`.
    pub scheduler: Option<String>,
}

/// `[query] engine`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Engine {
    /// DataFusion in this process.
    #[default]
    Local,
    /// Queries over `logs` alone are planned here and run by the Ballista scheduler's
    /// executors, which read the segments from the bucket.
    Ballista,
}

impl QueryConfig {
    pub(super) fn validate(&self, storage: Option<&StorageUrl>, out: &mut Vec<Problem>) {
        if let Some(url) = &self.scheduler
            && let Err(reason) = scheduler_address(url)
        {
            out.push(Problem::new("query.scheduler", reason));
        }
        if self.engine != Engine::Ballista {
            return;
        }
        if self.scheduler.is_none() {
            out.push(Problem::new(
                "query.scheduler",
                "engine = \"ballista\" needs the scheduler's address, e.g. \"df://ballista-scheduler:50050\"",
            ));
        }
        if matches!(storage, Some(StorageUrl::Local(_))) {
            out.push(Problem::new(
                "query.engine",
                "\"ballista\" runs queries on executors that read the segments from a bucket: set storage.url = \"s3://BUCKET/PREFIX\"",
            ));
        }
    }
}

/// `df://HOST:PORT` (or `df://HOST`, port 50050): the host and port.
pub fn scheduler_address(url: &str) -> Result<(String, u16), String> {
    let rest = url
        .strip_prefix("df://")
        .ok_or_else(|| format!("`{url}` is not a scheduler address: use df://HOST:PORT"))?;
    let (host, port) = match rest.rsplit_once(':') {
        Some((h, p)) => (h, p.parse::<u16>().map_err(|_| format!("`{p}` in `{url}` is not a port"))?),
        None => (rest, 50050),
    };
    if host.is_empty() || host.contains(['/', '@', '?', '#']) {
        return Err(format!("`{url}` is not a scheduler address: use df://HOST:PORT"));
    }
    Ok((host.to_owned(), port))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scheduler_addresses() {
        assert_eq!(scheduler_address("df://s:1234").unwrap(), ("s".into(), 1234));
        assert_eq!(scheduler_address("df://s").unwrap(), ("s".into(), 50050));
        assert!(scheduler_address("http://s:1").is_err());
        assert!(scheduler_address("df://u@s:1").is_err());
        assert!(scheduler_address("df://s:x").is_err());
    }
}

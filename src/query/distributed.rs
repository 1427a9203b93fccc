//! Distributed queries on Apache DataFusion Ballista, and the scheduler and executor processes
//! this binary runs (`logwarden scheduler`, `logwarden executor`).
//!
//! With `[query] engine = "ballista"`, a query that reads only `logs`, by a principal whose
//! grant has no row filter on it, is planned here against a `logs` that is a plain Parquet
//! `ListingTable` over every node's segments in the bucket (the stock DataFusion operators,
//! which Ballista's codecs carry; logwarden's own table provider and its dictionary GROUP BY
//! stay on the single-node path). The scheduler splits the plan into stages and the executors
//! read the segments straight from the bucket; the result streams back through this node's
//! Flight SQL endpoint. Every other query (side tables, row filters, blanked columns) runs
//! here as before, so authorization is decided before a plan leaves the node.
//!
//! A distributed query sees the segments in the bucket: events this node has not yet uploaded
//! (and those of other nodes not yet flushed) are left out.
//!
//! A job whose result stops being read before its end (the client went away, the query's time
//! limit passed, the daemon stops) is cancelled on the scheduler, which tells the executors to
//! abort its tasks (each stops at its next yield between batches).

use std::net::SocketAddr;
use std::sync::Arc;

use anyhow::Context;
use ballista_core::extension::{SessionConfigExt, SessionStateExt};
use datafusion::datasource::file_format::parquet::ParquetFormat;
use datafusion::datasource::listing::{ListingOptions, ListingTable, ListingTableConfig, ListingTableUrl};
use datafusion::execution::SessionStateBuilder;
use datafusion::execution::context::SessionState;
use datafusion::execution::object_store::ObjectStoreUrl;
use datafusion::execution::runtime_env::RuntimeEnvBuilder;
use datafusion::logical_expr::col;
use datafusion::logical_expr::{LogicalPlan, TableScan};
use datafusion::physical_plan::ExecutionPlan;
use datafusion::prelude::{DataFrame, SessionConfig, SessionContext};
use object_store::ObjectStore;

use datafusion::common::tree_node::{TreeNode, TreeNodeRecursion};
use datafusion::error::DataFusionError;

use super::{CATALOG, QueryError, SCHEMA, wire_schema};
use crate::batch::{self, col as column};
use crate::config::{Config, StorageUrl};
use crate::store::{Bucket, Store};

/// The scheduler a daemon hands distributed queries to.
#[derive(Clone)]
pub struct Distributed {
    /// `df://HOST:PORT`.
    scheduler: String,
}

impl Distributed {
    pub fn new(scheduler: &str) -> Distributed {
        Distributed { scheduler: scheduler.to_owned() }
    }

    /// Whether `plan` can run on the cluster: it reads `logs` and nothing else.
    pub fn takes(plan: &LogicalPlan) -> bool {
        let mut logs = false;
        let mut other = false;
        let _ = plan.apply_with_subqueries(|node| {
            if let LogicalPlan::TableScan(TableScan { table_name, .. }) = node {
                if table_name.table() == "logs" {
                    logs = true;
                } else {
                    other = true;
                }
            }
            Ok(if other { TreeNodeRecursion::Stop } else { TreeNodeRecursion::Continue })
        });
        logs && !other
    }

    /// A session whose physical planning hands plans to the scheduler, with `logs` over every
    /// node's segments in the bucket of `store`.
    pub fn session(&self, store: &Store, target_partitions: usize) -> Result<SessionContext, QueryError> {
        let Some(crate::store::BucketSegments { url, client, keys }) = store.segments_in_bucket() else {
            return Err(QueryError::Sql(datafusion::error::DataFusionError::Configuration(
                "[query] engine = \"ballista\" needs segments in a bucket (storage.url = \"s3://...\")"
                    .into(),
            )));
        };
        let scheduler = Scheduler { url: scheduler_url(&self.scheduler)?, shown: self.scheduler.clone() };
        let config = SessionConfig::new_with_ballista()
            .with_target_partitions(target_partitions)
            .with_information_schema(false)
            .with_default_catalog_and_schema(CATALOG, SCHEMA)
            .with_extension(Arc::new(scheduler.clone()))
            // The client polls the job (every 50 ms) rather than waiting for pushed status: it
            // learns the job's id as the scheduler accepts it, so an abandoned query can be
            // cancelled at any point (pushed status names the job only once it is planned).
            .set_bool(ballista_core::config::BALLISTA_CLIENT_PULL, true);
        let runtime = RuntimeEnvBuilder::new().build_arc()?;
        runtime.register_object_store(ObjectStoreUrl::parse(&url)?.as_ref(), client);
        let state = SessionStateBuilder::new()
            .with_config(config)
            .with_runtime_env(runtime)
            .with_default_features()
            .build();
        let ctx = SessionContext::new_with_state(state);
        let files: Vec<ListingTableUrl> = keys
            .iter()
            .map(|(key, _)| ListingTableUrl::parse(format!("{url}/{key}")))
            .collect::<Result<_, _>>()?;
        let options = ListingOptions::new(Arc::new(ParquetFormat::default()))
            .with_file_extension(".parquet")
            .with_file_sort_order(vec![vec![col(column::TIMESTAMP).sort(true, false)]]);
        // Without dictionary columns: Ballista moves the partitions of an ordered exchange (any
        // ORDER BY) between executors over Arrow Flight, whose encoder sends dictionaries as
        // their values while the next stage's plan still expects dictionaries, and the merge
        // fails on the type. With the types results have on the wire anyway, every exchange
        // carries exactly what the plan says and clients see the single node's schema.
        let schema = wire_schema(&batch::schema());
        let table: Arc<dyn datafusion::catalog::TableProvider> = match files.is_empty() {
            // No segment yet: an empty table of the same schema.
            true => Arc::new(datafusion::datasource::empty::EmptyTable::new(schema)),
            false => Arc::new(ListingTable::try_new(
                ListingTableConfig::new_with_multi_paths(files)
                    .with_listing_options(options)
                    .with_schema(schema),
            )?),
        };
        ctx.register_table("logs", table)?;
        // The upgrade rebuilds the state with its config: one that still asks for a default
        // catalog would get a new, empty one in place of the catalog holding `logs`.
        let state = ctx.state();
        let config = state.config().clone().with_create_default_catalog_and_schema(false);
        let state = SessionStateBuilder::new_from_existing(state).with_config(config).build();
        let state = state.upgrade_for_ballista(scheduler.url)?;
        Ok(SessionContext::new_with_state(state))
    }
}

/// The scheduler a distributed session hands its plans to, kept in the session's config so
/// that whoever runs the plan can reach the scheduler about its job.
#[derive(Debug, Clone)]
struct Scheduler {
    /// `http://HOST:PORT`, what the gRPC client connects to.
    url: String,
    /// `df://HOST:PORT`, as configured (for messages).
    shown: String,
}

/// A query running on the Ballista cluster: cancelled on the scheduler when dropped before its
/// result was read to the end, and the one place the cluster's failures are put into words.
pub struct Job {
    plan: Arc<dyn ExecutionPlan>,
    scheduler: Scheduler,
    ended: bool,
}

type Exec = ballista_core::execution_plans::DistributedQueryExec<datafusion_proto::protobuf::LogicalPlanNode>;

impl Job {
    /// The job `plan` runs, when `df` was planned for the cluster.
    pub fn of(df: &DataFrame, plan: &Arc<dyn ExecutionPlan>) -> Option<Job> {
        let scheduler = df.task_ctx().session_config().get_extension::<Scheduler>()?;
        Some(Job { plan: plan.clone(), scheduler: scheduler.as_ref().clone(), ended: false })
    }

    /// The result was read to its end: nothing is left to cancel.
    pub fn ended(&mut self) {
        self.ended = true;
    }

    /// A failed item of the job's stream, as the client sees it. A job that failed on the
    /// cluster for a reason of the query's (a missing segment object, a cast that fails) keeps
    /// its message and has ended. Anything else (the scheduler unreachable or not answering,
    /// the cluster's own transport failing, the scheduler refusing the plan) is told without
    /// the cluster's addresses or internals, which go to the daemon's log; a job that may still
    /// run is left to be cancelled when the stream is dropped.
    pub fn failure(&mut self, e: DataFusionError) -> DataFusionError {
        let text = e.strip_backtrace();
        let failed_job = self.id().is_some_and(|id| text.contains(&format!("Job {id} failed: ")));
        let transport = TRANSPORT_SIGNS.iter().any(|sign| text.contains(sign));
        if failed_job {
            self.ended = true;
            if !transport {
                return e;
            }
        }
        tracing::warn!(scheduler = %self.scheduler.shown, error = %text, "a distributed query failed on the cluster's side");
        let told = match text.contains("Fail to execute query due to") {
            true => {
                QueryError::Cluster("the query cluster refused the query; the daemon's log says why".into())
            }
            false => QueryError::Unavailable("the query cluster is unavailable; retry later".into()),
        };
        DataFusionError::External(Box::new(told))
    }

    fn id(&self) -> Option<String> {
        let mut id = None;
        let _ = self.plan.apply(|node| {
            if let Some(exec) = node.downcast_ref::<Exec>() {
                id = exec.job_id().map(String::from);
                return Ok(TreeNodeRecursion::Stop);
            }
            Ok(TreeNodeRecursion::Continue)
        });
        id
    }
}

/// What a failure of the cluster's transport looks like in Ballista's error texts (tonic's
/// status and transport errors, formatted with `{:?}`).
const TRANSPORT_SIGNS: [&str; 5] =
    ["Status {", "transport error", "tcp connect error", "Connection refused", "FetchFailed"];

impl Drop for Job {
    fn drop(&mut self) {
        if self.ended {
            return;
        }
        // No id yet: the submission was still on its way. If the scheduler had already queued
        // the job when the stream was dropped, nothing here can name it, and it runs to its end.
        let Some(id) = self.id() else { return };
        let Ok(runtime) = tokio::runtime::Handle::try_current() else { return };
        // A bounded number at once: clients that submit and walk away in a loop, against a
        // scheduler that does not answer, cannot pile up connections here.
        let Ok(slot) = CANCEL_SLOTS.try_acquire() else {
            tracing::warn!(job = %id, "too many cancellations under way: this distributed query's job runs to its end");
            return;
        };
        let scheduler = self.scheduler.clone();
        runtime.spawn(CANCELS.track_future(async move {
            cancel(scheduler, id).await;
            drop(slot);
        }));
    }
}

/// Cancellations of abandoned jobs under way, awaited at shutdown (see [`cancellations_sent`]).
static CANCELS: std::sync::LazyLock<tokio_util::task::TaskTracker> =
    std::sync::LazyLock::new(tokio_util::task::TaskTracker::new);
static CANCEL_SLOTS: tokio::sync::Semaphore = tokio::sync::Semaphore::const_new(16);

/// Wait (until `deadline`) for the cancellations under way: at shutdown, after the Flight SQL
/// server has dropped its queries, so their jobs do not outlive the daemon on the cluster.
pub async fn cancellations_sent(deadline: tokio::time::Instant) {
    CANCELS.close();
    let _ = tokio::time::timeout_at(deadline, CANCELS.wait()).await;
}

/// Ask the scheduler to cancel job `id` (it tells the executors to abort the job's tasks).
async fn cancel(scheduler: Scheduler, id: String) {
    use ballista_core::serde::protobuf::CancelJobParams;
    use ballista_core::serde::protobuf::scheduler_grpc_client::SchedulerGrpcClient;
    let asked = tokio::time::timeout(CANCEL_TIMEOUT, async {
        let endpoint = tonic::transport::Endpoint::from_shared(scheduler.url.clone())
            .map_err(|e| e.to_string())?
            .connect_timeout(CANCEL_TIMEOUT);
        let channel = endpoint.connect().await.map_err(|e| e.to_string())?;
        let answer =
            SchedulerGrpcClient::new(channel).cancel_job(CancelJobParams { job_id: id.clone() }).await;
        answer.map(|_| ()).map_err(|s| s.message().to_owned())
    })
    .await;
    match asked {
        Ok(Ok(())) => {
            tracing::info!(job = %id, "distributed query cancelled on the cluster (its result was not read to the end)")
        }
        Ok(Err(e)) => tracing::warn!(job = %id, scheduler = %scheduler.shown, error = %e,
            "could not cancel a distributed query whose result was not read to the end"),
        Err(_) => tracing::warn!(job = %id, scheduler = %scheduler.shown,
            "could not cancel a distributed query whose result was not read to the end: the scheduler did not answer"),
    }
}

/// How long a cancellation may wait on the scheduler.
const CANCEL_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(5);

/// `df://HOST:PORT` as the `http://HOST:PORT` Ballista's client connects to.
fn scheduler_url(df: &str) -> Result<String, QueryError> {
    let (host, port) = crate::config::scheduler_address(df)
        .map_err(|e| QueryError::Sql(datafusion::error::DataFusionError::Configuration(e)))?;
    Ok(format!("http://{host}:{port}"))
}

/// The bucket of `config` as DataFusion finds it: `s3://BUCKET` and its client (endpoint and
/// credentials from the environment, as the daemon's).
fn bucket_store(config: &Config) -> anyhow::Result<(ObjectStoreUrl, Arc<dyn ObjectStore>)> {
    let location =
        config.storage.location(&config.data_dir).map_err(|e| anyhow::anyhow!("storage.url: {e}"))?;
    let StorageUrl::S3 { bucket, prefix } = location else {
        anyhow::bail!(
            "storage.url must be s3://BUCKET/PREFIX: the executors read the segments from the bucket"
        );
    };
    let b = Bucket::open(&bucket, &prefix, &config.cluster.node_id())?;
    Ok((ObjectStoreUrl::parse(b.store_url())?, b.object_store()))
}

/// Run a Ballista scheduler on `bind` until the process is stopped.
pub async fn run_scheduler(config: &Config, bind: SocketAddr, external_host: &str) -> anyhow::Result<()> {
    use ballista_scheduler::cluster::BallistaCluster;
    use ballista_scheduler::config::SchedulerConfig;
    let (url, store) = bucket_store(config)?;
    let session_builder = move |session: SessionConfig| -> datafusion::common::Result<SessionState> {
        let state = ballista_core::utils::default_session_builder(session)?;
        state.runtime_env().register_object_store(url.as_ref(), store.clone());
        Ok(state)
    };
    let scheduler = SchedulerConfig {
        bind_host: bind.ip().to_string(),
        bind_port: bind.port(),
        external_host: external_host.to_owned(),
        override_session_builder: Some(Arc::new(session_builder)),
        ..Default::default()
    };
    let cluster =
        BallistaCluster::new_from_config(&scheduler).await.context("failed to set up the scheduler")?;
    tracing::info!(address = %bind, "Ballista scheduler listening");
    ballista_scheduler::scheduler_process::start_server(cluster, bind, Arc::new(scheduler))
        .await
        .with_context(|| format!("the scheduler on {bind} stopped"))
}

/// What `logwarden executor` is given.
pub struct ExecutorOptions {
    /// The scheduler, `HOST:PORT`.
    pub scheduler: (String, u16),
    /// Where the executor serves shuffle data (Arrow Flight) and takes tasks (gRPC).
    pub bind: std::net::IpAddr,
    /// How the scheduler and other executors reach this one.
    pub external_host: String,
    pub port: u16,
    pub grpc_port: u16,
    /// Tasks at once (0: one per core).
    pub concurrent_tasks: usize,
    /// Shuffle files; a temporary directory when unset.
    pub work_dir: Option<std::path::PathBuf>,
}

/// Run a Ballista executor that reads segments from the bucket of `config`, until stopped.
pub async fn run_executor(config: &Config, opts: ExecutorOptions) -> anyhow::Result<()> {
    use ballista_executor::executor_process::{ExecutorProcessConfig, start_executor_process};
    let (url, store) = bucket_store(config)?;
    let work_dir = opts.work_dir.as_ref().map(|d| d.display().to_string());
    let temp = work_dir.clone().unwrap_or_else(|| std::env::temp_dir().display().to_string());
    let runtime = move |_: &SessionConfig| {
        let runtime = RuntimeEnvBuilder::new().with_temp_file_path(temp.clone()).build()?;
        runtime.register_object_store(url.as_ref(), store.clone());
        Ok(Arc::new(runtime))
    };
    let executor = ExecutorProcessConfig {
        bind_host: opts.bind.to_string(),
        external_host: Some(opts.external_host.clone()),
        port: opts.port,
        grpc_port: opts.grpc_port,
        scheduler_host: opts.scheduler.0.clone(),
        scheduler_port: opts.scheduler.1,
        vcores: opts.concurrent_tasks,
        work_dir,
        override_runtime_producer: Some(Arc::new(runtime)),
        ..Default::default()
    };
    tracing::info!(port = opts.port, grpc_port = opts.grpc_port, scheduler = %format!("{}:{}", opts.scheduler.0, opts.scheduler.1),
        "Ballista executor starting");
    start_executor_process(Arc::new(executor)).await.context("the executor stopped")
}

#[cfg(test)]
mod tests {
    use super::*;

    async fn plan(sql: &str) -> LogicalPlan {
        let ctx = SessionContext::new();
        let empty = |schema| Arc::new(datafusion::datasource::empty::EmptyTable::new(schema));
        ctx.register_table("logs", empty(batch::schema())).unwrap();
        ctx.register_table("alerts", empty(crate::alert::table::alerts_schema())).unwrap();
        ctx.state().create_logical_plan(sql).await.unwrap()
    }

    #[tokio::test]
    async fn only_plans_over_logs_alone_go_to_the_cluster() {
        assert!(Distributed::takes(&plan("SELECT host, count(*) FROM logs GROUP BY host").await));
        assert!(Distributed::takes(&plan("SELECT * FROM logs WHERE host IN (SELECT host FROM logs)").await));
        assert!(!Distributed::takes(&plan("SELECT 1").await));
        assert!(!Distributed::takes(&plan("SELECT * FROM alerts").await));
        assert!(!Distributed::takes(
            &plan("SELECT * FROM logs JOIN alerts ON logs.host = alerts.rule").await
        ));
        assert!(!Distributed::takes(
            &plan("SELECT * FROM logs WHERE host IN (SELECT rule FROM alerts)").await
        ));
    }
}

//! The Flight SQL service: statements and prepared statements over the query engine, streamed
//! batch by batch under per-query limits, plus the metadata commands GUI clients need.
//!
//! Tickets and prepared-statement handles carry the statement itself ([`Statement`]), so any
//! task can serve any ticket and nothing is kept per client.

use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Instant;

use arrow::array::RecordBatch;
use arrow::datatypes::Schema;
use arrow::ipc::writer::IpcWriteOptions;
use arrow_flight::decode::FlightRecordBatchStream;
use arrow_flight::encode::FlightDataEncoderBuilder;
use arrow_flight::error::FlightError;
use arrow_flight::flight_service_server::FlightService;
use arrow_flight::sql::server::{FlightSqlService, PeekableFlightDataStream};
use arrow_flight::sql::{
    ActionClosePreparedStatementRequest, ActionCreatePreparedStatementRequest,
    ActionCreatePreparedStatementResult, CommandGetCatalogs, CommandGetCrossReference, CommandGetDbSchemas,
    CommandGetExportedKeys, CommandGetImportedKeys, CommandGetPrimaryKeys, CommandGetSqlInfo,
    CommandGetTableTypes, CommandGetTables, CommandGetXdbcTypeInfo, CommandPreparedStatementQuery,
    CommandStatementQuery, DoPutPreparedStatementResult, ProstMessageExt, SqlInfo, TicketStatementQuery,
};
use arrow_flight::{
    FlightData, FlightDescriptor, FlightEndpoint, FlightInfo, HandshakeRequest, HandshakeResponse,
    IpcMessage, SchemaAsIpc, Ticket,
};
use datafusion::error::DataFusionError;
use futures::{Stream, StreamExt, TryStreamExt};
use prost::Message;
use tokio::sync::{Semaphore, mpsc};
use tonic::{Request, Response, Status, Streaming};

use super::auth::{Authenticator, Identity};
use super::handle::Statement;
use super::ipc_check::IpcCheck;
use super::metadata;
use crate::access::SharedAccess;
use crate::audit::{Audit, AuditEntry};
use crate::metrics::Metrics;
use crate::query::{self, QueryEngine, QueryError, QueryLimits, wire_schema};
use crate::serve::grpc::GrpcPeer;

type DoGetStream = Pin<Box<dyn Stream<Item = Result<FlightData, Status>> + Send + 'static>>;

/// Encoded messages a query may have ready ahead of its client.
const AHEAD: usize = 2;
type HandshakeStream = Pin<Box<dyn Stream<Item = Result<HandshakeResponse, Status>> + Send + 'static>>;

pub struct FlightSql {
    pub engine: QueryEngine,
    pub auth: Arc<Authenticator>,
    pub limits: QueryLimits,
    pub max_concurrent: usize,
    pub running: Arc<Semaphore>,
    pub metrics: Metrics,
    pub access: SharedAccess,
    pub audit: Audit,
}

/// Who made a call, how they authenticated, and from where.
struct Caller {
    who: String,
    auth: &'static str,
    peer: String,
}

fn caller<T>(req: &Request<T>) -> Caller {
    let id = req.extensions().get::<Identity>();
    Caller {
        who: id.map_or_else(|| "?".to_owned(), |i| i.name.clone()),
        auth: id.map_or("none", |i| i.method),
        peer: req.extensions().get::<GrpcPeer>().map_or_else(|| "?".to_owned(), |p| p.addr.to_string()),
    }
}

/// The `FlightInfo` for a command: one endpoint whose ticket is `ticket` (the command itself
/// for metadata and prepared statements, so `do_get` receives what the client asked).
fn flight_info(
    schema: &Schema,
    ticket: &impl ProstMessageExt,
    request: Request<FlightDescriptor>,
) -> Result<Response<FlightInfo>, Status> {
    let info = FlightInfo::new()
        .try_with_schema(schema)
        .map_err(|e| Status::internal(format!("failed to encode a schema: {e}")))?
        .with_endpoint(FlightEndpoint::new().with_ticket(Ticket::new(ticket.as_any().encode_to_vec())))
        .with_descriptor(request.into_inner());
    Ok(Response::new(info))
}

/// An empty, well-formed result (keys: log tables have none).
fn empty_result(schema: Schema) -> Result<Response<DoGetStream>, Status> {
    Ok(Response::new(encode_batch(RecordBatch::new_empty(Arc::new(schema)))))
}

fn encode_batch(batch: RecordBatch) -> DoGetStream {
    let schema = batch.schema();
    Box::pin(
        FlightDataEncoderBuilder::new()
            .with_schema(schema)
            .build(futures::stream::iter([Ok(batch)]))
            .map_err(Status::from),
    )
}

fn decode_handle(bytes: &[u8]) -> Result<Statement, Status> {
    Statement::decode(bytes).map_err(|e| Status::invalid_argument(format!("bad statement handle: {e}")))
}

/// The gRPC status and the `status` metric label for a failed query.
fn status_for(e: &QueryError, limits: &QueryLimits) -> (Status, &'static str) {
    match e {
        QueryError::Forbidden(m) => {
            (Status::permission_denied(format!("logwarden is read-only: {m}")), "denied")
        }
        QueryError::Denied(m) => (Status::permission_denied(m.clone()), "denied"),
        QueryError::Timeout(_) => (Status::deadline_exceeded(e.to_string()), "timeout"),
        QueryError::Limit(m) => (Status::resource_exhausted(m.clone()), "resource_exhausted"),
        QueryError::Format(a) => (Status::internal(a.to_string()), "error"),
        QueryError::Unavailable(m) => (Status::unavailable(m.clone()), "unavailable"),
        QueryError::Cluster(m) => (Status::internal(m.clone()), "error"),
        QueryError::Sql(df) => status_for_df(df, limits),
    }
}

fn status_for_df(e: &DataFusionError, limits: &QueryLimits) -> (Status, &'static str) {
    match e.find_root() {
        DataFusionError::ResourcesExhausted(m) => (
            Status::resource_exhausted(format!(
                "query exceeded its memory limit of {} bytes (flight.limits.memory): {m}",
                limits.memory_bytes
            )),
            "resource_exhausted",
        ),
        DataFusionError::External(inner) => match inner.downcast_ref::<QueryError>() {
            Some(q) => status_for(q, limits),
            None => (Status::internal(e.strip_backtrace()), "error"),
        },
        DataFusionError::SQL(..)
        | DataFusionError::Plan(_)
        | DataFusionError::SchemaError(..)
        | DataFusionError::NotImplemented(_)
        | DataFusionError::Configuration(_)
        | DataFusionError::Execution(_)
        | DataFusionError::ArrowError(..) => (Status::invalid_argument(e.strip_backtrace()), "invalid"),
        _ => (Status::internal(e.strip_backtrace()), "error"),
    }
}

/// Records a query's outcome once: when its stream ends, fails, or is dropped by a client that
/// went away (`cancelled`). Holding it holds the concurrency permit.
struct QueryRun {
    metrics: Metrics,
    audit: Audit,
    started: Instant,
    caller: Caller,
    sql: String,
    /// Why it failed, for the audit trail.
    reason: Option<String>,
    rows: Arc<AtomicU64>,
    outcome: Option<&'static str>,
    _permit: tokio::sync::OwnedSemaphorePermit,
}

impl QueryRun {
    fn finish(&mut self, outcome: &'static str) {
        if self.outcome.is_some() {
            return;
        }
        self.outcome = Some(outcome);
        let secs = self.started.elapsed().as_secs_f64();
        self.metrics.flight_queries.with_label_values(&[outcome]).inc();
        self.metrics.flight_query_seconds.observe(secs);
        self.metrics.flight_active_queries.dec();
        let rows = self.rows.load(Ordering::Relaxed);
        let c = &self.caller;
        let mut e = AuditEntry::query(&c.peer, &c.who, c.auth, &self.sql, outcome);
        e.rows = Some(rows);
        e.duration_ms = Some(secs * 1e3);
        e.reason = self.reason.take();
        self.audit.record(e);
    }
}

impl Drop for QueryRun {
    fn drop(&mut self) {
        self.finish("cancelled");
    }
}

impl FlightSql {
    /// A statement that failed before running (planning, preparing): counted and audited.
    fn fail(&self, e: QueryError, c: &Caller, sql: &str) -> Status {
        let (status, label) = status_for(&e, &self.limits);
        self.metrics.flight_queries.with_label_values(&[label]).inc();
        let mut entry = AuditEntry::query(&c.peer, &c.who, c.auth, sql, label);
        entry.reason = Some(status.message().to_owned());
        self.audit.record(entry);
        status
    }

    /// Plan a statement for `c`, with its `[access]` grant applied.
    async fn plan(
        &self,
        stmt: &Statement,
        c: &Caller,
    ) -> Result<datafusion::dataframe::DataFrame, QueryError> {
        let grant = self.access.load().query_grant(&c.who);
        self.engine
            .plan(&stmt.sql, stmt.params.clone(), Some(self.limits.memory_bytes), (&c.who, &grant))
            .await
    }

    /// Plan a statement (no execution) and return the schema its results will have on the wire.
    async fn result_schema<T>(&self, stmt: &Statement, req: &Request<T>) -> Result<Arc<Schema>, Status> {
        let c = caller(req);
        let df = self.plan(stmt, &c).await.map_err(|e| self.fail(e, &c, &stmt.sql))?;
        Ok(wire_schema(df.schema().as_arrow()))
    }

    /// Run a statement and stream its results.
    async fn run<T>(&self, stmt: Statement, req: &Request<T>) -> Result<Response<DoGetStream>, Status> {
        let c = caller(req);
        let permit = self.running.clone().try_acquire_owned().map_err(|_| {
            self.metrics.flight_queries.with_label_values(&["resource_exhausted"]).inc();
            Status::resource_exhausted(format!(
                "{} queries are already running (flight.limits.max_concurrent); retry later",
                self.max_concurrent
            ))
        })?;
        self.metrics.flight_active_queries.inc();
        // The time limit counts from here, and on while the client is slow to read.
        let deadline = tokio::time::Instant::now() + self.limits.timeout;
        let planned = self.plan(&stmt, &c).await;
        let mut run = QueryRun {
            metrics: self.metrics.clone(),
            audit: self.audit.clone(),
            started: Instant::now(),
            caller: c,
            sql: stmt.sql.clone(),
            reason: None,
            rows: Arc::new(AtomicU64::new(0)),
            outcome: None,
            _permit: permit,
        };
        let limits = self.limits;
        let planned = match planned {
            Ok(df) => query::execute_limited(df, limits, deadline).await,
            Err(e) => Err(e),
        };
        let stream = match planned {
            Ok(s) => s,
            Err(e) => {
                let (status, label) = status_for(&e, &limits);
                run.reason = Some(status.message().to_owned());
                run.finish(label);
                return Err(status);
            }
        };
        let schema = wire_schema(&stream.schema());
        let rows_sent = self.metrics.flight_rows_sent.clone();
        let rows = run.rows.clone();
        let batches = stream.map(move |r| match r {
            Ok(b) => {
                rows_sent.inc_by(b.num_rows() as u64);
                rows.fetch_add(b.num_rows() as u64, Ordering::Relaxed);
                Ok(b)
            }
            Err(e) => Err(FlightError::Tonic(Box::new(status_for_df(&e, &limits).0))),
        });
        let encoded = FlightDataEncoderBuilder::new().with_schema(schema).build(batches);
        // The query runs in a task of its own, a few messages ahead of the client: a client that
        // stops reading stalls the task's sends, not the clock, so the deadline still ends the
        // query and frees its slot.
        let (tx, rx) = mpsc::channel(AHEAD);
        let end = End::default();
        tokio::spawn(produce(encoded, run, deadline, limits, tx, end.clone()));
        Ok(Response::new(Box::pin(deliver(rx, end))))
    }
}

/// How a query's result ended, as its task saw it: complete, or failed with this status.
type End = Arc<Mutex<Option<Result<(), Status>>>>;

/// Run a query's stream into `tx` until it ends, fails, passes `deadline` (its client not
/// reading) or its client goes away; record the outcome, free the slot, then say how it ended.
async fn produce(
    mut encoded: impl Stream<Item = Result<FlightData, FlightError>> + Send + Unpin + 'static,
    mut run: QueryRun,
    deadline: tokio::time::Instant,
    limits: QueryLimits,
    tx: mpsc::Sender<Result<FlightData, Status>>,
    end: End,
) {
    let outcome = loop {
        let next = tokio::select! {
            next = encoded.next() => next,
            // Gone: dropping `run` records the query as cancelled.
            () = tx.closed() => return,
        };
        match next {
            None => break Ok(()),
            Some(Err(e)) => break Err(Status::from(e)),
            Some(Ok(data)) => match tokio::time::timeout_at(deadline, tx.send(Ok(data))).await {
                Ok(Ok(())) => {}
                Ok(Err(_)) => return,
                Err(_) => {
                    break Err(Status::deadline_exceeded(QueryError::Timeout(limits.timeout).to_string()));
                }
            },
        }
    };
    match &outcome {
        Ok(()) => run.finish("ok"),
        Err(status) => {
            run.reason = Some(run_time_reason(status));
            run.finish(outcome_of(status));
        }
    }
    drop(run);
    *end.lock().unwrap_or_else(|e| e.into_inner()) = Some(outcome);
}

/// What the client reads: the messages `produce` sent, then the end it recorded. A failure
/// comes before any message still waiting, and a result whose task stopped without saying how
/// it ended is an error: never a shortened result that looks complete.
fn deliver(
    rx: mpsc::Receiver<Result<FlightData, Status>>,
    end: End,
) -> impl Stream<Item = Result<FlightData, Status>> + Send {
    futures::stream::unfold(Some((rx, end)), |state| async move {
        let (mut rx, end) = state?;
        let failed = {
            let mut e = end.lock().unwrap_or_else(|e| e.into_inner());
            if matches!(*e, Some(Err(_))) { e.take() } else { None }
        };
        if let Some(Err(status)) = failed {
            return Some((Err(status), None));
        }
        match rx.recv().await {
            Some(item) => Some((item, Some((rx, end)))),
            None => match end.lock().unwrap_or_else(|e| e.into_inner()).take() {
                Some(Ok(())) => None,
                Some(Err(status)) => Some((Err(status), None)),
                None => Some((Err(Status::internal("the query stopped without finishing its result")), None)),
            },
        }
    })
}

/// What the audit trail keeps of an error raised while a query ran. The engine's own messages
/// (a failed cast, a bad regular expression) may quote the row they failed on, and the audit
/// trail is read by principals who may not read that row: only the kind of failure is kept.
/// logwarden's own limits say nothing about rows and are kept whole.
fn run_time_reason(s: &Status) -> String {
    match s.code() {
        tonic::Code::InvalidArgument | tonic::Code::Internal | tonic::Code::Unknown => format!(
            "{}: the query failed while running (the message is not kept in the audit trail: it may quote row values)",
            outcome_of(s)
        ),
        _ => s.message().to_owned(),
    }
}

fn outcome_of(s: &Status) -> &'static str {
    match s.code() {
        tonic::Code::InvalidArgument => "invalid",
        tonic::Code::PermissionDenied => "denied",
        tonic::Code::ResourceExhausted => "resource_exhausted",
        tonic::Code::DeadlineExceeded => "timeout",
        tonic::Code::Unavailable => "unavailable",
        _ => "error",
    }
}

#[tonic::async_trait]
impl FlightSqlService for FlightSql {
    type FlightService = FlightSql;

    async fn do_handshake(
        &self,
        request: Request<Streaming<HandshakeRequest>>,
    ) -> Result<Response<Pin<Box<dyn Stream<Item = Result<HandshakeResponse, Status>> + Send>>>, Status> {
        let id = request
            .extensions()
            .get::<Identity>()
            .cloned()
            .ok_or_else(|| Status::unauthenticated("no credentials"))?;
        let token = self.auth.start_session(&id);
        let reply = HandshakeResponse { protocol_version: 0, payload: token.clone().into_bytes().into() };
        let stream: HandshakeStream = Box::pin(futures::stream::iter([Ok(reply)]));
        let mut resp = Response::new(stream);
        let header = format!("Bearer {token}")
            .parse()
            .map_err(|_| Status::internal("session token is not a valid header value"))?;
        resp.metadata_mut().insert("authorization", header);
        Ok(resp)
    }

    async fn get_flight_info_statement(
        &self,
        query: CommandStatementQuery,
        request: Request<FlightDescriptor>,
    ) -> Result<Response<FlightInfo>, Status> {
        let stmt = Statement::new(query.query);
        let schema = self.result_schema(&stmt, &request).await?;
        let ticket = TicketStatementQuery { statement_handle: stmt.encode() };
        flight_info(&schema, &ticket, request)
    }

    async fn do_get_statement(
        &self,
        ticket: TicketStatementQuery,
        request: Request<Ticket>,
    ) -> Result<Response<<Self as FlightService>::DoGetStream>, Status> {
        let stmt = decode_handle(&ticket.statement_handle)?;
        self.run(stmt, &request).await
    }

    async fn do_action_create_prepared_statement(
        &self,
        query: ActionCreatePreparedStatementRequest,
        request: Request<arrow_flight::Action>,
    ) -> Result<ActionCreatePreparedStatementResult, Status> {
        let stmt = Statement::new(query.query);
        let c = caller(&request);
        let df = self.plan(&stmt, &c).await.map_err(|e| self.fail(e, &c, &stmt.sql))?;
        let dataset = wire_schema(df.schema().as_arrow());
        let params = query::parameter_schema(&df).map_err(|e| self.fail(e, &c, &stmt.sql))?;
        let opts = IpcWriteOptions::default();
        let ipc = |s: &Schema| -> Result<bytes::Bytes, Status> {
            let IpcMessage(b) = SchemaAsIpc::new(s, &opts)
                .try_into()
                .map_err(|e: arrow::error::ArrowError| Status::internal(e.to_string()))?;
            Ok(b)
        };
        Ok(ActionCreatePreparedStatementResult {
            prepared_statement_handle: stmt.encode(),
            dataset_schema: ipc(&dataset)?,
            parameter_schema: if params.fields().is_empty() { bytes::Bytes::new() } else { ipc(&params)? },
        })
    }

    async fn do_put_prepared_statement_query(
        &self,
        query: CommandPreparedStatementQuery,
        request: Request<PeekableFlightDataStream>,
    ) -> Result<DoPutPreparedStatementResult, Status> {
        let stmt = decode_handle(&query.prepared_statement_handle)?;
        // arrow-ipc trusts what the client's messages declare in ways that panic: check first.
        let mut check = IpcCheck::default();
        let data = request.into_inner().map(move |d| {
            let d = d.map_err(FlightError::from)?;
            check.flight_data(&d.data_header, &d.data_body).map_err(FlightError::ProtocolError)?;
            Ok(d)
        });
        let mut batches = FlightRecordBatchStream::new_from_flight_data(data);
        let mut last = None;
        while let Some(b) = batches.next().await {
            let b = b.map_err(|e| Status::invalid_argument(format!("bad parameter batch: {e}")))?;
            if b.num_rows() > 0 {
                last = Some(b);
            }
        }
        let stmt = match last {
            Some(b) => stmt.with_params(b).map_err(|e| Status::invalid_argument(e.to_string()))?,
            None => stmt,
        };
        // The bound values travel in the new handle: the server stays stateless.
        Ok(DoPutPreparedStatementResult { prepared_statement_handle: Some(stmt.encode()) })
    }

    async fn get_flight_info_prepared_statement(
        &self,
        cmd: CommandPreparedStatementQuery,
        request: Request<FlightDescriptor>,
    ) -> Result<Response<FlightInfo>, Status> {
        let stmt = decode_handle(&cmd.prepared_statement_handle)?;
        let schema = self.result_schema(&stmt, &request).await?;
        flight_info(&schema, &cmd, request)
    }

    async fn do_get_prepared_statement(
        &self,
        query: CommandPreparedStatementQuery,
        request: Request<Ticket>,
    ) -> Result<Response<<Self as FlightService>::DoGetStream>, Status> {
        let stmt = decode_handle(&query.prepared_statement_handle)?;
        self.run(stmt, &request).await
    }

    async fn do_action_close_prepared_statement(
        &self,
        query: ActionClosePreparedStatementRequest,
        _request: Request<arrow_flight::Action>,
    ) -> Result<(), Status> {
        // Nothing is held per statement; only check that the handle is one of ours.
        decode_handle(&query.prepared_statement_handle).map(|_| ())
    }

    async fn get_flight_info_sql_info(
        &self,
        query: CommandGetSqlInfo,
        request: Request<FlightDescriptor>,
    ) -> Result<Response<FlightInfo>, Status> {
        let schema = metadata::sql_info()?.schema();
        flight_info(&schema, &query, request)
    }

    async fn do_get_sql_info(
        &self,
        query: CommandGetSqlInfo,
        _request: Request<Ticket>,
    ) -> Result<Response<<Self as FlightService>::DoGetStream>, Status> {
        let batch = query.into_builder(metadata::sql_info()?).build().map_err(Status::from)?;
        Ok(Response::new(encode_batch(batch)))
    }

    async fn get_flight_info_catalogs(
        &self,
        query: CommandGetCatalogs,
        request: Request<FlightDescriptor>,
    ) -> Result<Response<FlightInfo>, Status> {
        let schema = query.into_builder().schema();
        flight_info(&schema, &query, request)
    }

    async fn do_get_catalogs(
        &self,
        query: CommandGetCatalogs,
        _request: Request<Ticket>,
    ) -> Result<Response<<Self as FlightService>::DoGetStream>, Status> {
        Ok(Response::new(encode_batch(metadata::catalogs(self.engine.context(), query.into_builder())?)))
    }

    async fn get_flight_info_schemas(
        &self,
        query: CommandGetDbSchemas,
        request: Request<FlightDescriptor>,
    ) -> Result<Response<FlightInfo>, Status> {
        let schema = query.clone().into_builder().schema();
        flight_info(&schema, &query, request)
    }

    async fn do_get_schemas(
        &self,
        query: CommandGetDbSchemas,
        _request: Request<Ticket>,
    ) -> Result<Response<<Self as FlightService>::DoGetStream>, Status> {
        Ok(Response::new(encode_batch(metadata::schemas(self.engine.context(), query.into_builder())?)))
    }

    async fn get_flight_info_tables(
        &self,
        query: CommandGetTables,
        request: Request<FlightDescriptor>,
    ) -> Result<Response<FlightInfo>, Status> {
        let schema = query.clone().into_builder().schema();
        flight_info(&schema, &query, request)
    }

    async fn do_get_tables(
        &self,
        query: CommandGetTables,
        request: Request<Ticket>,
    ) -> Result<Response<<Self as FlightService>::DoGetStream>, Status> {
        // A principal is shown the tables its [access] query rules let it read.
        let grant = self.access.load().query_grant(&caller(&request).who);
        let visible =
            |schema: &str, table: &str| schema == "information_schema" || grant.table(table).is_some();
        Ok(Response::new(encode_batch(
            metadata::tables(self.engine.context(), query.into_builder(), visible).await?,
        )))
    }

    async fn get_flight_info_table_types(
        &self,
        query: CommandGetTableTypes,
        request: Request<FlightDescriptor>,
    ) -> Result<Response<FlightInfo>, Status> {
        let schema = query.into_builder().schema();
        flight_info(&schema, &query, request)
    }

    async fn do_get_table_types(
        &self,
        query: CommandGetTableTypes,
        _request: Request<Ticket>,
    ) -> Result<Response<<Self as FlightService>::DoGetStream>, Status> {
        let mut b = query.into_builder();
        for t in metadata::TABLE_TYPES {
            b.append(t);
        }
        Ok(Response::new(encode_batch(b.build().map_err(Status::from)?)))
    }

    async fn get_flight_info_xdbc_type_info(
        &self,
        query: CommandGetXdbcTypeInfo,
        request: Request<FlightDescriptor>,
    ) -> Result<Response<FlightInfo>, Status> {
        let schema = metadata::xdbc_types()?.schema();
        flight_info(&schema, &query, request)
    }

    async fn do_get_xdbc_type_info(
        &self,
        query: CommandGetXdbcTypeInfo,
        _request: Request<Ticket>,
    ) -> Result<Response<<Self as FlightService>::DoGetStream>, Status> {
        let batch = query.into_builder(metadata::xdbc_types()?).build().map_err(Status::from)?;
        Ok(Response::new(encode_batch(batch)))
    }

    async fn get_flight_info_primary_keys(
        &self,
        query: CommandGetPrimaryKeys,
        request: Request<FlightDescriptor>,
    ) -> Result<Response<FlightInfo>, Status> {
        flight_info(&metadata::primary_keys_schema(), &query, request)
    }

    async fn do_get_primary_keys(
        &self,
        _query: CommandGetPrimaryKeys,
        _request: Request<Ticket>,
    ) -> Result<Response<<Self as FlightService>::DoGetStream>, Status> {
        empty_result(metadata::primary_keys_schema())
    }

    async fn get_flight_info_exported_keys(
        &self,
        query: CommandGetExportedKeys,
        request: Request<FlightDescriptor>,
    ) -> Result<Response<FlightInfo>, Status> {
        flight_info(&metadata::foreign_keys_schema(), &query, request)
    }

    async fn do_get_exported_keys(
        &self,
        _query: CommandGetExportedKeys,
        _request: Request<Ticket>,
    ) -> Result<Response<<Self as FlightService>::DoGetStream>, Status> {
        empty_result(metadata::foreign_keys_schema())
    }

    async fn get_flight_info_imported_keys(
        &self,
        query: CommandGetImportedKeys,
        request: Request<FlightDescriptor>,
    ) -> Result<Response<FlightInfo>, Status> {
        flight_info(&metadata::foreign_keys_schema(), &query, request)
    }

    async fn do_get_imported_keys(
        &self,
        _query: CommandGetImportedKeys,
        _request: Request<Ticket>,
    ) -> Result<Response<<Self as FlightService>::DoGetStream>, Status> {
        empty_result(metadata::foreign_keys_schema())
    }

    async fn get_flight_info_cross_reference(
        &self,
        query: CommandGetCrossReference,
        request: Request<FlightDescriptor>,
    ) -> Result<Response<FlightInfo>, Status> {
        flight_info(&metadata::foreign_keys_schema(), &query, request)
    }

    async fn do_get_cross_reference(
        &self,
        _query: CommandGetCrossReference,
        _request: Request<Ticket>,
    ) -> Result<Response<<Self as FlightService>::DoGetStream>, Status> {
        empty_result(metadata::foreign_keys_schema())
    }

    async fn register_sql_info(&self, _id: i32, _result: &SqlInfo) {}
}

//! The Flight SQL endpoint on the shared gRPC transport (`serve::grpc`): every call is
//! authenticated before it reaches the service, a password check off the async workers.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use arrow_flight::flight_service_server::FlightServiceServer;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tonic::body::Body;
use tonic::codegen::http;
use tonic::metadata::MetadataMap;

use super::auth::{Authenticator, Identity};
use super::service::FlightSql;
use crate::config::ListenerCommon;
use crate::ingest::listener::{Gate, Listeners};
use crate::metrics::{ConnectionMetrics, Metrics};
use crate::serve::grpc::{CallPolicy, Calls, GrpcListener, GrpcPeer};
use crate::serve::timeouts::Deadlines;

pub struct FlightServer {
    pub listener: Listeners,
    pub common: ListenerCommon,
    pub gate: Gate,
    pub service: FlightSql,
    pub auth: Arc<Authenticator>,
    pub connection_metrics: ConnectionMetrics,
    pub metrics: Metrics,
    pub deadlines: Deadlines,
    /// HTTP/2 PING interval, and how long an answer may take before the connection is closed.
    pub keepalive: (Duration, Duration),
}

async fn identify(
    auth: &Authenticator,
    md: &MetadataMap,
    peer: Option<&GrpcPeer>,
) -> Result<Identity, tonic::Status> {
    let cert = peer.and_then(|p| p.principal.as_ref());
    match cert {
        Some(p) if md.get("authorization").is_none() => Ok(Identity {
            name: p.name.clone(),
            method: "certificate",
            generation: auth.generation(),
            certificate: peer.and_then(|p| p.certificate.clone()),
        }),
        _ => {
            let addr = peer.map_or(SocketAddr::from(([0, 0, 0, 0], 0)), |p| p.addr);
            auth.authenticate(md, addr).await
        }
    }
}

/// Who runs a call, decided before the service sees it: an `authorization` header says who;
/// without one, a verified client certificate does.
#[derive(Clone)]
struct Authenticate(Arc<Authenticator>);

impl CallPolicy for Authenticate {
    async fn admit(
        &self,
        req: &mut http::Request<Body>,
        peer: Option<&GrpcPeer>,
    ) -> Result<(), tonic::Status> {
        let md = MetadataMap::from_headers(std::mem::take(req.headers_mut()));
        let who = identify(&self.0, &md, peer).await;
        *req.headers_mut() = md.into_headers();
        req.extensions_mut().insert(who?);
        Ok(())
    }
}

impl FlightServer {
    /// Serve until `cancel`, then finish in-flight calls (bounded by the caller's deadline).
    pub async fn run(self, cancel: CancellationToken, tracker: TaskTracker) {
        let service = Calls {
            inner: FlightServiceServer::new(self.service),
            policy: Authenticate(self.auth),
            refused: self.metrics.flight_queries.with_label_values(&["unauthenticated"]),
            deadlines: self.deadlines.clone(),
        };
        let listener = GrpcListener {
            listener: self.listener,
            common: self.common,
            gate: self.gate,
            connection_metrics: self.connection_metrics,
            deadlines: self.deadlines,
            keepalive: self.keepalive,
            max_concurrent_streams: None,
            what: "Flight SQL",
        };
        listener.serve(service, cancel, tracker).await;
    }
}

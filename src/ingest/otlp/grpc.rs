//! OTLP over gRPC: `opentelemetry.proto.collector.logs.v1.LogsService/Export` on its own
//! listener (default 127.0.0.1:4317, TLS), served by the shared gRPC transport
//! (`serve::grpc`). A call is answered only once its records are fsynced; saturation, a
//! failing disk and shutdown are `UNAVAILABLE`, which OTLP exporters retry with backoff, and
//! an undecodable message is `INVALID_ARGUMENT`, which they drop. gzip-compressed messages are
//! accepted; `max_message_bytes` bounds each message after decompression.

use opentelemetry_proto::tonic::collector::logs::v1::logs_service_server::LogsService;
use opentelemetry_proto::tonic::collector::logs::v1::{ExportLogsServiceRequest, ExportLogsServiceResponse};
use tonic::{Request, Response, Status};

use std::ops::ControlFlow;

use crate::batch::{EventBatchBuilder, Origin};
use crate::ingest::budget::{Budget, Exceeded};
use crate::ingest::event::Protocol;
use crate::ingest::sink::{Sink, StoreFailure};
use crate::metrics::ListenerMetrics;
use crate::serve::grpc::GrpcPeer;

pub struct OtlpGrpc {
    pub listener: String,
    pub sink: Sink,
    pub metrics: ListenerMetrics,
    /// What the events decoded from this listener's calls hold at once, until durable.
    pub budget: Budget,
}

#[tonic::async_trait]
impl LogsService for OtlpGrpc {
    async fn export(
        &self,
        request: Request<ExportLogsServiceRequest>,
    ) -> Result<Response<ExportLogsServiceResponse>, Status> {
        let peer = request.extensions().get::<GrpcPeer>().cloned();
        let (addr, client_id) =
            peer.as_ref().map_or((String::from("?"), ""), |p| (p.addr.to_string(), p.client_id()));
        let mut builder = EventBatchBuilder::new(Origin {
            listener: self.listener.as_str().into(),
            peer: addr.as_str().into(),
            client_id: client_id.into(),
            protocol: Protocol::Otlp,
        });
        let now = crate::ingest::now_ns();
        let req = request.into_inner();
        let mut held = self.budget.share();
        let mut exceeded = None;
        let decoded = super::decode_request(&req, |ev| {
            builder.append(ev, now);
            exceeded = held.cover(builder.bytes()).err();
            if exceeded.is_some() { ControlFlow::Break(()) } else { ControlFlow::Continue(()) }
        });
        drop(req);
        match exceeded {
            Some(Exceeded::Busy) => {
                return Err(Status::unavailable(
                    "too many calls in progress on this listener hold its memory budget; retry later",
                ));
            }
            // Exporters drop INVALID_ARGUMENT; the call never fits, so sending it again is futile.
            Some(Exceeded::TooLarge) => {
                self.metrics
                    .record(&crate::metrics::FormatCounts::refused(crate::ingest::event::Format::Otlp, 1));
                tracing::info!(listener = %self.listener, peer = %addr, "OTLP export refused: its records take more memory than the listener holds at once");
                return Err(Status::invalid_argument(
                    "the request's records take more memory than this listener holds at once (batch.max_pending_bytes); send fewer per request",
                ));
            }
            None => {}
        }
        match self.sink.store(&mut builder).await {
            Ok(_) => {
                self.metrics.record(&decoded.counts);
                Ok(Response::new(decoded.response()))
            }
            Err(e) => {
                tracing::debug!(listener = %self.listener, peer = %addr, error = %e, "OTLP export not stored");
                Err(status(&e))
            }
        }
    }
}

/// A failure to store as the status OTLP exporters act on: retry (`UNAVAILABLE`) unless the
/// batch itself could not be built.
fn status(e: &StoreFailure) -> Status {
    match e {
        StoreFailure::Batch(_) => Status::internal(e.to_string()),
        e => Status::unavailable(e.to_string()),
    }
}

/// The OTLP listener's calls: a message tonic could not take (not protobuf, a compressed
/// message that does not inflate, larger than `max_message_bytes`) is counted as a decode
/// error, logged with its peer, and answered `INVALID_ARGUMENT`, which exporters drop rather
/// than retry: tonic says `INTERNAL`, or `OUT_OF_RANGE` and `RESOURCE_EXHAUSTED` for size,
/// and exporters retry the last two for ever.
///
/// Each call's message is also held to the listener's [`Budget`] while tonic reads it: up to
/// `max_message_bytes` per call, 32 calls per connection and `max_connections` connections
/// would otherwise be held before any of this code runs. Past the budget a call is refused
/// `UNAVAILABLE` (the exporter retries); a message larger than the whole budget
/// `INVALID_ARGUMENT`.
#[derive(Clone)]
pub struct OtlpCalls {
    pub listener: std::sync::Arc<str>,
    pub metrics: ListenerMetrics,
    pub budget: Budget,
}

/// A call's request body counted against the listener's budget as it arrives; an error frame
/// (the call's status) once the budget has no room.
struct Budgeted {
    inner: tonic::body::Body,
    share: crate::ingest::budget::Share,
    read: usize,
}

impl hyper::body::Body for Budgeted {
    type Data = bytes::Bytes;
    type Error = Status;

    fn poll_frame(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Result<hyper::body::Frame<bytes::Bytes>, Status>>> {
        let frame = std::task::ready!(std::pin::Pin::new(&mut self.inner).poll_frame(cx));
        if let Some(Ok(f)) = &frame
            && let Some(data) = f.data_ref()
        {
            let read = self.read + data.len();
            self.read = read;
            return std::task::Poll::Ready(Some(match self.share.cover(read) {
                Ok(()) => frame.unwrap_or_else(|| Err(Status::internal("frame vanished"))),
                Err(Exceeded::Busy) => Err(Status::unavailable(
                    "too many calls in progress on this listener hold its memory budget; retry later",
                )),
                Err(Exceeded::TooLarge) => Err(Status::out_of_range(
                    "the message is larger than this listener holds at once (batch.max_pending_bytes)",
                )),
            }));
        }
        std::task::Poll::Ready(frame)
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> hyper::body::SizeHint {
        self.inner.size_hint()
    }
}

impl crate::serve::grpc::CallPolicy for OtlpCalls {
    async fn admit(
        &self,
        req: &mut tonic::codegen::http::Request<tonic::body::Body>,
        _peer: Option<&GrpcPeer>,
    ) -> Result<(), Status> {
        let inner = std::mem::replace(req.body_mut(), tonic::body::Body::empty());
        *req.body_mut() = tonic::body::Body::new(Budgeted { inner, share: self.budget.share(), read: 0 });
        Ok(())
    }

    fn answered(
        &self,
        mut resp: tonic::codegen::http::Response<tonic::body::Body>,
        peer: Option<&GrpcPeer>,
    ) -> tonic::codegen::http::Response<tonic::body::Body> {
        let headers = resp.headers_mut();
        let code =
            headers.get("grpc-status").and_then(|v| v.to_str().ok()).and_then(|v| v.parse::<i32>().ok());
        let message = headers.get("grpc-message").and_then(|v| v.to_str().ok()).unwrap_or("");
        let malformed = match code.map(tonic::Code::from_i32) {
            Some(tonic::Code::Internal) => {
                !message.starts_with("failed%20to%20build") && !message.starts_with("failed to build")
            }
            Some(tonic::Code::OutOfRange | tonic::Code::ResourceExhausted) => true,
            _ => false,
        };
        if malformed {
            self.metrics
                .record(&crate::metrics::FormatCounts::refused(crate::ingest::event::Format::Otlp, 1));
            let peer = peer.map_or_else(|| "?".to_owned(), |p| p.addr.to_string());
            tracing::info!(listener = %self.listener, %peer, reason = %message, "OTLP export refused: malformed message");
            headers.insert(
                "grpc-status",
                tonic::codegen::http::HeaderValue::from(tonic::Code::InvalidArgument as i32),
            );
        }
        resp
    }
}

//! The coordinator's gRPC services and what they share.
//!
//! - [`tessera`]: `tessera.v1.Tessera`, the API applications use.
//! - [`admin`]: `tessera.v1.Admin`, cluster status, shard map, transactions
//!   and sagas.
//! - [`resolver`]: the internal `tessera.shard.v1.Resolver` shards call.
//! - [`convert`]: protobuf <-> domain conversions.
//!
//! The public services sit behind the bearer-token check
//! ([`crate::auth`]), the resolver behind the cluster secret; health and
//! reflection answer everyone.

pub mod admin;
pub mod convert;
pub mod resolver;
pub mod tessera;

use crate::auth::{Authenticator, Principal};
use std::sync::Arc;
use tonic::{Request, Status};

/// Who made an authenticated call (set by [`bearer_check`]).
pub fn principal<T>(request: &Request<T>) -> String {
    request.extensions().get::<Principal>().map(|p| p.0.clone()).unwrap_or_else(|| "trust".into())
}

/// A server interceptor that admits calls with a valid bearer token and
/// records who made them.
pub fn bearer_check(auth: Arc<Authenticator>) -> impl FnMut(Request<()>) -> Result<Request<()>, Status> + Clone {
    move |mut request: Request<()>| {
        let principal = auth.check_bearer(&request)?;
        request.extensions_mut().insert(principal);
        Ok(request)
    }
}

/// `work` under a new trace id, in a span naming it (PostgreSQL protocol
/// queries, which carry no metadata).
pub fn traced_task<F: std::future::Future>(work: F) -> impl std::future::Future<Output = F::Output> {
    let trace = new_trace_id();
    let span = tracing::info_span!("request", trace = %trace);
    in_trace(trace, span, work)
}

/// `work` with `trace` as its trace id (for its calls to shard nodes), in
/// `span` (for its log lines).
pub fn in_trace<F: std::future::Future>(trace: String, span: tracing::Span, work: F) -> impl std::future::Future<Output = F::Output> {
    tessera_model::trace::with_trace(trace, tracing::Instrument::instrument(work, span))
}

/// Returns the trace id to the client in an answer's metadata.
pub fn put_trace(metadata: &mut tonic::metadata::MetadataMap, trace: &str) {
    if let Ok(value) = trace.parse() {
        metadata.insert(tessera_proto::TRACE_METADATA_KEY, value);
    }
}

/// A fresh trace id: 16 hex digits.
pub fn new_trace_id() -> String {
    uuid::Uuid::new_v4().simple().to_string()[..16].to_string()
}

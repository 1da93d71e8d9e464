//! Following one transaction across processes.
//!
//! The coordinator gives every client request a trace id (the client's own,
//! from `x-tessera-trace-id`, or a new one) and sends it, with the
//! transaction id, as metadata on every call to a shard node. The node opens
//! a span per call carrying both, so every log line written while serving
//! it names them: `grep <trace id>` over the coordinator's and the shards'
//! logs shows the whole transaction.

use std::future::Future;
use tessera_proto::{TRACE_METADATA_KEY, TXN_METADATA_KEY};

tokio::task_local! {
    /// The trace id of the request the current task works for.
    static TRACE_ID: String;
}

/// Runs `work` with `trace` as the current trace id.
pub async fn with_trace<F: Future>(trace: String, work: F) -> F::Output {
    TRACE_ID.scope(trace, work).await
}

/// The current task's trace id, if it works for a traced request.
pub fn current_trace() -> Option<String> {
    TRACE_ID.try_with(|t| t.clone()).ok()
}

/// `work` under the current trace id (for tasks spawned on a request's
/// behalf, which do not inherit task-locals).
pub fn inherit<F: Future>(work: F) -> impl Future<Output = F::Output> {
    let trace = current_trace();
    async move {
        match trace {
            Some(trace) => TRACE_ID.scope(trace, work).await,
            None => work.await,
        }
    }
}

/// A metadata value that is safe to log and to send on: at most 64
/// visible ASCII characters, else nothing.
pub fn clean_id(value: &str) -> Option<String> {
    let ok = !value.is_empty() && value.len() <= 64 && value.bytes().all(|b| b.is_ascii_graphic());
    ok.then(|| value.to_string())
}

/// Adds the current trace id and `txn` to an outgoing call's metadata.
pub fn attach<T>(request: &mut tonic::Request<T>, txn: Option<&str>) {
    let metadata = request.metadata_mut();
    if let Some(trace) = TRACE_ID.try_with(|t| t.parse().ok()).ok().flatten() {
        metadata.insert(TRACE_METADATA_KEY, trace);
    }
    if let Some(txn) = txn.filter(|t| !t.is_empty()).and_then(|t| t.parse().ok()) {
        metadata.insert(TXN_METADATA_KEY, txn);
    }
}

/// The span a shard node serves one call in: the method, the trace id and
/// the transaction id the coordinator sent.
pub fn call_span<B>(request: &tonic::codegen::http::Request<B>) -> tracing::Span {
    let header = |key: &str| request.headers().get(key).and_then(|v| v.to_str().ok()).and_then(clean_id).unwrap_or_default();
    let method = request.uri().path().rsplit('/').next().unwrap_or_default().to_string();
    tracing::info_span!("call", method = %method, trace = %header(TRACE_METADATA_KEY), txn = %header(TXN_METADATA_KEY))
}

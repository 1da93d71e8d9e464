//! The primary's side: serving each replica's stream (log records in order,
//! a snapshot first when the replica cannot continue from the log, and
//! heartbeats that bound its staleness), tracking every replica's
//! acknowledged record, and waiting for acknowledgements in sync mode.
//!
//! Where a replica continues: from its last record if the log still holds
//! that record with the same epoch (or the replica is new and the log is
//! whole); otherwise, because the log was truncated or the replica holds
//! records the primary never had (an old primary after an async failover),
//! it gets a snapshot, which replaces everything it had.

use super::log::{logged_write, LoggedEngine};
use super::node::Node;
use super::StreamError;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;
use tessera_proto::shard as pb;
use tessera_storage::{Space, Write};
use tokio::sync::mpsc;
use tokio::time::Instant;
use tokio_stream::wrappers::ReceiverStream;
use tokio_stream::{Stream, StreamExt};
use tonic::{Request, Response, Status, Streaming};

/// Largest batch of records or snapshot rows in one message.
const BATCH_BYTES: usize = 1024 * 1024;
/// How often a primary tells an idle replica where the log stands.
pub const HEARTBEAT: Duration = Duration::from_millis(100);

/// The `Replication` service every node serves (only a primary ships).
pub struct ReplicationService {
    node: Arc<Node>,
}

impl ReplicationService {
    pub fn new(node: Arc<Node>) -> ReplicationService {
        ReplicationService { node }
    }
}

type Outgoing = Pin<Box<dyn Stream<Item = Result<pb::PrimaryMessage, Status>> + Send>>;

#[tonic::async_trait]
impl pb::replication_server::Replication for ReplicationService {
    type ReplicateStream = Outgoing;

    async fn replicate(&self, request: Request<Streaming<pb::ReplicaMessage>>) -> Result<Response<Outgoing>, Status> {
        let mut incoming = request.into_inner();
        let hello = match incoming.next().await {
            Some(Ok(pb::ReplicaMessage { kind: Some(pb::replica_message::Kind::Hello(h)) })) => h,
            Some(Err(e)) => return Err(e),
            _ => return Err(Status::invalid_argument("a replication stream starts with Hello")),
        };
        let node = self.node.clone();
        if !node.is_primary() {
            return Err(Status::unavailable(format!("node {} is not a primary", node.node_id)));
        }
        if hello.epoch > node.epoch() {
            return Err(Status::failed_precondition(format!(
                "replica {} is at epoch {}, this primary at {}: it is stale",
                hello.replica,
                hello.epoch,
                node.epoch()
            )));
        }
        tracing::info!(node = %node.node_id, replica = %hello.replica, applied = hello.applied_seq, "replica connected");
        let id = node.tracker.open_stream(&hello.replica);
        let (out, stream) = mpsc::channel(8);
        let epoch = node.epoch();
        tokio::spawn(read_acks(node.clone(), hello.replica.clone(), id, incoming));
        tokio::spawn(async move {
            let replica = hello.replica.clone();
            if let Err(e) = ship(node.clone(), hello, epoch, id, out.clone()).await {
                tracing::info!(node = %node.node_id, %replica, error = %e, "replication stream ended");
                let _ = tokio::time::timeout(SEND_TIMEOUT, out.send(Err(Status::unavailable(e.to_string())))).await;
            }
            node.tracker.close_stream(&replica, id);
        });
        Ok(Response::new(Box::pin(ReceiverStream::new(stream))))
    }
}

async fn read_acks(node: Arc<Node>, replica: String, stream: u64, mut incoming: Streaming<pb::ReplicaMessage>) {
    while let Some(Ok(message)) = incoming.next().await {
        if let Some(pb::replica_message::Kind::Ack(ack)) = message.kind {
            node.tracker.ack(&replica, stream, ack.applied_seq, ack.staleness_ms, node.log().durable());
        }
    }
    node.tracker.close_stream(&replica, stream);
}

type Sender = mpsc::Sender<Result<pb::PrimaryMessage, Status>>;

/// A replica that takes no message for this long is dropped.
const SEND_TIMEOUT: Duration = Duration::from_secs(10);

async fn send(out: &Sender, kind: pb::primary_message::Kind) -> Result<(), StreamError> {
    match tokio::time::timeout(SEND_TIMEOUT, out.send(Ok(pb::PrimaryMessage { kind: Some(kind) }))).await {
        Ok(Ok(())) => Ok(()),
        Ok(Err(_)) => Err(gone()),
        Err(_) => Err(StreamError::Peer(format!("the replica took nothing for {} s", SEND_TIMEOUT.as_secs()))),
    }
}

fn gone() -> StreamError {
    StreamError::Peer("the replica went away".into())
}

/// True when a replica at (`seq`, `epoch`) can continue from the log: it
/// holds no record the primary does not have, and the primary still has
/// the records after `seq`.
fn continues(log: &LoggedEngine, seq: u64, epoch: u64) -> Result<bool, StreamError> {
    let durable = log.durable();
    if seq == 0 {
        return Ok(log.first() == 1);
    }
    if seq > durable || seq.saturating_add(1) < log.first() {
        return Ok(false);
    }
    Ok(log.epoch_of(seq)? == Some(epoch))
}

/// Ships records (and snapshots when needed) until the replica leaves or
/// this node stops being the primary of `epoch`.
async fn ship(node: Arc<Node>, hello: pb::Hello, epoch: u64, stream: u64, out: Sender) -> Result<(), StreamError> {
    let log = node.log().clone();
    let mut next = if !hello.needs_snapshot && continues(&log, hello.applied_seq, hello.applied_epoch)? {
        node.tracker.start_at(&hello.replica, stream, hello.applied_seq);
        hello.applied_seq + 1
    } else {
        send_snapshot(&log, &out, &hello.replica).await? + 1
    };
    let mut written = log.subscribe();
    let mut last_heartbeat = Instant::now() - HEARTBEAT;
    loop {
        if !node.is_primary() || node.epoch() != epoch {
            return Err(StreamError::Superseded(format!("node {} is no longer the primary of epoch {epoch}", node.node_id)));
        }
        if node.is_stopping() {
            return Err(StreamError::Superseded(format!("node {} is shutting down", node.node_id)));
        }
        if next < log.first() {
            next = send_snapshot(&log, &out, &hello.replica).await? + 1;
        }
        if next <= log.durable() {
            let reader = log.clone();
            let records = tokio::task::spawn_blocking(move || reader.records(next, BATCH_BYTES)).await.map_err(StreamError::task)??;
            if let Some(last) = records.last() {
                next = last.seq + 1;
                send(&out, pb::primary_message::Kind::Entries(pb::LogEntries { entries: records })).await?;
            }
        }
        if last_heartbeat.elapsed() >= HEARTBEAT {
            let time_us = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_micros() as u64).unwrap_or(0);
            let (closed_ts, closed_seq) = node.close_timestamps();
            send(&out, pb::primary_message::Kind::Heartbeat(pb::PrimaryHeartbeat { seq: log.durable(), time_us, closed_ts, closed_seq })).await?;
            last_heartbeat = Instant::now();
        }
        if next > log.durable() {
            let _ = tokio::time::timeout(HEARTBEAT, written.changed()).await;
        }
    }
}

/// Sends a snapshot of the data and prepared records; returns the record it
/// holds everything up to.
async fn send_snapshot(log: &Arc<LoggedEngine>, out: &Sender, replica: &str) -> Result<u64, StreamError> {
    tracing::info!(replica, "sending a snapshot");
    let log = log.clone();
    let out = out.clone();
    tokio::task::spawn_blocking(move || {
        let (seq, epoch, snapshot) = log.snapshot()?;
        for space in [Space::Data, Space::Txn] {
            let mut chunk = Vec::new();
            let mut bytes = 0;
            let mut failed = None;
            snapshot.scan(space, b"", &[0xFF; 64], &mut |k, v| {
                bytes += k.len() + v.len();
                chunk.push(logged_write(&Write { space, key: k.to_vec(), value: Some(v.to_vec()) }));
                if bytes >= BATCH_BYTES {
                    let writes = std::mem::take(&mut chunk);
                    bytes = 0;
                    if out.blocking_send(Ok(pb::PrimaryMessage { kind: Some(pb::primary_message::Kind::Snapshot(pb::SnapshotChunk { writes })) })).is_err() {
                        failed = Some(gone());
                        return false;
                    }
                }
                true
            })?;
            if let Some(e) = failed {
                return Err(e);
            }
            if !chunk.is_empty() {
                let message = pb::PrimaryMessage { kind: Some(pb::primary_message::Kind::Snapshot(pb::SnapshotChunk { writes: chunk })) };
                out.blocking_send(Ok(message)).map_err(|_| gone())?;
            }
        }
        let done = pb::PrimaryMessage { kind: Some(pb::primary_message::Kind::SnapshotDone(pb::SnapshotDone { seq, epoch })) };
        out.blocking_send(Ok(done)).map_err(|_| gone())?;
        Ok(seq)
    })
    .await
    .map_err(StreamError::task)?
}

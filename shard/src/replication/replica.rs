//! The replica's side: follow the primary's stream, apply each batch of
//! records durably and in order (with the number of the last one, in the
//! same batch), acknowledge it, and install snapshots. A replica that
//! restarts or loses its primary reconnects with backoff and continues
//! from its last applied record.
//!
//! Staleness: the primary's heartbeats carry its last record number. Once
//! this replica has applied that record, everything the primary had
//! committed when it sent the heartbeat is visible here, so reads are at
//! most "now - that heartbeat's arrival" stale.

use super::node::Node;
use super::StreamError;
use std::sync::Arc;
use std::time::Duration;
use tessera_model::secret::ClusterSecret;
use tessera_proto::shard as pb;
use tessera_proto::shard::replication_client::ReplicationClient;
use tokio::sync::{mpsc, watch};
use tokio::task::JoinHandle;
use tokio_stream::wrappers::ReceiverStream;

/// A primary sends heartbeats every 100 ms: this long without a word and
/// the stream is taken for dead (a half-open connection) and reopened.
const SILENCE: Duration = Duration::from_secs(2);

/// Follows `primary` until `stop` turns true. A batch being applied when it
/// does is finished first: the node changes role only after it.
pub fn spawn(node: Arc<Node>, primary: String, secret: ClusterSecret, mut stop: watch::Receiver<bool>) -> JoinHandle<()> {
    tokio::spawn(async move {
        let mut backoff = Duration::from_millis(50);
        loop {
            if *stop.borrow() {
                return;
            }
            let outcome = follow(&node, &primary, &secret, &mut stop).await;
            node.staleness.disconnected();
            match outcome {
                Ok(()) => backoff = Duration::from_millis(50),
                Err(e) => {
                    tracing::info!(node = %node.node_id, %primary, error = %e, "replication from the primary interrupted; reconnecting");
                    backoff = (backoff * 2).min(Duration::from_secs(1));
                }
            }
            tokio::select! {
                _ = tokio::time::sleep(backoff) => {}
                _ = stop.wait_for(|s| *s) => return,
            }
        }
    })
}

/// One connection to the primary, until it breaks or `stop` turns true
/// (checked between batches, never in the middle of one).
async fn follow(node: &Arc<Node>, primary: &str, secret: &ClusterSecret, stop: &mut watch::Receiver<bool>) -> Result<(), StreamError> {
    let url = if primary.contains("://") { primary.to_string() } else { format!("http://{primary}") };
    let peer = |e: String| StreamError::Peer(e);
    let channel = tonic::transport::Endpoint::from_shared(url)
        .map_err(|e| peer(format!("invalid primary address: {e}")))?
        .connect_timeout(Duration::from_secs(1))
        .http2_keep_alive_interval(Duration::from_secs(1))
        .keep_alive_timeout(Duration::from_secs(3))
        .tcp_nodelay(true)
        .connect()
        .await
        .map_err(|e| peer(format!("cannot connect: {e}")))?;
    let mut client = ReplicationClient::with_interceptor(channel, secret.client_attach()).max_decoding_message_size(64 * 1024 * 1024);
    let log = node.log().clone();
    let (applied, applied_epoch) = log.last();
    let needs_snapshot = log.snapshot_interrupted()?;
    let (acks, outgoing) = mpsc::channel(64);
    let hello = pb::Hello { replica: node.node_id.clone(), epoch: node.epoch(), applied_seq: applied, applied_epoch, needs_snapshot };
    acks.send(message(pb::replica_message::Kind::Hello(hello))).await.map_err(|e| peer(e.to_string()))?;
    let mut stream = client.replicate(ReceiverStream::new(outgoing)).await.map_err(|e| peer(e.message().to_string()))?.into_inner();
    node.staleness.applied(applied);
    let mut in_snapshot = false;
    loop {
        let next = tokio::select! {
            next = tokio::time::timeout(SILENCE, stream.message()) => next,
            _ = stop.wait_for(|s| *s) => return Ok(()),
        };
        let Some(incoming) =
            next.map_err(|_| peer(format!("no word from the primary for {} ms", SILENCE.as_millis())))?.map_err(|e| peer(e.message().to_string()))?
        else {
            return Ok(());
        };
        let Some(kind) = incoming.kind else { continue };
        let ack = match kind {
            pb::primary_message::Kind::Entries(batch) => {
                let writer = log.clone();
                let last = batch.entries.last().map(|e| e.seq);
                tokio::task::spawn_blocking(move || writer.apply_records(&batch.entries)).await.map_err(StreamError::task)??;
                last
            }
            pb::primary_message::Kind::Snapshot(chunk) => {
                let writer = log.clone();
                let begin = !in_snapshot;
                in_snapshot = true;
                tokio::task::spawn_blocking(move || {
                    if begin {
                        writer.begin_snapshot()?;
                    }
                    writer.snapshot_chunk(&chunk.writes)
                })
                .await
                .map_err(StreamError::task)??;
                None
            }
            pb::primary_message::Kind::SnapshotDone(done) => {
                let writer = log.clone();
                let begin = !in_snapshot;
                in_snapshot = false;
                tokio::task::spawn_blocking(move || {
                    if begin {
                        writer.begin_snapshot()?;
                    }
                    writer.finish_snapshot(done.seq, done.epoch)
                })
                .await
                .map_err(StreamError::task)??;
                tracing::info!(node = %node.node_id, seq = done.seq, "snapshot installed");
                Some(done.seq)
            }
            pb::primary_message::Kind::Heartbeat(heartbeat) => {
                node.staleness.heartbeat(heartbeat.seq);
                node.closed.promised(heartbeat.closed_seq, heartbeat.closed_ts);
                Some(log.last().0)
            }
        };
        if let Some(seq) = ack {
            node.staleness.applied(seq);
            node.closed.applied(seq);
            let staleness_ms = node.staleness.current().map(|d| d.as_millis() as u64).unwrap_or(u64::MAX);
            acks.send(message(pb::replica_message::Kind::Ack(pb::Ack { applied_seq: seq, staleness_ms }))).await.map_err(|e| peer(e.to_string()))?;
        }
    }
}

fn message(kind: pb::replica_message::Kind) -> pb::ReplicaMessage {
    pb::ReplicaMessage { kind: Some(kind) }
}

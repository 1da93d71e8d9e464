//! Resolution of in-doubt transactions: a participant that voted yes never
//! decides alone. For each transaction prepared longer than a patience
//! period, it asks the coordinator recorded with the prepare for the outcome
//! and applies it. Presumed abort: a coordinator with no COMMIT record answers
//! ABORTED. An unreachable coordinator or IN_PROGRESS means ask again later.

use crate::replication::Node;
use crate::txn::{Participant, TxnContext};
use std::sync::Arc;
use std::time::Duration;
use tessera_model::secret::ClusterSecret;
use tessera_proto::shard as pb;
use tessera_proto::shard::resolver_client::ResolverClient;
use tokio::sync::watch;
use tokio::task::JoinHandle;

/// How long a prepared transaction waits for its decision before asking.
pub const PATIENCE: Duration = Duration::from_secs(2);
const ROUND: Duration = Duration::from_millis(500);
const ASK_TIMEOUT: Duration = Duration::from_secs(2);

/// Resolves in-doubt transactions while this node is a primary (a replica
/// holds no transactions in memory; it learns outcomes from the log).
pub fn spawn(participant: Arc<Participant>, node: Arc<Node>, secret: ClusterSecret, mut stop: watch::Receiver<bool>) -> JoinHandle<()> {
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(ROUND);
        loop {
            tokio::select! {
                _ = tick.tick() => if node.is_primary() { resolve_round(&participant, &secret).await },
                _ = stop.changed() => return,
            }
        }
    })
}

async fn resolve_round(participant: &Arc<Participant>, secret: &ClusterSecret) {
    for (txn_id, coordinator) in participant.in_doubt(PATIENCE) {
        if coordinator.is_empty() {
            tracing::warn!(txn = %txn_id, "prepared transaction has no coordinator address; waiting for its decision");
            continue;
        }
        match ask(&coordinator, &txn_id, secret).await {
            Ok((pb::Outcome::Committed, commit_ts)) => {
                let txn = TxnContext { id: txn_id.clone(), timestamp: 0, begin: false, coordinator };
                match participant.commit(&txn, false, Vec::new(), false, commit_ts).await {
                    Ok(_) => tracing::info!(txn = %txn_id, commit_ts, "resolved in-doubt transaction: committed"),
                    Err(e) => tracing::warn!(txn = %txn_id, error = %e, "could not apply the commit decision; will retry"),
                }
            }
            Ok((pb::Outcome::Aborted, _)) => match participant.abort(&txn_id).await {
                Ok(()) => tracing::info!(txn = %txn_id, "resolved in-doubt transaction: aborted"),
                Err(e) => tracing::warn!(txn = %txn_id, error = %e, "could not apply the abort decision; will retry"),
            },
            Ok(_) => tracing::debug!(txn = %txn_id, "coordinator has not decided yet"),
            Err(e) => tracing::debug!(txn = %txn_id, %coordinator, error = %e, "cannot reach the coordinator; will ask again"),
        }
    }
}

/// Why the coordinator could not be asked.
#[derive(Debug, thiserror::Error)]
enum AskError {
    #[error("cannot reach the coordinator: {0}")]
    Unreachable(#[from] tonic::transport::Error),
    #[error("the coordinator did not answer: {}", .0.message())]
    Refused(#[from] tonic::Status),
}

/// The outcome, and with COMMITTED the decided commit timestamp.
async fn ask(coordinator: &str, txn_id: &str, secret: &ClusterSecret) -> Result<(pb::Outcome, u64), AskError> {
    let url = if coordinator.contains("://") { coordinator.to_string() } else { format!("http://{coordinator}") };
    let endpoint = tonic::transport::Endpoint::from_shared(url)?.connect_timeout(ASK_TIMEOUT).timeout(ASK_TIMEOUT);
    let channel = endpoint.connect().await?;
    let mut request = tonic::Request::new(pb::OutcomeRequest { txn_id: txn_id.to_string() });
    secret.attach(&mut request);
    let response = ResolverClient::new(channel).outcome(request).await?.into_inner();
    Ok((response.outcome(), response.commit_ts))
}

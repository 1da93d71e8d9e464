//! Clients for the shard groups: one lazily connected gRPC channel per group,
//! a deadline on every call, the cluster secret on every call, and errors
//! that name the group and its address.

use crate::catalog::ShardGroupId;
use crate::error::{CoordError, Result};
use std::collections::{BTreeMap, HashMap};
use std::sync::RwLock;
use std::time::Duration;
use tessera_proto::shard as pb;
use tessera_proto::shard::shard_client::ShardClient as PbClient;
use tessera_shard::data::expr::Expr;
use tessera_shard::secret::ClusterSecret;
use tessera_shard::txn::{Mutation, TxnContext};
use tessera_shard::wire;
use tonic::service::interceptor::InterceptedService;
use tonic::transport::{Channel, Endpoint};

const MAX_MESSAGE_BYTES: usize = 64 * 1024 * 1024;

/// What every call to a shard carries: the cluster secret.
#[derive(Clone)]
pub struct Outgoing {
    secret: ClusterSecret,
}

impl tonic::service::Interceptor for Outgoing {
    fn call(&mut self, mut request: tonic::Request<()>) -> std::result::Result<tonic::Request<()>, tonic::Status> {
        self.secret.attach(&mut request);
        Ok(request)
    }
}

type Client = PbClient<InterceptedService<Channel, Outgoing>>;

/// A client for one shard group's primary.
#[derive(Clone)]
pub struct ShardClient {
    pub group: ShardGroupId,
    pub address: String,
    client: Client,
    timeout: Duration,
}

/// The clients of every shard group.
pub struct ShardPool {
    clients: RwLock<HashMap<ShardGroupId, ShardClient>>,
    rpc_timeout: Duration,
    connect_timeout: Duration,
    secret: ClusterSecret,
}

impl ShardPool {
    pub fn new(groups: &BTreeMap<ShardGroupId, String>, rpc_timeout: Duration, connect_timeout: Duration, secret: ClusterSecret) -> Result<ShardPool> {
        let pool = ShardPool { clients: RwLock::new(HashMap::new()), rpc_timeout, connect_timeout, secret };
        for (id, address) in groups {
            pool.set(*id, address)?;
        }
        Ok(pool)
    }

    fn set(&self, group: ShardGroupId, address: &str) -> Result<()> {
        let url = if address.contains("://") { address.to_string() } else { format!("http://{address}") };
        let endpoint = Endpoint::from_shared(url)
            .map_err(|e| CoordError::Invalid(format!("shard group {group} has an invalid address \"{address}\": {e}")))?
            .connect_timeout(self.connect_timeout)
            .timeout(self.rpc_timeout)
            .tcp_nodelay(true);
        let outgoing = Outgoing { secret: self.secret.clone() };
        let client = PbClient::with_interceptor(endpoint.connect_lazy(), outgoing)
            .max_decoding_message_size(MAX_MESSAGE_BYTES)
            .max_encoding_message_size(MAX_MESSAGE_BYTES);
        self.clients.write().unwrap().insert(group, ShardClient { group, address: address.to_string(), client, timeout: self.rpc_timeout });
        Ok(())
    }

    pub fn get(&self, group: ShardGroupId) -> Result<ShardClient> {
        self.clients.read().unwrap().get(&group).cloned().ok_or_else(|| CoordError::Internal(format!("shard group {group} is not configured")))
    }

    pub fn groups(&self) -> Vec<(ShardGroupId, String)> {
        let mut groups: Vec<_> = self.clients.read().unwrap().values().map(|c| (c.group, c.address.clone())).collect();
        groups.sort();
        groups
    }

    pub fn rpc_timeout(&self) -> Duration {
        self.rpc_timeout
    }
}

/// Rows as (key, encoded row) pairs.
pub type RawRows = Vec<(Vec<u8>, Vec<u8>)>;

impl ShardClient {
    /// Converts a failed call into an error naming this group.
    pub fn error(&self, status: tonic::Status) -> CoordError {
        let who = format!("shard group {} ({})", self.group, self.address);
        let sqlstate = status.metadata().get(tessera_proto::SQLSTATE_METADATA_KEY).and_then(|v| v.to_str().ok()).map(str::to_string);
        match status.code() {
            tonic::Code::AlreadyExists => match tessera_shard::data::keys::decode_row_key(status.details()) {
                Some((table_id, value)) => CoordError::DuplicateKey { table_id, key: value.to_string() },
                None => CoordError::Internal(format!("{who}: duplicate key with an undecodable key")),
            },
            tonic::Code::Aborted => CoordError::Serialization(format!("could not serialize access on {who}: {}", status.message())),
            tonic::Code::FailedPrecondition => CoordError::TxnAborted(format!("{who}: {}", status.message())),
            tonic::Code::InvalidArgument if sqlstate.as_deref().is_some_and(|s| s.starts_with("22") || s.starts_with("42")) => {
                let state: &'static str = match sqlstate.as_deref() {
                    Some("22012") => "22012",
                    Some("22003") => "22003",
                    Some("42883") => "42883",
                    _ => "22023",
                };
                CoordError::invalid_value(status.message().to_string(), state)
            }
            tonic::Code::DeadlineExceeded => CoordError::ShardUnavailable(format!("{who} did not answer within {} ms", self.timeout_ms())),
            tonic::Code::Unauthenticated => {
                CoordError::ShardUnavailable(format!("{who} refused the coordinator: {} (is cluster_secret the same on both?)", status.message()))
            }
            tonic::Code::Unavailable | tonic::Code::Unknown | tonic::Code::Cancelled => {
                CoordError::ShardUnavailable(format!("{who} unreachable: {}", describe_transport(&status)))
            }
            _ => CoordError::Internal(format!("{who}: {}", status.message())),
        }
    }

    fn timeout_ms(&self) -> u128 {
        self.timeout.as_millis()
    }

    pub async fn get_rows(&self, keys: Vec<Vec<u8>>, txn: Option<&TxnContext>, lock: bool) -> Result<RawRows> {
        let request = pb::GetRequest { keys, txn: txn.map(wire::txn_to_pb), lock, replica_read: None };
        let response = self.client.clone().get(request).await.map_err(|s| self.error(s))?;
        Ok(response.into_inner().rows.into_iter().map(|kv| (kv.key, kv.value)).collect())
    }

    /// Scans `[start, end)` to the end or the limit, following resume keys.
    pub async fn scan(&self, start: Vec<u8>, end: Vec<u8>, filter: Option<&Expr>, limit: u64, txn: Option<&TxnContext>, lock: bool) -> Result<RawRows> {
        let filter = filter.and_then(wire::expr_to_pb);
        let mut rows = Vec::new();
        let mut start = start;
        let mut txn = txn.cloned();
        loop {
            let remaining = if limit == 0 { 0 } else { limit - rows.len() as u64 };
            let request = pb::ScanRequest {
                start,
                end: end.clone(),
                limit: remaining,
                filter: filter.clone(),
                txn: txn.as_ref().map(wire::txn_to_pb),
                lock,
                replica_read: None,
            };
            let response = self.client.clone().scan(request).await.map_err(|s| self.error(s))?.into_inner();
            rows.extend(response.rows.into_iter().map(|kv| (kv.key, kv.value)));
            if response.resume_key.is_empty() || (limit > 0 && rows.len() as u64 >= limit) {
                return Ok(rows);
            }
            start = response.resume_key;
            if let Some(t) = txn.as_mut() {
                t.begin = false;
            }
        }
    }

    pub async fn write(&self, txn: &TxnContext, mutations: &[Mutation]) -> Result<()> {
        let request = pb::WriteRequest { txn: Some(wire::txn_to_pb(txn)), mutations: mutations.iter().map(wire::mutation_to_pb).collect() };
        self.client.clone().write(request).await.map_err(|s| self.error(s))?;
        Ok(())
    }

    pub async fn commit_one_phase(&self, txn: &TxnContext, mutations: &[Mutation]) -> Result<()> {
        let request = pb::CommitRequest {
            txn: Some(wire::txn_to_pb(txn)),
            one_phase: true,
            mutations: mutations.iter().map(wire::mutation_to_pb).collect(),
            lazy: false,
        };
        self.client.clone().commit(request).await.map_err(|s| self.error(s))?;
        Ok(())
    }

    pub async fn prepare(&self, txn: &TxnContext) -> Result<()> {
        self.client.clone().prepare(pb::TxnRequest { txn: Some(wire::txn_to_pb(txn)) }).await.map_err(|s| self.error(s))?;
        Ok(())
    }

    /// Phase two. A `lazy` commit is applied without an fsync; it is durable
    /// after the next [`ShardClient::sync_wal`].
    pub async fn commit_two_phase(&self, txn: &TxnContext, lazy: bool) -> Result<()> {
        let request = pb::CommitRequest { txn: Some(wire::txn_to_pb(txn)), one_phase: false, mutations: Vec::new(), lazy };
        self.client.clone().commit(request).await.map_err(|s| self.error(s))?;
        Ok(())
    }

    pub async fn abort(&self, txn: &TxnContext) -> Result<()> {
        self.client.clone().abort(pb::TxnRequest { txn: Some(wire::txn_to_pb(txn)) }).await.map_err(|s| self.error(s))?;
        Ok(())
    }

    pub async fn sync_wal(&self) -> Result<()> {
        self.client.clone().sync_wal(pb::SyncWalRequest {}).await.map_err(|s| self.error(s))?;
        Ok(())
    }

    pub async fn delete_range(&self, start: Vec<u8>, end: Vec<u8>) -> Result<()> {
        self.client.clone().delete_range(pb::DeleteRangeRequest { start, end }).await.map_err(|s| self.error(s))?;
        Ok(())
    }

    pub async fn status(&self) -> Result<pb::StatusResponse> {
        Ok(self.client.clone().status(pb::StatusRequest {}).await.map_err(|s| self.error(s))?.into_inner())
    }
}

/// The innermost cause of a transport failure, e.g. "connection refused".
fn describe_transport(status: &tonic::Status) -> String {
    use std::error::Error;
    let mut cause: Option<&(dyn Error + 'static)> = status.source();
    let mut last = None;
    while let Some(c) = cause {
        last = Some(c.to_string());
        cause = c.source();
    }
    last.unwrap_or_else(|| status.message().to_string())
}

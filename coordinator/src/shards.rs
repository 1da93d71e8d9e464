//! Clients for the shard groups: one lazily connected gRPC channel per
//! node, a deadline on every call, the cluster secret and the group's epoch
//! on every call, and errors that name the group and its address.
//!
//! Each group has a primary client (where statements go) and a client per
//! member (heartbeats, replica reads). A failover swaps the primary client
//! and raises the epoch; a call that was answered under an older epoch than
//! the group has when the answer arrives is not trusted (its outcome is
//! unknown), so an old primary's late acknowledgement never counts.

use crate::catalog::{GroupRecord, ShardGroupId};
use crate::error::{CoordError, Result};
use crate::resilience::{GuardConfig, NodeGuard, Refused};
use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, RwLock};
use std::time::Duration;
use tessera_model::data::expr::Expr;
use tessera_model::secret::ClusterSecret;
use tessera_model::sqlstate;
use tessera_model::txn::{Mutation, TxnContext};
use tessera_model::wire;
use tessera_proto::shard as pb;
use tessera_proto::shard::shard_client::ShardClient as PbClient;
use tonic::service::interceptor::InterceptedService;
use tonic::transport::{Channel, Endpoint};

const MAX_MESSAGE_BYTES: usize = 64 * 1024 * 1024;

/// What every call to a shard carries: the cluster secret and the group's
/// current epoch.
#[derive(Clone)]
pub struct Outgoing {
    secret: ClusterSecret,
    epoch: Arc<AtomicU64>,
}

impl tonic::service::Interceptor for Outgoing {
    fn call(&mut self, mut request: tonic::Request<()>) -> std::result::Result<tonic::Request<()>, tonic::Status> {
        self.secret.attach(&mut request);
        let epoch = self.epoch.load(Ordering::Acquire).to_string();
        request.metadata_mut().insert(tessera_proto::EPOCH_METADATA_KEY, epoch.parse().expect("digits"));
        Ok(request)
    }
}

type Client = PbClient<InterceptedService<Channel, Outgoing>>;

/// A client for one node of a shard group.
#[derive(Clone)]
pub struct ShardClient {
    pub group: ShardGroupId,
    pub address: String,
    client: Client,
    timeout: Duration,
    /// The group's epoch (shared by all its clients).
    epoch: Arc<AtomicU64>,
    /// The node's circuit breaker and bulkhead.
    guard: Arc<NodeGuard>,
}

/// Sends `$request` with the client's `$method` through [`ShardClient::call`].
/// The call carries the current trace id and the request's transaction id.
macro_rules! rpc {
    ($self:ident, $repeat:expr, $method:ident, $request:expr) => {{
        let request = $request;
        let txn = TxnOf::txn_id(&request).map(str::to_string);
        $self
            .call($repeat, || {
                let mut client = $self.client.clone();
                let mut request = tonic::Request::new(request.clone());
                tessera_model::trace::attach(&mut request, txn.as_deref());
                async move { client.$method(request).await }
            })
            .await
    }};
}

/// The transaction a shard request belongs to (sent as metadata for logs).
trait TxnOf {
    fn txn_id(&self) -> Option<&str> {
        None
    }
}

macro_rules! txn_of {
    ($($t:ty),*) => {$(
        impl TxnOf for $t {
            fn txn_id(&self) -> Option<&str> {
                self.txn.as_ref().map(|t| t.txn_id.as_str())
            }
        }
    )*};
}

txn_of!(pb::GetRequest, pb::ScanRequest, pb::WriteRequest, pb::CommitRequest, pb::TxnRequest);
impl TxnOf for pb::SyncWalRequest {}
impl TxnOf for pb::DeleteRangeRequest {}
impl TxnOf for pb::StatusRequest {}

/// Whether a call may be sent again if the node does not answer.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Repeat {
    Safe,
    Once,
    /// A one-phase COMMIT: sent once, and if it goes unanswered (or is
    /// answered "done but not acknowledged") its outcome is unknown (08007).
    Commit,
}

struct Group {
    record: GroupRecord,
    epoch: Arc<AtomicU64>,
    members: BTreeMap<String, ShardClient>,
}

/// The clients of every shard group.
pub struct ShardPool {
    groups: RwLock<HashMap<ShardGroupId, Group>>,
    rpc_timeout: Duration,
    connect_timeout: Duration,
    secret: ClusterSecret,
    guards: GuardConfig,
}

impl ShardPool {
    pub fn new(
        groups: &BTreeMap<ShardGroupId, GroupRecord>,
        rpc_timeout: Duration,
        connect_timeout: Duration,
        secret: ClusterSecret,
        guards: GuardConfig,
    ) -> Result<ShardPool> {
        let pool = ShardPool { groups: RwLock::new(HashMap::new()), rpc_timeout, connect_timeout, secret, guards };
        for (id, record) in groups {
            let epoch = Arc::new(AtomicU64::new(record.epoch));
            let mut members = BTreeMap::new();
            for address in &record.members {
                members.insert(address.clone(), pool.client(*id, address, epoch.clone())?);
            }
            pool.groups.write().unwrap().insert(*id, Group { record: record.clone(), epoch, members });
        }
        Ok(pool)
    }

    fn client(&self, group: ShardGroupId, address: &str, epoch: Arc<AtomicU64>) -> Result<ShardClient> {
        let url = if address.contains("://") { address.to_string() } else { format!("http://{address}") };
        let endpoint = Endpoint::from_shared(url)
            .map_err(|e| CoordError::Invalid(format!("shard group {group} has an invalid address \"{address}\": {e}")))?
            .connect_timeout(self.connect_timeout)
            .timeout(self.rpc_timeout)
            .tcp_nodelay(true);
        let outgoing = Outgoing { secret: self.secret.clone(), epoch: epoch.clone() };
        let client = PbClient::with_interceptor(endpoint.connect_lazy(), outgoing)
            .max_decoding_message_size(MAX_MESSAGE_BYTES)
            .max_encoding_message_size(MAX_MESSAGE_BYTES);
        Ok(ShardClient { group, address: address.to_string(), client, timeout: self.rpc_timeout, epoch, guard: Arc::new(NodeGuard::new(self.guards)) })
    }

    /// The client of a group's primary.
    pub fn get(&self, group: ShardGroupId) -> Result<ShardClient> {
        let groups = self.groups.read().unwrap();
        let g = groups.get(&group).ok_or_else(|| CoordError::Internal(format!("shard group {group} is not configured")))?;
        g.members.get(&g.record.primary).cloned().ok_or_else(|| CoordError::Internal(format!("shard group {group} has no client for its primary")))
    }

    /// The client of one member of a group.
    pub fn member(&self, group: ShardGroupId, address: &str) -> Option<ShardClient> {
        self.groups.read().unwrap().get(&group)?.members.get(address).cloned()
    }

    /// (group, primary address), in group order.
    pub fn groups(&self) -> Vec<(ShardGroupId, String)> {
        let mut groups: Vec<_> = self.groups.read().unwrap().iter().map(|(id, g)| (*id, g.record.primary.clone())).collect();
        groups.sort();
        groups
    }

    /// Every group's record (members, primary, epoch), in group order.
    pub fn records(&self) -> Vec<(ShardGroupId, GroupRecord)> {
        let mut records: Vec<_> = self.groups.read().unwrap().iter().map(|(id, g)| (*id, g.record.clone())).collect();
        records.sort_by_key(|(id, _)| *id);
        records
    }

    pub fn record(&self, group: ShardGroupId) -> Option<GroupRecord> {
        self.groups.read().unwrap().get(&group).map(|g| g.record.clone())
    }

    /// Routes a group to a new primary in a new epoch (after the catalog
    /// recorded it).
    pub fn set_primary(&self, group: ShardGroupId, primary: &str, epoch: u64) {
        if let Some(g) = self.groups.write().unwrap().get_mut(&group) {
            g.record.primary = primary.to_string();
            g.record.epoch = epoch;
            g.epoch.store(epoch, Ordering::Release);
        }
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
        let sqlstate = sqlstate_of(&status).map(str::to_string);
        match status.code() {
            tonic::Code::AlreadyExists => match tessera_model::data::keys::decode_row_key(status.details()) {
                Some((table_id, value)) => CoordError::DuplicateKey { table_id, key: value.to_string() },
                None => CoordError::Internal(format!("{who}: duplicate key with an undecodable key")),
            },
            tonic::Code::Aborted => CoordError::Serialization(format!("could not serialize access on {who}: {}", status.message())),
            tonic::Code::FailedPrecondition if sqlstate.as_deref() == Some(sqlstate::SNAPSHOT_TOO_OLD) => {
                CoordError::SnapshotTooOld(format!("{who}: {}", status.message()))
            }
            tonic::Code::FailedPrecondition => CoordError::TxnAborted(format!("{who}: {}", status.message())),
            tonic::Code::InvalidArgument if sqlstate.as_deref().is_some_and(|s| s.starts_with("22") || s.starts_with("42")) => {
                let state: &'static str = match sqlstate.as_deref() {
                    Some(sqlstate::DIVISION_BY_ZERO) => sqlstate::DIVISION_BY_ZERO,
                    Some(sqlstate::NUMERIC_VALUE_OUT_OF_RANGE) => sqlstate::NUMERIC_VALUE_OUT_OF_RANGE,
                    Some(sqlstate::UNDEFINED_FUNCTION) => sqlstate::UNDEFINED_FUNCTION,
                    _ => sqlstate::INVALID_PARAMETER_VALUE,
                };
                CoordError::invalid_value(status.message().to_string(), state)
            }
            tonic::Code::DeadlineExceeded => CoordError::ShardUnavailable(format!("{who} did not answer within {} ms", self.timeout_ms())),
            tonic::Code::Unauthenticated => {
                CoordError::ShardUnavailable(format!("{who} refused the coordinator: {} (is cluster_secret the same on both?)", status.message()))
            }
            tonic::Code::Unavailable if matches!(sqlstate.as_deref(), Some(sqlstate::CONNECTION_FAILURE | sqlstate::TRANSACTION_RESOLUTION_UNKNOWN)) => {
                CoordError::ShardUnavailable(format!("{who}: {}", status.message()))
            }
            tonic::Code::Unavailable | tonic::Code::Unknown | tonic::Code::Cancelled => {
                CoordError::ShardUnavailable(format!("{who} unreachable: {}", describe_transport(&status)))
            }
            tonic::Code::OutOfRange => CoordError::ReplicaTooStale(format!("{who}: {}", status.message())),
            tonic::Code::ResourceExhausted if sqlstate.as_deref() == Some(sqlstate::LOCK_NOT_AVAILABLE) => {
                CoordError::LockNotAvailable(format!("{who}: {}", status.message()))
            }
            tonic::Code::Internal if sqlstate.as_deref() == Some(sqlstate::DISK_FULL) => {
                CoordError::Storage { message: format!("could not write on {who}: its disk is full ({})", status.message()), sqlstate: sqlstate::DISK_FULL }
            }
            tonic::Code::Internal if sqlstate.as_deref() == Some(sqlstate::IO_ERROR) => {
                CoordError::Storage { message: format!("storage failure on {who}: {}", status.message()), sqlstate: sqlstate::IO_ERROR }
            }
            _ => CoordError::Internal(format!("{who}: {}", status.message())),
        }
    }

    fn timeout_ms(&self) -> u128 {
        self.timeout.as_millis()
    }

    /// The group's epoch now.
    pub fn epoch(&self) -> u64 {
        self.epoch.load(Ordering::Acquire)
    }

    /// The node's circuit breaker and bulkhead.
    pub fn guard(&self) -> &Arc<NodeGuard> {
        &self.guard
    }

    /// Runs a call through the node's breaker and bulkhead, sending it
    /// again (with backoff) while the node does not answer, if `repeat`
    /// allows. An answer that arrives after the group's epoch moved on (a
    /// failover while it ran) is not trusted.
    async fn call<T, F, Fut>(&self, repeat: Repeat, make: F) -> Result<T>
    where
        F: Fn() -> Fut,
        Fut: std::future::Future<Output = std::result::Result<tonic::Response<T>, tonic::Status>>,
    {
        let epoch = self.epoch();
        let attempts = if repeat == Repeat::Safe { self.guard.config().attempts.max(1) } else { 1 };
        let mut attempt = 0;
        let answer = loop {
            attempt += 1;
            let admitted = self.guard.admit().map_err(|r| self.refused(r))?;
            let answer = make().await;
            let silent = answer.as_ref().err().is_some_and(node_silent);
            self.guard.finish(admitted, silent);
            match answer {
                Err(_) if silent && attempt < attempts => tokio::time::sleep(self.guard.backoff(attempt)).await,
                Err(status) if repeat == Repeat::Commit && (silent || sqlstate_of(&status) == Some(sqlstate::TRANSACTION_RESOLUTION_UNKNOWN)) => {
                    let cause = if silent { describe_transport(&status) } else { status.message().to_string() };
                    return Err(CoordError::OutcomeUnknown(format!(
                        "the COMMIT sent to shard group {} ({}) was not acknowledged ({cause}); it may or may not have been applied",
                        self.group, self.address
                    )));
                }
                answer => break answer.map_err(|s| self.error(s))?,
            }
        };
        let now = self.epoch();
        if now != epoch {
            let message =
                format!("shard group {} failed over (epoch {epoch} -> {now}) while the call to {} ran; its outcome is unknown", self.group, self.address);
            return Err(if repeat == Repeat::Commit { CoordError::OutcomeUnknown(message) } else { CoordError::ShardUnavailable(message) });
        }
        Ok(answer.into_inner())
    }

    fn refused(&self, why: Refused) -> CoordError {
        let who = format!("shard group {} ({})", self.group, self.address);
        match why {
            Refused::Open { retry_in } => CoordError::ShardUnavailable(format!(
                "{who} is failing: its circuit breaker opened after {} calls in a row went unanswered; the next try goes out in {} ms",
                self.guard.config().failure_threshold,
                retry_in.as_millis()
            )),
            Refused::Full { in_flight } => {
                CoordError::ShardUnavailable(format!("{who} already has {in_flight} calls in flight (its bulkhead limit): the node is slow"))
            }
        }
    }

    /// Point reads: in `txn` (locking with `lock`), or at `read_ts`.
    pub async fn get_rows(&self, keys: Vec<Vec<u8>>, txn: Option<&TxnContext>, lock: bool, read_ts: u64) -> Result<RawRows> {
        let request = pb::GetRequest { keys, txn: txn.map(wire::txn_to_pb), lock, replica_read: None, read_ts };
        let repeat = if txn.is_none() { Repeat::Safe } else { Repeat::Once };
        let response = rpc!(self, repeat, get, request)?;
        Ok(response.rows.into_iter().map(|kv| (kv.key, kv.value)).collect())
    }

    /// Scans `[start, end)` to the end or the limit, following resume keys;
    /// in `txn`, or at `read_ts` (every page at the same snapshot).
    #[allow(clippy::too_many_arguments)]
    pub async fn scan(
        &self,
        start: Vec<u8>,
        end: Vec<u8>,
        filter: Option<&Expr>,
        limit: u64,
        txn: Option<&TxnContext>,
        lock: bool,
        read_ts: u64,
    ) -> Result<RawRows> {
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
                read_ts,
            };
            let repeat = if txn.is_none() { Repeat::Safe } else { Repeat::Once };
            let response = rpc!(self, repeat, scan, request)?;
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
        rpc!(self, Repeat::Once, write, request)?;
        Ok(())
    }

    /// Commits in one phase at or above `min_ts`; returns the commit
    /// timestamp the shard chose.
    pub async fn commit_one_phase(&self, txn: &TxnContext, mutations: &[Mutation], min_ts: u64) -> Result<u64> {
        let request = pb::CommitRequest {
            txn: Some(wire::txn_to_pb(txn)),
            one_phase: true,
            mutations: mutations.iter().map(wire::mutation_to_pb).collect(),
            lazy: false,
            commit_ts: min_ts,
        };
        Ok(rpc!(self, Repeat::Commit, commit, request)?.commit_ts)
    }

    /// The vote; returns the prepare timestamp (at least `min_ts`).
    pub async fn prepare(&self, txn: &TxnContext, min_ts: u64) -> Result<u64> {
        let request = pb::TxnRequest { txn: Some(wire::txn_to_pb(txn)), min_ts };
        Ok(rpc!(self, Repeat::Safe, prepare, request)?.prepare_ts)
    }

    /// Phase two at the decided `commit_ts`. A `lazy` commit is applied
    /// without an fsync; it is durable after the next
    /// [`ShardClient::sync_wal`].
    pub async fn commit_two_phase(&self, txn: &TxnContext, lazy: bool, commit_ts: u64) -> Result<()> {
        let request = pb::CommitRequest { txn: Some(wire::txn_to_pb(txn)), one_phase: false, mutations: Vec::new(), lazy, commit_ts };
        rpc!(self, Repeat::Safe, commit, request)?;
        Ok(())
    }

    pub async fn abort(&self, txn: &TxnContext) -> Result<()> {
        let request = pb::TxnRequest { txn: Some(wire::txn_to_pb(txn)), min_ts: 0 };
        rpc!(self, Repeat::Safe, abort, request)?;
        Ok(())
    }

    pub async fn sync_wal(&self) -> Result<()> {
        rpc!(self, Repeat::Safe, sync_wal, pb::SyncWalRequest {})?;
        Ok(())
    }

    pub async fn delete_range(&self, start: Vec<u8>, end: Vec<u8>) -> Result<()> {
        let request = pb::DeleteRangeRequest { start, end };
        rpc!(self, Repeat::Safe, delete_range, request)?;
        Ok(())
    }

    pub async fn status(&self) -> Result<pb::StatusResponse> {
        rpc!(self, Repeat::Safe, status, pb::StatusRequest {})
    }

    /// The coordinator's heartbeat to this node (with its own deadline).
    /// It bypasses the breaker (the failure detector needs the plain
    /// truth) but an answer closes it.
    pub async fn heartbeat(&self, request: pb::HeartbeatRequest, deadline: Duration) -> Result<pb::HeartbeatResponse> {
        let mut request = tonic::Request::new(request);
        request.set_timeout(deadline);
        let response = self.client.clone().heartbeat(request).await.map_err(|s| self.error(s))?.into_inner();
        self.guard.heard_from();
        Ok(response)
    }

    /// A snapshot read at `read_ts` a replica may serve: rows and how
    /// stale they may be.
    pub async fn replica_get(&self, keys: Vec<Vec<u8>>, max_staleness: Option<Duration>, read_ts: u64) -> Result<(RawRows, u64)> {
        let replica_read = Some(replica_read(max_staleness));
        let request = pb::GetRequest { keys, txn: None, lock: false, replica_read, read_ts };
        let response = rpc!(self, Repeat::Once, get, request)?;
        Ok((response.rows.into_iter().map(|kv| (kv.key, kv.value)).collect(), response.staleness_ms))
    }

    /// A committed range scan a replica may serve, following resume keys.
    pub async fn replica_scan(
        &self,
        start: Vec<u8>,
        end: Vec<u8>,
        filter: Option<&Expr>,
        limit: u64,
        max_staleness: Option<Duration>,
        read_ts: u64,
    ) -> Result<(RawRows, u64)> {
        let filter = filter.and_then(wire::expr_to_pb);
        let replica_read = Some(replica_read(max_staleness));
        let (mut rows, mut staleness, mut start) = (Vec::new(), 0, start);
        loop {
            let remaining = if limit == 0 { 0 } else { limit - rows.len() as u64 };
            let request = pb::ScanRequest { start, end: end.clone(), limit: remaining, filter: filter.clone(), txn: None, lock: false, replica_read, read_ts };
            let response = rpc!(self, Repeat::Once, scan, request)?;
            staleness = staleness.max(response.staleness_ms);
            rows.extend(response.rows.into_iter().map(|kv| (kv.key, kv.value)));
            if response.resume_key.is_empty() || (limit > 0 && rows.len() as u64 >= limit) {
                return Ok((rows, staleness));
            }
            start = response.resume_key;
        }
    }
}

/// How long a replica waits for its closed timestamp to reach a read's
/// timestamp before it refuses (the coordinator then reads the primary).
pub const REPLICA_READ_WAIT: Duration = Duration::from_millis(200);

fn replica_read(max_staleness: Option<Duration>) -> pb::ReplicaRead {
    pb::ReplicaRead { max_staleness_ms: max_staleness.map(|d| d.as_millis().max(1) as u64).unwrap_or(0), wait_ms: REPLICA_READ_WAIT.as_millis() as u64 }
}

/// True when the node did not answer (as opposed to answering with an
/// error): what trips the breaker and what a retry may get past.
fn node_silent(status: &tonic::Status) -> bool {
    // A node that refuses (fenced) or reports a result sends a SQLSTATE.
    let answered = sqlstate_of(status).is_some();
    match status.code() {
        tonic::Code::Unavailable => !answered,
        tonic::Code::DeadlineExceeded | tonic::Code::Unknown | tonic::Code::Cancelled => true,
        _ => false,
    }
}

/// The SQLSTATE a node sent with an error, if any.
fn sqlstate_of(status: &tonic::Status) -> Option<&str> {
    status.metadata().get(tessera_proto::SQLSTATE_METADATA_KEY).and_then(|v| v.to_str().ok())
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

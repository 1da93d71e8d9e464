//! Protocol buffer contracts of Tessera and their generated tonic/prost types.
//!
//! - [`v1`]: the public API applications and the shell use (`tessera.v1`).
//! - [`shard`]: the internal API between the coordinator and shard nodes
//!   (`tessera.shard.v1`).
//!
//! Nothing but generated code and the names of metadata keys lives here;
//! conversions to domain types live next to the services that use them.

#[allow(clippy::all, missing_docs)]
pub mod v1 {
    tonic::include_proto!("tessera.v1");
}

#[allow(clippy::all, missing_docs)]
pub mod shard {
    tonic::include_proto!("tessera.shard.v1");
}

/// The encoded descriptors of every Tessera service, for server reflection.
pub const FILE_DESCRIPTOR_SET: &[u8] = include_bytes!(concat!(env!("OUT_DIR"), "/tessera_descriptor.bin"));

/// Metadata key carrying the SQLSTATE of a failed call.
pub const SQLSTATE_METADATA_KEY: &str = "x-tessera-sqlstate";

/// Metadata key carrying the id of a saga that rolled back or was parked.
pub const SAGA_METADATA_KEY: &str = "x-tessera-saga-id";

/// Metadata key carrying the cluster secret on calls between the
/// coordinator and shard nodes (and between shard nodes).
pub const CLUSTER_SECRET_METADATA_KEY: &str = "x-tessera-cluster-secret";

/// Metadata key carrying the shard group's epoch on calls from the
/// coordinator to shard nodes; a node refuses an older epoch.
pub const EPOCH_METADATA_KEY: &str = "x-tessera-epoch";

/// Metadata key carrying a request's trace id: a client may send one to
/// the coordinator (else it makes one), the coordinator returns it on the
/// answer and passes it on every call to shard nodes, which log it.
pub const TRACE_METADATA_KEY: &str = "x-tessera-trace-id";

/// Metadata key carrying the transaction id on calls to shard nodes.
pub const TXN_METADATA_KEY: &str = "x-tessera-txn-id";

/// The `domain` of the `google.rpc.ErrorInfo` detail on failed calls.
pub const ERROR_DOMAIN: &str = "tessera.v1";

//! What a transaction sends a shard: its context and its mutations.

/// Which transaction a request belongs to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TxnContext {
    pub id: String,
    pub timestamp: u64,
    /// The first request of this transaction to this shard.
    pub begin: bool,
    /// Where to ask for the outcome once prepared (sent with PREPARE).
    pub coordinator: String,
}

#[derive(Debug, Clone, PartialEq)]
pub enum MutationOp {
    Put(Vec<u8>),
    /// Put that fails if the key exists.
    Insert(Vec<u8>),
    Delete,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Mutation {
    pub key: Vec<u8>,
    pub op: MutationOp,
}

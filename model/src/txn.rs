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

/// How a transaction that writes to several shard groups commits. See
/// `docs/architecture/sagas.md`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Protocol {
    /// Two-phase commit: atomic and isolated; blocks while a shard is down.
    #[default]
    TwoPhaseCommit,
    /// A saga: one local commit per shard group, undone by compensations
    /// if a later step fails. Not isolated: others see partial progress.
    Saga,
}

impl Protocol {
    /// The name `SHOW transaction_protocol` gives.
    pub fn name(self) -> &'static str {
        match self {
            Protocol::TwoPhaseCommit => "2pc",
            Protocol::Saga => "saga",
        }
    }

    /// Parses a `transaction_protocol` setting.
    pub fn parse(value: &str) -> Option<Protocol> {
        match value.to_ascii_lowercase().as_str() {
            "2pc" | "two_phase" | "two_phase_commit" | "default" => Some(Protocol::TwoPhaseCommit),
            "saga" => Some(Protocol::Saga),
            _ => None,
        }
    }
}

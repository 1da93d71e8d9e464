//! The cluster secret: every call to a shard node (from the coordinator or
//! from another shard node) and every call from a shard node to the
//! coordinator's internal services carries it in the
//! `x-tessera-cluster-secret` metadata key. A call without it, or with a
//! wrong one, is refused with UNAUTHENTICATED before it reaches a handler,
//! so a client that reaches a shard port directly can neither read nor
//! write.
//!
//! The secret comes from the config file (`cluster_secret` or
//! `cluster_secret_file`) or the `TESSERA_CLUSTER_SECRET` environment
//! variable; a node without one does not start. Without TLS between nodes
//! it travels in the clear: keep shard ports on a private network.

use std::path::Path;
use std::sync::Arc;
use tessera_proto::CLUSTER_SECRET_METADATA_KEY;
use tonic::metadata::MetadataValue;
use tonic::{Request, Status};

/// The environment variable that can carry the secret.
pub const SECRET_ENV: &str = "TESSERA_CLUSTER_SECRET";

/// Shortest secret accepted.
pub const MIN_SECRET_LEN: usize = 16;

#[derive(Clone)]
pub struct ClusterSecret(Arc<str>);

impl std::fmt::Debug for ClusterSecret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("ClusterSecret(<redacted>)")
    }
}

/// Why there is no usable cluster secret.
#[derive(Debug, thiserror::Error)]
pub enum SecretError {
    #[error("the cluster secret must be at least {MIN_SECRET_LEN} characters long")]
    TooShort,
    #[error("the cluster secret may only hold printable ASCII characters without spaces")]
    NotPrintable,
    /// `what` names the process, `from` where the secret came from.
    #[error("{what}: {from}: {error}")]
    Invalid { what: String, from: String, error: Box<SecretError> },
    #[error("{what}: cannot read cluster_secret_file {}: {error}", path.display())]
    Unreadable { what: String, path: std::path::PathBuf, error: std::io::Error },
    #[error("{what}: no cluster secret: set cluster_secret or cluster_secret_file in the config, or {SECRET_ENV} (the same value on the coordinator and every shard node)")]
    Missing { what: String },
}

impl ClusterSecret {
    pub fn new(secret: &str) -> Result<ClusterSecret, SecretError> {
        let secret = secret.trim();
        if secret.len() < MIN_SECRET_LEN {
            return Err(SecretError::TooShort);
        }
        if !secret.bytes().all(|b| b.is_ascii_graphic()) {
            return Err(SecretError::NotPrintable);
        }
        Ok(ClusterSecret(secret.into()))
    }

    /// The secret from the config value, else the file, else the
    /// environment; `what` names the process in the error.
    pub fn resolve(value: Option<&str>, file: Option<&Path>, what: &str) -> Result<ClusterSecret, SecretError> {
        let invalid = |from: String| move |error| SecretError::Invalid { what: what.to_string(), from, error: Box::new(error) };
        if let Some(value) = value {
            return ClusterSecret::new(value).map_err(invalid("cluster_secret".into()));
        }
        if let Some(file) = file {
            let text = std::fs::read_to_string(file).map_err(|error| SecretError::Unreadable { what: what.to_string(), path: file.to_path_buf(), error })?;
            return ClusterSecret::new(&text).map_err(invalid(format!("cluster_secret_file {}", file.display())));
        }
        match std::env::var(SECRET_ENV) {
            Ok(value) => ClusterSecret::new(&value).map_err(invalid(SECRET_ENV.to_string())),
            Err(_) => Err(SecretError::Missing { what: what.to_string() }),
        }
    }

    /// True when `presented` is this secret (compared in constant time).
    pub fn matches(&self, presented: &[u8]) -> bool {
        let expected = self.0.as_bytes();
        if presented.len() != expected.len() {
            return false;
        }
        presented.iter().zip(expected).fold(0u8, |acc, (a, b)| acc | (a ^ b)) == 0
    }

    /// Refuses a request that does not carry the secret.
    pub fn check<T>(&self, request: &Request<T>) -> Result<(), Status> {
        match request.metadata().get(CLUSTER_SECRET_METADATA_KEY) {
            None => Err(Status::unauthenticated(format!(
                "this is an internal Tessera port: calls must carry the cluster secret ({CLUSTER_SECRET_METADATA_KEY}); connect to the coordinator instead"
            ))),
            Some(value) if self.matches(value.as_bytes()) => Ok(()),
            Some(_) => Err(Status::unauthenticated("wrong cluster secret")),
        }
    }

    /// Adds the secret to an outgoing request.
    pub fn attach<T>(&self, request: &mut Request<T>) {
        let value = MetadataValue::try_from(&*self.0).expect("the secret is printable ASCII");
        request.metadata_mut().insert(CLUSTER_SECRET_METADATA_KEY, value);
    }

    /// A server interceptor that refuses calls without the secret.
    pub fn server_check(&self) -> impl FnMut(Request<()>) -> Result<Request<()>, Status> + Clone {
        let secret = self.clone();
        move |request: Request<()>| {
            secret.check(&request)?;
            Ok(request)
        }
    }

    /// A client interceptor that adds the secret to every call.
    pub fn client_attach(&self) -> impl FnMut(Request<()>) -> Result<Request<()>, Status> + Clone {
        let secret = self.clone();
        move |mut request: Request<()>| {
            secret.attach(&mut request);
            Ok(request)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_the_exact_secret_passes() {
        let secret = ClusterSecret::new("0123456789abcdef").unwrap();
        let mut request = Request::new(());
        assert_eq!(secret.check(&request).unwrap_err().code(), tonic::Code::Unauthenticated);
        secret.attach(&mut request);
        assert!(secret.check(&request).is_ok());
        let other = ClusterSecret::new("0123456789abcdeX").unwrap();
        assert!(other.check(&request).unwrap_err().message().contains("wrong"));
        assert!(!secret.matches(b"0123456789abcde"));
        assert!(ClusterSecret::new("short").is_err());
        assert!(ClusterSecret::new("has a space in it!").is_err());
    }
}

//! Why a node could not be configured or started: the errors of reading and
//! checking a shard or coordinator config, and of starting its server.

use crate::secret::SecretError;
use std::net::SocketAddr;
use std::path::PathBuf;

/// A config that cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read config file {}: {source}", path.display())]
    Read { path: PathBuf, source: std::io::Error },
    #[error("invalid config file {}: {message}", path.display())]
    Parse { path: PathBuf, message: String },
    /// A value out of range, or settings that contradict each other; the
    /// message names the setting.
    #[error("{0}")]
    Invalid(String),
    #[error(transparent)]
    Secret(#[from] SecretError),
}

impl From<String> for ConfigError {
    fn from(message: String) -> ConfigError {
        ConfigError::Invalid(message)
    }
}

impl From<&str> for ConfigError {
    fn from(message: &str) -> ConfigError {
        ConfigError::Invalid(message.to_string())
    }
}

impl ConfigError {
    /// Reads `path` as TOML into a config.
    pub fn read_toml<T: serde::de::DeserializeOwned>(path: &std::path::Path) -> Result<T, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read { path: path.to_path_buf(), source })?;
        toml::from_str(&text).map_err(|e| ConfigError::Parse { path: path.to_path_buf(), message: e.to_string() })
    }
}

/// A node that could not start.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error(transparent)]
    Config(#[from] ConfigError),
    /// The address is taken, or not one of this machine's.
    #[error("cannot listen on {address}: {source}")]
    Listen { address: SocketAddr, source: std::io::Error },
    /// Its storage (data directory, catalog, journal) could not be opened.
    #[error("cannot open storage: {0}")]
    Storage(String),
    /// Certificates, keys or credentials that cannot be loaded.
    #[error("{0}")]
    Security(String),
    #[error("cannot start: {0}")]
    Other(String),
}

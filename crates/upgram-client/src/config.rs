//! Settings shared by every way of configuring a client: server addresses and pinned public
//! keys as people write them. (The `upgram` command's configuration file is read by the
//! command itself.)

use std::net::{SocketAddr, ToSocketAddrs};
use std::path::PathBuf;

use thiserror::Error;

/// Why the configuration is unusable.
#[derive(Debug, Error)]
#[non_exhaustive]
pub enum ConfigError {
    /// The file could not be read.
    #[error("{}: {source}", path.display())]
    Io {
        /// The file.
        path: PathBuf,
        /// The I/O error.
        #[source]
        source: std::io::Error,
    },
    /// The file is not valid.
    #[error("{}: {message}", path.display())]
    Invalid {
        /// The file.
        path: PathBuf,
        /// What is wrong, with the line.
        message: String,
    },
    /// A value is unusable.
    #[error("{0}")]
    Value(String),
}

/// Resolves `host:port` strings to addresses.
pub fn resolve_servers(servers: &[String]) -> Result<Vec<SocketAddr>, ConfigError> {
    let mut out = Vec::new();
    for server in servers {
        let addrs = server
            .to_socket_addrs()
            .map_err(|e| ConfigError::Value(format!("server `{server}`: {e} (expected host:port)")))?;
        out.extend(addrs);
    }
    Ok(out)
}

/// Parses a public key written as 64 hex digits.
pub fn parse_public_key(text: &str) -> Result<[u8; 32], ConfigError> {
    let mut key = [0u8; 32];
    hex::decode_to_slice(text.trim(), &mut key).map_err(|_| {
        ConfigError::Value(format!("public key `{text}`: expected 64 hex digits (from `upgram-server keygen`)"))
    })?;
    Ok(key)
}

//! The server's signing key and cookie secret on disk (SPEC.md §10.3, §10.6).
//!
//! A key file holds the 32-byte Ed25519 secret seed as 64 hex digits and a newline; a cookie
//! secret file, 32 random bytes the same way (every instance of a deployment shares it). It is
//! created with mode 0600, written to a temporary file, synced and renamed into place, and never
//! overwritten unless asked: losing a signing key forces every client through a key rotation.

use std::fs::{self, File, OpenOptions};
use std::io::Write;
use std::path::{Path, PathBuf};

use ed25519_dalek::SigningKey;
use rand::rngs::OsRng;
use thiserror::Error;
use upgram_core::sign::ReplySigner;

/// Why a key file could not be made or read.
#[derive(Debug, Error)]
#[non_exhaustive]
pub enum KeyError {
    /// The file exists and overwriting was not asked for.
    #[error("{}: already exists (pass --force to replace it, and rotate the key on every client)", path.display())]
    Exists {
        /// The key file.
        path: PathBuf,
    },
    /// Reading or writing failed.
    #[error("{}: {source}", path.display())]
    Io {
        /// The file.
        path: PathBuf,
        /// The I/O error.
        #[source]
        source: std::io::Error,
    },
    /// The file does not hold 64 hex digits.
    #[error("{}: not a key or secret file (expected 64 hex digits)", path.display())]
    Malformed {
        /// The key file.
        path: PathBuf,
    },
}

fn io(path: &Path) -> impl Fn(std::io::Error) -> KeyError + '_ {
    move |source| KeyError::Io { path: path.to_owned(), source }
}

/// Makes a new random key and writes it to `path`; returns the signer.
pub fn generate(path: &Path, force: bool) -> Result<ReplySigner, KeyError> {
    let key = SigningKey::generate(&mut OsRng);
    write_secret(path, &key.to_bytes(), force)?;
    Ok(ReplySigner::new(key))
}

/// Makes a new random 32-byte secret (a cookie secret, SPEC.md §10.6) and writes it to `path`.
pub fn generate_secret(path: &Path, force: bool) -> Result<[u8; 32], KeyError> {
    let mut secret = [0u8; 32];
    rand::RngCore::fill_bytes(&mut OsRng, &mut secret);
    write_secret(path, &secret, force)?;
    Ok(secret)
}

/// Writes 32 secret bytes as hex, mode 0600, atomically; refuses to overwrite unless `force`.
fn write_secret(path: &Path, secret: &[u8; 32], force: bool) -> Result<(), KeyError> {
    if path.exists() && !force {
        return Err(KeyError::Exists { path: path.to_owned() });
    }
    let temp = path.with_extension("tmp");
    let mut options = OpenOptions::new();
    options.write(true).create(true).truncate(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
    let mut file = options.open(&temp).map_err(io(&temp))?;
    writeln!(file, "{}", hex::encode(secret)).map_err(io(&temp))?;
    file.sync_all().map_err(io(&temp))?;
    fs::rename(&temp, path).map_err(io(path))?;
    if let Some(parent) = path.parent().filter(|p| !p.as_os_str().is_empty()) {
        File::open(parent).and_then(|dir| dir.sync_all()).map_err(io(parent))?;
    }
    Ok(())
}

/// Reads the key at `path`.
pub fn load(path: &Path) -> Result<ReplySigner, KeyError> {
    Ok(ReplySigner::from_seed(&load_secret(path)?))
}

/// Reads 32 secret bytes written by [`generate`] or [`generate_secret`].
pub fn load_secret(path: &Path) -> Result<[u8; 32], KeyError> {
    let text = fs::read_to_string(path).map_err(io(path))?;
    let mut secret = [0u8; 32];
    hex::decode_to_slice(text.trim(), &mut secret).map_err(|_| KeyError::Malformed { path: path.to_owned() })?;
    Ok(secret)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generated_keys_load_back_and_are_not_overwritten() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("server.key");
        let made = generate(&path, false).unwrap();
        let loaded = load(&path).unwrap();
        assert_eq!(made.verifying_key(), loaded.verifying_key());
        assert!(matches!(generate(&path, false), Err(KeyError::Exists { .. })));
        let replaced = generate(&path, true).unwrap();
        assert_ne!(replaced.verifying_key(), made.verifying_key(), "a new random key");
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            assert_eq!(fs::metadata(&path).unwrap().permissions().mode() & 0o777, 0o600);
        }
        fs::write(&path, "not hex\n").unwrap();
        assert!(matches!(load(&path), Err(KeyError::Malformed { .. })));
    }
}

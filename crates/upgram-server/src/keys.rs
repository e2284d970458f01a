//! The server's signing key and cookie secret on disk (SPEC.md §10.3, §10.6).
//!
//! A key file holds the 32-byte Ed25519 secret seed as 64 hex digits and a newline; a cookie
//! secret file, 32 random bytes the same way (every instance of a deployment shares it). It is
//! created with mode 0600, written to a temporary file of its own, synced and put into place,
//! and never overwritten unless asked (a new file is linked into place, which fails if one is
//! there: two runs cannot both create it): losing a signing key forces every client through a
//! key rotation.

use std::fs;
use std::path::{Path, PathBuf};

use ed25519_dalek::SigningKey;
use rand::rngs::OsRng;
use thiserror::Error;
use upgram_core::sign::ReplySigner;

use crate::durable::{self, OWNER_ONLY, Replace};

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

/// Writes 32 secret bytes as hex, mode 0600, atomically and durably; refuses to overwrite
/// unless `force`. The refusal is atomic too: of two writers creating one key, one fails.
fn write_secret(path: &Path, secret: &[u8; 32], force: bool) -> Result<(), KeyError> {
    let text = format!("{}\n", hex::encode(secret));
    let replace = if force { Replace::Overwrite } else { Replace::Refuse };
    durable::write_file(path, text.as_bytes(), replace, Some(OWNER_ONLY)).map_err(|e| {
        if e.source.kind() == std::io::ErrorKind::AlreadyExists && e.path == path {
            KeyError::Exists { path: path.to_owned() }
        } else {
            KeyError::Io { path: e.path, source: e.source }
        }
    })
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

    #[test]
    fn a_key_and_a_secret_of_one_stem_do_not_share_a_temporary_file() {
        let dir = tempfile::tempdir().unwrap();
        // The name both used to go through; what is there belongs to someone else.
        fs::write(dir.path().join("prod.tmp"), "someone else's\n").unwrap();
        let (key_path, secret_path) = (dir.path().join("prod.key"), dir.path().join("prod.secret"));
        let (signer, secret) = std::thread::scope(|scope| {
            let key = scope.spawn(|| generate(&key_path, false).unwrap());
            let secret = scope.spawn(|| generate_secret(&secret_path, false).unwrap());
            (key.join().unwrap(), secret.join().unwrap())
        });
        assert_eq!(load(&key_path).unwrap().verifying_key(), signer.verifying_key());
        assert_eq!(load_secret(&secret_path).unwrap(), secret);
        assert_eq!(fs::read_to_string(dir.path().join("prod.tmp")).unwrap(), "someone else's\n");
        let mut names: Vec<_> = fs::read_dir(dir.path()).unwrap().map(|e| e.unwrap().file_name()).collect();
        names.sort();
        assert_eq!(names, ["prod.key", "prod.secret", "prod.tmp"], "no temporary file left");
    }

    #[test]
    fn of_two_runs_creating_one_key_one_fails_and_the_file_is_the_winners() {
        for _round in 0..20 {
            let dir = tempfile::tempdir().unwrap();
            let path = dir.path().join("server.key");
            let start = std::sync::Barrier::new(4);
            let outcomes: Vec<Result<ReplySigner, KeyError>> = std::thread::scope(|scope| {
                let handles: Vec<_> = (0..4)
                    .map(|_| {
                        scope.spawn(|| {
                            start.wait();
                            generate(&path, false)
                        })
                    })
                    .collect();
                handles.into_iter().map(|h| h.join().unwrap()).collect()
            });
            let made: Vec<&ReplySigner> = outcomes.iter().filter_map(|o| o.as_ref().ok()).collect();
            assert_eq!(made.len(), 1, "exactly one run creates the key");
            assert!(outcomes.iter().filter(|o| o.is_err()).all(|o| matches!(o, Err(KeyError::Exists { .. }))));
            assert_eq!(
                load(&path).unwrap().verifying_key(),
                made[0].verifying_key(),
                "the key on disk is the one reported"
            );
        }
    }
}

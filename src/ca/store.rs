//! The CA's files: the state directory of a self-signed root (with its
//! crash-safe rotation protocol) and Istio's `cacerts` directory.
//!
//! This module only moves bytes; `authority` parses and checks them.
//!
//! State directory layout:
//!
//! ```text
//! root-cert.pem       the current (signing) root
//! root-key.pem        its key, mode 0600
//! old-root-cert.pem   the previous root, only while a rotation is in progress
//! ```
//!
//! A new root is installed in three steps so that a crash at any point leaves
//! a directory that [`recover`] turns into either the old or the new state:
//! write `root-key.pem.new`, then `root-cert.pem.new` (the commit point), then
//! rename both over the live files.

use std::fs::{self, DirBuilder, File, OpenOptions};
use std::io::{self, Write};
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

use super::{CaError, Secret};

pub(super) const ROOT_CERT: &str = "root-cert.pem";
pub(super) const ROOT_KEY: &str = "root-key.pem";
pub(super) const OLD_ROOT_CERT: &str = "old-root-cert.pem";
const PENDING_ROOT_CERT: &str = "root-cert.pem.new";
const PENDING_ROOT_KEY: &str = "root-key.pem.new";

pub(super) const CA_CERT: &str = "ca-cert.pem";
pub(super) const CA_KEY: &str = "ca-key.pem";
pub(super) const CERT_CHAIN: &str = "cert-chain.pem";

/// Private keys: owner read/write only.
const KEY_MODE: u32 = 0o600;
/// Certificates are public.
const CERT_MODE: u32 = 0o644;
/// The state directory holds a private key: owner only.
const DIR_MODE: u32 = 0o700;

/// The files of a state directory that has a root.
pub(super) struct StateFiles {
    pub cert_pem: String,
    pub key_pem: Secret,
    pub old_cert_pem: Option<String>,
}

/// Istio's plugged-in CA files.
pub(super) struct CacertsFiles {
    pub ca_cert: String,
    pub ca_key: Secret,
    pub root_cert: String,
    pub cert_chain: String,
}

/// Creates `dir` (mode 0700) if missing.
pub(super) fn ensure_state_dir(dir: &Path) -> Result<(), CaError> {
    match fs::metadata(dir) {
        Ok(meta) if meta.is_dir() => Ok(()),
        Ok(_) => Err(CaError::InconsistentState {
            dir: dir.to_path_buf(),
            problem: "exists but is not a directory".to_string(),
        }),
        Err(e) if e.kind() == io::ErrorKind::NotFound => DirBuilder::new()
            .recursive(true)
            .mode(DIR_MODE)
            .create(dir)
            .map_err(io_err("creating CA state dir", dir)),
        Err(e) => Err(io_err("reading CA state dir", dir)(e)),
    }
}

/// At startup: finishes a root install that reached its commit point before
/// a crash, or discards one that did not.
pub(super) fn recover(dir: &Path) -> Result<(), CaError> {
    if commit_pending(dir)? {
        tracing::warn!(dir = %dir.display(), "completed a root installation interrupted by a crash");
    } else if exists(&dir.join(PENDING_ROOT_KEY))? {
        remove(&dir.join(PENDING_ROOT_KEY))?;
        tracing::warn!(dir = %dir.display(), "discarded a root key whose installation was interrupted by a crash");
    }
    Ok(())
}

/// Renames a committed pending root (its certificate exists) over the live
/// files; false if nothing was committed.
fn commit_pending(dir: &Path) -> Result<bool, CaError> {
    let pending_cert = dir.join(PENDING_ROOT_CERT);
    if !exists(&pending_cert)? {
        return Ok(false);
    }
    let pending_key = dir.join(PENDING_ROOT_KEY);
    if exists(&pending_key)? {
        rename(&pending_key, &dir.join(ROOT_KEY))?;
    }
    rename(&pending_cert, &dir.join(ROOT_CERT))?;
    sync_dir(dir)?;
    Ok(true)
}

/// The root files, `None` if the directory has no root yet.
pub(super) fn read_state(dir: &Path) -> Result<Option<StateFiles>, CaError> {
    let cert_path = dir.join(ROOT_CERT);
    let key_path = dir.join(ROOT_KEY);
    let (has_cert, has_key) = (exists(&cert_path)?, exists(&key_path)?);
    let missing = match (has_cert, has_key) {
        (false, false) => return Ok(None),
        (true, true) => None,
        (true, false) => Some(ROOT_KEY),
        (false, true) => Some(ROOT_CERT),
    };
    if let Some(missing) = missing {
        return Err(CaError::InconsistentState {
            dir: dir.to_path_buf(),
            problem: format!(
                "{missing} is missing while its pair exists; restore it from backup, or remove \
                 both {ROOT_CERT} and {ROOT_KEY} to create a new root (every workload then \
                 needs new certificates)"
            ),
        });
    }
    warn_if_key_exposed(&key_path);
    let old_path = dir.join(OLD_ROOT_CERT);
    let old_cert_pem = if exists(&old_path)? {
        Some(read_text(dir, OLD_ROOT_CERT)?)
    } else {
        None
    };
    Ok(Some(StateFiles {
        cert_pem: read_text(dir, ROOT_CERT)?,
        key_pem: Secret::new(read_text(dir, ROOT_KEY)?),
        old_cert_pem,
    }))
}

/// Makes `cert_pem`/`key_pem` the root of `dir`, crash-safely (see the
/// module comment).
pub(super) fn install_root(dir: &Path, cert_pem: &str, key_pem: &Secret) -> Result<(), CaError> {
    write_atomic(dir, PENDING_ROOT_KEY, key_pem.expose(), KEY_MODE)?;
    write_atomic(dir, PENDING_ROOT_CERT, cert_pem, CERT_MODE)?;
    commit_pending(dir).map(|_| ())
}

pub(super) fn write_old_root(dir: &Path, cert_pem: &str) -> Result<(), CaError> {
    write_atomic(dir, OLD_ROOT_CERT, cert_pem, CERT_MODE)
}

pub(super) fn remove_old_root(dir: &Path) -> Result<(), CaError> {
    let path = dir.join(OLD_ROOT_CERT);
    if exists(&path)? {
        remove(&path)?;
        sync_dir(dir)?;
    }
    Ok(())
}

/// Reads the four cacerts files, naming every missing one at once.
pub(super) fn read_cacerts(dir: &Path) -> Result<CacertsFiles, CaError> {
    if !fs::metadata(dir)
        .map_err(io_err("reading cacerts dir", dir))?
        .is_dir()
    {
        return Err(CaError::InconsistentState {
            dir: dir.to_path_buf(),
            problem: "is not a directory (expected Istio's cacerts directory)".to_string(),
        });
    }
    let mut missing = Vec::new();
    for name in [CA_CERT, CA_KEY, ROOT_CERT, CERT_CHAIN] {
        if !exists(&dir.join(name))? {
            missing.push(name);
        }
    }
    if !missing.is_empty() {
        return Err(CaError::MissingCacerts {
            dir: dir.to_path_buf(),
            missing,
        });
    }
    Ok(CacertsFiles {
        ca_cert: read_text(dir, CA_CERT)?,
        ca_key: Secret::new(read_text(dir, CA_KEY)?),
        root_cert: read_text(dir, ROOT_CERT)?,
        cert_chain: read_text(dir, CERT_CHAIN)?,
    })
}

/// A file's text; not-UTF-8 is reported as not PEM (without echoing bytes).
fn read_text(dir: &Path, name: &str) -> Result<String, CaError> {
    let path = dir.join(name);
    let bytes = fs::read(&path).map_err(io_err("reading", &path))?;
    String::from_utf8(bytes).map_err(|_| CaError::InvalidFile {
        dir: dir.to_path_buf(),
        file: name.to_string(),
        problem: "not PEM text (invalid UTF-8; DER files must be converted to PEM)".to_string(),
    })
}

/// Writes `name` in `dir` via a temporary file and a rename, so readers and
/// crashes see either the old or the new content; the file gets `mode`.
fn write_atomic(dir: &Path, name: &str, contents: &str, mode: u32) -> Result<(), CaError> {
    let tmp = dir.join(format!(".{name}.tmp"));
    if exists(&tmp)? {
        remove(&tmp)?; // left by a crash
    }
    let mut file = OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(mode)
        .open(&tmp)
        .map_err(io_err("creating", &tmp))?;
    // The umask may have narrowed `mode`; make it exact.
    file.set_permissions(fs::Permissions::from_mode(mode))
        .map_err(io_err("setting permissions of", &tmp))?;
    file.write_all(contents.as_bytes())
        .and_then(|()| file.sync_all())
        .map_err(io_err("writing", &tmp))?;
    drop(file);
    rename(&tmp, &dir.join(name))?;
    sync_dir(dir)
}

fn warn_if_key_exposed(key_path: &Path) {
    if let Ok(meta) = fs::metadata(key_path) {
        let mode = meta.permissions().mode() & 0o777;
        if mode & 0o077 != 0 {
            tracing::warn!(
                path = %key_path.display(),
                mode = format!("{mode:o}"),
                "root key is readable by group or others; chmod 600 it"
            );
        }
    }
}

fn exists(path: &Path) -> Result<bool, CaError> {
    path.try_exists().map_err(io_err("checking", path))
}

fn rename(from: &Path, to: &Path) -> Result<(), CaError> {
    fs::rename(from, to).map_err(io_err("renaming into place", to))
}

fn remove(path: &Path) -> Result<(), CaError> {
    fs::remove_file(path).map_err(io_err("removing", path))
}

/// Makes renames and removals in `dir` durable.
fn sync_dir(dir: &Path) -> Result<(), CaError> {
    File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(io_err("syncing", dir))
}

fn io_err(action: &'static str, path: &Path) -> impl FnOnce(io::Error) -> CaError {
    let path: PathBuf = path.to_path_buf();
    move |source| CaError::Io {
        action,
        path,
        source,
    }
}

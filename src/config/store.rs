//! The config store: every file's last good version, and the snapshot made
//! from them. Plain data, synchronous; the watcher drives it.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use tracing::{info, warn};

use super::parse::{ConfigError, parse_file};
use crate::model::{ConfigSnapshot, Resource};

/// Largest config file read; larger files are reported and skipped.
pub const MAX_FILE_BYTES: u64 = 16 * 1024 * 1024;

#[derive(Debug, Default)]
struct FileState {
    /// Hash of the content last read (good or bad).
    hash: u64,
    /// The resources of the last version that had no errors (or, for a file
    /// never seen valid, its valid documents).
    good: Vec<Arc<Resource>>,
    /// Problems with the content last read.
    errors: Vec<ConfigError>,
    /// Istio's warnings on the content last read (documents accepted).
    warnings: Vec<ConfigError>,
    /// When the good version was written: with duplicates, the newest wins.
    modified: Option<std::time::SystemTime>,
}

/// What is in force, published to the rest of pilotfish.
#[derive(Debug, Default)]
pub struct ConfigState {
    /// Increases each time the snapshot's content changes.
    pub version: u64,
    pub snapshot: ConfigSnapshot,
    /// Problems with the latest files (their last good versions are in force).
    pub errors: Vec<ConfigError>,
    /// Istio's warnings on the latest files: reported, the documents are in force.
    pub warnings: Vec<ConfigError>,
    /// Files read.
    pub files: usize,
    /// When the change that produced this state was first seen (the start
    /// of its debounce window); None for the state loaded at start.
    pub changed_at: Option<std::time::Instant>,
}

/// All config files under one directory.
#[derive(Debug)]
pub struct Store {
    dir: PathBuf,
    files: BTreeMap<PathBuf, FileState>,
    dir_error: Option<ConfigError>,
}

fn is_yaml(p: &Path) -> bool {
    matches!(
        p.extension().and_then(|e| e.to_str()),
        Some("yaml") | Some("yml")
    )
}

fn list(dir: &Path, out: &mut Vec<PathBuf>) -> std::io::Result<()> {
    for entry in std::fs::read_dir(dir)? {
        let entry = entry?;
        let path = entry.path();
        let name = entry.file_name();
        if name.to_string_lossy().starts_with('.') {
            continue; // editor swap files, hidden dirs
        }
        let ft = entry.file_type()?;
        if ft.is_dir() {
            list(&path, out)?;
        } else if is_yaml(&path) {
            out.push(path);
        }
    }
    Ok(())
}

/// Every YAML file below `dir` (hidden files and folders skipped), sorted.
pub fn yaml_files(dir: &Path) -> std::io::Result<Vec<PathBuf>> {
    let mut out = Vec::new();
    list(dir, &mut out)?;
    out.sort();
    Ok(out)
}

impl Store {
    /// A store for `dir`; fails if the directory cannot be read.
    pub fn open(dir: &Path) -> Result<Store, ConfigError> {
        let mut probe = Vec::new();
        list(dir, &mut probe)
            .map_err(|e| ConfigError::file(dir, format!("cannot read config directory: {e}")))?;
        Ok(Store {
            dir: dir.to_path_buf(),
            files: BTreeMap::new(),
            dir_error: None,
        })
    }

    /// Re-reads the directory. Returns true when the resources in force changed.
    pub fn reload(&mut self) -> bool {
        let mut paths = Vec::new();
        if let Err(e) = list(&self.dir, &mut paths) {
            // Keep everything serving; say why nothing changed.
            let err = ConfigError::file(
                &self.dir,
                format!("cannot read config directory: {e}; keeping the last good config"),
            );
            warn!(error = %err, "config reload failed");
            self.dir_error = Some(err);
            return false;
        }
        self.dir_error = None;
        let mut changed = false;
        let before: Vec<PathBuf> = self.files.keys().cloned().collect();
        for gone in before.iter().filter(|p| !paths.contains(p)) {
            info!(file = %gone.display(), "config file removed");
            if let Some(old) = self.files.remove(gone) {
                changed |= !old.good.is_empty();
            }
        }
        for path in paths {
            changed |= self.read_file(&path);
        }
        changed
    }

    fn read_file(&mut self, path: &Path) -> bool {
        let mut modified = None;
        let text = std::fs::metadata(path)
            .map_err(|e| e.to_string())
            .and_then(|m| {
                modified = m.modified().ok();
                if m.len() > MAX_FILE_BYTES {
                    Err(format!(
                        "file is {} bytes; the limit is {MAX_FILE_BYTES}",
                        m.len()
                    ))
                } else {
                    std::fs::read(path).map_err(|e| e.to_string())
                }
            })
            .and_then(|b| String::from_utf8(b).map_err(|e| format!("not UTF-8 text: {e}")));
        let state = self.files.entry(path.to_path_buf()).or_default();
        let text = match text {
            Ok(t) => t,
            Err(e) => {
                let err = ConfigError::file(path, format!("{e}; keeping its last good version"));
                warn!(error = %err, "config file unreadable");
                state.errors = vec![err];
                state.hash = 0;
                return false;
            }
        };
        let hash = xxhash_rust::xxh3::xxh3_64(text.as_bytes());
        if hash == state.hash && state.hash != 0 {
            // Same content, but a newer write still decides between duplicates.
            if state.errors.is_empty() && state.modified != modified {
                state.modified = modified;
                return !state.good.is_empty();
            }
            return false;
        }
        state.hash = hash;
        let parsed = parse_file(path, &text);
        for s in &parsed.skipped {
            warn!("{s}");
        }
        for w in &parsed.warnings {
            warn!(warning = %w, "config warning (the document is accepted)");
        }
        state.warnings = parsed.warnings;
        let resources: Vec<Arc<Resource>> = parsed.resources.into_iter().map(Arc::new).collect();
        let never_good = state.good.is_empty();
        state.errors = parsed.errors;
        if state.errors.is_empty() || never_good {
            for e in &state.errors {
                warn!(error = %e, "invalid config document skipped");
            }
            let changed = state.good != resources || state.modified != modified;
            state.good = resources;
            state.modified = modified;
            changed
        } else {
            for e in &state.errors {
                warn!(error = %e, "invalid config; the file's last good version stays in force");
            }
            false
        }
    }

    /// The snapshot of everything in force, and every problem (per-file errors
    /// and conflicts between files).
    ///
    /// A resource defined in two files is taken from the file written last
    /// (as `kubectl apply` of a newer file replaces the object), and the
    /// older definition is reported.
    pub fn state(&self, version: u64) -> ConfigState {
        let mut snapshot = ConfigSnapshot::default();
        let mut errors: Vec<ConfigError> = self.dir_error.iter().cloned().collect();
        let mut files: Vec<(&PathBuf, &FileState)> = self.files.iter().collect();
        files.sort_by_key(|(path, state)| (state.modified, *path));
        for (_, state) in files {
            errors.extend(state.errors.iter().cloned());
            for r in &state.good {
                let key = r.key();
                if let Some(older) = snapshot.resources.insert(key.clone(), Arc::clone(r)) {
                    errors.push(ConfigError {
                        file: older.origin.file.display().to_string(),
                        document: Some(older.origin.document),
                        resource: Some(key.to_string()),
                        path: Some("metadata.name".into()),
                        message: format!(
                            "duplicate: {key} is also defined in {} document {}, written later, which is in force",
                            r.origin.file.display(),
                            r.origin.document
                        ),
                    });
                }
            }
        }
        let mut warnings: Vec<ConfigError> = self
            .files
            .values()
            .flat_map(|f| f.warnings.iter().cloned())
            .collect();
        // Cross-resource routing problems (sidecar host conflicts, delegates).
        for m in super::analyze::serve_warnings(&snapshot) {
            warn!(warning = %m, "config warning");
            warnings.push(m.to_config_error());
        }
        ConfigState {
            version,
            snapshot,
            errors,
            warnings,
            files: self.files.len(),
            changed_at: None,
        }
    }

    /// Files whose latest version has errors.
    pub fn invalid_files(&self) -> usize {
        self.files.values().filter(|f| !f.errors.is_empty()).count()
    }
}

#[cfg(test)]
mod tests;

//! Writing rotated tokens back without ever losing one.
//!
//! A refresh that rotates the refresh token makes the old one useless, so the new one must
//! reach the disk at once and the file must never be half-written: read the file, merge the
//! changed keys into it (unknown keys are kept), write a temp file beside it with mode 0600,
//! fsync it, rename it over the original, fsync the directory.

use serde_json::{Map, Value};
use std::io::Write;
use std::path::{Path, PathBuf};

/// Why a write-back failed (the token stays in memory; the caller logs this loudly).
#[derive(Debug, thiserror::Error)]
pub enum PersistError {
    /// Filesystem error.
    #[error("cannot update {path}: {source}")]
    Io {
        /// The file.
        path: String,
        /// OS error.
        source: std::io::Error,
    },
    /// The current file is not a JSON object; it is left untouched rather than clobbered.
    #[error("{path} is no longer a JSON object; not overwriting it")]
    NotAnObject {
        /// The file.
        path: String,
    },
}

fn io_error(path: &Path, source: std::io::Error) -> PersistError {
    PersistError::Io {
        path: path.display().to_string(),
        source,
    }
}

/// Merges `updates` into the JSON object stored at `path` (creating it if missing).
pub fn merge_into_file(path: &Path, updates: &Map<String, Value>) -> Result<(), PersistError> {
    let mut object = match std::fs::read(path) {
        Ok(bytes) => match serde_json::from_slice::<Value>(&bytes) {
            Ok(Value::Object(map)) => map,
            _ => {
                return Err(PersistError::NotAnObject {
                    path: path.display().to_string(),
                })
            }
        },
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Map::new(),
        Err(e) => return Err(io_error(path, e)),
    };
    for (key, value) in updates {
        object.insert(key.clone(), value.clone());
    }
    let mut bytes = serde_json::to_vec_pretty(&Value::Object(object)).unwrap_or_default();
    bytes.push(b'\n');
    write_atomically(path, &bytes)
}

/// Replaces `path` with `bytes` atomically (temp file + fsync + rename + dir fsync), mode 0600.
pub fn write_atomically(path: &Path, bytes: &[u8]) -> Result<(), PersistError> {
    let dir = path
        .parent()
        .filter(|d| !d.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    std::fs::create_dir_all(dir).map_err(|e| io_error(dir, e))?;
    let temp = temp_path(path);
    let result = (|| {
        let mut options = std::fs::OpenOptions::new();
        options.write(true).create_new(true);
        #[cfg(unix)]
        std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
        let mut file = options.open(&temp)?;
        file.write_all(bytes)?;
        file.sync_all()?;
        drop(file);
        std::fs::rename(&temp, path)?;
        #[cfg(unix)]
        std::fs::File::open(dir)?.sync_all()?;
        Ok(())
    })();
    if result.is_err() {
        let _ = std::fs::remove_file(&temp);
    }
    result.map_err(|e| io_error(path, e))
}

fn temp_path(path: &Path) -> PathBuf {
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| "credentials".into());
    path.with_file_name(format!(
        ".{name}.{}.{}.tmp",
        std::process::id(),
        uuid::Uuid::new_v4().simple()
    ))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn merge_keeps_unknown_fields_and_sets_0600() {
        let dir = std::env::temp_dir().join(format!("aiproxy-persist-{}", uuid::Uuid::new_v4()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("creds.json");
        std::fs::write(
            &path,
            r#"{"refreshToken":"old","custom":{"keep":true},"n":1}"#,
        )
        .unwrap();
        let mut updates = Map::new();
        updates.insert("refreshToken".into(), json!("new"));
        updates.insert("accessToken".into(), json!("a"));
        merge_into_file(&path, &updates).unwrap();
        let value: Value = serde_json::from_slice(&std::fs::read(&path).unwrap()).unwrap();
        assert_eq!(
            value,
            json!({"refreshToken": "new", "accessToken": "a", "custom": {"keep": true}, "n": 1})
        );
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            assert_eq!(
                std::fs::metadata(&path).unwrap().permissions().mode() & 0o777,
                0o600
            );
        }
        let leftovers: Vec<_> = std::fs::read_dir(&dir).unwrap().collect();
        assert_eq!(leftovers.len(), 1, "no temp files left behind");
        std::fs::remove_dir_all(dir).unwrap();
    }

    #[test]
    fn a_corrupted_file_is_not_clobbered() {
        let dir = std::env::temp_dir().join(format!("aiproxy-persist-{}", uuid::Uuid::new_v4()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("creds.json");
        std::fs::write(&path, "{ half-writ").unwrap();
        let err = merge_into_file(&path, &Map::new()).unwrap_err();
        assert!(matches!(err, PersistError::NotAnObject { .. }));
        assert_eq!(std::fs::read_to_string(&path).unwrap(), "{ half-writ");
        std::fs::remove_dir_all(dir).unwrap();
    }

    #[test]
    fn missing_file_and_directories_are_created() {
        let dir = std::env::temp_dir().join(format!("aiproxy-persist-{}", uuid::Uuid::new_v4()));
        let path = dir.join("state/kiro.json");
        let mut updates = Map::new();
        updates.insert("refreshToken".into(), json!("r"));
        merge_into_file(&path, &updates).unwrap();
        assert!(path.is_file());
        std::fs::remove_dir_all(dir).unwrap();
    }
}

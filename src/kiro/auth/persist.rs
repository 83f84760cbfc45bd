//! Writing rotated tokens back without ever losing one.
//!
//! A refresh that rotates the refresh token makes the old one useless, so the new one must
//! reach the disk at once and the file must never be half-written: read the file, merge the
//! changed keys into it (unknown keys are kept), write a temp file beside it with mode 0600,
//! fsync it, rename it over the original, fsync the directory.
//!
//! Crash safety: once the temp file's `write` returned, the new token survives the process
//! being killed (the kernel keeps the data). A process killed between that write and the
//! rename leaves an *orphan* `.NAME.PID.UUID.tmp` with the only copy of the live refresh
//! token, so [`recover_orphans`] runs before a token file is read (at start-up and after an
//! `invalid_grant`): the newest complete orphan of a dead writer that is newer than the file
//! replaces it, and the other orphans are removed.
//!
//! A symlinked token file (the Kiro IDE's login linked into place, say) is written through:
//! the temp file goes beside the link's target and replaces the target, so the link and
//! whoever reads the target see the new token.

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

/// Replaces `path` (through a symlink: its target) with `bytes` atomically (temp file +
/// fsync + rename + dir fsync), mode 0600.
pub fn write_atomically(path: &Path, bytes: &[u8]) -> Result<(), PersistError> {
    let resolved = resolve(path);
    let path = resolved.as_path();
    let dir = path
        .parent()
        .filter(|d| !d.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    create_private_dir(dir).map_err(|e| io_error(dir, e))?;
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

/// Creates `dir` (and missing parents) readable by the owner only: it holds tokens.
fn create_private_dir(dir: &Path) -> std::io::Result<()> {
    let mut builder = std::fs::DirBuilder::new();
    builder.recursive(true);
    #[cfg(unix)]
    std::os::unix::fs::DirBuilderExt::mode(&mut builder, 0o700);
    builder.create(dir)
}

/// The file a token file's writes land in: the final target when `path` is a symlink
/// (a dangling or unreadable link is left to fail at write time).
pub fn resolve(path: &Path) -> PathBuf {
    match std::fs::symlink_metadata(path) {
        Ok(meta) if meta.file_type().is_symlink() => {
            std::fs::canonicalize(path).unwrap_or_else(|_| path.to_path_buf())
        }
        _ => path.to_path_buf(),
    }
}

/// What [`recover_orphans`] did.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Recovery {
    /// The orphan that replaced the token file, if one did.
    pub adopted: Option<PathBuf>,
    /// Orphans removed (stale, incomplete, or superseded).
    pub removed: usize,
}

/// Brings back a token left in an orphan temp file by a writer that died before its rename
/// (see the module docs). An orphan counts only when it is complete: a JSON object with a
/// refresh token (`refreshToken` or the guide format's `refresh_token`).
pub fn recover_orphans(path: &Path) -> Recovery {
    let target = resolve(path);
    let mut recovery = Recovery::default();
    let orphans = orphans_of(&target);
    if orphans.is_empty() {
        return recovery;
    }
    let file_time = std::fs::metadata(&target).and_then(|m| m.modified()).ok();
    let mut best: Option<(std::time::SystemTime, PathBuf)> = None;
    for (orphan, modified) in &orphans {
        let complete = std::fs::read(orphan)
            .ok()
            .and_then(|bytes| serde_json::from_slice::<Value>(&bytes).ok())
            .and_then(|value| match value {
                Value::Object(map) => Some(holds_refresh_token(&map)),
                _ => None,
            })
            .unwrap_or(false);
        let newer_than_file = file_time.is_none_or(|file| *modified >= file);
        if complete && newer_than_file && best.as_ref().is_none_or(|(t, _)| modified > t) {
            best = Some((*modified, orphan.clone()));
        }
    }
    if let Some((_, orphan)) = &best {
        match std::fs::rename(orphan, &target) {
            Ok(()) => {
                if let Some(dir) = target.parent().filter(|d| !d.as_os_str().is_empty()) {
                    let _ = std::fs::File::open(dir).and_then(|d| d.sync_all());
                }
                recovery.adopted = Some(orphan.clone());
            }
            Err(error) => tracing::warn!(
                orphan = %orphan.display(), %error,
                "cannot move a recovered token file into place"
            ),
        }
    }
    for (orphan, _) in orphans {
        if Some(&orphan) != recovery.adopted.as_ref() && std::fs::remove_file(&orphan).is_ok() {
            recovery.removed += 1;
        }
    }
    recovery
}

fn holds_refresh_token(map: &Map<String, Value>) -> bool {
    ["refreshToken", "refresh_token"].iter().any(|key| {
        map.get(*key)
            .and_then(Value::as_str)
            .is_some_and(|t| !t.is_empty())
    })
}

/// Orphan temp files of `target` (writers that are no longer running), with their mtimes.
fn orphans_of(target: &Path) -> Vec<(PathBuf, std::time::SystemTime)> {
    let (Some(dir), Some(name)) = (target.parent(), target.file_name()) else {
        return Vec::new();
    };
    let dir = if dir.as_os_str().is_empty() {
        Path::new(".")
    } else {
        dir
    };
    let prefix = format!(".{}.", name.to_string_lossy());
    let Ok(entries) = std::fs::read_dir(dir) else {
        return Vec::new();
    };
    entries
        .filter_map(Result::ok)
        .filter_map(|entry| {
            let file_name = entry.file_name().to_string_lossy().into_owned();
            let rest = file_name.strip_prefix(&prefix)?.strip_suffix(".tmp")?;
            let pid: u32 = rest.split('.').next()?.parse().ok()?;
            if writer_is_running(pid) {
                return None;
            }
            let modified = entry.metadata().and_then(|m| m.modified()).ok()?;
            Some((entry.path(), modified))
        })
        .collect()
}

/// Whether the process that named a temp file may still be writing it.
fn writer_is_running(pid: u32) -> bool {
    if pid == std::process::id() {
        return true;
    }
    #[cfg(target_os = "linux")]
    {
        Path::new(&format!("/proc/{pid}")).exists()
    }
    #[cfg(not(target_os = "linux"))]
    {
        false
    }
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

    /// A temp file as a writer with `pid` would have left it.
    fn orphan(dir: &Path, pid: u32, body: &str) -> PathBuf {
        let path = dir.join(format!(
            ".creds.json.{pid}.{}.tmp",
            uuid::Uuid::new_v4().simple()
        ));
        std::fs::write(&path, body).unwrap();
        path
    }

    /// A pid no process has (the kernel's pid_max is far below it).
    const DEAD: u32 = 4_000_000_000;

    #[test]
    fn the_newest_complete_orphan_of_a_dead_writer_replaces_the_file() {
        let dir = std::env::temp_dir().join(format!("aiproxy-persist-{}", uuid::Uuid::new_v4()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("creds.json");
        std::fs::write(&path, r#"{"refreshToken":"consumed"}"#).unwrap();
        std::thread::sleep(std::time::Duration::from_millis(20));
        orphan(&dir, DEAD, r#"{"refreshToken":"older"}"#);
        std::thread::sleep(std::time::Duration::from_millis(20));
        let newest = orphan(&dir, DEAD, r#"{"refreshToken":"live"}"#);
        std::thread::sleep(std::time::Duration::from_millis(20));
        orphan(&dir, DEAD, r#"{"refreshTo"#); // cut off mid-write
        let running = orphan(
            &dir,
            std::process::id(),
            r#"{"refreshToken":"in progress"}"#,
        );

        let recovery = recover_orphans(&path);
        assert_eq!(recovery.adopted, Some(newest));
        assert_eq!(recovery.removed, 2, "the older and the incomplete orphan");
        let value: Value = serde_json::from_slice(&std::fs::read(&path).unwrap()).unwrap();
        assert_eq!(value["refreshToken"], "live");
        assert!(
            running.exists(),
            "a running writer's temp file is not touched"
        );
        std::fs::remove_dir_all(dir).unwrap();
    }

    #[test]
    fn an_orphan_older_than_the_file_is_stale() {
        let dir = std::env::temp_dir().join(format!("aiproxy-persist-{}", uuid::Uuid::new_v4()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("creds.json");
        let stale = orphan(&dir, DEAD, r#"{"refreshToken":"stale"}"#);
        std::thread::sleep(std::time::Duration::from_millis(20));
        std::fs::write(&path, r#"{"refreshToken":"current"}"#).unwrap();
        let recovery = recover_orphans(&path);
        assert_eq!(
            recovery,
            Recovery {
                adopted: None,
                removed: 1
            }
        );
        assert!(!stale.exists());
        let value: Value = serde_json::from_slice(&std::fs::read(&path).unwrap()).unwrap();
        assert_eq!(value["refreshToken"], "current");
        std::fs::remove_dir_all(dir).unwrap();
    }

    #[cfg(unix)]
    #[test]
    fn a_symlinked_file_is_written_through_to_its_target() {
        let dir = std::env::temp_dir().join(format!("aiproxy-persist-{}", uuid::Uuid::new_v4()));
        let ide = dir.join("ide");
        std::fs::create_dir_all(&ide).unwrap();
        let target = ide.join("kiro-auth-token.json");
        std::fs::write(&target, r#"{"refreshToken":"old","keep":1}"#).unwrap();
        let link = dir.join("creds.json");
        std::os::unix::fs::symlink(&target, &link).unwrap();
        let mut updates = Map::new();
        updates.insert("refreshToken".into(), json!("new"));
        merge_into_file(&link, &updates).unwrap();
        assert!(std::fs::symlink_metadata(&link)
            .unwrap()
            .file_type()
            .is_symlink());
        let value: Value = serde_json::from_slice(&std::fs::read(&target).unwrap()).unwrap();
        assert_eq!(value, json!({"refreshToken": "new", "keep": 1}));
        assert_eq!(
            std::fs::read_dir(&dir).unwrap().count(),
            2,
            "no temp file beside the link"
        );
        assert_eq!(
            std::fs::read_dir(&ide).unwrap().count(),
            1,
            "no temp file left"
        );
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
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = std::fs::metadata(path.parent().unwrap())
                .unwrap()
                .permissions()
                .mode();
            assert_eq!(mode & 0o777, 0o700, "a new state directory is private");
        }
        std::fs::remove_dir_all(dir).unwrap();
    }
}

//! Changes to the pool file made by `aiproxy login` and the console (add, enable, disable,
//! remove an account), so they survive a restart: each is a read-modify-write of the whole
//! file under the pool file's lock (the same sidecar lock the token rotations use, so two
//! writers never interleave), written atomically (temp file, fsync, rename) with mode 0600.
//! A running aiproxy picks the change up by its reload (the file watch, or the console's
//! own reload right after). Keys the edit does not touch are kept as written.

use super::pool_file::{instance_name, OURS, THEIRS};
use crate::kiro::auth::{file_lock, persist};
use serde_json::{json, Map, Value};
use std::path::{Path, PathBuf};
use std::time::Duration;

/// How long an edit waits for another writer of the pool file.
const LOCK_WAIT: Duration = Duration::from_secs(5);

/// Why the pool file was not changed (nothing was written).
#[derive(Debug, thiserror::Error)]
pub enum EditError {
    /// The file cannot be read or is not a pool file.
    #[error("pool file {path}: {message}")]
    File {
        /// The file.
        path: String,
        /// What is wrong.
        message: String,
    },
    /// No account of that name.
    #[error("the pool file {path} has no account named `{name}`")]
    NoSuchAccount {
        /// The file.
        path: String,
        /// The name asked for.
        name: String,
    },
    /// The name is taken.
    #[error("the pool file {path} already has an account named `{name}`; choose another name")]
    NameTaken {
        /// The file.
        path: String,
        /// The name.
        name: String,
    },
    /// A name that cannot be a file name.
    #[error("`{0}` cannot be an account name: use letters, digits, `-`, `_` and `.` (at most 64)")]
    BadName(String),
    /// Another writer held the lock.
    #[error("pool file {0} is being changed by another process; try again")]
    Busy(String),
    /// The write failed.
    #[error(transparent)]
    Write(#[from] persist::PersistError),
}

/// Whether `name` may name an account (it names its credential file too).
pub fn valid_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 64
        && !name.starts_with('.')
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
}

/// The pool file's lock (shared with every other writer of it).
async fn locked(path: &Path) -> Result<file_lock::RotationLock, EditError> {
    file_lock::acquire(path, LOCK_WAIT)
        .await
        .ok_or_else(|| EditError::Busy(path.display().to_string()))
}

fn read(path: &Path, create: bool) -> Result<Map<String, Value>, EditError> {
    let file_error = |message: String| EditError::File {
        path: path.display().to_string(),
        message,
    };
    match std::fs::read(path) {
        Ok(bytes) => match serde_json::from_slice(&bytes) {
            Ok(Value::Object(root)) => Ok(root),
            Ok(_) => Err(file_error("is not a JSON object".into())),
            Err(error) => Err(file_error(format!("is not valid JSON ({error})"))),
        },
        Err(error) if create && error.kind() == std::io::ErrorKind::NotFound => Ok(Map::new()),
        Err(error) => Err(file_error(format!("cannot read it: {error}"))),
    }
}

fn write(path: &Path, root: Map<String, Value>) -> Result<(), EditError> {
    let mut bytes = serde_json::to_vec_pretty(&Value::Object(root)).unwrap_or_default();
    bytes.push(b'\n');
    Ok(persist::write_atomically(path, &bytes)?)
}

/// Every entry's (provider, index, name).
fn names(root: &Map<String, Value>) -> Vec<(&'static str, usize, String)> {
    [OURS, THEIRS]
        .into_iter()
        .flat_map(|provider| {
            root.get(provider)
                .and_then(Value::as_array)
                .into_iter()
                .flatten()
                .enumerate()
                .map(move |(index, entry)| (provider, index, instance_name(provider, index, entry)))
        })
        .collect()
}

fn find(
    root: &mut Map<String, Value>,
    path: &Path,
    name: &str,
) -> Result<(&'static str, usize), EditError> {
    names(root)
        .into_iter()
        .find(|(_, _, n)| n == name)
        .map(|(provider, index, _)| (provider, index))
        .ok_or_else(|| EditError::NoSuchAccount {
            path: path.display().to_string(),
            name: name.to_owned(),
        })
}

/// Adds an account named `name` whose credential is `credential`: the credential goes to a
/// file of its own beside the pool file (`NAME.kiro-creds.json`, mode 0600, where rotated
/// tokens are written back), and the pool file (created when missing) gets an entry that
/// names it. Returns the credential file.
pub async fn add(
    pool: &Path,
    name: &str,
    credential: &Map<String, Value>,
) -> Result<PathBuf, EditError> {
    if !valid_name(name) {
        return Err(EditError::BadName(name.to_owned()));
    }
    let _lock = locked(pool).await?;
    let mut root = read(pool, true)?;
    let taken = |root: &Map<String, Value>| names(root).iter().any(|(_, _, n)| n == name);
    if taken(&root) {
        return Err(EditError::NameTaken {
            path: pool.display().to_string(),
            name: name.to_owned(),
        });
    }
    let file_name = format!("{name}.kiro-creds.json");
    let dir = pool
        .parent()
        .filter(|d| !d.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    let creds = dir.join(&file_name);
    let mut bytes =
        serde_json::to_vec_pretty(&Value::Object(credential.clone())).unwrap_or_default();
    bytes.push(b'\n');
    persist::write_atomically(&creds, &bytes)?;
    let list = root.entry(OURS).or_insert_with(|| Value::Array(Vec::new()));
    match list {
        Value::Array(list) => list.push(json!({"name": name, "credsFile": file_name})),
        _ => {
            return Err(EditError::File {
                path: pool.display().to_string(),
                message: format!("`{OURS}` is not an array"),
            })
        }
    }
    write(pool, root)?;
    Ok(creds)
}

/// Adds the instances of another pool file (ours or AIClient-2-API's), each under its own
/// array; a name already in the pool stops the import before anything is written. Returns
/// the names added.
pub async fn import(pool: &Path, other: &Map<String, Value>) -> Result<Vec<String>, EditError> {
    let _lock = locked(pool).await?;
    let mut root = read(pool, true)?;
    let existing: Vec<String> = names(&root).into_iter().map(|(_, _, n)| n).collect();
    let mut added = Vec::new();
    for (provider, index, name) in names(other) {
        if existing.contains(&name) || added.contains(&name) {
            return Err(EditError::NameTaken {
                path: pool.display().to_string(),
                name,
            });
        }
        let Some(entry) = other
            .get(provider)
            .and_then(Value::as_array)
            .and_then(|list| list.get(index))
        else {
            continue;
        };
        // An entry named by its position keeps the name it had in its own file.
        let mut entry = entry.clone();
        if let Value::Object(map) = &mut entry {
            let key = if provider == OURS {
                "name"
            } else {
                "customName"
            };
            map.entry(key).or_insert_with(|| name.clone().into());
        }
        if let Value::Array(list) = root
            .entry(provider)
            .or_insert_with(|| Value::Array(Vec::new()))
        {
            list.push(entry);
        }
        added.push(name);
    }
    if added.is_empty() {
        return Err(EditError::File {
            path: "the imported file".into(),
            message: format!("has no instances under `{OURS}` or `{THEIRS}`"),
        });
    }
    write(pool, root)?;
    Ok(added)
}

/// Switches the account on or off (`enabled` in ours, `isDisabled` in AIClient-2-API's).
pub async fn set_enabled(pool: &Path, name: &str, enabled: bool) -> Result<(), EditError> {
    let _lock = locked(pool).await?;
    let mut root = read(pool, false)?;
    let (provider, index) = find(&mut root, pool, name)?;
    if let Some(Value::Object(entry)) = root
        .get_mut(provider)
        .and_then(Value::as_array_mut)
        .and_then(|list| list.get_mut(index))
    {
        // Written even when it is the default, so the file says what the operator chose.
        if provider == OURS {
            entry.insert("enabled".into(), enabled.into());
        } else {
            entry.insert("isDisabled".into(), (!enabled).into());
        }
    }
    write(pool, root)
}

/// Takes the account out of the pool file. Its credential file stays where it is (a refresh
/// token is never deleted by an edit); returns it when the entry named one.
pub async fn remove(pool: &Path, name: &str) -> Result<Option<String>, EditError> {
    let _lock = locked(pool).await?;
    let mut root = read(pool, false)?;
    let (provider, index) = find(&mut root, pool, name)?;
    let mut kept_file = None;
    if let Some(list) = root.get_mut(provider).and_then(Value::as_array_mut) {
        let entry = list.remove(index);
        kept_file = ["credsFile", "KIRO_OAUTH_CREDS_FILE_PATH"]
            .iter()
            .find_map(|key| entry.get(*key).and_then(Value::as_str).map(str::to_owned));
        // An entry named by its position: the ones after it keep their names.
        for (later, entry) in list.iter_mut().enumerate().skip(index) {
            let old = instance_name(provider, later + 1, entry);
            if let Value::Object(map) = entry {
                let key = if provider == OURS {
                    "name"
                } else {
                    "customName"
                };
                map.entry(key).or_insert_with(|| old.into());
            }
        }
    }
    write(pool, root)?;
    Ok(kept_file)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn dir() -> PathBuf {
        let dir = std::env::temp_dir().join(format!("aiproxy-pool-edit-{}", uuid::Uuid::new_v4()));
        std::fs::create_dir_all(&dir).unwrap();
        dir
    }

    fn read_back(pool: &Path) -> Value {
        serde_json::from_slice(&std::fs::read(pool).unwrap()).unwrap()
    }

    #[tokio::test]
    async fn add_disable_enable_remove_round_trip() {
        let dir = dir();
        let pool = dir.join("provider_pools.json");
        let credential: Map<String, Value> =
            serde_json::from_value(json!({"refreshToken": "rt", "authMethod": "social"})).unwrap();
        let file = add(&pool, "first", &credential).await.unwrap();
        assert_eq!(file, dir.join("first.kiro-creds.json"));
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = std::fs::metadata(&file).unwrap().permissions().mode();
            assert_eq!(mode & 0o777, 0o600);
        }
        assert!(matches!(
            add(&pool, "first", &credential).await,
            Err(EditError::NameTaken { .. })
        ));
        assert!(matches!(
            add(&pool, "../evil", &credential).await,
            Err(EditError::BadName(_))
        ));
        add(&pool, "second", &credential).await.unwrap();
        set_enabled(&pool, "first", false).await.unwrap();
        assert_eq!(read_back(&pool)["kiro-api"][0]["enabled"], false);
        let loaded = crate::kiro::accounts::pool_file::load(&pool).unwrap();
        assert_eq!(loaded.len(), 2);
        assert!(!loaded[0].enabled);
        set_enabled(&pool, "first", true).await.unwrap();
        assert_eq!(
            remove(&pool, "first").await.unwrap().as_deref(),
            Some("first.kiro-creds.json")
        );
        assert!(file.exists(), "the credential file is kept");
        assert_eq!(read_back(&pool)["kiro-api"].as_array().unwrap().len(), 1);
        assert!(matches!(
            remove(&pool, "first").await,
            Err(EditError::NoSuchAccount { .. })
        ));
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[tokio::test]
    async fn an_aiclient_pool_file_is_imported_under_its_own_key() {
        let dir = dir();
        let pool = dir.join("pool.json");
        let theirs: Map<String, Value> = serde_json::from_value(json!({"claude-kiro-oauth": [
            {"customName": "a2", "KIRO_OAUTH_CREDS_BASE64": "e30=", "isDisabled": true},
            {"uuid": "u-2", "KIRO_OAUTH_CREDS_BASE64": "e30="}]}))
        .unwrap();
        assert_eq!(import(&pool, &theirs).await.unwrap(), ["a2", "u-2"]);
        assert!(matches!(
            import(&pool, &theirs).await,
            Err(EditError::NameTaken { .. })
        ));
        set_enabled(&pool, "a2", true).await.unwrap();
        assert_eq!(
            read_back(&pool)["claude-kiro-oauth"][0]["isDisabled"],
            false
        );
        std::fs::remove_dir_all(&dir).unwrap();
    }
}

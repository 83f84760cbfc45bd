//! An advisory lock around a token rotation, shared by every process that rotates the same
//! credential file (two aiproxy processes, or aiproxy and a tool that honours the lock).
//!
//! The lock is taken on a sidecar file (`.NAME.lock` beside the resolved target), not on
//! the credential file itself: the write-back replaces that file by a rename, and a lock
//! held on the old inode would no longer exclude anyone. The lock is `flock`-style (std's
//! `File::try_lock`), so the kernel releases it when a process dies mid-rotation.

use std::fs::{File, OpenOptions};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

/// How often a waiting process tries again.
const POLL: Duration = Duration::from_millis(20);

/// A held lock; released when dropped.
#[derive(Debug)]
pub struct RotationLock {
    file: File,
}

impl Drop for RotationLock {
    fn drop(&mut self) {
        let _ = self.file.unlock();
    }
}

/// The sidecar lock file of `token_file`.
pub fn lock_path(token_file: &Path) -> PathBuf {
    let target = crate::kiro::auth::persist::resolve(token_file);
    let name = target
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    target.with_file_name(format!(".{name}.lock"))
}

/// Takes the rotation lock of `token_file`, waiting at most `wait`. `None` when the lock
/// file cannot be opened or another holder kept it longer than `wait`: the caller rotates
/// without it (as before locks existed) rather than fail the request.
pub async fn acquire(token_file: &Path, wait: Duration) -> Option<RotationLock> {
    let path = lock_path(token_file);
    let mut options = OpenOptions::new();
    options.create(true).truncate(false).write(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
    let file = match options.open(&path) {
        Ok(file) => file,
        Err(error) => {
            tracing::warn!(path = %path.display(), %error, "cannot open the rotation lock file; rotating without it");
            return None;
        }
    };
    let deadline = Instant::now() + wait;
    loop {
        match file.try_lock() {
            Ok(()) => return Some(RotationLock { file }),
            Err(std::fs::TryLockError::WouldBlock) if Instant::now() < deadline => {
                tokio::time::sleep(POLL).await;
            }
            Err(std::fs::TryLockError::WouldBlock) => {
                tracing::warn!(path = %path.display(), waited_ms = wait.as_millis() as u64, "another process held the rotation lock too long; rotating without it");
                return None;
            }
            Err(std::fs::TryLockError::Error(error)) => {
                tracing::warn!(path = %path.display(), %error, "cannot take the rotation lock; rotating without it");
                return None;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn one_holder_at_a_time_and_released_on_drop() {
        let dir = std::env::temp_dir().join(format!("aiproxy-lock-{}", uuid::Uuid::new_v4()));
        std::fs::create_dir_all(&dir).unwrap();
        let token = dir.join("creds.json");
        std::fs::write(&token, "{}").unwrap();
        let held = acquire(&token, Duration::from_millis(10)).await;
        assert!(held.is_some());
        assert!(lock_path(&token).ends_with(".creds.json.lock"));
        assert!(
            acquire(&token, Duration::from_millis(60)).await.is_none(),
            "a second holder waits, then gives up"
        );
        drop(held);
        assert!(acquire(&token, Duration::from_millis(10)).await.is_some());
        std::fs::remove_dir_all(&dir).unwrap();
    }
}

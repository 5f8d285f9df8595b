//! One bismuthd per containerd namespace: an exclusive `flock` on a file
//! named after the containerd socket and namespace, held for the process's life.

use std::fs::File;
use std::path::{Path, PathBuf};

use anyhow::bail;
use nix::fcntl::{Flock, FlockArg};

/// The held lock; released when dropped or when the process dies.
#[derive(Debug)]
pub struct NamespaceLock {
    _lock: Flock<File>,
    pub path: PathBuf,
}

/// Takes the lock or says who holds it.
pub fn acquire(socket: &Path, namespace: &str) -> anyhow::Result<NamespaceLock> {
    let dir = Path::new("/run/lock");
    std::fs::create_dir_all(dir)?;
    let path = dir.join(format!(
        "bismuthd-{}-{namespace}.lock",
        crate::config::instance_id(socket, namespace)
    ));
    let file = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&path)?;
    match Flock::lock(file, FlockArg::LockExclusiveNonblock) {
        Ok(lock) => {
            let _ = std::fs::write(&path, format!("{}\n", std::process::id()));
            Ok(NamespaceLock { _lock: lock, path })
        }
        Err((_, errno)) => {
            let holder = std::fs::read_to_string(&path).unwrap_or_default();
            bail!(
                "another bismuthd (pid {}) already manages containerd namespace {namespace:?} at {}: {errno}",
                holder.trim(),
                socket.display()
            )
        }
    }
}

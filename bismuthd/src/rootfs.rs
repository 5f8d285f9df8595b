//! A container's root filesystem: the image's layers (containerd's
//! read-only view of them), the function's repository as one more read-only
//! layer on top, and a writable layer in a tmpfs of its own, sized by
//! `--writable-max-bytes`. Everything the container writes (to `/`, to
//! `/repo`) lands in that tmpfs: bounded, charged to the container's memory
//! cgroup, never on the host's disk, and gone with the container. containerd
//! mounts the overlay for the task and unmounts it at the task's end;
//! bismuthd mounts and detaches the tmpfs.

use std::path::{Path, PathBuf};

use bismuth_containerd::types::Mount;
use nix::mount::{MntFlags, MsFlags};

use crate::files::Files;
use crate::userns::IdMap;

/// Why the root filesystem could not be put together.
#[derive(Debug, thiserror::Error)]
pub enum RootfsError {
    #[error("the image's snapshot has no layers bismuthd can use: {0}")]
    Snapshot(String),
    #[error("cannot mount the writable layer at {path}: {source}")]
    Mount {
        path: PathBuf,
        source: std::io::Error,
    },
}

/// The read-only layers of containerd's view of an image, top first: a
/// single layer comes as a bind mount, several as an overlay's `lowerdir`.
pub fn image_layers(mounts: &[Mount]) -> Result<Vec<String>, RootfsError> {
    let [mount] = mounts else {
        return Err(RootfsError::Snapshot(format!(
            "expected one mount, got {}",
            mounts.len()
        )));
    };
    match mount.r#type.as_str() {
        "bind" | "rbind" => Ok(vec![mount.source.clone()]),
        "overlay" => {
            if mount.options.iter().any(|o| o.starts_with("upperdir=")) {
                return Err(RootfsError::Snapshot("it is writable".into()));
            }
            mount
                .options
                .iter()
                .find_map(|o| o.strip_prefix("lowerdir="))
                .map(|l| l.split(':').map(str::to_owned).collect())
                .ok_or_else(|| RootfsError::Snapshot("an overlay without lowerdir".into()))
        }
        other => Err(RootfsError::Snapshot(format!("a {other} mount"))),
    }
}

/// The overlay containerd mounts as the task's root: `layers` (top first)
/// under the writable layer in `files`' tmpfs.
pub fn overlay(files: &Files, layers: &[String]) -> Mount {
    let writable = files.writable();
    Mount {
        r#type: "overlay".into(),
        source: "overlay".into(),
        target: String::new(),
        options: vec![
            format!("lowerdir={}", layers.join(":")),
            format!("upperdir={}", writable.join("upper").display()),
            format!("workdir={}", writable.join("work").display()),
        ],
    }
}

/// Mounts a fresh, empty writable layer for the container (whatever an
/// earlier start of it wrote goes): a tmpfs of `max_bytes` whose `upper`
/// directory, the root of the container's `/`, belongs to its root user.
pub fn prepare_writable(files: &Files, ids: IdMap, max_bytes: u64) -> Result<(), RootfsError> {
    let path = files.writable();
    let err = |source| RootfsError::Mount {
        path: path.clone(),
        source,
    };
    detach(&path);
    std::fs::create_dir_all(&path).map_err(err)?;
    nix::mount::mount(
        Some("bismuth-writable"),
        &path,
        Some("tmpfs"),
        MsFlags::MS_NOSUID | MsFlags::MS_NODEV,
        Some(format!("size={max_bytes},mode=0755").as_str()),
    )
    .map_err(|e| err(e.into()))?;
    if let Err(e) = fill_upper(&path, ids) {
        detach(&path);
        return Err(err(e));
    }
    Ok(())
}

/// The writable layer's directories: `upper` (the container's `/`) and
/// overlayfs' `work`. The image's files belong to host root, which the
/// container's root is not, so `/etc` and the files bound over it are made
/// here, the container's root's: the runtime (as that root) can then put
/// its mount points in place. The merged `/etc` keeps the image's entries.
fn fill_upper(path: &Path, ids: IdMap) -> std::io::Result<()> {
    use std::os::unix::fs::chown;
    let root = Some(ids.host(0));
    let upper = path.join("upper");
    std::fs::create_dir(path.join("work"))?;
    std::fs::create_dir(&upper)?;
    chown(&upper, root, root)?;
    let etc = upper.join("etc");
    std::fs::create_dir(&etc)?;
    chown(&etc, root, root)?;
    for file in crate::spec::ETC_FILES {
        let file = etc.join(file);
        std::fs::File::create(&file)?;
        chown(&file, root, root)?;
    }
    Ok(())
}

/// Detaches the container's writable layer, if mounted.
pub fn unmount(files: &Files) {
    detach(&files.writable());
}

/// Lazily unmounts `path` if something is mounted there (a mount still in
/// use goes when its last user does).
fn detach(path: &Path) {
    match nix::mount::umount2(path, MntFlags::MNT_DETACH | MntFlags::UMOUNT_NOFOLLOW) {
        // Unmounted; or not a mount point, or not there at all.
        Ok(()) | Err(nix::errno::Errno::EINVAL | nix::errno::Errno::ENOENT) => {}
        Err(e) => tracing::warn!(path = %path.display(), error = %e, "cannot unmount"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn mount(typ: &str, source: &str, options: &[&str]) -> Mount {
        Mount {
            r#type: typ.into(),
            source: source.into(),
            target: String::new(),
            options: options.iter().map(|o| (*o).to_owned()).collect(),
        }
    }

    #[test]
    fn layers_come_from_a_bind_or_an_overlay_view() {
        let one = mount("bind", "/snap/1/fs", &["ro", "rbind"]);
        assert_eq!(image_layers(&[one]).unwrap(), ["/snap/1/fs"]);
        let two = mount("overlay", "overlay", &["lowerdir=/snap/2/fs:/snap/1/fs"]);
        assert_eq!(image_layers(&[two]).unwrap(), ["/snap/2/fs", "/snap/1/fs"]);
    }

    #[test]
    fn writable_or_odd_snapshots_are_refused() {
        let rw = mount(
            "overlay",
            "overlay",
            &["lowerdir=/a", "upperdir=/u", "workdir=/w"],
        );
        assert!(image_layers(&[rw]).is_err());
        assert!(image_layers(&[]).is_err());
        assert!(image_layers(&[mount("tmpfs", "x", &[])]).is_err());
    }

    #[test]
    fn the_overlay_puts_the_writable_layer_over_the_given_ones() {
        let files = Files::new(Path::new("/s"), Path::new("/r"), uuid::Uuid::nil());
        let m = overlay(&files, &["/repo-layer".into(), "/img".into()]);
        assert_eq!(m.r#type, "overlay");
        assert_eq!(m.options[0], "lowerdir=/repo-layer:/img");
        assert!(m.options[1].starts_with("upperdir=/r/containers/"));
        assert!(m.options[1].ends_with("/writable/upper"));
    }
}

//! Mounts a test left behind: bismuthd mounts each container's writable
//! layer below its run directory, and a test that kills bismuthd leaves them
//! for the harness to detach before its temporary directory goes. And what
//! a directory holds on its own disk, mounts below it not counted.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

/// Mount points at or below `dir`, deepest first (from `/proc/self/mountinfo`).
pub fn mounts_under(dir: &Path) -> Vec<PathBuf> {
    let info = std::fs::read_to_string("/proc/self/mountinfo").unwrap_or_default();
    let mut found: Vec<PathBuf> = info
        .lines()
        .filter_map(|line| line.split(' ').nth(4))
        .map(unescape)
        .filter(|p| p.starts_with(dir))
        .collect();
    found.sort_by_key(|p| std::cmp::Reverse(p.components().count()));
    found.dedup();
    found
}

/// Lazily unmounts everything at or below `dir`.
pub fn detach_mounts_under(dir: &Path) {
    for path in mounts_under(dir) {
        let _ = Command::new("umount")
            .arg("--lazy")
            .arg(&path)
            .stderr(Stdio::null())
            .status();
    }
}

/// Bytes of disk used at or below `dir` on `dir`'s own filesystem
/// (`du -sx`: a tmpfs mounted inside is not counted).
pub fn disk_use(dir: &Path) -> u64 {
    let out = Command::new("du")
        .args(["-s", "-x", "-B1"])
        .arg(dir)
        .stderr(Stdio::null())
        .output()
        .expect("du runs");
    String::from_utf8_lossy(&out.stdout)
        .split_whitespace()
        .next()
        .and_then(|n| n.parse().ok())
        .unwrap_or(0)
}

/// mountinfo writes space, tab, newline and backslash as `\ooo`.
fn unescape(field: &str) -> PathBuf {
    let mut out = String::with_capacity(field.len());
    let mut rest = field;
    while let Some(i) = rest.find('\\') {
        out.push_str(&rest[..i]);
        match u8::from_str_radix(rest.get(i + 1..i + 4).unwrap_or(""), 8) {
            Ok(b) => {
                out.push(char::from(b));
                rest = &rest[i + 4..];
            }
            Err(_) => {
                out.push('\\');
                rest = &rest[i + 1..];
            }
        }
    }
    out.push_str(rest);
    PathBuf::from(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn escaped_paths_are_read_back() {
        assert_eq!(unescape(r"/tmp/a\040b"), PathBuf::from("/tmp/a b"));
        assert_eq!(unescape("/plain"), PathBuf::from("/plain"));
    }

    #[test]
    fn the_root_is_under_itself() {
        assert!(mounts_under(Path::new("/")).contains(&PathBuf::from("/")));
        assert!(mounts_under(Path::new("/nonexistent-dir-of-no-test")).is_empty());
    }
}

//! The log writer: what containerd's shim runs beside each container to
//! take its stdout and stderr (`binary://` stdio, see [`uri`]) and write
//! them to the container's log, rotated so that at most about
//! `--log-max-bytes` of it stay on disk: `log` grows to half of that, then
//! becomes `log.1` (replacing the older one) and a new `log` begins.
//!
//! It is bismuthd's own executable run as `bismuthd log-writer MAX:PATH`
//! (the shim passes the URI's query as arguments and the pipes as fds 3
//! and 4; closing fd 5 tells the shim it is ready). It is the shim's child,
//! not bismuthd's, so it outlives bismuthd restarts like the container;
//! it ends when both pipes close, when the container's task is deleted.

use std::fs::{File, OpenOptions};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

/// The argument the shim passes first (the URI's query key).
pub const ARG: &str = "log-writer";

/// The process name a log writer runs under (`ps`, `pgrep`), so that
/// `pkill bismuthd` or `killall bismuthd` stops the daemon and not every
/// container's log writer with it: a killed writer leaves its container
/// writing into a pipe nobody reads (EPIPE, or SIGPIPE, on every line).
pub const COMM: &str = "bismuth-logs";

/// Smallest accepted cap (two halves of 32 KiB).
pub const MIN_MAX_BYTES: u64 = 64 << 10;

/// The `binary://` stdio URI that runs `exe` as the log writer for `log`,
/// keeping about `max_bytes` of it.
pub fn uri(exe: &Path, log: &Path, max_bytes: u64) -> String {
    format!(
        "binary://{}?{ARG}={max_bytes}:{}",
        encode(&exe.to_string_lossy()),
        encode(&log.to_string_lossy())
    )
}

/// This executable, which the shim runs as the log writer (after an
/// upgrade renamed a new binary over it, the new one at the same path).
pub fn exe() -> PathBuf {
    let exe = std::env::current_exe().unwrap_or_else(|_| PathBuf::from("/proc/self/exe"));
    match exe.to_str().and_then(|s| s.strip_suffix(" (deleted)")) {
        Some(path) => PathBuf::from(path),
        None => exe,
    }
}

/// Percent-encodes all but unreserved characters and `/` (the shim parses
/// the URI with Go's `net/url`).
fn encode(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || b"/-._~".contains(&b) {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// The previous, rotated-out part of `log`.
pub fn previous(log: &Path) -> PathBuf {
    let mut p = log.as_os_str().to_owned();
    p.push(".1");
    PathBuf::from(p)
}

/// `MAX:PATH` as the shim passes it.
pub fn parse(arg: &str) -> Option<(u64, PathBuf)> {
    let (max, path) = arg.split_once(':')?;
    let max: u64 = max.parse().ok()?;
    (max >= MIN_MAX_BYTES && path.starts_with('/')).then(|| (max, PathBuf::from(path)))
}

/// A log file that rotates itself at half its cap.
#[derive(Debug)]
pub struct Rotating {
    path: PathBuf,
    file: File,
    /// Bytes in the current file (as this writer knows them).
    len: u64,
    half: u64,
}

impl Rotating {
    /// Opens (appending to) the log at `path`, kept to about `max_bytes`.
    pub fn open(path: PathBuf, max_bytes: u64) -> std::io::Result<Rotating> {
        let file = open_append(&path)?;
        let len = file.metadata()?.len();
        Ok(Rotating {
            path,
            file,
            len,
            half: (max_bytes / 2).max(1),
        })
    }

    /// Appends `data`, rotating first if it would take the file past half
    /// the cap (a chunk is never split, so a file may pass it by one read).
    pub fn write(&mut self, data: &[u8]) -> std::io::Result<()> {
        if self.len > 0 && self.len + data.len() as u64 > self.half {
            self.rotate()?;
        }
        self.file.write_all(data)?;
        self.len += data.len() as u64;
        Ok(())
    }

    fn rotate(&mut self) -> std::io::Result<()> {
        std::fs::rename(&self.path, previous(&self.path))?;
        self.file = open_append(&self.path)?;
        self.len = 0;
        Ok(())
    }
}

fn open_append(path: &Path) -> std::io::Result<File> {
    OpenOptions::new().create(true).append(true).open(path)
}

/// Runs the log writer on the shim's fds; returns when both pipes closed.
pub fn run(arg: &str) -> std::process::ExitCode {
    let Some((max, path)) = parse(arg) else {
        eprintln!(
            "bismuthd log-writer: expected MAX:PATH (MAX at least {MIN_MAX_BYTES}), got {arg:?}"
        );
        return std::process::ExitCode::from(2);
    };
    // Before any thread starts: threads take their name from this one.
    let _ = std::fs::write("/proc/self/comm", COMM);
    let log = match Rotating::open(path.clone(), max) {
        Ok(l) => Arc::new(Mutex::new(l)),
        Err(e) => {
            eprintln!("bismuthd log-writer: cannot open {}: {e}", path.display());
            return std::process::ExitCode::FAILURE;
        }
    };
    // The shim starts us with the container's stdout and stderr pipes on
    // fds 3 and 4 and the ready pipe on 5; closing 5 says we are ready.
    let _ = nix::unistd::close(5);
    let readers: Vec<_> = [3, 4]
        .into_iter()
        .map(|fd| {
            let log = Arc::clone(&log);
            std::thread::spawn(move || copy(fd, &log))
        })
        .collect();
    for r in readers {
        let _ = r.join();
    }
    std::process::ExitCode::SUCCESS
}

/// Copies the pipe on `fd` into the log until it closes. A failing write
/// (a full disk) drops that chunk: the container must not block on its
/// output.
fn copy(fd: std::os::fd::RawFd, log: &Mutex<Rotating>) {
    let mut buf = vec![0u8; 64 << 10];
    loop {
        match nix::unistd::read(fd, &mut buf) {
            Ok(0) => return,
            Ok(n) => {
                if let Ok(mut log) = log.lock() {
                    if let Err(e) = log.write(&buf[..n]) {
                        eprintln!("bismuthd log-writer: {e}");
                    }
                }
            }
            Err(nix::errno::Errno::EINTR) => {}
            Err(_) => return,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keeps_at_most_the_cap_and_the_newest_bytes() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("log");
        let mut log = Rotating::open(path.clone(), 1000).unwrap();
        for i in 0..1000 {
            log.write(format!("line {i:04}\n").as_bytes()).unwrap();
        }
        let current = std::fs::read_to_string(&path).unwrap();
        let older = std::fs::read_to_string(previous(&path)).unwrap();
        assert!(current.len() <= 500 && older.len() <= 500);
        assert!(current.ends_with("line 0999\n"), "{current}");
        // The two files are consecutive: nothing lost at the seam.
        let all = older + &current;
        let first: usize = all[5..9].parse().unwrap();
        let expected: String = (first..1000).map(|i| format!("line {i:04}\n")).collect();
        assert_eq!(all, expected);
    }

    #[test]
    fn reopening_continues_the_count() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("log");
        std::fs::write(&path, vec![b'x'; 400]).unwrap();
        let mut log = Rotating::open(path.clone(), 1000).unwrap();
        log.write(&[b'y'; 200]).unwrap();
        assert_eq!(std::fs::read(&path).unwrap(), vec![b'y'; 200]);
        assert_eq!(std::fs::read(previous(&path)).unwrap(), vec![b'x'; 400]);
    }

    #[test]
    fn arguments_and_uri() {
        assert_eq!(
            parse("10485760:/var/lib/bismuth/c/log"),
            Some((10 << 20, PathBuf::from("/var/lib/bismuth/c/log")))
        );
        assert_eq!(parse("100:/x"), None, "below the minimum");
        assert_eq!(parse("x:/x"), None);
        assert_eq!(parse("1048576:relative"), None);
        assert_eq!(
            uri(
                Path::new("/usr/bin/bismuthd"),
                Path::new("/a b/log"),
                1 << 20
            ),
            "binary:///usr/bin/bismuthd?log-writer=1048576:/a%20b/log"
        );
    }
}

//! Child processes tied to the test's lifetime, and free ports.

use std::net::TcpListener;
use std::path::Path;
use std::process::Command;

/// Returns a loopback TCP port that was free a moment ago.
pub fn free_port() -> anyhow::Result<u16> {
    Ok(TcpListener::bind("127.0.0.1:0")?.local_addr()?.port())
}

/// Makes the child receive SIGKILL when the thread that spawned it exits, so a
/// test that panics or is killed never leaves a server behind.
#[allow(unsafe_code)]
pub fn die_with_parent(cmd: &mut Command) {
    use std::os::unix::process::CommandExt;
    // SAFETY: prctl is async-signal-safe and touches no memory of the parent;
    // the closure runs in the forked child before exec.
    unsafe {
        cmd.pre_exec(|| {
            if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
}

/// A /26 of container addresses for one test, derived from a port the test
/// holds (its ZooKeeper's), so tests running side by side never share one:
/// they share the host's routing table. `BISMUTH_TEST_NET` overrides it (a
/// benchmark with more than 16 containers needs a larger range).
pub fn container_net(port: u16) -> String {
    if let Ok(net) = std::env::var("BISMUTH_TEST_NET") {
        return net;
    }
    format!(
        "10.{}.{}.{}/26",
        128 + (port >> 10),
        (port >> 2) & 0xff,
        (port & 3) << 6
    )
}

/// The first host uid of a test's containers (bismuthd's `--uid-base`),
/// from the same port as its [`container_net`], so the user namespaces of
/// tests running side by side never share host ids either: a /26 holds 16
/// containers of 65536 ids each. 2^30 with `BISMUTH_TEST_NET` (a larger
/// range needs the room).
pub fn uid_base(port: u16) -> u32 {
    if std::env::var_os("BISMUTH_TEST_NET").is_some() {
        return 1 << 30;
    }
    (1 << 31) + u32::from(port % 2047) * (16 << 16)
}

/// SIGKILLs every process whose command line mentions `needle`: containerd's
/// shims (started with `-address SOCKET`), or what a daemon under test left
/// (svcproviders are started with a store inside the test's directory).
pub fn kill_processes_mentioning(needle: &Path) {
    let needle = needle.to_string_lossy().into_owned();
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return;
    };
    for e in entries.flatten() {
        let Some(pid) = e.file_name().to_str().and_then(|s| s.parse::<i32>().ok()) else {
            continue;
        };
        let cmdline = std::fs::read(e.path().join("cmdline")).unwrap_or_default();
        if String::from_utf8_lossy(&cmdline).contains(&needle) {
            let _ = Command::new("kill").args(["-9", &pid.to_string()]).status();
        }
    }
}

/// Pids of the live processes whose command line mentions `needle` (zombies excluded).
pub fn processes_mentioning(needle: &Path) -> Vec<u32> {
    let needle = needle.to_string_lossy().into_owned();
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    entries
        .flatten()
        .filter_map(|e| {
            let pid = e.file_name().to_str()?.parse::<u32>().ok()?;
            let cmdline = std::fs::read(e.path().join("cmdline")).ok()?;
            let stat = std::fs::read_to_string(e.path().join("stat")).ok()?;
            let zombie = stat
                .rsplit_once(')')
                .is_some_and(|(_, r)| r.trim_start().starts_with('Z'));
            (!zombie && String::from_utf8_lossy(&cmdline).contains(&needle)).then_some(pid)
        })
        .collect()
}

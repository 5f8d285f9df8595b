//! The OCI runtime spec of a function's container: the function's command as
//! uid 1000 with no new privileges and a small capability bound, cgroup
//! limits from its definition, its own network namespace, runc's default
//! masked and read-only paths, a seccomp filter refusing the syscalls a
//! function has no use for, and the host files bismuthd prepared bound in.

use std::path::Path;

use serde_json::{json, Value};

/// The unprivileged user every function runs as.
pub const UID: u32 = 1000;
pub const GID: u32 = 1000;

/// Where the runner binary and its socket directory appear inside.
pub const RUNNER_PATH: &str = "/.bismuth/runner";
pub const RUNNER_DIR: &str = "/.bismuth/run";
pub const RUNNER_SOCKET: &str = "/.bismuth/run/runner.sock";

/// The type URL containerd expects on a container's spec.
pub const SPEC_TYPE_URL: &str = "types.containerd.io/opencontainers/runtime-spec/1/Spec";

/// CPU period for the quota, in microseconds.
const CPU_PERIOD: u64 = 100_000;

/// What varies between containers.
#[derive(Debug)]
pub struct SpecInput<'a> {
    pub args: Vec<String>,
    pub env: Vec<String>,
    pub cwd: &'a str,
    pub hostname: &'a str,
    pub cpu: f64,
    pub memory: u64,
    pub pids_limit: u32,
    pub cgroup: String,
    pub netns: &'a Path,
    /// Host directory holding `hosts`, `hostname`, `resolv.conf`.
    pub etc_dir: &'a Path,
    /// Host directory cloned from the function's repository, if any.
    pub repo_dir: Option<&'a Path>,
    /// The runner binary, PID 1 of every container.
    pub runner: &'a Path,
    /// The runner's socket directory (Executable mode).
    pub runner_dir: Option<&'a Path>,
}

/// Capabilities the process may ever hold. It runs as uid 1000 with no new
/// privileges, so it holds none of them in practice; the bound makes sure a
/// setuid binary or a bug cannot bring more.
const CAPABILITIES: &[&str] = &[
    "CAP_CHOWN",
    "CAP_DAC_OVERRIDE",
    "CAP_FOWNER",
    "CAP_FSETID",
    "CAP_KILL",
    "CAP_NET_BIND_SERVICE",
    "CAP_SETGID",
    "CAP_SETUID",
];

/// runc's defaults: kernel interfaces a container must not read.
const MASKED_PATHS: &[&str] = &[
    "/proc/acpi",
    "/proc/asound",
    "/proc/kcore",
    "/proc/keys",
    "/proc/latency_stats",
    "/proc/timer_list",
    "/proc/timer_stats",
    "/proc/sched_debug",
    "/proc/scsi",
    "/sys/firmware",
    "/sys/devices/virtual/powercap",
];

/// runc's defaults: kernel interfaces a container may read but not write.
const READONLY_PATHS: &[&str] = &[
    "/proc/bus",
    "/proc/fs",
    "/proc/irq",
    "/proc/sys",
    "/proc/sysrq-trigger",
];

/// Syscalls refused with EPERM: those Docker's default profile leaves out
/// (mounting, namespaces, kernel modules and keyrings, tracing other
/// processes, clocks, BPF, reboot …). Everything else is allowed.
const DENIED_SYSCALLS: &[&str] = &[
    "acct",
    "add_key",
    "bpf",
    "clock_adjtime",
    "clock_settime",
    "create_module",
    "delete_module",
    "finit_module",
    "fsconfig",
    "fsmount",
    "fsopen",
    "fspick",
    "get_kernel_syms",
    "get_mempolicy",
    "init_module",
    "ioperm",
    "iopl",
    "kcmp",
    "kexec_file_load",
    "kexec_load",
    "keyctl",
    "lookup_dcookie",
    "mbind",
    "mount",
    "mount_setattr",
    "move_mount",
    "move_pages",
    "name_to_handle_at",
    "nfsservctl",
    "open_by_handle_at",
    "open_tree",
    "perf_event_open",
    "personality",
    "pivot_root",
    "process_vm_readv",
    "process_vm_writev",
    "ptrace",
    "query_module",
    "quotactl",
    "reboot",
    "request_key",
    "set_mempolicy",
    "setns",
    "settimeofday",
    "stime",
    "swapoff",
    "swapon",
    "sysfs",
    "syslog",
    "umount",
    "umount2",
    "unshare",
    "uselib",
    "userfaultfd",
    "ustat",
    "vhangup",
    "vm86",
    "vm86old",
];

/// Builds the spec as JSON (containerd stores it as given).
pub fn build(input: &SpecInput<'_>) -> Value {
    let mut mounts = vec![
        json!({"destination": "/proc", "type": "proc", "source": "proc",
               "options": ["nosuid", "noexec", "nodev"]}),
        json!({"destination": "/dev", "type": "tmpfs", "source": "tmpfs",
               "options": ["nosuid", "strictatime", "mode=755", "size=65536k"]}),
        json!({"destination": "/dev/pts", "type": "devpts", "source": "devpts",
               "options": ["nosuid", "noexec", "newinstance", "ptmxmode=0666", "mode=0620", "gid=5"]}),
        json!({"destination": "/dev/shm", "type": "tmpfs", "source": "shm",
               "options": ["nosuid", "noexec", "nodev", "mode=1777", "size=65536k"]}),
        json!({"destination": "/dev/mqueue", "type": "mqueue", "source": "mqueue",
               "options": ["nosuid", "noexec", "nodev"]}),
        json!({"destination": "/sys", "type": "sysfs", "source": "sysfs",
               "options": ["nosuid", "noexec", "nodev", "ro"]}),
        json!({"destination": "/tmp", "type": "tmpfs", "source": "tmpfs",
               "options": ["nosuid", "nodev", "mode=1777", "size=65536k"]}),
    ];
    for file in ["hosts", "hostname", "resolv.conf"] {
        mounts.push(bind(
            &input.etc_dir.join(file),
            &format!("/etc/{file}"),
            true,
        ));
    }
    if let Some(repo) = input.repo_dir {
        mounts.push(bind(repo, "/repo", false));
    }
    mounts.push(bind(input.runner, RUNNER_PATH, true));
    if let Some(dir) = input.runner_dir {
        mounts.push(bind(dir, RUNNER_DIR, false));
    }

    let quota = (input.cpu * CPU_PERIOD as f64).round().max(1000.0) as i64;
    let memory = i64::try_from(input.memory).unwrap_or(i64::MAX);
    json!({
        "ociVersion": "1.0.2",
        "process": {
            "terminal": false,
            "user": {"uid": UID, "gid": GID, "additionalGids": [GID]},
            "args": input.args,
            "env": input.env,
            "cwd": input.cwd,
            "capabilities": {
                "bounding": CAPABILITIES,
                "effective": [],
                "permitted": [],
                "inheritable": [],
                "ambient": [],
            },
            "rlimits": [{"type": "RLIMIT_NOFILE", "hard": 4096, "soft": 4096}],
            "noNewPrivileges": true,
        },
        "root": {"path": "rootfs", "readonly": false},
        "hostname": input.hostname,
        "mounts": mounts,
        "linux": {
            "cgroupsPath": input.cgroup,
            "resources": {
                "devices": [{"allow": false, "access": "rwm"}],
                "memory": {"limit": memory, "swap": memory},
                "cpu": {"quota": quota, "period": CPU_PERIOD},
                "pids": {"limit": input.pids_limit},
            },
            "namespaces": [
                {"type": "pid"},
                {"type": "ipc"},
                {"type": "uts"},
                {"type": "mount"},
                {"type": "network", "path": input.netns},
            ],
            "maskedPaths": MASKED_PATHS,
            "readonlyPaths": READONLY_PATHS,
            "seccomp": {
                "defaultAction": "SCMP_ACT_ALLOW",
                "architectures": ["SCMP_ARCH_X86_64", "SCMP_ARCH_X86", "SCMP_ARCH_X32", "SCMP_ARCH_AARCH64"],
                "syscalls": [{"names": DENIED_SYSCALLS, "action": "SCMP_ACT_ERRNO", "errnoRet": 1}],
            },
        },
    })
}

fn bind(source: &Path, destination: &str, readonly: bool) -> Value {
    let mut options = vec!["rbind", "nosuid", "nodev"];
    options.push(if readonly { "ro" } else { "rw" });
    json!({"destination": destination, "type": "bind", "source": source, "options": options})
}

#[cfg(test)]
mod tests {
    use super::*;

    fn input<'a>(netns: &'a Path, etc: &'a Path) -> SpecInput<'a> {
        SpecInput {
            args: vec!["/bin/sh".into()],
            env: vec!["PATH=/bin".into()],
            cwd: "/",
            hostname: "bismuth-1",
            cpu: 0.5,
            memory: 64 << 20,
            pids_limit: 100,
            cgroup: "/bismuth/x".into(),
            netns,
            etc_dir: etc,
            repo_dir: None,
            runner: Path::new("/usr/lib/bismuth/bismuth-runner"),
            runner_dir: None,
        }
    }

    #[test]
    fn limits_and_identity_come_from_the_input() {
        let netns = Path::new("/run/netns/bz-x");
        let etc = Path::new("/var/lib/bismuth/x/etc");
        let spec = build(&input(netns, etc));
        assert_eq!(spec["process"]["user"]["uid"], 1000);
        assert_eq!(spec["process"]["noNewPrivileges"], true);
        assert_eq!(spec["process"]["capabilities"]["effective"], json!([]));
        assert_eq!(spec["linux"]["resources"]["cpu"]["quota"], 50_000);
        assert_eq!(spec["linux"]["resources"]["memory"]["limit"], 64 << 20);
        assert_eq!(spec["linux"]["resources"]["pids"]["limit"], 100);
        let ns = &spec["linux"]["namespaces"];
        assert!(ns
            .as_array()
            .unwrap()
            .iter()
            .any(|n| n["type"] == "network" && n["path"] == "/run/netns/bz-x"));
        let mounts = spec["mounts"].as_array().unwrap();
        assert!(mounts
            .iter()
            .any(|m| m["destination"] == "/etc/hosts"
                && m["source"] == "/var/lib/bismuth/x/etc/hosts"));
        assert!(!mounts.iter().any(|m| m["destination"] == "/repo"));
    }

    #[test]
    fn dangerous_syscalls_are_refused() {
        let spec = build(&input(Path::new("/n"), Path::new("/e")));
        let names = spec["linux"]["seccomp"]["syscalls"][0]["names"]
            .as_array()
            .unwrap()
            .clone();
        for s in ["mount", "unshare", "setns", "ptrace", "bpf", "keyctl"] {
            assert!(names.contains(&json!(s)), "{s} is not denied");
        }
    }

    #[test]
    fn tiny_cpu_shares_still_get_a_usable_quota() {
        let mut i = input(Path::new("/n"), Path::new("/e"));
        i.cpu = 0.001;
        assert_eq!(build(&i)["linux"]["resources"]["cpu"]["quota"], 1000);
    }
}

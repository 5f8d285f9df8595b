//! The OCI runtime spec of a function's container: the function's command as
//! uid 1000 with no new privileges and a small capability bound, cgroup
//! limits from its definition, its own network namespace, runc's default
//! masked and read-only paths, an allowlist seccomp profile (`seccomp`), a
//! user namespace of its own (`userns`), and the host files bismuthd
//! prepared bound in.

use std::path::{Path, PathBuf};

use oci_spec::runtime::{
    Capabilities, Capability, LinuxBuilder, LinuxCapabilitiesBuilder, LinuxCpuBuilder,
    LinuxDeviceCgroupBuilder, LinuxIdMappingBuilder, LinuxMemoryBuilder, LinuxNamespaceBuilder,
    LinuxNamespaceType, LinuxPidsBuilder, LinuxResourcesBuilder, Mount, MountBuilder,
    PosixRlimitBuilder, PosixRlimitType, ProcessBuilder, RootBuilder, Spec, SpecBuilder,
    UserBuilder,
};

/// The unprivileged user every function runs as.
pub const UID: u32 = 1000;
pub const GID: u32 = 1000;

/// Where the runner binary and its socket directory appear inside.
pub const RUNNER_PATH: &str = "/.bismuth/runner";
pub const RUNNER_DIR: &str = "/.bismuth/run";
pub const RUNNER_SOCKET: &str = "/.bismuth/run/runner.sock";

/// The files of `/etc` bismuthd writes for each container (bound in read-only).
pub const ETC_FILES: [&str; 3] = ["hosts", "hostname", "resolv.conf"];

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
    /// The container's ids on the host: with a mapping, a user namespace.
    pub ids: crate::userns::IdMap,
    /// The runner binary, PID 1 of every container.
    pub runner: &'a Path,
    /// The runner's socket directory (Executable mode).
    pub runner_dir: Option<&'a Path>,
}

/// Capabilities the process may ever hold. It runs as uid 1000 with no new
/// privileges, so it holds none of them in practice; the bound makes sure a
/// setuid binary or a bug cannot bring more.
const CAPABILITIES: [Capability; 8] = [
    Capability::Chown,
    Capability::DacOverride,
    Capability::Fowner,
    Capability::Fsetid,
    Capability::Kill,
    Capability::NetBindService,
    Capability::Setgid,
    Capability::Setuid,
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

/// Why a spec could not be built (a value the OCI types refuse).
#[derive(Debug, thiserror::Error)]
#[error("cannot build the OCI spec: {0}")]
pub struct SpecError(#[from] oci_spec::OciSpecError);

/// Builds the spec as typed values: a misspelt field does not compile, so
/// no security setting can be dropped silently.
pub fn build(input: &SpecInput<'_>) -> Result<Spec, SpecError> {
    let mut mounts = vec![
        mount("/proc", "proc", "proc", &["nosuid", "noexec", "nodev"])?,
        mount(
            "/dev",
            "tmpfs",
            "tmpfs",
            &["nosuid", "strictatime", "mode=755", "size=65536k"],
        )?,
        mount(
            "/dev/pts",
            "devpts",
            "devpts",
            &[
                "nosuid",
                "noexec",
                "newinstance",
                "ptmxmode=0666",
                "mode=0620",
                "gid=5",
            ],
        )?,
        mount(
            "/dev/shm",
            "tmpfs",
            "shm",
            &["nosuid", "noexec", "nodev", "mode=1777", "size=65536k"],
        )?,
        mount(
            "/dev/mqueue",
            "mqueue",
            "mqueue",
            &["nosuid", "noexec", "nodev"],
        )?,
        // sysfs cannot be mounted from a user namespace that does not own
        // the network namespace (bismuthd's): an empty, read-only /sys then.
        if input.ids.is_mapped() {
            mount(
                "/sys",
                "tmpfs",
                "tmpfs",
                &["nosuid", "noexec", "nodev", "ro", "size=4k", "mode=555"],
            )?
        } else {
            mount(
                "/sys",
                "sysfs",
                "sysfs",
                &["nosuid", "noexec", "nodev", "ro"],
            )?
        },
        mount(
            "/tmp",
            "tmpfs",
            "tmpfs",
            &["nosuid", "nodev", "mode=1777", "size=65536k"],
        )?,
    ];
    for file in ETC_FILES {
        mounts.push(bind(
            &input.etc_dir.join(file),
            &format!("/etc/{file}"),
            true,
        )?);
    }
    mounts.push(bind(input.runner, RUNNER_PATH, true)?);
    if let Some(dir) = input.runner_dir {
        mounts.push(bind(dir, RUNNER_DIR, false)?);
    }

    let bounding: Capabilities = CAPABILITIES.into_iter().collect();
    let process = ProcessBuilder::default()
        .terminal(false)
        .user(
            UserBuilder::default()
                .uid(UID)
                .gid(GID)
                .additional_gids(vec![GID])
                .build()?,
        )
        .args(input.args.clone())
        .env(input.env.clone())
        .cwd(input.cwd)
        .capabilities(
            LinuxCapabilitiesBuilder::default()
                .bounding(bounding)
                .effective(Capabilities::new())
                .permitted(Capabilities::new())
                .inheritable(Capabilities::new())
                .ambient(Capabilities::new())
                .build()?,
        )
        .rlimits(vec![PosixRlimitBuilder::default()
            .typ(PosixRlimitType::RlimitNofile)
            .hard(4096u64)
            .soft(4096u64)
            .build()?])
        .no_new_privileges(true)
        .build()?;

    let quota = (input.cpu * CPU_PERIOD as f64).round().max(1000.0) as i64;
    let memory = i64::try_from(input.memory).unwrap_or(i64::MAX);
    let resources = LinuxResourcesBuilder::default()
        .devices(vec![LinuxDeviceCgroupBuilder::default()
            .allow(false)
            .access("rwm")
            .build()?])
        .memory(
            LinuxMemoryBuilder::default()
                .limit(memory)
                .swap(memory)
                .build()?,
        )
        .cpu(
            LinuxCpuBuilder::default()
                .quota(quota)
                .period(CPU_PERIOD)
                .build()?,
        )
        .pids(
            LinuxPidsBuilder::default()
                .limit(i64::from(input.pids_limit))
                .build()?,
        )
        .build()?;
    let namespace = |typ| LinuxNamespaceBuilder::default().typ(typ).build();
    let mut namespaces = vec![
        namespace(LinuxNamespaceType::Pid)?,
        namespace(LinuxNamespaceType::Ipc)?,
        namespace(LinuxNamespaceType::Uts)?,
        namespace(LinuxNamespaceType::Mount)?,
        LinuxNamespaceBuilder::default()
            .typ(LinuxNamespaceType::Network)
            .path(input.netns)
            .build()?,
    ];
    let mut linux = LinuxBuilder::default();
    if input.ids.is_mapped() {
        namespaces.push(namespace(LinuxNamespaceType::User)?);
        let ids = vec![LinuxIdMappingBuilder::default()
            .container_id(0u32)
            .host_id(input.ids.host(0))
            .size(crate::userns::IDS_PER_CONTAINER)
            .build()?];
        linux = linux.uid_mappings(ids.clone()).gid_mappings(ids);
    }
    let seccomp = crate::seccomp::profile()?;
    let linux = linux
        .cgroups_path(PathBuf::from(&input.cgroup))
        .resources(resources)
        .namespaces(namespaces)
        .masked_paths(
            MASKED_PATHS
                .iter()
                .map(|p| (*p).to_owned())
                .collect::<Vec<_>>(),
        )
        .readonly_paths(
            READONLY_PATHS
                .iter()
                .map(|p| (*p).to_owned())
                .collect::<Vec<_>>(),
        )
        .seccomp(seccomp)
        .build()?;
    Ok(SpecBuilder::default()
        .version("1.0.2")
        .process(process)
        .root(
            RootBuilder::default()
                .path("rootfs")
                .readonly(false)
                .build()?,
        )
        .hostname(input.hostname)
        .mounts(mounts)
        .linux(linux)
        .build()?)
}

fn mount(destination: &str, typ: &str, source: &str, options: &[&str]) -> Result<Mount, SpecError> {
    Ok(MountBuilder::default()
        .destination(destination)
        .typ(typ)
        .source(source)
        .options(options.iter().map(|o| (*o).to_owned()).collect::<Vec<_>>())
        .build()?)
}

fn bind(source: &Path, destination: &str, readonly: bool) -> Result<Mount, SpecError> {
    let mode = if readonly { "ro" } else { "rw" };
    mount(
        destination,
        "bind",
        &source.to_string_lossy(),
        &["rbind", "nosuid", "nodev", mode],
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

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
            ids: crate::userns::IdMap::for_slot(1 << 30, 2),
            runner: Path::new("/usr/lib/bismuth/bismuth-runner"),
            runner_dir: None,
        }
    }

    fn json_of(input: &SpecInput<'_>) -> serde_json::Value {
        serde_json::to_value(build(input).unwrap()).unwrap()
    }

    #[test]
    fn limits_and_identity_come_from_the_input() {
        let netns = Path::new("/run/netns/bz-x");
        let etc = Path::new("/var/lib/bismuth/x/etc");
        let spec = json_of(&input(netns, etc));
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
    fn a_user_namespace_maps_the_containers_ids_to_its_block() {
        let spec = json_of(&input(Path::new("/n"), Path::new("/e")));
        let ns = spec["linux"]["namespaces"].as_array().unwrap();
        assert!(ns.iter().any(|n| n["type"] == "user"));
        let map = json!([{"containerID": 0, "hostID": (1u32 << 30) + 2 * 65536, "size": 65536}]);
        assert_eq!(spec["linux"]["uidMappings"], map);
        assert_eq!(spec["linux"]["gidMappings"], map);
        let sys = spec["mounts"]
            .as_array()
            .unwrap()
            .iter()
            .find(|m| m["destination"] == "/sys")
            .unwrap()
            .clone();
        assert_eq!(sys["type"], "tmpfs");

        let mut host = input(Path::new("/n"), Path::new("/e"));
        host.ids = crate::userns::IdMap::HOST;
        let spec = json_of(&host);
        let ns = spec["linux"]["namespaces"].as_array().unwrap();
        assert!(!ns.iter().any(|n| n["type"] == "user"));
        assert!(spec["linux"].get("uidMappings").is_none());
    }

    #[test]
    fn dangerous_syscalls_are_refused() {
        let spec = json_of(&input(Path::new("/n"), Path::new("/e")));
        let seccomp = &spec["linux"]["seccomp"];
        assert_eq!(seccomp["defaultAction"], "SCMP_ACT_ERRNO");
        let allowed: Vec<&serde_json::Value> = seccomp["syscalls"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|s| s["action"] == "SCMP_ACT_ALLOW" && s.get("args").is_none())
            .flat_map(|s| s["names"].as_array().unwrap())
            .collect();
        assert!(allowed.contains(&&json!("read")));
        for s in ["mount", "unshare", "setns", "ptrace", "bpf", "keyctl"] {
            assert!(!allowed.contains(&&json!(s)), "{s} is allowed");
        }
    }

    #[test]
    fn the_spec_holds_every_hardening_setting() {
        let spec = json_of(&input(Path::new("/n"), Path::new("/e")));
        assert_eq!(spec["ociVersion"], "1.0.2");
        assert_eq!(spec["linux"]["seccomp"]["defaultAction"], "SCMP_ACT_ERRNO");
        assert_eq!(
            spec["linux"]["maskedPaths"].as_array().unwrap().len(),
            MASKED_PATHS.len()
        );
        assert_eq!(
            spec["linux"]["readonlyPaths"].as_array().unwrap().len(),
            READONLY_PATHS.len()
        );
        assert_eq!(spec["linux"]["resources"]["devices"][0]["allow"], false);
        assert_eq!(spec["linux"]["resources"]["memory"]["swap"], 64 << 20);
        assert_eq!(spec["process"]["rlimits"][0]["type"], "RLIMIT_NOFILE");
        let bounding = spec["process"]["capabilities"]["bounding"]
            .as_array()
            .unwrap();
        assert_eq!(bounding.len(), CAPABILITIES.len());
        assert_eq!(spec["process"]["capabilities"]["permitted"], json!([]));
        let runner = spec["mounts"]
            .as_array()
            .unwrap()
            .iter()
            .find(|m| m["destination"] == RUNNER_PATH)
            .unwrap()
            .clone();
        assert!(runner["options"].as_array().unwrap().contains(&json!("ro")));
    }

    #[test]
    fn tiny_cpu_shares_still_get_a_usable_quota() {
        let mut i = input(Path::new("/n"), Path::new("/e"));
        i.cpu = 0.001;
        assert_eq!(json_of(&i)["linux"]["resources"]["cpu"]["quota"], 1000);
    }
}

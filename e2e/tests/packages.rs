//! The Debian packages as an operator installs them. Built by
//! `deploy/debian/build-debs.sh` (test.sh runs it before the tests), they
//! are installed with `dpkg -i`, their units pass `systemd-analyze verify`,
//! and each installed daemon is started the way its unit starts it: the
//! unit's `EnvironmentFile=`s, its `ExecStart=` with `$VAR`s expanded, as
//! its `User=`. The packaged configuration is edited only where an
//! operator edits it (ZooKeeper's address, ports, this test's containerd
//! and directories). Then the installed bismuthctl deploys a function and
//! invokes it through the installed bismuthfe. Everything is purged after.

#![allow(clippy::unwrap_used)]

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use bismuth_testkit::{
    container_net, die_with_parent, eventually, free_port, http, images, uid_base,
};
use bismuth_testkit::{Containerd, ZooKeeper};

const PACKAGES: &[&str] = &[
    "bismuthctl",
    "bismuth-fe",
    "bismuth-api",
    "bismuth-node",
    "bismuth-common",
];
const UNITS: &[&str] = &[
    "bismuthd.service",
    "bismuth-api.service",
    "bismuthfe.service",
];

fn workspace() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .unwrap()
        .to_owned()
}

fn installed(package: &str) -> bool {
    Command::new("dpkg-query")
        .args(["-W", "-f=${Status}", package])
        .output()
        .is_ok_and(|o| String::from_utf8_lossy(&o.stdout).contains("install ok installed"))
}

fn run(cmd: &mut Command) -> String {
    let out = cmd.output().unwrap();
    assert!(
        out.status.success(),
        "{cmd:?} failed: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// `KEY=VALUE` lines of an environment file (comments and blanks skipped;
/// later lines win, as systemd reads them).
fn env_file(path: &str) -> Vec<(String, String)> {
    let optional = path.starts_with('-');
    let path = path.trim_start_matches('-');
    let text = match std::fs::read_to_string(path) {
        Ok(t) => t,
        Err(_) if optional => return Vec::new(),
        Err(e) => panic!("EnvironmentFile {path}: {e}"),
    };
    text.lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .filter_map(|l| l.split_once('='))
        .map(|(k, v)| (k.trim().to_owned(), v.trim().trim_matches('"').to_owned()))
        .collect()
}

/// How the installed unit starts its daemon: environment, argv, user.
struct Unit {
    env: HashMap<String, String>,
    argv: Vec<String>,
    user: Option<String>,
}

fn unit(name: &str) -> Unit {
    let text = std::fs::read_to_string(format!("/lib/systemd/system/{name}")).unwrap();
    let mut env = HashMap::new();
    let (mut exec, mut user) = (None, None);
    for line in text.lines() {
        if let Some(f) = line.strip_prefix("EnvironmentFile=") {
            env.extend(env_file(f));
        } else if let Some(e) = line.strip_prefix("ExecStart=") {
            exec = Some(e.to_owned());
        } else if let Some(u) = line.strip_prefix("User=") {
            user = Some(u.to_owned());
        }
    }
    // systemd: "$VAR" is split into words at whitespace, "${VAR}" is one.
    let argv = exec
        .unwrap()
        .split_whitespace()
        .flat_map(|w| match w.strip_prefix('$') {
            Some(var) if !var.starts_with('{') => env
                .get(var)
                .map(|v| v.split_whitespace().map(str::to_owned).collect())
                .unwrap_or_default(),
            _ => vec![w.to_owned()],
        })
        .collect();
    Unit { env, argv, user }
}

/// Starts the installed unit's daemon as systemd would, its output in `log`.
fn start(name: &str, log: &Path) -> Child {
    let u = unit(name);
    let mut cmd = match &u.user {
        Some(user) => {
            let mut c = Command::new("setpriv");
            c.args([
                &format!("--reuid={user}"),
                &format!("--regid={user}"),
                "--init-groups",
                "--",
            ]);
            c.args(&u.argv);
            c
        }
        None => {
            let mut c = Command::new(&u.argv[0]);
            c.args(&u.argv[1..]);
            c
        }
    };
    let file = std::fs::File::create(log).unwrap();
    cmd.env_clear()
        .env("PATH", "/usr/sbin:/usr/bin:/sbin:/bin")
        .envs(&u.env)
        .env("RUST_LOG", "info")
        .stdin(Stdio::null())
        .stdout(file.try_clone().unwrap())
        .stderr(file);
    die_with_parent(&mut cmd);
    cmd.spawn().unwrap()
}

/// Appends an operator's settings to an installed configuration file.
fn configure(file: &str, lines: &[String]) {
    use std::io::Write;
    let mut f = std::fs::OpenOptions::new().append(true).open(file).unwrap();
    writeln!(f, "\n# set by the packages test").unwrap();
    for l in lines {
        writeln!(f, "{l}").unwrap();
    }
}

/// Purges the packages and stops what the test started, however it ends.
struct Installed {
    daemons: Vec<(String, Child, PathBuf)>,
    cleanup: Vec<Box<dyn FnOnce()>>,
}

impl Drop for Installed {
    fn drop(&mut self) {
        if std::thread::panicking() {
            for (name, _, log) in &self.daemons {
                let text = std::fs::read_to_string(log).unwrap_or_default();
                let tail: Vec<&str> = text.lines().rev().take(30).collect();
                eprintln!("--- {name} ---");
                for l in tail.iter().rev() {
                    eprintln!("{l}");
                }
            }
        }
        for (_, child, _) in self.daemons.iter_mut().rev() {
            let _ = child.kill();
            let _ = child.wait();
        }
        for f in self.cleanup.drain(..) {
            f();
        }
        let _ = Command::new("dpkg")
            .arg("--purge")
            .args(PACKAGES)
            .stdout(Stdio::null())
            .status();
    }
}

#[tokio::test]
async fn packages_install_verify_and_serve_a_function() {
    for p in PACKAGES {
        assert!(
            !installed(p),
            "{p} is already installed on this machine; this test installs and purges the packages, so remove them first (dpkg --purge {})",
            PACKAGES.join(" ")
        );
    }
    let dir = workspace().join("target/debian");
    let mut debs: Vec<PathBuf> = std::fs::read_dir(&dir)
        .map(|d| d.filter_map(|e| e.ok().map(|e| e.path())).collect())
        .unwrap_or_default();
    debs.retain(|p| p.extension().is_some_and(|e| e == "deb"));
    assert_eq!(
        debs.len(),
        PACKAGES.len(),
        "{} should hold the five packages: run PROFILE=debug deploy/debian/build-debs.sh (test.sh does)",
        dir.display()
    );

    let zookeeper = ZooKeeper::start().unwrap();
    let containerd = Containerd::start().unwrap();
    let tmp = tempfile::Builder::new()
        .prefix("bismuth-pkg-")
        .tempdir()
        .unwrap();
    let mut guard = Installed {
        daemons: Vec::new(),
        cleanup: Vec::new(),
    };

    // Installed with dpkg, the files where the guide says.
    run(Command::new("dpkg").arg("-i").args(&debs));
    for p in PACKAGES {
        assert!(installed(p), "{p}");
    }
    for f in [
        "/usr/bin/bismuthd",
        "/usr/bin/bismuth-api",
        "/usr/bin/bismuthfe",
        "/usr/bin/bismuthctl",
        "/usr/lib/bismuth/svcprovider",
        "/usr/lib/bismuth/bismuth-runner",
        "/etc/bismuth/bismuth.env",
        "/usr/share/doc/bismuth-common/OPERATORS.md",
    ] {
        assert!(Path::new(f).exists(), "{f} is not installed");
    }
    run(Command::new("getent").args(["passwd", "bismuth"]));
    let conffiles = run(Command::new("dpkg-query").args(["-W", "-f=${Conffiles}", "bismuth-node"]));
    assert!(
        conffiles.contains("/etc/bismuth/bismuthd.env"),
        "{conffiles}"
    );

    // The units are valid.
    let units: Vec<String> = UNITS
        .iter()
        .map(|u| format!("/lib/systemd/system/{u}"))
        .collect();
    let out = Command::new("systemd-analyze")
        .arg("verify")
        .args(&units)
        .output()
        .unwrap();
    let says = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success() && !says.contains("bismuth"),
        "systemd-analyze verify: {says}"
    );

    // The operator's edits: where ZooKeeper is, ports, this test's containerd.
    let (port_d, port_a, port_f) = (
        free_port().unwrap(),
        free_port().unwrap(),
        free_port().unwrap(),
    );
    let zk = zookeeper.connect_string();
    configure(
        "/etc/bismuth/bismuth.env",
        &[
            format!("BISMUTH_ZOOKEEPER={zk}"),
            "BISMUTH_ZOOKEEPER_ENV=pkg".into(),
            format!("BISMUTH_BACKEND_PORT={port_d}"),
            format!(
                "BISMUTH_SVC_STORE=sqlite:{}",
                tmp.path().join("svc").display()
            ),
        ],
    );
    configure(
        "/etc/bismuth/bismuthd.env",
        &[
            format!("BISMUTH_LISTEN=127.0.0.1:{port_d}"),
            format!("BISMUTH_CONTAINERD={}", containerd.socket().display()),
            format!(
                "BISMUTHD_OPTS=--state-dir {0}/state --run-dir {0}/run --container-net {1} --uid-base {2}",
                tmp.path().display(),
                container_net(zookeeper.port()),
                uid_base(zookeeper.port())
            ),
        ],
    );
    configure(
        "/etc/bismuth/api.env",
        &[format!("BISMUTH_API_LISTEN=127.0.0.1:{port_a}")],
    );
    configure(
        "/etc/bismuth/bismuthfe.env",
        &[format!("BISMUTH_FE_LISTEN=127.0.0.1:{port_f}")],
    );
    let instance = bismuthd::config::instance_id(&containerd.socket(), "bismuth");
    let dir = tmp.path().to_owned();
    guard.cleanup.push(Box::new(move || {
        bismuth_testkit::kill_processes_mentioning(Path::new("/usr/lib/bismuth/svcprovider"));
        bismuth_e2e::remove_host_objects(&instance, &dir);
    }));

    // The installed CLI sets up the environment (reading the same files).
    let common: Vec<(String, String)> = env_file("/etc/bismuth/bismuth.env");
    let ctl = |args: &[&str]| {
        let mut c = Command::new("/usr/bin/bismuthctl");
        c.args(args)
            .envs(common.iter().map(|(k, v)| (k.as_str(), v.as_str())))
            .env("BISMUTH_API", format!("http://127.0.0.1:{port_a}"))
            .env("BISMUTH_FE", format!("http://127.0.0.1:{port_f}"));
        run(&mut c)
    };
    ctl(&["bootstrap"]);
    ctl(&["provision", "127.0.0.1"]);
    let busybox = tmp.path().join("busybox.tar");
    images::write_busybox_archive(&busybox).unwrap();
    ctl(&[
        "image",
        "import",
        &busybox.to_string_lossy(),
        "--containerd",
        &containerd.socket().to_string_lossy(),
    ]);

    // Each daemon as its unit starts it.
    for (unit, port) in [
        ("bismuthd.service", port_d),
        ("bismuth-api.service", port_a),
        ("bismuthfe.service", port_f),
    ] {
        let log = tmp.path().join(format!("{unit}.log"));
        guard.daemons.push((unit.into(), start(unit, &log), log));
        let url = format!("http://127.0.0.1:{port}/healthz");
        eventually(
            &format!("{unit} to answer"),
            Duration::from_secs(30),
            || async { http::get(&url).await.ok().filter(|r| r.status == 200) },
        )
        .await;
    }
    // The api and bismuthfe run as the bismuth user, bismuthd as root.
    let users =
        run(Command::new("ps").args(["-o", "user=,args=", "-C", "bismuth-api,bismuthfe,bismuthd"]));
    assert!(
        users
            .lines()
            .any(|l| l.starts_with("bismuth ") && l.contains("/usr/bin/bismuth-api")),
        "{users}"
    );
    assert!(
        users
            .lines()
            .any(|l| l.starts_with("bismuth ") && l.contains("/usr/bin/bismuthfe")),
        "{users}"
    );
    assert!(
        users
            .lines()
            .any(|l| l.starts_with("root ") && l.contains("/usr/bin/bismuthd")),
        "{users}"
    );

    // A function, deployed and invoked with the installed tools.
    let def = tmp.path().join("hello.json");
    std::fs::write(
        &def,
        r#"{"image": "docker.io/bismuth/busybox:test", "cpu": 0.25, "memory": 67108864,
            "invoke_mode": {"Executable": ["/bin/sh", "-c", "echo \"packaged $(cat)\""]},
            "routes": [{"hostname": "pkg.localhost"}]}"#,
    )
    .unwrap();
    let id = ctl(&["deploy", "-f", &def.to_string_lossy(), "--timeout", "60"]);
    let id = id.trim();
    assert_eq!(
        ctl(&["invoke", "--host", "pkg.localhost", "-d", "hello"]),
        "packaged hello\n"
    );
    let top = ctl(&["top", "--once"]);
    assert!(
        top.contains("pkg.localhost") && top.contains("alive"),
        "{top}"
    );
    ctl(&["delete-function", id]);
}

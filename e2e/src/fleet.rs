//! A simulated fleet on this one machine: every host a network namespace
//! with its own address on a bridge, its own containerd and bismuthd; a
//! three-server ZooKeeper ensemble; the api and bismuthfe on this machine's
//! loopback, as in the single-host [`System`](crate::System).
//!
//! Hosts can be killed outright (every process of the namespace and the
//! containers under it, as a power cut), cut off the network and healed,
//! and started again; ZooKeeper servers killed and started one by one. The
//! network plumbing is `scripts/fleet-net.sh`, which `start_all.sh --nodes`
//! uses too.
//!
//! Each fleet takes names and addresses of its own (from a free port), so
//! fleet tests in parallel processes do not meet.

use std::net::Ipv4Addr;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use anyhow::{ensure, Context};
use bismuth_testkit::{
    container_net, die_with_parent, free_port, images, uid_base, Containerd, ZkEnsemble,
};

use crate::{binaries, runner, tail, workspace, Endpoints, ENV, NAMESPACE};

/// bismuthd's port on every host (each host has its own port space).
pub const BISMUTHD_PORT: u16 = 8001;

/// One host of the fleet.
#[derive(Debug)]
pub struct FleetHost {
    pub ip: Ipv4Addr,
    /// Its network namespace, under /run/netns.
    pub netns: String,
    /// The bridge side of its link (down = partitioned).
    link: String,
    pub containerd: Containerd,
    bismuthd: Option<Child>,
    args: Vec<String>,
    dir: PathBuf,
}

impl FleetHost {
    /// bismuthd's log.
    pub fn log(&self) -> PathBuf {
        self.dir.join("bismuthd.log")
    }

    /// This host's bismuthd instance id.
    pub fn instance(&self) -> String {
        bismuthd::config::instance_id(&self.containerd.socket(), NAMESPACE)
    }

    /// Container ids with a task in this host's containerd.
    pub fn tasks(&self) -> Vec<String> {
        self.containerd
            .ctr(NAMESPACE, &["tasks", "ls", "-q"])
            .map(|o| {
                String::from_utf8_lossy(&o.stdout)
                    .lines()
                    .map(str::to_owned)
                    .collect()
            })
            .unwrap_or_default()
    }
}

/// A running fleet; everything is stopped and removed on drop.
#[derive(Debug)]
pub struct Fleet {
    pub zookeeper: ZkEnsemble,
    pub hosts: Vec<FleetHost>,
    pub endpoints: Endpoints,
    bridge: String,
    dir: tempfile::TempDir,
    /// Root-namespace daemons: (name, port, process, log).
    daemons: Vec<(&'static str, u16, Child, PathBuf)>,
    /// The api's flags but `--listen`, for more api processes.
    api_args: Vec<String>,
    /// bismuthfe's flags but `--listen`, for more frontends.
    fe_args: Vec<String>,
}

impl std::ops::Deref for Fleet {
    type Target = Endpoints;
    fn deref(&self) -> &Endpoints {
        &self.endpoints
    }
}

fn net(args: &[&str]) -> anyhow::Result<()> {
    let script = workspace().join("scripts/fleet-net.sh");
    let out = Command::new(&script).args(args).output()?;
    ensure!(
        out.status.success(),
        "fleet-net.sh {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    Ok(())
}

impl Fleet {
    /// Starts `hosts` hosts (at most 12), the ensemble, the api and
    /// bismuthfe; returns once every host is alive in the api's view.
    pub async fn start(hosts: usize) -> anyhow::Result<Fleet> {
        ensure!((1..=12).contains(&hosts), "1 to 12 hosts");
        let bin = binaries()?;
        // A /28 of its own: the gateway (this machine) is .1, hosts .2 on.
        let tag = free_port()?;
        let base = Ipv4Addr::new(
            172,
            16 + (tag >> 12) as u8,
            (tag >> 4) as u8,
            ((tag & 15) << 4) as u8,
        );
        let addr = |i: u8| {
            let o = base.octets();
            Ipv4Addr::new(o[0], o[1], o[2], o[3] + i)
        };
        let gateway = addr(1);
        let bridge = format!("bfl{tag}");
        net(&["bridge-up", &bridge, &format!("{gateway}/28")])?;
        let dir = tempfile::Builder::new()
            .prefix("bismuth-fleet-")
            .tempdir()?;
        let zookeeper = ZkEnsemble::start(3, gateway)?;
        let mut fleet = Fleet {
            zookeeper,
            hosts: Vec::new(),
            endpoints: Endpoints {
                api_port: free_port()?,
                fe_port: free_port()?,
            },
            bridge,
            dir,
            daemons: Vec::new(),
            api_args: Vec::new(),
            fe_args: Vec::new(),
        };
        let f = &mut fleet;
        f.ctl(&["bootstrap"])?;
        let busybox = f.dir.path().join("busybox.tar");
        images::write_busybox_archive(&busybox)?;
        let key = f.dir.path().join("cluster.key");
        let out = Command::new(bin.join("svcprovider"))
            .arg("keygen")
            .output()?;
        ensure!(out.status.success(), "svcprovider keygen failed");
        std::fs::write(&key, &out.stdout)?;
        let store = format!("sqlite:{}", f.dir.path().join("svc").display());

        for i in 0..hosts {
            let ip = addr(2 + i as u8);
            let netns = format!("bfl{tag}-h{i}");
            let link = format!("bfl{tag}h{i}");
            net(&[
                "host-up",
                &netns,
                &link,
                &f.bridge,
                &format!("{ip}/28"),
                &gateway.to_string(),
            ])?;
            let containerd = Containerd::start_in_netns(&netns)?;
            f.ctl(&["provision", &ip.to_string()])?;
            f.ctl(&[
                "image",
                "import",
                &busybox.to_string_lossy(),
                "--containerd",
                &containerd.socket().to_string_lossy(),
            ])?;
            let hdir = f.dir.path().join(format!("host{i}"));
            let net_port = free_port()?;
            std::fs::create_dir_all(&hdir)?;
            let mut args: Vec<String> = [
                "--zookeeper",
                &f.zookeeper.connect_string(),
                "--zookeeper-env",
                ENV,
                "--listen",
                &format!("{ip}:{BISMUTHD_PORT}"),
                "--node-ip",
                &ip.to_string(),
                "--containerd",
                &containerd.socket().to_string_lossy(),
                "--namespace",
                NAMESPACE,
                "--state-dir",
                &hdir.join("state").to_string_lossy(),
                "--run-dir",
                &hdir.join("run").to_string_lossy(),
                "--container-net",
                &container_net(net_port),
                "--uid-base",
                &uid_base(net_port).to_string(),
                "--runner",
                &runner()?.to_string_lossy(),
                "--svcprovider",
                &bin.join("svcprovider").to_string_lossy(),
                "--svc-store",
                &store,
                "--secret-key-file",
                &key.to_string_lossy(),
                "--stop-grace-ms",
                "2000",
                // Five failures in a row (when a container moves) come quickly.
                "--restart-backoff-ms",
                "200",
            ]
            .map(String::from)
            .to_vec();
            args.shrink_to_fit();
            f.hosts.push(FleetHost {
                ip,
                netns,
                link,
                containerd,
                bismuthd: None,
                args,
                dir: hdir,
            });
            f.start_bismuthd(i)?;
        }

        let zk = f.zookeeper.connect_string();
        f.api_args = vec![
            "--zookeeper".into(),
            zk.clone(),
            "--zookeeper-env".into(),
            ENV.into(),
            "--bismuthd-port".into(),
            BISMUTHD_PORT.to_string(),
            "--svc-store".into(),
            store.clone(),
            "--secret-key-file".into(),
            key.to_string_lossy().into_owned(),
        ];
        f.start_api_on(f.api_port).await?;
        f.fe_args = vec![
            "--zookeeper".into(),
            zk,
            "--zookeeper-env".into(),
            ENV.into(),
            "--backend-port".into(),
            BISMUTHD_PORT.to_string(),
        ];
        f.start_fe_on(f.fe_port).await?;
        let want = hosts;
        f.endpoints
            .eventually_alive(want, Duration::from_secs(60))
            .await
            .with_context(|| fleet.logs())?;
        Ok(fleet)
    }

    /// Starts host `i`'s bismuthd (in its namespace).
    fn start_bismuthd(&mut self, i: usize) -> anyhow::Result<()> {
        let h = &mut self.hosts[i];
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(h.log())?;
        let mut cmd = Command::new("nsenter");
        cmd.arg(format!("--net=/run/netns/{}", h.netns))
            .arg(binaries()?.join("bismuthd"))
            .args(&h.args)
            .env("RUST_LOG", "info")
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log);
        die_with_parent(&mut cmd);
        h.bismuthd = Some(cmd.spawn().context("cannot start bismuthd")?);
        Ok(())
    }

    /// Starts one more api process on a free port; returns the port.
    pub async fn start_api(&mut self) -> anyhow::Result<u16> {
        let port = free_port()?;
        self.start_api_on(port).await?;
        Ok(port)
    }

    /// Starts one more bismuthfe on a free port; returns the port.
    pub async fn start_fe(&mut self) -> anyhow::Result<u16> {
        let port = free_port()?;
        self.start_fe_on(port).await?;
        Ok(port)
    }

    async fn start_fe_on(&mut self, port: u16) -> anyhow::Result<()> {
        let mut args = self.fe_args.clone();
        args.extend(["--listen".into(), format!("127.0.0.1:{port}")]);
        self.spawn("bismuthfe", &args, port).await
    }

    /// SIGKILLs the bismuthfe on `port`.
    pub fn kill_fe(&mut self, port: u16) {
        self.kill_daemon("bismuthfe", port);
    }

    /// Starts an api process on `port` again (after [`kill_api`](Self::kill_api)).
    pub async fn restart_api_on(&mut self, port: u16) -> anyhow::Result<()> {
        self.start_api_on(port).await
    }

    async fn start_api_on(&mut self, port: u16) -> anyhow::Result<()> {
        let mut args = self.api_args.clone();
        args.extend(["--listen".into(), format!("127.0.0.1:{port}")]);
        self.spawn("api", &args, port).await
    }

    /// SIGKILLs the api process on `port` (no step-down: its leadership
    /// ends with its session).
    pub fn kill_api(&mut self, port: u16) {
        self.kill_daemon("api", port);
    }

    fn kill_daemon(&mut self, name: &str, port: u16) {
        if let Some(i) = self.daemons.iter().position(|d| d.0 == name && d.1 == port) {
            let (_, _, mut child, _) = self.daemons.remove(i);
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Runs a root-namespace daemon and waits for its `/healthz`.
    async fn spawn(
        &mut self,
        name: &'static str,
        args: &[String],
        port: u16,
    ) -> anyhow::Result<()> {
        let log = self.dir.path().join(format!("{name}.log"));
        let child = crate::start_daemon(name, args, port, &log, &[]).await?;
        self.daemons.push((name, port, child, log));
        Ok(())
    }

    /// Runs `bismuthctl` against the ensemble; its stdout.
    pub fn ctl(&self, args: &[&str]) -> anyhow::Result<String> {
        crate::bismuthctl(&self.zookeeper.connect_string(), args)
    }

    /// Runs `bismuthctl` without blocking the runtime (so load keeps
    /// flowing meanwhile); its whole output, failed or not.
    pub async fn ctl_output(&self, args: &[&str]) -> anyhow::Result<std::process::Output> {
        Ok(tokio::process::Command::new(binaries()?.join("bismuthctl"))
            .args(["--zookeeper", &self.zookeeper.connect_string()])
            .args(["--zookeeper-env", ENV])
            .args(args)
            .output()
            .await?)
    }

    /// Removes the test image from host `i` (its containers then fail to
    /// start: no registry is reachable), or puts it back.
    pub fn set_image(&self, i: usize, present: bool) -> anyhow::Result<()> {
        let h = &self.hosts[i];
        if present {
            let busybox = self.dir.path().join("busybox.tar");
            self.ctl(&[
                "image",
                "import",
                &busybox.to_string_lossy(),
                "--containerd",
                &h.containerd.socket().to_string_lossy(),
            ])?;
        } else {
            let out = h
                .containerd
                .ctr(NAMESPACE, &["images", "rm", images::BUSYBOX_REF])?;
            ensure!(out.status.success(), "ctr images rm: {out:?}");
        }
        Ok(())
    }

    /// The index of the host with address `ip`.
    pub fn host(&self, ip: Ipv4Addr) -> usize {
        self.hosts
            .iter()
            .position(|h| h.ip == ip)
            .unwrap_or_else(|| panic!("no host {ip}"))
    }

    /// Kills host `i` outright: bismuthd, containerd, shims, containers and
    /// svcproviders at once, as a power cut would.
    pub fn kill(&mut self, i: usize) -> anyhow::Result<()> {
        net(&["kill", &self.hosts[i].netns])?;
        let h = &mut self.hosts[i];
        if let Some(mut c) = h.bismuthd.take() {
            let _ = c.wait();
        }
        h.containerd.crash();
        Ok(())
    }

    /// Boots host `i` again after [`kill`](Self::kill): containerd, then bismuthd.
    pub fn boot(&mut self, i: usize) -> anyhow::Result<()> {
        self.hosts[i].containerd.revive()?;
        self.start_bismuthd(i)
    }

    /// Cuts host `i` off the network (it keeps running).
    pub fn partition(&self, i: usize) -> anyhow::Result<()> {
        net(&["partition", &self.hosts[i].link])
    }

    /// Reconnects host `i`.
    pub fn heal(&self, i: usize) -> anyhow::Result<()> {
        net(&["heal", &self.hosts[i].link])
    }

    /// The last lines of every daemon's log.
    pub fn logs(&self) -> String {
        let mut out = Vec::new();
        for (name, _, _, log) in &self.daemons {
            out.push(format!("--- {name} (last 40 lines) ---\n{}", tail(log, 40)));
        }
        for h in &self.hosts {
            out.push(format!(
                "--- bismuthd on {} (last 40 lines) ---\n{}",
                h.ip,
                tail(&h.log(), 40)
            ));
        }
        out.join("\n")
    }
}

impl Drop for Fleet {
    fn drop(&mut self) {
        if std::thread::panicking() {
            eprintln!("{}", self.logs());
        }
        for (_, _, child, _) in self.daemons.iter_mut().rev() {
            let _ = child.kill();
            let _ = child.wait();
        }
        for i in 0..self.hosts.len() {
            let _ = self.kill(i);
            let instance = self.hosts[i].instance();
            for ns in bismuthd::net::our_namespaces(&instance) {
                let _ = Command::new("ip").args(["netns", "del", &ns]).status();
            }
            let h = &self.hosts[i];
            let _ = net(&["host-down", &h.netns, &h.link]);
        }
        // The hosts' containerds (dropped with the hosts) unmount what is left.
        bismuth_testkit::kill_processes_mentioning(self.dir.path());
        bismuth_testkit::detach_mounts_under(self.dir.path());
        let _ = net(&["bridge-down", &self.bridge]);
    }
}

//! Tenant isolation, seen from inside function containers (root, real
//! containerd, real network namespaces and nftables): a container reaches
//! its own svcprovider with its token and nothing else on the host or in
//! other containers; its process is unprivileged, in a user namespace whose
//! host ids no other container has, and cannot make the
//! calls the seccomp allowlist leaves out. The last part deletes the
//! rules and shows the same probes then connect, so the checks above hold
//! only because of the rules.
#![allow(clippy::unwrap_used)]

mod support;

use std::net::Ipv4Addr;
use std::process::Command;
use std::time::Duration;

use bismuth_model::{ContainerState, InvokeMode};
use support::{argv, busybox, http_request, Host};
use uuid::Uuid;

const START: Duration = Duration::from_secs(30);

/// Runs a shell script inside the probe container (its Executable command
/// is `sh -c 'eval "$(cat)"'`) and returns its output.
async fn sh(host: &Host, probe: Uuid, script: &str) -> String {
    let (status, _, body) = http_request("POST", &host.url(&format!("/invoke/{probe}")), script)
        .await
        .unwrap();
    assert_eq!(status, 200, "{body}");
    body.trim().to_owned()
}

/// "open" if a TCP connection to ip:port succeeds from inside `probe`.
async fn tcp(host: &Host, probe: Uuid, ip: Ipv4Addr, port: u16) -> String {
    sh(
        host,
        probe,
        &format!(
            "if echo | nc -w 2 {ip} {port} >/dev/null 2>&1; then echo open; else echo closed; fi"
        ),
    )
    .await
}

/// The host's first global IPv4 address.
fn host_address() -> Ipv4Addr {
    let out = Command::new("ip")
        .args(["-o", "-4", "addr", "show", "scope", "global"])
        .output()
        .unwrap();
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|l| l.split_whitespace().nth(3))
        .filter_map(|a| a.split('/').next()?.parse().ok())
        .next()
        .expect("a global IPv4 address on this host")
}

/// The host uid a container's uid 0 maps to, and the host uid its
/// process (PID 1, uid 1000 inside) runs as, read on the host.
fn host_uid_map(host: &Host, cid: Uuid) -> (u32, u32) {
    let pid = host.task_pid(cid).expect("a running task");
    let map = words(&std::fs::read_to_string(format!("/proc/{pid}/uid_map")).unwrap());
    assert_eq!((map.len(), map[0], map[2]), (3, 0, 65536), "{map:?}");
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let uid = status
        .lines()
        .find_map(|l| l.strip_prefix("Uid:"))
        .and_then(|l| l.split_whitespace().next())
        .unwrap()
        .parse()
        .unwrap();
    (map[1], uid)
}

fn words(text: &str) -> Vec<u32> {
    text.split_whitespace()
        .map(|w| w.parse().unwrap())
        .collect()
}

/// The container (`.2`) and host-side (`.1`) addresses of a container, from its /etc/hosts.
fn addresses(host: &Host, cid: Uuid) -> (Ipv4Addr, Ipv4Addr) {
    let hosts = std::fs::read_to_string(
        host.dir
            .path()
            .join(format!("state/containers/{cid}/etc/hosts")),
    )
    .unwrap();
    let find = |name: &str| -> Ipv4Addr {
        hosts
            .lines()
            .find(|l| l.ends_with(name))
            .and_then(|l| l.split_whitespace().next()?.parse().ok())
            .unwrap()
    };
    (
        find(&format!("fn-{}", &cid.simple().to_string()[..12])),
        find("bismuth-svc"),
    )
}

#[tokio::test]
async fn containers_reach_only_their_own_svcprovider() {
    // Forwarding on, as on any host whose containers may reach the internet:
    // then only the rules keep container-to-container traffic out.
    std::fs::write("/proc/sys/net/ipv4/ip_forward", "1").unwrap();
    let mut host = Host::prepare().await;
    host.listen_ip = "0.0.0.0"; // bismuthd's port reachable on every host address
    host.start_daemon().await;

    // A listener on all of the host's addresses (stands for the api, or any host service).
    let listener = tokio::net::TcpListener::bind("0.0.0.0:0").await.unwrap();
    let host_port = listener.local_addr().unwrap().port();
    tokio::spawn(async move {
        loop {
            let _ = listener.accept().await;
        }
    });

    let probe_def = busybox(InvokeMode::Executable(argv(&[
        "/bin/sh",
        "-c",
        "eval \"$(cat)\"",
    ])));
    let (_, a) = host.deploy(&probe_def).await;
    let (_, b) = host
        .deploy(&busybox(InvokeMode::Server(
            argv(&[
                "/bin/sh",
                "-c",
                "echo b > /tmp/index.html && exec httpd -f -p 8080 -h /tmp",
            ]),
            8080,
        )))
        .await;
    host.wait_state(a, ContainerState::Running, START).await;
    host.wait_state(b, ContainerState::Running, START).await;
    let (_, a_host) = addresses(&host, a);
    let (b_ip, b_host) = addresses(&host, b);
    let node = host_address();

    // Its own svcprovider answers with the token and refuses without it.
    let out = sh(
        &host,
        a,
        "wget -q -O- --header \"Authorization: Bearer $BISMUTH_AUTH\" --post-data hello $BISMUTH_SVC_URL/kv/v1/greeting \
         && wget -q -O- --header \"Authorization: Bearer $BISMUTH_AUTH\" $BISMUTH_SVC_URL/kv/v1/greeting",
    )
    .await;
    assert_eq!(out, "hello");
    let out = sh(
        &host,
        a,
        "wget -q -O- $BISMUTH_SVC_URL/kv/v1/greeting 2>&1; true",
    )
    .await;
    assert!(out.contains("401"), "{out}");
    assert!(sh(&host, a, "echo $BISMUTH_SVC_URL")
        .await
        .contains(&a_host.to_string()));

    // The svcprovider is supervised: killed, it is back (same token, same data).
    let pid = host.svc_pid(a).unwrap();
    assert!(Command::new("kill")
        .args(["-9", &pid.to_string()])
        .status()
        .unwrap()
        .success());
    bismuth_testkit::eventually("the svcprovider back", START, || async {
        let out = sh(
            &host,
            a,
            "wget -q -O- --header \"Authorization: Bearer $BISMUTH_AUTH\" $BISMUTH_SVC_URL/kv/v1/greeting 2>&1; true",
        )
        .await;
        (out == "hello").then_some(())
    })
    .await;
    assert_ne!(host.svc_pid(a).unwrap(), pid);

    // The targets exist and listen: the host reaches them.
    assert!(std::net::TcpStream::connect((b_ip, 8080)).is_ok());
    assert!(std::net::TcpStream::connect((b_host, 9000)).is_ok());
    assert!(std::net::TcpStream::connect((node, host_port)).is_ok());

    let probes = [
        ("container B", b_ip, 8080),
        ("B's svcprovider", b_host, 9000),
        ("bismuthd via the node address", node, host.port),
        ("bismuthd via A's host side", a_host, host.port),
        ("a host listener on the node address", node, host_port),
        ("a host listener on A's host side", a_host, host_port),
    ];
    for (what, ip, port) in probes {
        assert_eq!(
            tcp(&host, a, ip, port).await,
            "closed",
            "A reached {what} at {ip}:{port}"
        );
    }
    // A's own svcprovider port stays open.
    assert_eq!(tcp(&host, a, a_host, 9000).await, "open");

    // The process is unprivileged, and its uid 1000 is not the host's:
    // each container has a user namespace mapping its ids 0-65535 to a
    // block of host ids of its own.
    assert_eq!(sh(&host, a, "id -u; id -g").await, "1000\n1000");
    let map_a = host_uid_map(&host, a);
    let map_b = host_uid_map(&host, b);
    assert_eq!(
        words(&sh(&host, a, "cat /proc/self/uid_map").await),
        vec![0, map_a.0, 65536],
        "A's own view of its map"
    );
    for (what, (base, uid)) in [("A", map_a), ("B", map_b)] {
        assert!(base >= 65536, "{what}'s ids start at host uid {base}");
        assert_eq!(uid, base + 1000, "{what}'s process runs as host uid {uid}");
    }
    assert!(
        map_a.0 + 65536 <= map_b.0 || map_b.0 + 65536 <= map_a.0,
        "the blocks overlap: {map_a:?} {map_b:?}"
    );
    // What bismuthd made for it is its own; the image's files and the
    // shared runner binary are host root's, which the container's root is
    // not (they show as nobody).
    assert_eq!(
        sh(
            &host,
            a,
            "stat -c %u / /etc /etc/hosts /.bismuth/runner /bin"
        )
        .await,
        "0\n0\n0\n65534\n65534"
    );
    assert_eq!(
        sh(&host, a, "grep CapEff /proc/self/status | cut -f2").await,
        "0000000000000000"
    );
    let out = sh(
        &host,
        a,
        "ip link set lo down 2>&1; ip addr add 10.9.9.9/32 dev eth0 2>&1; true",
    )
    .await;
    assert!(out.contains("Operation not permitted"), "{out}");
    let out = sh(&host, a, "mount -t tmpfs none /tmp 2>&1; echo status=$?").await;
    assert!(!out.ends_with("status=0"), "{out}");
    // Refused by the seccomp allowlist (an unprivileged user may create
    // a user namespace where the kernel allows it; here it is EPERM).
    let out = sh(&host, a, "unshare -U true 2>&1; echo status=$?").await;
    assert!(
        out.contains("Operation not permitted") && !out.ends_with("status=0"),
        "{out}"
    );

    // By construction: without the rules the same probes connect.
    let table = format!("bismuth_{}", host.instance());
    assert!(Command::new("nft")
        .args(["delete", "table", "inet", &table])
        .status()
        .unwrap()
        .success());
    for (what, ip, port) in probes {
        assert_eq!(
            tcp(&host, a, ip, port).await,
            "open",
            "without rules A should reach {what} at {ip}:{port} (else the check above proves nothing)"
        );
    }
}

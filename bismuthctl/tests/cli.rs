//! `bismuthctl` as an operator runs it: the real binary against a real
//! ZooKeeper, checking each command's effect on the znodes, its output and
//! its exit code.

#![allow(clippy::unwrap_used)]

use std::net::Ipv4Addr;
use std::time::{Duration, Instant};

use bismuth_model::{
    pack_backends, paths, unpack_backends, Backend, ContainerRecord, ContainerState,
    FunctionDefinition, InvokeMode, NodeState,
};
use bismuth_testkit::ZooKeeper;
use bismuth_zk::{Zk, ZkConfig};
use uuid::Uuid;

struct Env {
    _server: ZooKeeper,
    connect: String,
    zk: Zk,
}

struct Out {
    code: i32,
    stdout: String,
    stderr: String,
}

impl Env {
    async fn start() -> Env {
        let server = ZooKeeper::start().expect("start zookeeper");
        let connect = server.connect_string();
        let zk = Zk::connect(ZkConfig::new(&connect, "ctl").unwrap())
            .await
            .unwrap();
        let env = Env {
            _server: server,
            connect,
            zk,
        };
        env.ok(&["bootstrap"]).await;
        env
    }

    async fn run(&self, args: &[&str]) -> Out {
        run_ctl(&self.connect, args).await
    }

    /// Runs a command that must succeed; returns its stdout.
    async fn ok(&self, args: &[&str]) -> String {
        let out = self.run(args).await;
        assert_eq!(out.code, 0, "bismuthctl {args:?} failed: {}", out.stderr);
        out.stdout
    }

    async fn create_function(&self, extra: &[&str]) -> Uuid {
        let mut args = vec![
            "create-function",
            "docker.io/library/busybox:latest",
            "exec:/bin/cat",
        ];
        args.extend_from_slice(extra);
        self.ok(&args)
            .await
            .trim()
            .parse()
            .expect("create-function prints the id")
    }

    async fn data(&self, path: &str) -> Vec<u8> {
        self.zk.get(path).await.unwrap().value
    }

    async fn exists(&self, path: &str) -> bool {
        self.zk.exists(path).await.unwrap()
    }
}

async fn run_ctl(connect: &str, args: &[&str]) -> Out {
    let out = tokio::process::Command::new(env!("CARGO_BIN_EXE_bismuthctl"))
        .args(["--zookeeper", connect, "--zookeeper-env", "ctl"])
        .args(args)
        .output()
        .await
        .expect("run bismuthctl");
    Out {
        code: out.status.code().unwrap_or(-1),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    }
}

const NODE: &str = "10.0.0.1";
fn node() -> Ipv4Addr {
    NODE.parse().unwrap()
}

#[tokio::test]
async fn bootstrap_creates_the_tree_and_is_idempotent() {
    let env = Env::start().await;
    for p in paths::ROOTS {
        assert!(env.exists(p).await, "{p}");
    }
    assert!(env
        .ok(&["bootstrap"])
        .await
        .contains("already bootstrapped"));
}

#[tokio::test]
async fn nodes_provision_drain_list_deprovision() {
    let env = Env::start().await;
    env.ok(&["provision", NODE]).await;
    assert_eq!(
        env.data(&paths::node(node())).await,
        NodeState::Enabled.encode()
    );
    assert!(env.exists(&paths::node_containers(node())).await);

    let again = env.run(&["provision", NODE]).await;
    assert_eq!(again.code, 1);
    assert!(
        again
            .stderr
            .contains("node 10.0.0.1 is already provisioned"),
        "{}",
        again.stderr
    );

    env.ok(&["drain", NODE]).await;
    assert_eq!(env.data(&paths::node(node())).await, [0]);
    let table = env.ok(&["list-nodes"]).await;
    assert!(
        table.contains("10.0.0.1") && table.contains("drained"),
        "{table}"
    );
    env.ok(&["undrain", NODE]).await;
    assert_eq!(env.data(&paths::node(node())).await, [1]);

    let json: serde_json::Value =
        serde_json::from_str(&env.ok(&["list-nodes", "--json"]).await).unwrap();
    assert_eq!(json[0]["ip"], NODE);
    assert_eq!(json[0]["enabled"], true);

    env.ok(&["deprovision", NODE]).await;
    assert!(!env.exists(&paths::node(node())).await);
}

#[tokio::test]
async fn create_function_writes_definition_backends_and_routes() {
    let env = Env::start().await;
    let out = env
        .ok(&[
            "create-function",
            "docker.io/library/python:3.11",
            "server:8000:/usr/local/bin/python3 -m http.server",
            "--cpu",
            "0.25",
            "--memory",
            "64M",
            "--route",
            "App.Example.com",
            "--max-instances",
            "2",
            "--repo",
            "https://git.example/org/app.git",
            "--branch",
            "dev",
        ])
        .await;
    let id: Uuid = out.trim().parse().unwrap();
    let def: FunctionDefinition =
        serde_json::from_slice(&env.data(&paths::function(id)).await).unwrap();
    assert_eq!(def.image, "docker.io/library/python:3.11");
    assert_eq!(
        def.invoke_mode,
        InvokeMode::Server(
            vec![
                "/usr/local/bin/python3".into(),
                "-m".into(),
                "http.server".into()
            ],
            8000
        )
    );
    assert_eq!(
        (def.cpu, def.memory, def.max_instances),
        (0.25, 64 << 20, 2)
    );
    assert_eq!(def.repo.unwrap().branch(), "dev");
    assert!(env.data(&paths::function_backends(id)).await.is_empty());
    assert_eq!(
        env.data(&paths::route("app.example.com")).await,
        id.as_bytes()
    );

    let list = env.ok(&["list-functions"]).await;
    assert!(
        list.contains(&id.to_string())
            && list.contains("server:8000")
            && list.contains("app.example.com"),
        "{list}"
    );
    let json: serde_json::Value =
        serde_json::from_str(&env.ok(&["list-functions", "--json"]).await).unwrap();
    assert_eq!(json[0]["id"], id.to_string());
    assert_eq!(json[0]["definition"]["invoke_mode"]["Server"][1], 8000);
    // A fixed-size function: min, desired and max are all max_instances.
    assert_eq!(
        json[0]["instances"],
        serde_json::json!({"min": 2, "max": 2, "desired": 2, "running": 0})
    );
    assert!(list.contains("2/2/2"), "{list}");

    // An elastic one starts wanting one instance; get-function shows it.
    let elastic = env
        .create_function(&[
            "--max-instances",
            "5",
            "--min-instances",
            "0",
            "--concurrency",
            "4",
            "--idle-timeout",
            "2.5",
        ])
        .await;
    let got: serde_json::Value =
        serde_json::from_str(&env.ok(&["get-function", &elastic.to_string()]).await).unwrap();
    assert_eq!(
        got["instances"],
        serde_json::json!({"min": 0, "max": 5, "desired": 1, "running": 0})
    );
    assert_eq!(got["definition"]["concurrency"], 4);
    assert_eq!(got["definition"]["idle_timeout"], 2.5);
    let list = env.ok(&["list-functions"]).await;
    assert!(
        list.contains("MIN/DESIRED/MAX") && list.contains("0/1/5"),
        "{list}"
    );
}

#[tokio::test]
async fn taken_route_is_refused_and_nothing_is_written() {
    let env = Env::start().await;
    let first = env.create_function(&["--route", "a.example"]).await;
    let out = env
        .run(&[
            "create-function",
            "busybox",
            "exec:/bin/cat",
            "--route",
            "b.example",
            "--route",
            "a.example",
        ])
        .await;
    assert_eq!(out.code, 1, "{}", out.stderr);
    assert!(
        out.stderr.contains(&format!(
            "route a.example already belongs to function {first}"
        )),
        "{}",
        out.stderr
    );
    assert_eq!(
        env.zk.children(paths::FUNCTIONS).await.unwrap(),
        [first.to_string()]
    );
    assert!(
        !env.exists(&paths::route("b.example")).await,
        "no half-written routes"
    );
}

#[tokio::test]
async fn backends_add_and_remove() {
    let env = Env::start().await;
    env.ok(&["provision", NODE]).await;
    let f = env.create_function(&[]).await;
    let f_s = f.to_string();
    let cid: Uuid = env
        .ok(&["add-backend", &f_s, NODE])
        .await
        .trim()
        .parse()
        .unwrap();

    let backends = unpack_backends(&env.data(&paths::function_backends(f)).await).unwrap();
    assert_eq!(
        backends,
        [Backend {
            ip: node(),
            container_id: cid
        }]
    );
    let record = ContainerRecord::decode(&env.data(&paths::container(node(), cid)).await).unwrap();
    assert_eq!(record.function_id, f);
    assert_eq!(
        env.data(&paths::container_status(node(), cid)).await,
        [ContainerState::Invalid.to_byte()]
    );

    let view: serde_json::Value =
        serde_json::from_str(&env.ok(&["get-function", &f_s]).await).unwrap();
    assert_eq!(
        view["backends"][0]["backend"]["container_id"],
        cid.to_string()
    );
    assert_eq!(view["backends"][0]["status"], "Invalid");

    // A busy node is not removed without --force.
    let busy = env.run(&["deprovision", NODE]).await;
    assert_eq!(busy.code, 1);
    assert!(
        busy.stderr.contains("still has 1 container(s)"),
        "{}",
        busy.stderr
    );

    env.ok(&["remove-backend", &f_s, &cid.to_string()]).await;
    assert!(env.data(&paths::function_backends(f)).await.is_empty());
    assert!(!env.exists(&paths::container(node(), cid)).await);

    let unknown = env.run(&["remove-backend", &f_s, &cid.to_string()]).await;
    assert_eq!(unknown.code, 1);
    assert!(
        unknown.stderr.contains("has no backend with container id"),
        "{}",
        unknown.stderr
    );
}

#[tokio::test]
async fn deprovision_force_and_delete_function_leave_nothing_behind() {
    let env = Env::start().await;
    env.ok(&["provision", NODE]).await;
    env.ok(&["provision", "10.0.0.2"]).await;
    let f = env.create_function(&["--route", "f.example"]).await;
    let f_s = f.to_string();
    let on_1: Uuid = env
        .ok(&["add-backend", &f_s, NODE])
        .await
        .trim()
        .parse()
        .unwrap();
    let on_2: Uuid = env
        .ok(&["add-backend", &f_s, "10.0.0.2"])
        .await
        .trim()
        .parse()
        .unwrap();

    env.ok(&["deprovision", NODE, "--force"]).await;
    assert!(!env.exists(&paths::node(node())).await);
    let left = unpack_backends(&env.data(&paths::function_backends(f)).await).unwrap();
    assert_eq!(
        left.iter().map(|b| b.container_id).collect::<Vec<_>>(),
        [on_2]
    );
    assert_ne!(on_1, on_2);

    env.ok(&["delete-function", &f_s]).await;
    assert!(env.zk.children(paths::FUNCTIONS).await.unwrap().is_empty());
    assert!(env.zk.children(paths::ROUTES).await.unwrap().is_empty());
    assert!(env
        .zk
        .children(&paths::node_containers("10.0.0.2".parse().unwrap()))
        .await
        .unwrap()
        .is_empty());
    assert!(env.ok(&["consistency"]).await.contains("no problems"));
}

#[tokio::test]
async fn consistency_finds_and_fixes_a_broken_tree() {
    let env = Env::start().await;
    env.ok(&["provision", NODE]).await;
    let f = env.create_function(&["--route", "ok.example"]).await;
    let f_s = f.to_string();
    let good: Uuid = env
        .ok(&["add-backend", &f_s, NODE])
        .await
        .trim()
        .parse()
        .unwrap();
    assert_eq!(env.run(&["consistency"]).await.code, 0);

    // Break it every way the checker knows.
    let zk = &env.zk;
    let ghost_fn = Uuid::new_v4();
    let dangling = Backend {
        ip: node(),
        container_id: Uuid::new_v4(),
    };
    let unknown_node = Backend {
        ip: "10.9.9.9".parse().unwrap(),
        container_id: Uuid::new_v4(),
    };
    let good_backend = Backend {
        ip: node(),
        container_id: good,
    };
    zk.set(
        &paths::function_backends(f),
        &pack_backends(&[good_backend, dangling, unknown_node]),
        None,
    )
    .await
    .unwrap();
    let orphan = Uuid::new_v4();
    zk.create(
        &paths::container(node(), orphan),
        &ContainerRecord {
            function_id: ghost_fn,
        }
        .encode(),
    )
    .await
    .unwrap();
    zk.create(&paths::route("ghost.example"), ghost_fn.as_bytes())
        .await
        .unwrap();
    zk.delete(&paths::route("ok.example"), None).await.unwrap();
    zk.delete(&paths::container_status(node(), good), None)
        .await
        .unwrap();
    zk.create(&paths::route("junk.example"), b"not an id")
        .await
        .unwrap();

    let report = env.run(&["consistency"]).await;
    assert_eq!(report.code, 3, "problems found exit 3: {}", report.stderr);
    for expected in [
        format!("lists backend {} on node 10.0.0.1, but that container znode is missing", dangling.container_id),
        format!("lists backend {} on node 10.9.9.9, which is not provisioned", unknown_node.container_id),
        format!("container {orphan} on node 10.0.0.1 belongs to function {ghost_fn}, which does not exist"),
        format!("route ghost.example points at function {ghost_fn}"),
        format!("function {f} lists route ok.example, but /route/ok.example is missing"),
        format!("container {good} on node 10.0.0.1 has no status znode"),
        "/route/junk.example: expected a 16-byte function id".to_owned(),
        format!("function {f} has 3 backends but wants 1 and no rollout is under way"),
    ] {
        assert!(report.stdout.contains(&expected), "missing {expected:?} in:\n{}", report.stdout);
    }
    let json: serde_json::Value =
        serde_json::from_str(&env.run(&["consistency", "--json"]).await.stdout).unwrap();
    assert_eq!(json.as_array().unwrap().len(), 8);

    // --fix repairs all but the undecodable route, which it leaves for a
    // human, and the extra backends, which are the controller's to remove
    // (here the two bad ones go with their own findings).
    let fixed = env.run(&["consistency", "--fix"]).await;
    assert_eq!(fixed.code, 3, "{}", fixed.stdout);
    assert_eq!(
        fixed.stdout.matches("fixed: ").count() - fixed.stdout.matches("not fixed: ").count(),
        6,
        "{}",
        fixed.stdout
    );
    assert!(
        fixed.stdout.contains("not fixed: /route/junk.example"),
        "{}",
        fixed.stdout
    );
    assert!(
        fixed.stdout.contains("not fixed: function"),
        "{}",
        fixed.stdout
    );

    assert_eq!(
        unpack_backends(&env.data(&paths::function_backends(f)).await).unwrap(),
        [good_backend]
    );
    assert!(!env.exists(&paths::container(node(), orphan)).await);
    assert!(!env.exists(&paths::route("ghost.example")).await);
    assert_eq!(env.data(&paths::route("ok.example")).await, f.as_bytes());
    assert!(env.exists(&paths::container_status(node(), good)).await);

    zk.delete(&paths::route("junk.example"), None)
        .await
        .unwrap();
    let clean = env.run(&["consistency"]).await;
    assert_eq!(clean.code, 0, "{}", clean.stdout);
}

#[tokio::test]
async fn bad_input_gives_a_clear_error_and_exit_2() {
    let env = Env::start().await;
    let cases: &[(&[&str], &str)] = &[
        (&["provision", "10.0.0.300"], "invalid value '10.0.0.300'"),
        (
            &["add-backend", "not-a-uuid", NODE],
            "invalid value 'not-a-uuid'",
        ),
        (
            &["create-function", "busybox", "run:/bin/ls"],
            "must start with 'exec:' or 'server:'",
        ),
        (
            &["create-function", "busybox", "server:0:/bin/x"],
            "port \"0\" is not a number from 1 to 65535",
        ),
        (
            &[
                "create-function",
                "busybox",
                "exec:/bin/cat",
                "--memory",
                "1M",
            ],
            "memory: must be at least 4194304 bytes",
        ),
        (
            &["create-function", "busybox", "exec:/bin/cat", "--cpu", "0"],
            "cpu: must be a number of cores greater than 0",
        ),
        (
            &["create-function", "Bad Image", "exec:/bin/cat"],
            "image: \"Bad Image\" is not a valid image reference",
        ),
        (
            &[
                "create-function",
                "busybox",
                "exec:/bin/cat",
                "--max-instances",
                "3",
                "--min-instances",
                "4",
            ],
            "min_instances: must be at most max_instances (3), got 4",
        ),
        (
            &[
                "create-function",
                "busybox",
                "exec:/bin/cat",
                "--concurrency",
                "0",
            ],
            "concurrency: must be at least 1",
        ),
        (
            &[
                "create-function",
                "busybox",
                "exec:/bin/cat",
                "--idle-timeout=-1",
            ],
            "idle_timeout: must be a number of seconds, 0 or more, got -1",
        ),
        (
            &[
                "create-function",
                "busybox",
                "exec:/bin/cat",
                "--route",
                "bad_host",
            ],
            "routes[0].hostname",
        ),
        (
            &[
                "create-function",
                "busybox",
                "exec:/bin/cat",
                "--max-instances",
                "0",
            ],
            "max_instances: must be at least 1",
        ),
        (
            &[
                "create-function",
                "busybox",
                "exec:/bin/cat",
                "--repo",
                "ftp://x/y",
            ],
            "repo[0]: repository URL scheme \"ftp\"",
        ),
    ];
    for (args, expected) in cases {
        let out = env.run(args).await;
        assert_eq!(out.code, 2, "{args:?}: {}", out.stderr);
        assert!(
            out.stderr.contains(expected),
            "{args:?}: expected {expected:?} in {:?}",
            out.stderr
        );
    }
    assert!(
        env.zk.children(paths::FUNCTIONS).await.unwrap().is_empty(),
        "nothing written"
    );

    let out = tokio::process::Command::new(env!("CARGO_BIN_EXE_bismuthctl"))
        .args([
            "--zookeeper",
            &env.connect,
            "--zookeeper-env",
            "a/b",
            "list-nodes",
        ])
        .output()
        .await
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("invalid --zookeeper-env \"a/b\""));
}

#[tokio::test]
async fn unknown_things_are_errors_with_exit_1() {
    let env = Env::start().await;
    let missing = Uuid::new_v4();
    let out = env.run(&["get-function", &missing.to_string()]).await;
    assert_eq!(out.code, 1);
    assert!(
        out.stderr
            .contains(&format!("function {missing} does not exist")),
        "{}",
        out.stderr
    );

    env.ok(&["provision", NODE]).await;
    let out = env.run(&["add-backend", &missing.to_string(), NODE]).await;
    assert_eq!(out.code, 1);
    assert!(out.stderr.contains("does not exist"), "{}", out.stderr);

    let f = env.create_function(&[]).await;
    let out = env.run(&["add-backend", &f.to_string(), "10.1.1.1"]).await;
    assert_eq!(out.code, 1);
    assert!(
        out.stderr.contains("node 10.1.1.1 is not provisioned"),
        "{}",
        out.stderr
    );
    let out = env.run(&["drain", "10.1.1.1"]).await;
    assert_eq!(out.code, 1);
    assert!(
        out.stderr.contains("node 10.1.1.1 is not provisioned"),
        "{}",
        out.stderr
    );
}

#[tokio::test]
async fn unbootstrapped_environment_says_so() {
    let server = ZooKeeper::start().unwrap();
    let out = run_ctl(&server.connect_string(), &["list-nodes"]).await;
    assert_eq!(out.code, 1);
    assert!(
        out.stderr.contains("run `bismuthctl bootstrap`"),
        "{}",
        out.stderr
    );
}

#[tokio::test]
async fn unreachable_zookeeper_fails_within_seconds() {
    let port = bismuth_testkit::free_port().unwrap();
    let start = Instant::now();
    let out = run_ctl(&format!("127.0.0.1:{port}"), &["list-nodes"]).await;
    assert!(
        start.elapsed() < Duration::from_secs(8),
        "took {:?}",
        start.elapsed()
    );
    assert_eq!(out.code, 1);
    assert!(
        out.stderr
            .contains(&format!("cannot connect to ZooKeeper at 127.0.0.1:{port}")),
        "{}",
        out.stderr
    );
}

#[tokio::test]
async fn consistency_reports_a_container_starting_for_too_long() {
    let env = Env::start().await;
    env.ok(&["provision", NODE]).await;
    let f = env.create_function(&[]).await;
    let c: Uuid = env
        .ok(&["add-backend", &f.to_string(), NODE])
        .await
        .trim()
        .parse()
        .unwrap();
    env.zk
        .set(
            &paths::container_status(node(), c),
            &[bismuth_model::ContainerState::Starting.to_byte()],
            None,
        )
        .await
        .unwrap();
    // Not yet stuck by the default (5 min).
    assert_eq!(env.run(&["consistency"]).await.code, 0);
    let report = bismuth_testkit::eventually(
        "the container to count as stuck after 1 s",
        std::time::Duration::from_secs(20),
        || async {
            let r = env.run(&["consistency", "--stuck-after-s", "1"]).await;
            (r.code == 3).then_some(r)
        },
    )
    .await;
    assert!(
        report.stdout.contains(&format!(
            "container {c} of function {f} on node {NODE} has been Starting for 0 min"
        )),
        "{}",
        report.stdout
    );
}

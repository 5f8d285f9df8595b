//! `bismuthctl image import` against a real containerd.
#![allow(clippy::unwrap_used)]

use std::process::Command;

use bismuth_testkit::{images, Containerd};

fn ctl(args: &[&str]) -> (i32, String, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_bismuthctl"))
        .args(args)
        .output()
        .unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn imports_an_archive_into_the_bismuth_namespace() {
    let ctd = Containerd::start().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let archive = dir.path().join("busybox.tar");
    images::write_busybox_archive(&archive).unwrap();
    let socket = ctd.socket();
    let socket = socket.to_str().unwrap();

    let (code, out, err) = ctl(&[
        "image",
        "import",
        archive.to_str().unwrap(),
        "--containerd",
        socket,
    ]);
    assert_eq!(code, 0, "{err}");
    assert!(
        out.contains(&format!("imported {}", images::BUSYBOX_REF)),
        "{out}"
    );
    let listed = ctd.ctr("bismuth", &["images", "ls", "-q"]).unwrap();
    assert!(String::from_utf8_lossy(&listed.stdout).contains(images::BUSYBOX_REF));

    // Renamed on request.
    let (code, out, _) = ctl(&[
        "image",
        "import",
        archive.to_str().unwrap(),
        "--containerd",
        socket,
        "--name",
        "local/app:1",
    ]);
    assert_eq!(code, 0);
    assert!(out.contains("imported docker.io/local/app:1"), "{out}");

    // A missing file is a usage error; junk is a clear failure; no containerd, too.
    let (code, _, err) = ctl(&[
        "image",
        "import",
        "/nonexistent.tar",
        "--containerd",
        socket,
    ]);
    assert_eq!(code, 2, "{err}");
    let junk = dir.path().join("junk.tar");
    std::fs::write(&junk, "junk").unwrap();
    let (code, _, err) = ctl(&[
        "image",
        "import",
        junk.to_str().unwrap(),
        "--containerd",
        socket,
    ]);
    assert_eq!(code, 1);
    assert!(err.contains("junk.tar"), "{err}");
    let (code, _, err) = ctl(&[
        "image",
        "import",
        archive.to_str().unwrap(),
        "--containerd",
        "/nonexistent.sock",
    ]);
    assert_eq!(code, 1);
    assert!(err.contains("cannot connect to containerd"), "{err}");
}

//! The containerd harness and the busybox test image: import the image, run a
//! container to completion with runc and overlayfs, and leave nothing behind.

#![allow(clippy::unwrap_used)]

use bismuth_testkit::images::{write_busybox_archive, BUSYBOX_REF};
use bismuth_testkit::Containerd;

#[test]
fn busybox_image_runs_and_nothing_is_left_behind() {
    let ctd = Containerd::start().unwrap();
    let archive = ctd.dir().join("busybox.tar");
    write_busybox_archive(&archive).unwrap();

    let out = ctd
        .ctr("bismuth", &["images", "import", archive.to_str().unwrap()])
        .unwrap();
    assert!(
        out.status.success(),
        "import: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let out = ctd
        .ctr(
            "bismuth",
            &[
                "run",
                "--rm",
                BUSYBOX_REF,
                "t1",
                "/bin/echo",
                "hello from busybox",
            ],
        )
        .unwrap();
    assert!(
        out.status.success(),
        "run: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(
        String::from_utf8_lossy(&out.stdout).trim(),
        "hello from busybox"
    );

    // A task still running when the harness stops is killed and unmounted.
    let out = ctd
        .ctr(
            "bismuth",
            &["run", "-d", BUSYBOX_REF, "t2", "/bin/sleep", "600"],
        )
        .unwrap();
    assert!(
        out.status.success(),
        "run -d: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let dir = ctd.dir().to_path_buf();
    let socket = ctd.socket().to_string_lossy().into_owned();
    drop(ctd);

    assert!(!dir.exists(), "temporary directory removed");
    let mounts = std::fs::read_to_string("/proc/self/mountinfo").unwrap();
    assert!(
        !mounts.contains(dir.to_str().unwrap()),
        "nothing mounted under {}",
        dir.display()
    );
    for e in std::fs::read_dir("/proc").unwrap().flatten() {
        let cmdline = std::fs::read(e.path().join("cmdline")).unwrap_or_default();
        assert!(
            !String::from_utf8_lossy(&cmdline).contains(&socket),
            "a process outlived the harness"
        );
    }
}

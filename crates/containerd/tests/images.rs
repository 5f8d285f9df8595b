//! Images against a real containerd: archive import and registry pull land
//! unpacked images that `ctr` can see and run.
#![allow(clippy::unwrap_used)]

use bismuth_containerd::{Containerd, CtdError, Puller, RegistryConfig};
use bismuth_testkit::{images, Containerd as TestContainerd, Registry};

const NS: &str = "bismuth";

#[tokio::test]
async fn imports_an_oci_archive_and_ctr_runs_it() {
    let ctd = TestContainerd::start().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let archive = dir.path().join("busybox.tar");
    images::write_busybox_archive(&archive).unwrap();

    let client = Containerd::connect(&ctd.socket(), NS).await.unwrap();
    let imported = client.import_archive(&archive, None).await.unwrap();
    assert_eq!(imported.len(), 1);
    assert_eq!(imported[0].name, images::BUSYBOX_REF);

    // Importing again is a no-op that succeeds.
    client.import_archive(&archive, None).await.unwrap();

    let resolved = client
        .resolve_image(images::BUSYBOX_REF)
        .await
        .unwrap()
        .unwrap();
    assert!(client.snapshot_exists(&resolved.chain_id).await.unwrap());

    let out = ctd
        .ctr(
            NS,
            &[
                "run",
                "--rm",
                images::BUSYBOX_REF,
                "t1",
                "/bin/echo",
                "hello",
            ],
        )
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), "hello");
}

#[tokio::test]
async fn a_bad_archive_is_a_clear_error() {
    let ctd = TestContainerd::start().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("junk.tar");
    std::fs::write(&path, b"not a tar at all").unwrap();
    let client = Containerd::connect(&ctd.socket(), NS).await.unwrap();
    let err = client.import_archive(&path, None).await.unwrap_err();
    assert!(matches!(err, CtdError::Archive { .. }), "{err}");
    let missing = client
        .import_archive(&dir.path().join("nope.tar"), None)
        .await
        .unwrap_err();
    assert!(missing.to_string().contains("nope.tar"), "{missing}");
}

#[tokio::test]
async fn pulls_from_a_local_registry() {
    let ctd = TestContainerd::start().unwrap();
    let registry = Registry::start().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let archive = dir.path().join("busybox.tar");
    images::write_busybox_archive(&archive).unwrap();
    let image = registry
        .push_oci_archive(&archive, "bismuth/busybox:pulled")
        .unwrap();

    let client = Containerd::connect(&ctd.socket(), NS).await.unwrap();
    let mut config = RegistryConfig::default();
    config.insecure.insert(registry.host());
    let puller = Puller::new(config).unwrap();
    let resolved = puller.ensure(&client, &image).await.unwrap();
    assert!(client.snapshot_exists(&resolved.chain_id).await.unwrap());
    let env = resolved.config.config.unwrap().env.unwrap();
    assert!(env.contains(&"PATH=/bin".to_string()), "{env:?}");

    let out = ctd
        .ctr(NS, &["run", "--rm", &image, "t2", "/bin/echo", "pulled"])
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );

    // A tag the registry does not have: a pull error naming it, quickly.
    let missing = format!("{}/bismuth/busybox:nope", registry.host());
    let err = puller.ensure(&client, &missing).await.unwrap_err();
    assert!(err.to_string().contains("not found"), "{err}");

    // Without the insecure flag the registry is spoken to over TLS and fails.
    let strict = Puller::new(RegistryConfig::default()).unwrap();
    let other = format!("{}/bismuth/busybox:other", registry.host());
    assert!(strict.ensure(&client, &other).await.is_err());
}

//! Test images built from Debian packages, with no registry: an OCI image
//! archive containing the static busybox (`busybox-static`), its applets as
//! links, for `ctr images import` or bismuthd's importer.

use std::path::Path;

use sha2::{Digest, Sha256};

/// The reference the busybox archive carries.
pub const BUSYBOX_REF: &str = "docker.io/bismuth/busybox:test";

/// Applets linked into `/bin` (what the tests use).
const APPLETS: &[&str] = &[
    "sh", "cat", "echo", "ls", "sleep", "id", "wget", "nc", "ip", "mount", "env", "true", "false",
    "httpd", "kill", "grep", "cut", "hostname", "ps",
];

/// Writes an OCI image archive (`oci-archive` layout in a tar) of busybox to `dest`.
pub fn write_busybox_archive(dest: &Path) -> anyhow::Result<()> {
    let busybox = std::fs::read("/bin/busybox").map_err(|e| {
        anyhow::anyhow!("cannot read /bin/busybox (apt-get install busybox-static): {e}")
    })?;

    // The single layer: /bin/busybox, applet links, and the usual directories.
    let mut layer = tar::Builder::new(Vec::new());
    for d in ["bin/", "etc/", "tmp/", "proc/", "sys/", "dev/", "repo/"] {
        let mut h = tar::Header::new_ustar();
        h.set_entry_type(tar::EntryType::Directory);
        h.set_mode(if d == "tmp/" { 0o1777 } else { 0o755 });
        h.set_size(0);
        layer.append_data(&mut h, d, std::io::empty())?;
    }
    let mut h = tar::Header::new_ustar();
    h.set_mode(0o755);
    h.set_size(busybox.len() as u64);
    layer.append_data(&mut h, "bin/busybox", busybox.as_slice())?;
    for applet in APPLETS {
        let mut h = tar::Header::new_ustar();
        h.set_entry_type(tar::EntryType::Symlink);
        h.set_mode(0o777);
        h.set_size(0);
        layer.append_link(&mut h, format!("bin/{applet}"), "busybox")?;
    }
    let layer = layer.into_inner()?;
    let layer_digest = sha256(&layer);

    let config = serde_json::to_vec(&serde_json::json!({
        "architecture": "amd64",
        "os": "linux",
        "config": {"Env": ["PATH=/bin"], "Cmd": ["/bin/sh"]},
        "rootfs": {"type": "layers", "diff_ids": [layer_digest]},
    }))?;
    let manifest = serde_json::to_vec(&serde_json::json!({
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "config": {"mediaType": "application/vnd.oci.image.config.v1+json", "digest": sha256(&config), "size": config.len()},
        "layers": [{"mediaType": "application/vnd.oci.image.layer.v1.tar", "digest": layer_digest, "size": layer.len()}],
    }))?;
    let index = serde_json::to_vec(&serde_json::json!({
        "schemaVersion": 2,
        "manifests": [{
            "mediaType": "application/vnd.oci.image.manifest.v1+json",
            "digest": sha256(&manifest),
            "size": manifest.len(),
            "annotations": {"io.containerd.image.name": BUSYBOX_REF, "org.opencontainers.image.ref.name": "test"},
        }],
    }))?;

    let mut archive = tar::Builder::new(std::fs::File::create(dest)?);
    let mut add = |path: String, data: &[u8]| -> std::io::Result<()> {
        let mut h = tar::Header::new_ustar();
        h.set_mode(0o644);
        h.set_size(data.len() as u64);
        archive.append_data(&mut h, path, data)
    };
    add("oci-layout".into(), br#"{"imageLayoutVersion": "1.0.0"}"#)?;
    add("index.json".into(), &index)?;
    for blob in [&layer, &config, &manifest] {
        let digest = sha256(blob);
        add(format!("blobs/sha256/{}", &digest["sha256:".len()..]), blob)?;
    }
    archive.finish()?;
    Ok(())
}

fn sha256(data: &[u8]) -> String {
    let digest = Sha256::digest(data);
    let hex: String = digest.iter().map(|b| format!("{b:02x}")).collect();
    format!("sha256:{hex}")
}

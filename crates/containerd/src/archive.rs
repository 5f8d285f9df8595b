//! Importing image archives (`bismuthctl image import`): OCI layouts in a tar
//! (`skopeo copy … oci-archive:`, `ctr export`) and Docker archives
//! (`docker save`), streamed blob by blob into the content store, then
//! recorded as images and unpacked.

use std::collections::HashMap;
use std::io::Read;
use std::path::{Path, PathBuf};

use bismuth_model::image_ref::ImageRef;
use bytes::Bytes;
use serde::Deserialize;
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tracing::info;

use crate::oci::{self, Descriptor, Index, Manifest};
use crate::{Containerd, CtdError};

/// An image an import created or updated.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ImportedImage {
    /// The normalized name (`docker.io/bismuth/busybox:test`).
    pub name: String,
    /// The digest of its manifest or index.
    pub digest: String,
}

/// JSON files up to this size are read in the first pass.
const MAX_METADATA: u64 = 4 << 20;

/// One entry of a Docker archive's `manifest.json`.
#[derive(Debug, Deserialize)]
#[serde(rename_all = "PascalCase")]
struct DockerEntry {
    config: String,
    #[serde(default)]
    repo_tags: Option<Vec<String>>,
    layers: Vec<String>,
}

/// A blob to copy out of the tar: its path in the archive and what it must hash to.
#[derive(Clone, Debug)]
struct Wanted {
    digest: String,
    size: i64,
}

impl Containerd {
    /// Imports every image in the archive at `path`. `name` names the image
    /// of an archive that holds exactly one and carries no name of its own
    /// (or overrides it).
    pub async fn import_archive(
        &self,
        path: &Path,
        name: Option<&str>,
    ) -> Result<Vec<ImportedImage>, CtdError> {
        self.leased(|ctd| async move { ctd.import_leased(path, name).await })
            .await
    }

    async fn import_leased(
        &self,
        path: &Path,
        name: Option<&str>,
    ) -> Result<Vec<ImportedImage>, CtdError> {
        let fail = |reason: String| CtdError::Archive {
            path: path.to_owned(),
            reason,
        };
        let (metadata, sizes) = {
            let path = path.to_owned();
            tokio::task::spawn_blocking(move || scan(&path))
                .await
                .map_err(|e| fail(e.to_string()))??
        };

        // Which blobs to copy, and which images they make.
        let mut wanted: HashMap<String, Wanted> = HashMap::new();
        let mut images: Vec<(Option<String>, Descriptor)> = Vec::new();
        if let Some(index) = metadata.get("index.json") {
            let index: Index =
                serde_json::from_slice(index).map_err(|e| fail(format!("index.json: {e}")))?;
            for (entry, size) in &sizes {
                if let Some(hex) = entry.strip_prefix("blobs/sha256/") {
                    let digest = format!("sha256:{hex}");
                    if oci::valid_digest(&digest) {
                        wanted.insert(
                            entry.clone(),
                            Wanted {
                                digest,
                                size: *size,
                            },
                        );
                    }
                }
            }
            for m in index.manifests {
                let own = m
                    .annotations
                    .get("io.containerd.image.name")
                    .or_else(|| m.annotations.get("org.opencontainers.image.ref.name"))
                    .cloned();
                images.push((own, m));
            }
        } else if let Some(manifest) = metadata.get("manifest.json") {
            let entries: Vec<DockerEntry> = serde_json::from_slice(manifest)
                .map_err(|e| fail(format!("manifest.json: {e}")))?;
            for entry in entries {
                let (desc, manifest_bytes) = self
                    .docker_manifest(&entry, &metadata, &sizes, &mut wanted)
                    .await
                    .map_err(fail)?;
                self.write_small(&desc.digest, manifest_bytes).await?;
                let own = entry.repo_tags.and_then(|t| t.into_iter().next());
                images.push((own, desc));
            }
        } else {
            return Err(fail(
                "neither an OCI layout (index.json) nor a Docker archive (manifest.json)".into(),
            ));
        }
        if images.is_empty() {
            return Err(fail("it holds no image".into()));
        }
        if name.is_some() && images.len() > 1 {
            return Err(fail(format!(
                "it holds {} images; --name applies only to one",
                images.len()
            )));
        }
        // Resolve every name before writing anything.
        let mut named = Vec::new();
        for (own, desc) in images {
            let given = name.map(str::to_owned).or(own).ok_or_else(|| {
                fail(format!(
                    "image {} carries no name; give one with --name",
                    desc.digest
                ))
            })?;
            let canonical = ImageRef::parse(&given)
                .map_err(|e| fail(e.to_string()))?
                .canonical();
            named.push((canonical, desc));
        }

        self.copy_blobs(path, wanted).await?;

        let mut out = Vec::new();
        for (image_name, desc) in named {
            self.label_children(&image_name, &desc).await?;
            if oci::is_index(&desc.media_type) {
                let index: Index = serde_json::from_slice(&self.read_content(&desc.digest).await?)
                    .map_err(|e| fail(e.to_string()))?;
                for m in &index.manifests {
                    if self.content_exists(&m.digest).await? {
                        self.label_children(&image_name, m).await?;
                    }
                }
            }
            self.put_image(&image_name, &desc).await?;
            let resolved = self
                .resolve_image(&image_name)
                .await?
                .ok_or_else(|| CtdError::ImageNotFound(image_name.clone()))?;
            self.unpack(&resolved).await?;
            info!(image = %image_name, digest = %desc.digest, "image imported");
            out.push(ImportedImage {
                name: image_name,
                digest: desc.digest,
            });
        }
        Ok(out)
    }

    /// Builds the Docker v2 manifest for one `docker save` entry, noting the
    /// blobs to copy. Docker archive layers are uncompressed, so each layer's
    /// digest is its diff id from the config.
    async fn docker_manifest(
        &self,
        entry: &DockerEntry,
        metadata: &HashMap<String, Vec<u8>>,
        sizes: &HashMap<String, i64>,
        wanted: &mut HashMap<String, Wanted>,
    ) -> Result<(Descriptor, Vec<u8>), String> {
        let config = metadata
            .get(&entry.config)
            .ok_or_else(|| format!("config {} is missing", entry.config))?;
        let parsed: oci::ImageConfig =
            serde_json::from_slice(config).map_err(|e| format!("{}: {e}", entry.config))?;
        if parsed.rootfs.diff_ids.len() != entry.layers.len() {
            return Err(format!(
                "{} lists {} layers, manifest.json {}",
                entry.config,
                parsed.rootfs.diff_ids.len(),
                entry.layers.len()
            ));
        }
        let config_digest = oci::sha256_digest(config);
        self.write_small(&config_digest, config.clone())
            .await
            .map_err(|e| e.to_string())?;
        let mut layers = Vec::new();
        for (path, diff_id) in entry.layers.iter().zip(&parsed.rootfs.diff_ids) {
            let size = *sizes
                .get(path)
                .ok_or_else(|| format!("layer {path} is missing"))?;
            wanted.insert(
                path.clone(),
                Wanted {
                    digest: diff_id.clone(),
                    size,
                },
            );
            layers.push(Descriptor {
                media_type: oci::MEDIA_DOCKER_LAYER.into(),
                digest: diff_id.clone(),
                size,
                ..Default::default()
            });
        }
        let manifest = Manifest {
            schema_version: 2,
            media_type: Some(oci::MEDIA_DOCKER_MANIFEST.into()),
            config: Descriptor {
                media_type: oci::MEDIA_DOCKER_CONFIG.into(),
                digest: config_digest,
                size: config.len() as i64,
                ..Default::default()
            },
            layers,
        };
        let bytes = serde_json::to_vec(&manifest).map_err(|e| e.to_string())?;
        let desc = Descriptor {
            media_type: oci::MEDIA_DOCKER_MANIFEST.into(),
            digest: oci::sha256_digest(&bytes),
            size: bytes.len() as i64,
            ..Default::default()
        };
        Ok((desc, bytes))
    }

    /// Second pass: streams each wanted tar entry into the content store.
    async fn copy_blobs(
        &self,
        path: &Path,
        wanted: HashMap<String, Wanted>,
    ) -> Result<(), CtdError> {
        type Job = (Wanted, mpsc::Receiver<std::io::Result<Bytes>>);
        let (jobs_tx, mut jobs_rx) = mpsc::channel::<Job>(1);
        let reader = {
            let path = path.to_owned();
            tokio::task::spawn_blocking(move || read_blobs(&path, &wanted, &jobs_tx))
        };
        while let Some((blob, chunks)) = jobs_rx.recv().await {
            self.write_content(&blob.digest, blob.size, ReceiverStream::new(chunks))
                .await?;
        }
        reader.await.map_err(|e| CtdError::Archive {
            path: path.to_owned(),
            reason: e.to_string(),
        })?
    }
}

type Scan = (HashMap<String, Vec<u8>>, HashMap<String, i64>);

/// First pass: every entry's size, and the content of small JSON files.
fn scan(path: &Path) -> Result<Scan, CtdError> {
    let file = std::fs::File::open(path)
        .map_err(|e| CtdError::io(format!("opening {}", path.display()), e))?;
    let mut archive = tar::Archive::new(file);
    let mut metadata = HashMap::new();
    let mut sizes = HashMap::new();
    let entries = archive.entries().map_err(|e| archive_error(path, e))?;
    for entry in entries {
        let mut entry = entry.map_err(|e| archive_error(path, e))?;
        let name = normalize(&entry.path().map_err(|e| archive_error(path, e))?);
        let size = entry.header().size().map_err(|e| archive_error(path, e))?;
        if (name.ends_with(".json") || name == "oci-layout") && size <= MAX_METADATA {
            let mut data = Vec::with_capacity(size as usize);
            entry
                .read_to_end(&mut data)
                .map_err(|e| archive_error(path, e))?;
            metadata.insert(name.clone(), data);
        }
        sizes.insert(name, size as i64);
    }
    Ok((metadata, sizes))
}

fn read_blobs(
    path: &Path,
    wanted: &HashMap<String, Wanted>,
    jobs: &mpsc::Sender<(Wanted, mpsc::Receiver<std::io::Result<Bytes>>)>,
) -> Result<(), CtdError> {
    let file = std::fs::File::open(path)
        .map_err(|e| CtdError::io(format!("opening {}", path.display()), e))?;
    let mut archive = tar::Archive::new(file);
    for entry in archive.entries().map_err(|e| archive_error(path, e))? {
        let mut entry = entry.map_err(|e| archive_error(path, e))?;
        let name = normalize(&entry.path().map_err(|e| archive_error(path, e))?);
        let Some(blob) = wanted.get(&name) else {
            continue;
        };
        let (tx, rx) = mpsc::channel(4);
        if jobs.blocking_send((blob.clone(), rx)).is_err() {
            // The writer failed; its error is the one to report.
            return Ok(());
        }
        let mut buf = vec![0u8; 1 << 20];
        loop {
            match entry.read(&mut buf) {
                Ok(0) => break,
                Ok(n) => {
                    if tx
                        .blocking_send(Ok(Bytes::copy_from_slice(&buf[..n])))
                        .is_err()
                    {
                        return Ok(());
                    }
                }
                Err(e) => {
                    let _ = tx.blocking_send(Err(e));
                    return Ok(());
                }
            }
        }
    }
    Ok(())
}

/// Entry names without a leading `./`.
fn normalize(p: &Path) -> String {
    let s = p.to_string_lossy();
    s.strip_prefix("./").unwrap_or(&s).to_owned()
}

fn archive_error(path: &Path, e: std::io::Error) -> CtdError {
    CtdError::Archive {
        path: PathBuf::from(path),
        reason: e.to_string(),
    }
}

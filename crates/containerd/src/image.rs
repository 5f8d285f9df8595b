//! Images in containerd: reading an image's manifest and config, unpacking
//! its layers into the snapshotter (one committed snapshot per chain id),
//! and the records and labels that make an image complete and collectable.

use std::collections::HashMap;

use containerd_client::services::v1::{
    snapshots::{
        CommitSnapshotRequest, PrepareSnapshotRequest, RemoveSnapshotRequest, StatSnapshotRequest,
    },
    ApplyRequest, CreateImageRequest, GetImageRequest, Image, UpdateImageRequest,
};
use containerd_client::types::Descriptor as CtdDescriptor;
use tracing::{debug, info};

use crate::client::{RpcResult, SNAPSHOTTER};
use crate::oci::{self, Descriptor, ImageConfig, Index, Manifest};
use crate::{Containerd, CtdError};

/// An image ready to run: its config and the chain id of its top layer.
#[derive(Clone, Debug)]
pub struct ResolvedImage {
    /// The name containerd stores it under.
    pub name: String,
    /// The platform manifest.
    pub manifest: Manifest,
    /// Env, working dir and the layers' diff ids.
    pub config: ImageConfig,
    /// The snapshot a container's rootfs is prepared on ("" for no layers).
    pub chain_id: String,
}

impl Containerd {
    /// The image record, if containerd has one under `name`.
    pub async fn get_image(&self, name: &str) -> Result<Option<Image>, CtdError> {
        let req = self.request(GetImageRequest {
            name: name.to_owned(),
        });
        match self.images().get(req).await.rpc("images.get") {
            Ok(r) => Ok(r.image),
            Err(e) if e.is_not_found() => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// Creates the image record `name` → `target`, or points an existing one there.
    pub async fn put_image(&self, name: &str, target: &Descriptor) -> Result<(), CtdError> {
        let image = Image {
            name: name.to_owned(),
            target: Some(to_ctd(target)),
            ..Default::default()
        };
        let created = self
            .images()
            .create(self.request(CreateImageRequest {
                image: Some(image.clone()),
                source_date_epoch: None,
            }))
            .await
            .rpc("images.create");
        match created {
            Ok(_) => Ok(()),
            Err(e) if e.is_already_exists() => self
                .images()
                .update(self.request(UpdateImageRequest {
                    image: Some(image),
                    update_mask: Some(prost_types::FieldMask {
                        paths: vec!["target".into()],
                    }),
                    source_date_epoch: None,
                }))
                .await
                .rpc("images.update")
                .map(drop),
            Err(e) => Err(e),
        }
    }

    /// Reads `name`'s manifest for this platform and its config, if the
    /// image and all its metadata blobs are present.
    pub async fn resolve_image(&self, name: &str) -> Result<Option<ResolvedImage>, CtdError> {
        let Some(image) = self.get_image(name).await? else {
            return Ok(None);
        };
        let target = image
            .target
            .map(from_ctd)
            .ok_or_else(|| CtdError::BadImage {
                image: name.to_owned(),
                reason: "the image record has no target".into(),
            })?;
        let manifest_desc = self.platform_manifest(name, &target).await?;
        let manifest: Manifest = self.read_json(name, &manifest_desc.digest).await?;
        let config: ImageConfig = self.read_json(name, &manifest.config.digest).await?;
        if config.rootfs.diff_ids.len() != manifest.layers.len() {
            return Err(CtdError::BadImage {
                image: name.to_owned(),
                reason: format!(
                    "config lists {} layers, manifest {}",
                    config.rootfs.diff_ids.len(),
                    manifest.layers.len()
                ),
            });
        }
        let chain_id = oci::chain_ids(&config.rootfs.diff_ids)
            .pop()
            .unwrap_or_default();
        Ok(Some(ResolvedImage {
            name: name.to_owned(),
            manifest,
            config,
            chain_id,
        }))
    }

    /// The manifest for this platform: `target` itself or its pick from an index.
    async fn platform_manifest(
        &self,
        name: &str,
        target: &Descriptor,
    ) -> Result<Descriptor, CtdError> {
        if oci::is_manifest(&target.media_type) {
            return Ok(target.clone());
        }
        if !oci::is_index(&target.media_type) {
            return Err(CtdError::BadImage {
                image: name.to_owned(),
                reason: format!("unsupported media type {:?}", target.media_type),
            });
        }
        let index: Index = self.read_json(name, &target.digest).await?;
        oci::pick_manifest(&index)
            .cloned()
            .ok_or_else(|| CtdError::BadImage {
                image: name.to_owned(),
                reason: format!(
                    "no manifest for {}/{}",
                    oci::host_platform().os,
                    oci::host_platform().architecture
                ),
            })
    }

    async fn read_json<T: serde::de::DeserializeOwned>(
        &self,
        image: &str,
        digest: &str,
    ) -> Result<T, CtdError> {
        let data = self.read_content(digest).await?;
        serde_json::from_slice(&data).map_err(|e| CtdError::BadImage {
            image: image.to_owned(),
            reason: format!("blob {digest}: {e}"),
        })
    }

    /// Unpacks every layer not yet in the snapshotter, bottom up. Safe to run
    /// twice at once for one image: a lost commit race leaves the winner's snapshot.
    pub async fn unpack(&self, image: &ResolvedImage) -> Result<(), CtdError> {
        let chain = oci::chain_ids(&image.config.rootfs.diff_ids);
        let mut parent = String::new();
        for (i, (layer, chain_id)) in image.manifest.layers.iter().zip(&chain).enumerate() {
            if !self.snapshot_exists(chain_id).await? {
                debug!(image = %image.name, layer = %layer.digest, "unpacking layer");
                self.apply_layer(layer, &image.config.rootfs.diff_ids[i], chain_id, &parent)
                    .await
                    .map_err(|e| CtdError::BadImage {
                        image: image.name.clone(),
                        reason: format!("unpacking layer {}: {e}", layer.digest),
                    })?;
            }
            parent.clone_from(chain_id);
        }
        // Keep the unpacked snapshot as long as the image's config is kept.
        if !image.chain_id.is_empty() {
            self.label_content(
                &image.manifest.config.digest,
                HashMap::from([(
                    format!("containerd.io/gc.ref.snapshot.{SNAPSHOTTER}"),
                    image.chain_id.clone(),
                )]),
            )
            .await?;
        }
        info!(image = %image.name, layers = chain.len(), "image unpacked");
        Ok(())
    }

    pub async fn snapshot_exists(&self, key: &str) -> Result<bool, CtdError> {
        let req = self.request(StatSnapshotRequest {
            snapshotter: SNAPSHOTTER.into(),
            key: key.to_owned(),
        });
        match self.snapshots().stat(req).await.rpc("snapshots.stat") {
            Ok(_) => Ok(true),
            Err(e) if e.is_not_found() => Ok(false),
            Err(e) => Err(e),
        }
    }

    async fn apply_layer(
        &self,
        layer: &Descriptor,
        diff_id: &str,
        chain_id: &str,
        parent: &str,
    ) -> Result<(), CtdError> {
        let key = format!("extract-{}-{chain_id}", uuid::Uuid::new_v4().simple());
        let mounts = self
            .snapshots()
            .prepare(self.request(PrepareSnapshotRequest {
                snapshotter: SNAPSHOTTER.into(),
                key: key.clone(),
                parent: parent.to_owned(),
                labels: HashMap::new(),
            }))
            .await
            .rpc("snapshots.prepare")?
            .mounts;
        let result = async {
            let applied = self
                .diff()
                .apply(self.request(ApplyRequest {
                    diff: Some(to_ctd(layer)),
                    mounts,
                    payloads: HashMap::new(),
                    sync_fs: false,
                }))
                .await
                .rpc("diff.apply")?
                .applied
                .unwrap_or_default();
            if applied.digest != diff_id {
                return Err(CtdError::BadImage {
                    image: layer.digest.clone(),
                    reason: format!(
                        "layer unpacks to {}, the config says {diff_id}",
                        applied.digest
                    ),
                });
            }
            self.snapshots()
                .commit(self.request(CommitSnapshotRequest {
                    snapshotter: SNAPSHOTTER.into(),
                    name: chain_id.to_owned(),
                    key: key.clone(),
                    labels: HashMap::new(),
                }))
                .await
                .rpc("snapshots.commit")
                .map(drop)
        }
        .await;
        match result {
            Ok(()) => Ok(()),
            Err(e) => {
                let _ = self.remove_snapshot(&key).await;
                // Someone else unpacked the same layer meanwhile.
                if e.is_already_exists() {
                    Ok(())
                } else {
                    Err(e)
                }
            }
        }
    }

    /// Removes a snapshot; one that is gone already is not an error.
    pub async fn remove_snapshot(&self, key: &str) -> Result<(), CtdError> {
        let req = self.request(RemoveSnapshotRequest {
            snapshotter: SNAPSHOTTER.into(),
            key: key.to_owned(),
        });
        match self.snapshots().remove(req).await.rpc("snapshots.remove") {
            Ok(_) => Ok(()),
            Err(e) if e.is_not_found() => Ok(()),
            Err(e) => Err(e),
        }
    }

    /// Labels an index or manifest blob with references to its children, so
    /// containerd's collector keeps what the image record reaches.
    pub(crate) async fn label_children(
        &self,
        image: &str,
        desc: &Descriptor,
    ) -> Result<(), CtdError> {
        let mut labels = HashMap::new();
        if oci::is_index(&desc.media_type) {
            let index: Index = self.read_json(image, &desc.digest).await?;
            for (i, m) in index.manifests.iter().enumerate() {
                if self.content_exists(&m.digest).await? {
                    labels.insert(
                        format!("containerd.io/gc.ref.content.m.{i}"),
                        m.digest.clone(),
                    );
                }
            }
        } else {
            let manifest: Manifest = self.read_json(image, &desc.digest).await?;
            labels.insert(
                "containerd.io/gc.ref.content.config".to_owned(),
                manifest.config.digest.clone(),
            );
            for (i, l) in manifest.layers.iter().enumerate() {
                labels.insert(
                    format!("containerd.io/gc.ref.content.l.{i}"),
                    l.digest.clone(),
                );
            }
        }
        self.label_content(&desc.digest, labels).await
    }
}

pub(crate) fn to_ctd(d: &Descriptor) -> CtdDescriptor {
    CtdDescriptor {
        media_type: d.media_type.clone(),
        digest: d.digest.clone(),
        size: d.size,
        annotations: HashMap::new(),
    }
}

fn from_ctd(d: CtdDescriptor) -> Descriptor {
    Descriptor {
        media_type: d.media_type,
        digest: d.digest,
        size: d.size,
        platform: None,
        annotations: d.annotations,
    }
}

//! containerd 1.6 over its gRPC API, for bismuthd and `bismuthctl image`:
//! a namespaced client, the content store, images (import from archives, pull
//! from registries, unpack into the snapshotter), and typed errors.
//!
//! Everything goes through containerd's own services (content, images, diff,
//! snapshots), so images written here are the same images `ctr` sees.

mod archive;
mod client;
mod content;
mod error;
mod image;
pub mod oci;
mod registry;

pub use archive::ImportedImage;
pub use client::{Containerd, RpcResult};
pub use containerd_client::{events, services::v1 as api, types};
pub use error::CtdError;
pub use image::ResolvedImage;
pub use registry::{Puller, RegistryAuth, RegistryConfig};

//! containerd's content store: existence checks, small reads, streamed
//! writes verified against their digest, and garbage-collection labels.

use std::collections::HashMap;

use bytes::Bytes;
use containerd_client::services::v1::{
    AbortRequest, Info, InfoRequest, ReadContentRequest, UpdateRequest, WriteAction,
    WriteContentRequest,
};
use futures_util::{Stream, StreamExt};
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;

use crate::client::RpcResult;
use crate::{Containerd, CtdError};

/// Largest blob read whole into memory (manifests, indexes, configs).
const MAX_SMALL_BLOB: i64 = 8 << 20;

impl Containerd {
    /// Whether the store holds `digest`.
    pub async fn content_exists(&self, digest: &str) -> Result<bool, CtdError> {
        let req = self.request(InfoRequest {
            digest: digest.to_owned(),
        });
        match self.content().info(req).await.rpc("content.info") {
            Ok(_) => Ok(true),
            Err(e) if e.is_not_found() => Ok(false),
            Err(e) => Err(e),
        }
    }

    /// Reads a small blob (a manifest, index or config) whole.
    pub async fn read_content(&self, digest: &str) -> Result<Vec<u8>, CtdError> {
        let info = self
            .content()
            .info(self.request(InfoRequest {
                digest: digest.to_owned(),
            }))
            .await
            .rpc("content.info")?
            .info
            .unwrap_or_default();
        if info.size > MAX_SMALL_BLOB {
            return Err(CtdError::BadImage {
                image: digest.to_owned(),
                reason: format!("metadata blob of {} bytes is too large", info.size),
            });
        }
        let mut stream = self
            .content()
            .read(self.request(ReadContentRequest {
                digest: digest.to_owned(),
                offset: 0,
                size: 0,
            }))
            .await
            .rpc("content.read")?;
        let mut out = Vec::with_capacity(usize::try_from(info.size).unwrap_or(0));
        while let Some(chunk) = stream.message().await.map_err(|status| CtdError::Rpc {
            op: "content.read",
            status,
        })? {
            out.extend_from_slice(&chunk.data);
        }
        Ok(out)
    }

    /// Writes a blob from a stream of chunks; containerd checks size and
    /// digest at commit, so a short or corrupt stream never lands. Writing a
    /// blob the store already has is a no-op.
    pub async fn write_content<S>(&self, digest: &str, size: i64, data: S) -> Result<(), CtdError>
    where
        S: Stream<Item = std::io::Result<Bytes>> + Send + Unpin + 'static,
    {
        if self.content_exists(digest).await? {
            return Ok(());
        }
        let reference = format!("bismuth-{}-{}", digest, uuid::Uuid::new_v4());
        let (tx, rx) = mpsc::channel::<WriteContentRequest>(4);
        let feed = feed_chunks(tx, reference.clone(), digest.to_owned(), size, data);
        // containerd sends its response headers only after the first message,
        // and answers every message: send and read at the same time.
        let call = async {
            let mut responses = self
                .content()
                .write(self.request(ReceiverStream::new(rx)))
                .await
                .rpc("content.write")?;
            loop {
                match responses.message().await {
                    Ok(Some(_)) => {}
                    Ok(None) => return Ok(()),
                    Err(status) => {
                        return Err(CtdError::Rpc {
                            op: "content.write",
                            status,
                        })
                    }
                }
            }
        };
        let (fed, drained) = tokio::join!(feed, call);
        let result = fed.and(drained);
        match result {
            Ok(()) => Ok(()),
            // Another writer committed the same blob first.
            Err(e) if e.is_already_exists() => Ok(()),
            Err(e) => {
                let _ = self
                    .content()
                    .abort(self.request(AbortRequest { r#ref: reference }))
                    .await;
                Err(e)
            }
        }
    }

    /// Writes a small in-memory blob.
    pub async fn write_small(&self, digest: &str, data: Vec<u8>) -> Result<(), CtdError> {
        let size = data.len() as i64;
        let chunks = futures_util::stream::iter([Ok(Bytes::from(data))]);
        self.write_content(digest, size, chunks).await
    }

    /// Adds labels to a blob (the `containerd.io/gc.ref.*` labels that keep
    /// an image's children from being collected).
    pub async fn label_content(
        &self,
        digest: &str,
        labels: HashMap<String, String>,
    ) -> Result<(), CtdError> {
        if labels.is_empty() {
            return Ok(());
        }
        let paths = labels.keys().map(|k| format!("labels.{k}")).collect();
        let req = self.request(UpdateRequest {
            info: Some(Info {
                digest: digest.to_owned(),
                labels,
                ..Default::default()
            }),
            update_mask: Some(prost_types::FieldMask { paths }),
        });
        self.content()
            .update(req)
            .await
            .rpc("content.update")
            .map(drop)
    }
}

/// Sends the chunks as write messages with their offsets, then the commit.
async fn feed_chunks<S>(
    tx: mpsc::Sender<WriteContentRequest>,
    reference: String,
    digest: String,
    size: i64,
    mut data: S,
) -> Result<(), CtdError>
where
    S: Stream<Item = std::io::Result<Bytes>> + Unpin,
{
    let closed = || CtdError::Rpc {
        op: "content.write",
        status: tonic::Status::unavailable("containerd closed the write stream"),
    };
    let mut offset = 0i64;
    let mut first = true;
    while let Some(chunk) = data.next().await {
        let chunk = chunk.map_err(|e| CtdError::io(format!("reading blob {digest}"), e))?;
        // Large chunks are split so no message nears gRPC's size limit.
        for piece in chunk.chunks(1 << 20) {
            let msg = WriteContentRequest {
                action: WriteAction::Write as i32,
                r#ref: if first {
                    reference.clone()
                } else {
                    String::new()
                },
                total: size,
                expected: digest.clone(),
                offset,
                data: piece.to_vec(),
                labels: HashMap::new(),
            };
            first = false;
            offset += piece.len() as i64;
            tx.send(msg).await.map_err(|_| closed())?;
        }
    }
    if offset != size {
        return Err(CtdError::io(
            format!("blob {digest}"),
            std::io::Error::new(
                std::io::ErrorKind::UnexpectedEof,
                format!("got {offset} of {size} bytes"),
            ),
        ));
    }
    let commit = WriteContentRequest {
        action: WriteAction::Commit as i32,
        r#ref: if first { reference } else { String::new() },
        total: size,
        expected: digest,
        offset,
        data: Vec::new(),
        labels: HashMap::new(),
    };
    tx.send(commit).await.map_err(|_| closed())?;
    Ok(())
}

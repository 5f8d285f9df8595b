//! The connection: one gRPC channel to containerd's socket, and requests
//! stamped with our namespace.

use std::path::{Path, PathBuf};
use std::time::Duration;

use containerd_client::services::v1::{
    containers_client::ContainersClient, content_client::ContentClient, diff_client::DiffClient,
    events_client::EventsClient, images_client::ImagesClient,
    snapshots::snapshots_client::SnapshotsClient, tasks_client::TasksClient,
    version_client::VersionClient,
};
use tonic::transport::{Channel, Endpoint};
use tonic::Request;

use crate::CtdError;

/// The snapshotter every image is unpacked into and every rootfs prepared with.
pub const SNAPSHOTTER: &str = "overlayfs";

/// A containerd client bound to one namespace. Cheap to clone.
#[derive(Clone, Debug)]
pub struct Containerd {
    channel: Channel,
    namespace: String,
    socket: PathBuf,
}

impl Containerd {
    /// Connects to the socket and checks that containerd answers.
    pub async fn connect(socket: &Path, namespace: &str) -> Result<Self, CtdError> {
        let fail = |reason: String| CtdError::Connect {
            socket: socket.to_owned(),
            reason,
        };
        let path = socket.to_owned();
        // The URI is a placeholder: every connection goes to the Unix socket.
        let channel = Endpoint::from_static("http://containerd.sock")
            .connect_timeout(Duration::from_secs(5))
            .connect_with_connector(UnixConnector { path })
            .await
            .map_err(|e| fail(source_chain(&e)))?;
        let ctd = Containerd {
            channel,
            namespace: namespace.to_owned(),
            socket: socket.to_owned(),
        };
        ctd.version().await.map_err(|e| fail(e.to_string()))?;
        Ok(ctd)
    }

    /// containerd's version string.
    pub async fn version(&self) -> Result<String, CtdError> {
        let v = VersionClient::new(self.channel.clone())
            .version(())
            .await
            .rpc("version")?;
        Ok(v.version)
    }

    /// The namespace every request is made in.
    pub fn namespace(&self) -> &str {
        &self.namespace
    }

    /// The socket this client talks to.
    pub fn socket(&self) -> &Path {
        &self.socket
    }

    /// Wraps `msg` in a request carrying the namespace header.
    pub fn request<T>(&self, msg: T) -> Request<T> {
        let mut req = Request::new(msg);
        if let Ok(v) = self.namespace.parse() {
            req.metadata_mut().insert("containerd-namespace", v);
        }
        req
    }

    pub fn containers(&self) -> ContainersClient<Channel> {
        ContainersClient::new(self.channel.clone())
    }

    pub fn content(&self) -> ContentClient<Channel> {
        // Blobs move in 1 MiB messages; leave room for the framing.
        ContentClient::new(self.channel.clone()).max_decoding_message_size(16 << 20)
    }

    pub fn diff(&self) -> DiffClient<Channel> {
        DiffClient::new(self.channel.clone())
    }

    pub fn events(&self) -> EventsClient<Channel> {
        EventsClient::new(self.channel.clone())
    }

    pub fn images(&self) -> ImagesClient<Channel> {
        ImagesClient::new(self.channel.clone())
    }

    pub fn snapshots(&self) -> SnapshotsClient<Channel> {
        SnapshotsClient::new(self.channel.clone())
    }

    pub fn tasks(&self) -> TasksClient<Channel> {
        TasksClient::new(self.channel.clone())
    }
}

/// Connects every gRPC connection to containerd's Unix socket.
#[derive(Clone)]
struct UnixConnector {
    path: PathBuf,
}

impl tower_service::Service<http::Uri> for UnixConnector {
    type Response = hyper_util::rt::TokioIo<tokio::net::UnixStream>;
    type Error = std::io::Error;
    type Future = std::pin::Pin<
        Box<dyn std::future::Future<Output = std::io::Result<Self::Response>> + Send>,
    >;

    fn poll_ready(
        &mut self,
        _: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Result<(), Self::Error>> {
        std::task::Poll::Ready(Ok(()))
    }

    fn call(&mut self, _: http::Uri) -> Self::Future {
        let path = self.path.clone();
        Box::pin(async move {
            Ok(hyper_util::rt::TokioIo::new(
                tokio::net::UnixStream::connect(path).await?,
            ))
        })
    }
}

fn source_chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut cur = e.source();
    while let Some(inner) = cur {
        s.push_str(": ");
        s.push_str(&inner.to_string());
        cur = inner.source();
    }
    s
}

/// Turns a tonic response into its message or a [`CtdError`] naming the call.
pub trait RpcResult<T> {
    fn rpc(self, op: &'static str) -> Result<T, CtdError>;
}

impl<T> RpcResult<T> for Result<tonic::Response<T>, tonic::Status> {
    fn rpc(self, op: &'static str) -> Result<T, CtdError> {
        self.map(tonic::Response::into_inner)
            .map_err(|status| CtdError::Rpc { op, status })
    }
}

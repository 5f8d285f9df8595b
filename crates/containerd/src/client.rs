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
    /// A lease every request carries, protecting what it creates from
    /// containerd's garbage collector until the lease ends.
    lease: Option<String>,
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
            lease: None,
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
        if let Some(lease) = self.lease.as_ref().and_then(|l| l.parse().ok()) {
            req.metadata_mut().insert("containerd-lease", lease);
        }
        req
    }

    /// Runs `work` with a client whose every request holds a fresh lease, so
    /// content and snapshots it makes survive garbage collection until they
    /// are referenced (by an image, a label, a container). The lease expires
    /// by itself after an hour should this process die before ending it.
    pub async fn leased<T, F, Fut>(&self, work: F) -> Result<T, CtdError>
    where
        F: FnOnce(Containerd) -> Fut,
        Fut: std::future::Future<Output = Result<T, CtdError>>,
    {
        use containerd_client::services::v1::leases_client::LeasesClient;
        use containerd_client::services::v1::{CreateRequest, DeleteRequest};
        let id = format!("bismuth-{}", uuid::Uuid::new_v4().simple());
        let expire = std::time::SystemTime::now() + Duration::from_secs(3600);
        let expire = humantime_rfc3339(expire);
        let mut leases = LeasesClient::new(self.channel.clone());
        leases
            .create(self.request(CreateRequest {
                id: id.clone(),
                labels: [("containerd.io/gc.expire".to_owned(), expire)].into(),
            }))
            .await
            .rpc("leases.create")?;
        let mut leased = self.clone();
        leased.lease = Some(id.clone());
        let result = work(leased).await;
        let _ = leases
            .delete(self.request(DeleteRequest { id, sync: false }))
            .await;
        result
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

/// RFC 3339 UTC timestamp (`2026-01-02T03:04:05Z`) for lease expiry labels.
fn humantime_rfc3339(t: std::time::SystemTime) -> String {
    let secs = t
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    let (days, rem) = (secs / 86_400, secs % 86_400);
    // Civil date from days since the epoch (Howard Hinnant's algorithm).
    let z = days as i64 + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}Z",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60
    )
}

#[cfg(test)]
mod tests {
    use std::time::{Duration, UNIX_EPOCH};

    #[test]
    fn formats_rfc3339() {
        let t = UNIX_EPOCH + Duration::from_secs(1_795_316_645);
        assert_eq!(super::humantime_rfc3339(t), "2026-11-22T03:04:05Z");
        assert_eq!(super::humantime_rfc3339(UNIX_EPOCH), "1970-01-01T00:00:00Z");
    }
}

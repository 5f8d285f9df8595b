//! bismuthd's use of containerd for one container: a read-only view of its
//! image (the writable layer is bismuthd's, see `rootfs`), the container
//! record (spec and labels), and the task (create, start,
//! stop with a grace period, delete). Every removal tolerates "not found",
//! so tear-down can be retried after any crash.

use std::collections::HashMap;
use std::time::Duration;

use bismuth_containerd::api::{
    container::Runtime as CtdRuntime, snapshots::ViewSnapshotRequest, Container,
    CreateContainerRequest, CreateTaskRequest, DeleteContainerRequest, DeleteTaskRequest,
    GetContainerRequest, GetRequest, KillRequest, ListContainersRequest, StartRequest, WaitRequest,
};
use bismuth_containerd::types::Mount;
use bismuth_containerd::{Containerd, CtdError, ResolvedImage, RpcResult};
use tracing::debug;

/// containerd's runc shim.
const RUNTIME: &str = "io.containerd.runc.v2";
const SNAPSHOTTER: &str = "overlayfs";
/// Labels bismuthd puts on its containers.
pub const LABEL_FUNCTION: &str = "bismuth.function";
pub const LABEL_SLOT: &str = "bismuth.net.slot";

/// A task's state as bismuthd cares about it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TaskState {
    Running {
        pid: u32,
    },
    Stopped {
        exit: u32,
    },
    /// Created, paused or unknown: not serving.
    Other,
}

/// Container and task operations in bismuthd's namespace.
#[derive(Clone, Debug)]
pub struct Runtime {
    pub ctd: Containerd,
}

impl Runtime {
    /// Makes the container's read-only view of the image and records
    /// the container, with the runc shim's `options` if given (a sandbox's
    /// runsc); returns the view's mounts. A leftover snapshot of the same
    /// key is replaced.
    pub async fn create_container(
        &self,
        id: &str,
        image: &ResolvedImage,
        spec: &oci_spec::runtime::Spec,
        labels: HashMap<String, String>,
        options: Option<prost_types::Any>,
    ) -> Result<Vec<Mount>, CtdError> {
        // Under a lease: the view is unreferenced until the container exists.
        self.ctd
            .leased(|ctd| async move {
                ctd.remove_snapshot(id).await?;
                let view = ctd
                    .snapshots()
                    .view(ctd.request(ViewSnapshotRequest {
                        snapshotter: SNAPSHOTTER.into(),
                        key: id.to_owned(),
                        parent: image.chain_id.clone(),
                        labels: HashMap::new(),
                    }))
                    .await
                    .rpc("snapshots.view")?
                    .mounts;
                let container = Container {
                    id: id.to_owned(),
                    labels,
                    image: image.name.clone(),
                    runtime: Some(CtdRuntime {
                        name: RUNTIME.into(),
                        options,
                    }),
                    spec: Some(prost_types_any(spec)),
                    snapshotter: SNAPSHOTTER.into(),
                    snapshot_key: id.to_owned(),
                    ..Default::default()
                };
                let created = ctd
                    .containers()
                    .create(ctd.request(CreateContainerRequest {
                        container: Some(container),
                    }))
                    .await
                    .rpc("containers.create");
                if let Err(e) = created {
                    let _ = ctd.remove_snapshot(id).await;
                    return Err(e);
                }
                Ok(view)
            })
            .await
    }

    /// The container record, if it exists.
    pub async fn container(&self, id: &str) -> Result<Option<Container>, CtdError> {
        let req = self.ctd.request(GetContainerRequest { id: id.to_owned() });
        match self.ctd.containers().get(req).await.rpc("containers.get") {
            Ok(r) => Ok(r.container),
            Err(e) if e.is_not_found() => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// Every container in the namespace.
    pub async fn list_containers(&self) -> Result<Vec<Container>, CtdError> {
        let req = self.ctd.request(ListContainersRequest { filters: vec![] });
        Ok(self
            .ctd
            .containers()
            .list(req)
            .await
            .rpc("containers.list")?
            .containers)
    }

    /// Creates and starts the task on `rootfs`, stdout and stderr going to
    /// `io` (a containerd stdio URI: `file://`, or `binary://` for a log writer).
    pub async fn start_task(&self, id: &str, rootfs: Mount, io: &str) -> Result<u32, CtdError> {
        let rootfs = vec![rootfs];
        let io = io.to_owned();
        self.ctd
            .tasks()
            .create(self.ctd.request(CreateTaskRequest {
                container_id: id.to_owned(),
                rootfs,
                stdout: io.clone(),
                stderr: io,
                ..Default::default()
            }))
            .await
            .rpc("tasks.create")?;
        let started = self
            .ctd
            .tasks()
            .start(self.ctd.request(StartRequest {
                container_id: id.to_owned(),
                exec_id: String::new(),
            }))
            .await
            .rpc("tasks.start");
        match started {
            Ok(r) => Ok(r.pid),
            Err(e) => {
                let _ = self.delete_task(id).await;
                Err(e)
            }
        }
    }

    /// The task's state, `None` if there is no task.
    pub async fn task_state(&self, id: &str) -> Result<Option<TaskState>, CtdError> {
        let req = self.ctd.request(GetRequest {
            container_id: id.to_owned(),
            exec_id: String::new(),
        });
        let process = match self.ctd.tasks().get(req).await.rpc("tasks.get") {
            Ok(r) => r.process.unwrap_or_default(),
            Err(e) if e.is_not_found() => return Ok(None),
            Err(e) => return Err(e),
        };
        // containerd.v1.types.Status: 2 running, 3 stopped.
        Ok(Some(match process.status {
            2 => TaskState::Running { pid: process.pid },
            3 => TaskState::Stopped {
                exit: process.exit_status,
            },
            _ => TaskState::Other,
        }))
    }

    /// SIGTERM, then SIGKILL after `grace`, then deletes the task.
    pub async fn stop_task(&self, id: &str, grace: Duration) -> Result<(), CtdError> {
        if let Some(TaskState::Running { .. } | TaskState::Other) = self.task_state(id).await? {
            let _ = self.kill(id, 15).await;
            let waited = tokio::time::timeout(grace, self.wait(id)).await;
            if waited.is_err() {
                debug!(
                    container = id,
                    "did not stop within the grace period; killing"
                );
                let _ = self.kill(id, 9).await;
                let _ = tokio::time::timeout(Duration::from_secs(10), self.wait(id)).await;
            }
        }
        self.delete_task(id).await
    }

    /// Sends `signal` to every process of the task.
    pub async fn kill(&self, id: &str, signal: u32) -> Result<(), CtdError> {
        let req = self.ctd.request(KillRequest {
            container_id: id.to_owned(),
            exec_id: String::new(),
            signal,
            all: true,
        });
        match self.ctd.tasks().kill(req).await.rpc("tasks.kill") {
            Ok(_) => Ok(()),
            Err(e) if e.is_not_found() => Ok(()),
            Err(e) => Err(e),
        }
    }

    async fn wait(&self, id: &str) -> Result<(), CtdError> {
        let req = self.ctd.request(WaitRequest {
            container_id: id.to_owned(),
            exec_id: String::new(),
        });
        match self.ctd.tasks().wait(req).await.rpc("tasks.wait") {
            Ok(_) => Ok(()),
            Err(e) if e.is_not_found() => Ok(()),
            Err(e) => Err(e),
        }
    }

    /// Deletes the task (it must have stopped); a missing task is fine.
    pub async fn delete_task(&self, id: &str) -> Result<(), CtdError> {
        let req = self.ctd.request(DeleteTaskRequest {
            container_id: id.to_owned(),
        });
        match self.ctd.tasks().delete(req).await.rpc("tasks.delete") {
            Ok(_) => Ok(()),
            Err(e) if e.is_not_found() => Ok(()),
            Err(e) => Err(e),
        }
    }

    /// Stops and deletes task, container and snapshot; each missing part is fine.
    pub async fn remove(&self, id: &str, grace: Duration) -> Result<(), CtdError> {
        self.stop_task(id, grace).await?;
        let req = self
            .ctd
            .request(DeleteContainerRequest { id: id.to_owned() });
        match self
            .ctd
            .containers()
            .delete(req)
            .await
            .rpc("containers.delete")
        {
            Ok(_) => {}
            Err(e) if e.is_not_found() => {}
            Err(e) => return Err(e),
        }
        self.ctd.remove_snapshot(id).await
    }
}

fn prost_types_any(spec: &oci_spec::runtime::Spec) -> prost_types::Any {
    prost_types::Any {
        type_url: crate::spec::SPEC_TYPE_URL.into(),
        value: serde_json::to_vec(spec).unwrap_or_default(),
    }
}

//! [`Txn`]: a ZooKeeper multi-transaction built from owned operations, so a
//! failure can name the operation and path that failed. All or nothing.

use zookeeper_client as zkc;

use crate::error::ZkError;
use crate::session::{persistent, Zk};

#[derive(Clone, Debug)]
enum Op {
    Create {
        path: String,
        data: Vec<u8>,
    },
    CreateEphemeral {
        path: String,
        data: Vec<u8>,
    },
    Set {
        path: String,
        data: Vec<u8>,
        version: Option<i32>,
    },
    Delete {
        path: String,
        version: Option<i32>,
    },
    Check {
        path: String,
        version: i32,
    },
}

impl Op {
    fn describe(&self) -> (&'static str, &str) {
        match self {
            Op::Create { path, .. } | Op::CreateEphemeral { path, .. } => ("create", path),
            Op::Set { path, .. } => ("set", path),
            Op::Delete { path, .. } => ("delete", path),
            Op::Check { path, .. } => ("check", path),
        }
    }
}

/// A list of writes committed atomically by [`Zk::commit`].
#[derive(Clone, Debug, Default)]
pub struct Txn {
    ops: Vec<Op>,
}

impl Txn {
    /// An empty transaction.
    pub fn new() -> Self {
        Self::default()
    }

    /// Creates a persistent znode (fails if it exists).
    pub fn create(&mut self, path: impl Into<String>, data: impl Into<Vec<u8>>) -> &mut Self {
        self.ops.push(Op::Create {
            path: path.into(),
            data: data.into(),
        });
        self
    }

    /// Creates an ephemeral znode, held by this session (fails if it exists).
    pub fn create_ephemeral(
        &mut self,
        path: impl Into<String>,
        data: impl Into<Vec<u8>>,
    ) -> &mut Self {
        self.ops.push(Op::CreateEphemeral {
            path: path.into(),
            data: data.into(),
        });
        self
    }

    /// Sets data if the version still matches (`None`: any version).
    pub fn set(
        &mut self,
        path: impl Into<String>,
        data: impl Into<Vec<u8>>,
        version: Option<i32>,
    ) -> &mut Self {
        self.ops.push(Op::Set {
            path: path.into(),
            data: data.into(),
            version,
        });
        self
    }

    /// Deletes a znode if the version still matches (`None`: any version).
    pub fn delete(&mut self, path: impl Into<String>, version: Option<i32>) -> &mut Self {
        self.ops.push(Op::Delete {
            path: path.into(),
            version,
        });
        self
    }

    /// Fails the transaction unless the znode is still at `version`.
    pub fn check(&mut self, path: impl Into<String>, version: i32) -> &mut Self {
        self.ops.push(Op::Check {
            path: path.into(),
            version,
        });
        self
    }

    /// Number of operations.
    pub fn len(&self) -> usize {
        self.ops.len()
    }

    /// Whether there is nothing to commit.
    pub fn is_empty(&self) -> bool {
        self.ops.is_empty()
    }
}

impl Zk {
    /// Commits all operations of `txn` atomically. On failure nothing is
    /// written, and the error names the first operation that failed.
    pub async fn commit(&self, txn: &Txn) -> Result<(), ZkError> {
        if txn.is_empty() {
            return Ok(());
        }
        let client = self.client().await?;
        let mut writer = client.new_multi_writer();
        let options = persistent();
        let ephemeral = crate::session::ephemeral();
        for op in &txn.ops {
            let added = match op {
                Op::Create { path, data } => writer.add_create(path, data, &options),
                Op::CreateEphemeral { path, data } => writer.add_create(path, data, &ephemeral),
                Op::Set {
                    path,
                    data,
                    version,
                } => writer.add_set_data(path, data, *version),
                Op::Delete { path, version } => writer.add_delete(path, *version),
                Op::Check { path, version } => writer.add_check_version(path, *version),
            };
            if let Err(e) = added {
                let (name, path) = op.describe();
                return Err(ZkError::from_client(name, path, e));
            }
        }
        match writer.commit().await {
            Ok(_) => Ok(()),
            Err(zkc::MultiWriteError::OperationFailed { index, source }) => {
                let (name, path) = txn.ops.get(index).map_or(("multi", ""), Op::describe);
                Err(ZkError::from_client(name, path, source))
            }
            Err(zkc::MultiWriteError::RequestFailed { source }) => {
                Err(ZkError::from_client("multi", "(transaction)", source))
            }
        }
    }
}

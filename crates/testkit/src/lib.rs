//! Bismuth's test harness: real servers for integration tests, each on its own
//! free port in its own temporary directory, removed when the handle drops.
//!
//! - [`ZooKeeper`]: a standalone ZooKeeper from the Debian `zookeeper` package.
//! - [`Postgres`]: a PostgreSQL cluster from the Debian `postgresql` package.
//! - [`Containerd`]: containerd with its own root, state and socket; and
//!   [`images`], test images built from Debian packages (no registry).
//! - [`Registry`]: an OCI registry (`docker-registry`) fed by `skopeo`.
//! - [`Prometheus`]: a real Prometheus scraping given targets.
//! - [`OtlpReceiver`]: an in-process OTLP/HTTP trace receiver.
//! - [`browser::Browser`]: a headless Chromium driven over WebDriver.
//! - [`assert_eventually!`]: poll a condition instead of sleeping.
//! - [`free_port`]: an unused loopback port; [`container_net`]: a test's own
//!   slice of container addresses.
//! - [`detach_mounts_under`], [`mounts_under`], [`disk_use`]: what a test
//!   left mounted, and what a directory holds on disk.
//! - [`http`]: a small HTTP client (whole replies, or bodies read line by line).
//!
//! Servers are killed when their handle drops, and also (via `PR_SET_PDEATHSIG`)
//! when the test process dies, so nothing outlives a crashed test.

pub mod bench;
pub mod browser;
mod containerd;
mod eventually;
pub mod http;
pub mod images;
mod mounts;
mod otlp;
mod postgres;
mod process;
mod prometheus;
mod registry;
mod zookeeper;

pub use containerd::Containerd;
pub use eventually::eventually;
pub use mounts::{detach_mounts_under, disk_use, mounts_under};
pub use otlp::{OtlpReceiver, ReceivedSpan};
pub use postgres::Postgres;
pub use process::{
    container_net, die_with_parent, free_port, kill_processes_mentioning, processes_mentioning,
    uid_base,
};
pub use prometheus::Prometheus;
pub use registry::Registry;
pub use zookeeper::{ZkEnsemble, ZooKeeper};

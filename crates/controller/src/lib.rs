//! Bismuth's controller runtime: the one way anything in Bismuth decides and
//! converges. Triggers (ZooKeeper watches, containerd events, probes, a
//! periodic resync) only *enqueue keys*; a [`Controller`] runs
//! `reconcile(key) -> Result<Action, E>` at most once per key at a time, keys
//! in parallel up to a bound, merges duplicate keys, delays requeues, and
//! turns errors into jittered exponential backoff per key. The model is
//! kube-runtime's controller, without anything Kubernetes-specific.
//!
//! Start reading at [`Controller`]; [`Backoff`] is the one retry delay type
//! of the workspace; [`Stats`] holds the counters a `/metrics` page exposes.

mod backoff;
mod controller;
mod queue;
mod stats;

pub use backoff::{Backoff, Retry};
pub use controller::{Action, Config, Controller};
pub use stats::{Stats, StatsSnapshot, DURATION_BUCKETS};

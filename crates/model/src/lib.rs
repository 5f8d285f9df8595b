//! Bismuth's shared domain model: what a function is, how it is invoked, where
//! it runs, and where all of that lives in ZooKeeper.
//!
//! Nothing here does I/O; every binary and library crate builds on these types.
//! Start with [`FunctionDefinition`] (the JSON the api accepts), then
//! [`paths`] (the znode layout from DESIGN.md) and [`Backend`] (the packed
//! backend list).

mod backend;
mod calls;
mod container;
mod function;
pub mod git;
pub mod hostname;
pub mod image_ref;
mod invoke_syntax;
mod load;
mod node;
pub mod paths;
pub mod placement;
mod validate;
mod view;

pub use backend::{pack_backends, unpack_backends, Backend, BackendDecodeError, BACKEND_LEN};
pub use calls::{CallRecord, Calls};
pub use container::{ContainerRecord, ContainerReport, ContainerState, RecordDecodeError};
pub use function::{
    FunctionDefinition, FunctionId, GitRepo, InvokeMode, Isolation, Route, SvcQuotas,
    DEFAULT_CONCURRENCY, DEFAULT_IDLE_TIMEOUT_S,
};
pub use invoke_syntax::{parse_invoke_mode, InvokeSyntaxError};
pub use load::{FrontendRecord, FunctionLoad, InstanceLoad, Instances, LoadReport, ScaleRecord};
pub use node::{NodeCapacity, NodeState, NodeStateDecodeError};
pub use validate::{FieldError, InvalidDefinition, MIN_MEMORY};
pub use view::{BackendStatus, FunctionView};

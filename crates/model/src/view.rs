//! Read-side views returned to users: a function with its backends' states,
//! in the JSON shape of the original API's `GET /function/{id}`.

use serde::{Deserialize, Serialize};

use crate::{Backend, ContainerState, FunctionDefinition, Instances};

/// `{"definition": {…}, "backends": [{"backend": {…}, "status": "Running"}]}`.
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct FunctionView {
    /// The stored definition.
    pub definition: FunctionDefinition,
    /// Its backends, in backend-list order.
    pub backends: Vec<BackendStatus>,
    /// Instances: min, max, desired by the autoscaler, Running now.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub instances: Option<Instances>,
}

/// One backend and its container's state.
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct BackendStatus {
    /// Where it runs.
    pub backend: Backend,
    /// Its state (Invalid when no status has been reported).
    pub status: ContainerState,
    /// Why it failed, when it is Failed (from its bismuthd's report).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::Ipv4Addr;
    use uuid::Uuid;

    #[test]
    fn shape_matches_original_api() {
        let def: FunctionDefinition = serde_json::from_str(
            r#"{"image":"busybox","cpu":1,"memory":8388608,"invoke_mode":{"Executable":["/bin/cat"]}}"#,
        )
        .unwrap();
        let view = FunctionView {
            definition: def,
            backends: vec![BackendStatus {
                reason: None,
                backend: Backend {
                    ip: Ipv4Addr::new(10, 0, 0, 1),
                    container_id: Uuid::nil(),
                },
                status: ContainerState::Running,
            }],
            instances: None,
        };
        let v = serde_json::to_value(&view).unwrap();
        assert_eq!(v["backends"][0]["backend"]["ip"], "10.0.0.1");
        assert_eq!(
            v["backends"][0]["backend"]["container_id"],
            Uuid::nil().to_string()
        );
        assert_eq!(v["backends"][0]["status"], "Running");
        assert_eq!(v["definition"]["image"], "busybox");
    }
}

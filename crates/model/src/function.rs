//! The function definition: the JSON document the api accepts and stores in
//! `/function/{id}`, with serde shapes exactly as the original Bismuth API.

use serde::{Deserialize, Serialize};
use uuid::Uuid;

/// A function's id; also the default service group id.
pub type FunctionId = Uuid;

/// What to run, with which limits, reachable under which routes.
///
/// Serialized exactly as DESIGN.md shows, e.g.
/// `{"image": "…", "repo": ["url", "branch"], "invoke_mode": {"Server": [["argv"], 8000]}, …}`.
/// Unknown fields are rejected so a typo (`"memroy"`) is an error, not a silent default.
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FunctionDefinition {
    /// Container image reference, e.g. `docker.io/library/python:3.11`.
    pub image: String,
    /// Optional git repository cloned into `/repo` in the container.
    #[serde(default)]
    pub repo: Option<GitRepo>,
    /// Service group whose K/V, blobs and secrets the function shares; defaults to its own id.
    #[serde(default)]
    pub svc_group_id: Option<Uuid>,
    /// CPU as a fraction of one core (0.5 = half a core).
    pub cpu: f64,
    /// Memory limit in bytes.
    pub memory: u64,
    /// Storage limits for the service group, if any.
    #[serde(default)]
    pub svc_quotas: Option<SvcQuotas>,
    /// How an invocation reaches the function's code.
    pub invoke_mode: InvokeMode,
    /// How many containers may serve the function at once.
    #[serde(default = "default_max_instances")]
    pub max_instances: u32,
    /// Hostnames whose requests route to this function.
    #[serde(default)]
    pub routes: Vec<Route>,
    /// Instances kept even when idle; `0` scales to zero. Default:
    /// `max_instances` (always that many, as the original Bismuth did).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub min_instances: Option<u32>,
    /// The most requests one instance serves at once (default 100); the
    /// autoscaler aims at 70 % of it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub concurrency: Option<u32>,
    /// Seconds an instance above `min_instances` stays without requests
    /// before it is removed (default 300).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub idle_timeout: Option<f64>,
    /// What separates the function's code from the host's kernel:
    /// `container` (the default: runc, namespaces, seccomp) or `sandbox`
    /// (gVisor's `runsc`: the code meets a kernel in user space).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub isolation: Option<Isolation>,
}

/// The `isolation` field.
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Isolation {
    /// runc: Linux namespaces, cgroups and a seccomp allowlist.
    #[default]
    Container,
    /// gVisor (`runsc`): system calls served by a user-space kernel.
    Sandbox,
}

fn default_max_instances() -> u32 {
    1
}

/// `concurrency` when the definition does not say.
pub const DEFAULT_CONCURRENCY: u32 = 100;
/// `idle_timeout` when the definition does not say, in seconds.
pub const DEFAULT_IDLE_TIMEOUT_S: f64 = 300.0;

impl FunctionDefinition {
    /// The isolation asked for (`container` when absent).
    pub fn isolation(&self) -> Isolation {
        self.isolation.unwrap_or_default()
    }

    /// The service group this function's data belongs to.
    pub fn service_group(&self, id: FunctionId) -> Uuid {
        self.svc_group_id.unwrap_or(id)
    }

    /// Route hostnames, normalized (lowercase, no trailing dot).
    pub fn hostnames(&self) -> impl Iterator<Item = String> + '_ {
        self.routes
            .iter()
            .map(|r| crate::hostname::normalize(&r.hostname))
    }

    /// Instances kept even when idle (`min_instances`, default `max_instances`).
    pub fn min(&self) -> u32 {
        self.min_instances.unwrap_or(self.max_instances)
    }

    /// Requests one instance serves at once (`concurrency`, default 100).
    pub fn concurrency(&self) -> u32 {
        self.concurrency.unwrap_or(DEFAULT_CONCURRENCY)
    }

    /// How long an instance above the minimum may stay idle (`idle_timeout`).
    pub fn idle_timeout(&self) -> std::time::Duration {
        let s = self.idle_timeout.unwrap_or(DEFAULT_IDLE_TIMEOUT_S);
        std::time::Duration::try_from_secs_f64(s).unwrap_or(std::time::Duration::ZERO)
    }

    /// Whether the number of instances follows load (`min < max`); a
    /// definition without `min_instances` always runs `max_instances`.
    pub fn autoscaled(&self) -> bool {
        self.min() < self.max_instances
    }

    /// How many instances a new (or redeployed) function starts with: the
    /// minimum, but at least one, so a bad image shows at once; an idle
    /// scale-to-zero function goes to zero after `idle_timeout`.
    pub fn initial_instances(&self) -> u32 {
        if self.autoscaled() {
            self.min().max(1).min(self.max_instances)
        } else {
            self.max_instances
        }
    }

    /// Serializes to the JSON stored in ZooKeeper.
    pub fn to_json(&self) -> Vec<u8> {
        // A struct of strings, numbers and enums always serializes.
        serde_json::to_vec(self).unwrap_or_default()
    }
}

/// A git repository and the branch to check out: `["url", "branch"]` on the wire.
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct GitRepo(pub String, pub String);

impl GitRepo {
    /// The repository URL.
    pub fn url(&self) -> &str {
        &self.0
    }

    /// The branch to clone.
    pub fn branch(&self) -> &str {
        &self.1
    }
}

/// How an invocation reaches the function's code.
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum InvokeMode {
    /// One process per request: request body on stdin, stdout is the response.
    Executable(Vec<String>),
    /// A long-running HTTP server on the given port that requests are proxied to.
    Server(Vec<String>, u16),
}

impl InvokeMode {
    /// The command line the container runs.
    pub fn argv(&self) -> &[String] {
        match self {
            InvokeMode::Executable(argv) | InvokeMode::Server(argv, _) => argv,
        }
    }
}

/// A hostname routed to the function: `{"hostname": "…"}`.
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Route {
    /// The `Host` header value that selects this function.
    pub hostname: String,
}

/// Storage limits for a service group; an absent field means unlimited.
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SvcQuotas {
    /// Total bytes of K/V values (keys included).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kv_bytes: Option<u64>,
    /// Number of K/V keys.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kv_keys: Option<u64>,
    /// Total bytes of blobs.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub blob_bytes: Option<u64>,
    /// Number of blobs.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub blob_count: Option<u64>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn isolation_defaults_to_container_and_round_trips() {
        let base = r#"{"image": "busybox", "cpu": 1, "memory": 8388608, "invoke_mode": {"Executable": ["/bin/cat"]}"#;
        let plain: FunctionDefinition = serde_json::from_str(&format!("{base}}}")).unwrap();
        assert_eq!(plain.isolation(), Isolation::Container);
        assert!(!String::from_utf8(plain.to_json())
            .unwrap()
            .contains("isolation"));
        let sandboxed: FunctionDefinition =
            serde_json::from_str(&format!(r#"{base}, "isolation": "sandbox"}}"#)).unwrap();
        assert_eq!(sandboxed.isolation(), Isolation::Sandbox);
        let back: FunctionDefinition = serde_json::from_slice(&sandboxed.to_json()).unwrap();
        assert_eq!(back, sandboxed);
        let e =
            serde_json::from_str::<FunctionDefinition>(&format!(r#"{base}, "isolation": "vm"}}"#))
                .unwrap_err();
        assert!(e.to_string().contains("unknown variant `vm`"), "{e}");
    }

    /// The literal example from DESIGN.md.
    const DESIGN_EXAMPLE: &str = r#"{
  "image": "docker.io/library/python:3.11",
  "repo": ["https://git.example/org/app.git", "main"],
  "svc_group_id": null,
  "cpu": 0.5,
  "memory": 134217728,
  "svc_quotas": null,
  "invoke_mode": {"Server": [["/usr/local/bin/python3", "-m", "http.server"], 8000]},
  "max_instances": 1,
  "routes": [{"hostname": "test.host.internal"}]
}"#;

    #[test]
    fn design_example_round_trips() {
        let def: FunctionDefinition = serde_json::from_str(DESIGN_EXAMPLE).unwrap();
        assert_eq!(def.image, "docker.io/library/python:3.11");
        assert_eq!(
            def.repo,
            Some(GitRepo(
                "https://git.example/org/app.git".into(),
                "main".into()
            ))
        );
        assert_eq!(def.cpu, 0.5);
        assert_eq!(def.memory, 134_217_728);
        assert_eq!(
            def.invoke_mode,
            InvokeMode::Server(
                vec![
                    "/usr/local/bin/python3".into(),
                    "-m".into(),
                    "http.server".into()
                ],
                8000
            )
        );
        assert_eq!(
            def.routes,
            vec![Route {
                hostname: "test.host.internal".into()
            }]
        );
        def.validate().unwrap();

        let again: serde_json::Value = serde_json::to_value(&def).unwrap();
        let original: serde_json::Value = serde_json::from_str(DESIGN_EXAMPLE).unwrap();
        assert_eq!(
            again, original,
            "serialization must match the wire format exactly"
        );
    }

    #[test]
    fn executable_mode_shape() {
        let mode: InvokeMode =
            serde_json::from_str(r#"{"Executable": ["/bin/ls", "-l"]}"#).unwrap();
        assert_eq!(
            mode,
            InvokeMode::Executable(vec!["/bin/ls".into(), "-l".into()])
        );
        assert_eq!(
            serde_json::to_string(&mode).unwrap(),
            r#"{"Executable":["/bin/ls","-l"]}"#
        );
    }

    #[test]
    fn optional_fields_default() {
        let def: FunctionDefinition = serde_json::from_str(
            r#"{"image": "busybox", "cpu": 1, "memory": 8388608, "invoke_mode": {"Executable": ["/bin/cat"]}}"#,
        )
        .unwrap();
        assert_eq!(def.max_instances, 1);
        assert!(def.routes.is_empty());
        assert!(def.repo.is_none());
        // Without the elasticity fields: always max_instances, as before.
        assert_eq!(def.min(), 1);
        assert!(!def.autoscaled());
        assert_eq!(def.concurrency(), DEFAULT_CONCURRENCY);
        assert_eq!(def.idle_timeout(), std::time::Duration::from_secs(300));
        assert_eq!(def.initial_instances(), 1);
        // Nor are they written back: the stored JSON is the original's.
        let json = serde_json::to_value(&def).unwrap();
        for absent in ["min_instances", "concurrency", "idle_timeout"] {
            assert!(json.get(absent).is_none(), "{absent} in {json}");
        }
    }

    #[test]
    fn elasticity_fields() {
        let def: FunctionDefinition = serde_json::from_str(
            r#"{"image": "busybox", "cpu": 1, "memory": 8388608, "invoke_mode": {"Executable": ["/bin/cat"]},
                "max_instances": 4, "min_instances": 0, "concurrency": 1, "idle_timeout": 2.5}"#,
        )
        .unwrap();
        assert_eq!(def.min(), 0);
        assert!(def.autoscaled());
        assert_eq!(def.concurrency(), 1);
        assert_eq!(def.idle_timeout(), std::time::Duration::from_millis(2500));
        assert_eq!(def.initial_instances(), 1);
        let back: FunctionDefinition =
            serde_json::from_value(serde_json::to_value(&def).unwrap()).unwrap();
        assert_eq!(back, def);
    }

    #[test]
    fn unknown_field_is_rejected() {
        let err = serde_json::from_str::<FunctionDefinition>(
            r#"{"image": "busybox", "cpu": 1, "memroy": 1, "invoke_mode": {"Executable": ["/bin/cat"]}}"#,
        )
        .unwrap_err();
        assert!(err.to_string().contains("memroy"), "{err}");
    }

    #[test]
    fn quotas_shape() {
        let q: SvcQuotas = serde_json::from_str(r#"{"kv_bytes": 1024, "blob_count": 3}"#).unwrap();
        assert_eq!(q.kv_bytes, Some(1024));
        assert_eq!(q.blob_count, Some(3));
        assert_eq!(
            serde_json::to_string(&q).unwrap(),
            r#"{"kv_bytes":1024,"blob_count":3}"#
        );
    }
}

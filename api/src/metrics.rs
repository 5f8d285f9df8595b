//! The api's `/metrics` (DESIGN.md, "Observability"): requests by route
//! and status code, and per function the instances wanted and running (read
//! from ZooKeeper with batched multi-reads when scraped). Scale events and
//! reschedules are counted by the control-plane controller once it acts.

use std::collections::HashMap;

use bismuth_metrics::{Counter, EncodeLabelSet, Family, Gauge, Id, Metrics};
use bismuth_model::{paths, unpack_backends, ContainerState, FunctionDefinition, FunctionId};
use bismuth_zk::Zk;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RouteCode {
    route: String,
    code: u16,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct FunctionKind {
    function: Id,
    kind: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct FunctionDirection {
    function: Id,
    direction: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct Reason {
    reason: &'static str,
}

/// Every metric the api exports.
#[derive(Debug)]
pub struct ApiMetrics {
    metrics: Metrics,
    requests: Family<RouteCode, Counter>,
    instances: Family<FunctionKind, Gauge>,
    scale_events: Family<FunctionDirection, Counter>,
    reschedules: Family<Reason, Counter>,
}

impl Default for ApiMetrics {
    fn default() -> Self {
        ApiMetrics::new()
    }
}

impl ApiMetrics {
    pub fn new() -> ApiMetrics {
        let m = ApiMetrics {
            metrics: Metrics::new(),
            requests: Family::default(),
            instances: Family::default(),
            scale_events: Family::default(),
            reschedules: Family::default(),
        };
        m.metrics.register(|r| {
            r.register(
                "bismuth_api_requests",
                "API requests by route and status code",
                m.requests.clone(),
            );
            r.register(
                "bismuth_function_instances",
                "Instances per function: kind desired (wanted) or running",
                m.instances.clone(),
            );
            r.register(
                "bismuth_scale_events",
                "Scale events per function and direction (up, down)",
                m.scale_events.clone(),
            );
            r.register(
                "bismuth_reschedules",
                "Containers placed again elsewhere, by reason (node_lost, drain, failing)",
                m.reschedules.clone(),
            );
        });
        m
    }

    /// An instance placed again elsewhere (`node_lost`, `drain`, `failing`).
    pub fn rescheduled(&self, reason: &'static str) {
        self.reschedules.get_or_create(&Reason { reason }).inc();
    }

    /// The autoscaler changed a function's desired instances.
    pub fn scaled(&self, function: FunctionId, up: bool) {
        self.scale_events
            .get_or_create(&FunctionDirection {
                function: Id(function),
                direction: if up { "up" } else { "down" },
            })
            .inc();
    }

    /// One answered request.
    pub fn request(&self, route: &str, code: u16) {
        self.requests
            .get_or_create(&RouteCode {
                route: route.to_owned(),
                code,
            })
            .inc();
    }

    /// Everything, the instance gauges read from ZooKeeper first (if it is
    /// reachable; the last values stay otherwise).
    pub async fn render(&self, zk: Option<&Zk>) -> String {
        if let Some(zk) = zk {
            match instances(zk).await {
                Ok(all) => {
                    self.instances.clear();
                    for (f, (desired, running)) in all {
                        let set = |kind, n: usize| {
                            self.instances
                                .get_or_create(&FunctionKind {
                                    function: Id(f),
                                    kind,
                                })
                                .set(n as i64);
                        };
                        set("desired", desired);
                        set("running", running);
                    }
                }
                Err(e) => tracing::warn!(error = %e, "cannot read instances for /metrics"),
            }
        }
        self.metrics.render()
    }
}

/// Per function: (instances wanted, backends Running), in five round trips.
async fn instances(zk: &Zk) -> Result<HashMap<FunctionId, (usize, usize)>, bismuth_zk::ZkError> {
    let ids: Vec<FunctionId> = zk
        .children_opt(paths::FUNCTIONS)
        .await?
        .iter()
        .filter_map(|c| c.parse().ok())
        .collect();
    let defs = zk
        .get_many(&ids.iter().map(|f| paths::function(*f)).collect::<Vec<_>>())
        .await?;
    let backends = zk
        .get_many(
            &ids.iter()
                .map(|f| paths::function_backends(*f))
                .collect::<Vec<_>>(),
        )
        .await?;
    let scales = zk
        .get_many(
            &ids.iter()
                .map(|f| paths::function_scale(*f))
                .collect::<Vec<_>>(),
        )
        .await?;
    let mut all = Vec::new();
    for (i, raw) in backends.iter().enumerate() {
        let list = raw
            .as_ref()
            .and_then(|v| unpack_backends(&v.value).ok())
            .unwrap_or_default();
        all.extend(list.into_iter().map(|b| (i, b)));
    }
    let statuses = zk
        .get_many(
            &all.iter()
                .map(|(_, b)| paths::container_status(b.ip, b.container_id))
                .collect::<Vec<_>>(),
        )
        .await?;
    let mut out: HashMap<FunctionId, (usize, usize)> = HashMap::new();
    for (i, f) in ids.iter().enumerate() {
        let desired = defs[i]
            .as_ref()
            .and_then(|v| serde_json::from_slice::<FunctionDefinition>(&v.value).ok())
            .map_or(0, |d| {
                let scale = scales[i]
                    .as_ref()
                    .and_then(|v| serde_json::from_slice(&v.value).ok());
                d.desired(scale) as usize
            });
        out.insert(*f, (desired, 0));
    }
    for ((i, _), status) in all.iter().zip(statuses) {
        let running = status
            .and_then(|s| ContainerState::decode(&s.value))
            .is_some_and(|s| s == ContainerState::Running);
        if running {
            if let Some(entry) = out.get_mut(&ids[*i]) {
                entry.1 += 1;
            }
        }
    }
    Ok(out)
}

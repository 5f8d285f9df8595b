//! What frontends and nodes tell the autoscaler: load reports (`GET /load`
//! on bismuthfe and bismuthd), the frontend's registration, the scale
//! decision stored in `/function/{id}/scale`, and the instance counts the
//! api shows. Wire types only; measuring is `bismuth_metrics::load`.

use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::FunctionId;

/// The load one process measured, as of `uptime_s` on its own clock.
///
/// `busy_s` values are running totals: the integral of requests in flight
/// over time since the process started. Two reports a while apart give
/// the average concurrency in between: `Δbusy_s / Δuptime_s`.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct LoadReport {
    /// Seconds since the reporting process started (its monotonic clock).
    pub uptime_s: f64,
    /// Per function (bismuthfe: every request it routed or holds).
    #[serde(default)]
    pub functions: Vec<FunctionLoad>,
    /// Per instance (bismuthd: every container it serves).
    #[serde(default)]
    pub instances: Vec<InstanceLoad>,
}

/// One function's load at a frontend.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct FunctionLoad {
    pub function: FunctionId,
    /// Requests in flight now, held ones included.
    pub in_flight: u64,
    /// Of those, held while no instance runs (waiting for a cold start).
    #[serde(default)]
    pub held: u64,
    /// Integral of requests in flight over time, in seconds.
    pub busy_s: f64,
    /// Requests begun since the process started.
    pub requests: u64,
}

/// One instance's load on its node.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct InstanceLoad {
    pub container_id: Uuid,
    pub function: FunctionId,
    /// Requests in flight now (waiting for a slot included).
    pub in_flight: u64,
    /// Integral of requests in flight over time, in seconds.
    pub busy_s: f64,
    /// Requests begun since bismuthd started.
    pub requests: u64,
    /// Seconds since its last request ended (or since it began serving);
    /// 0 while one is in flight.
    pub idle_s: f64,
}

/// What a bismuthfe writes in its ephemeral `/frontend/{id}`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct FrontendRecord {
    /// `host:port` where its `GET /load` answers.
    pub addr: String,
}

/// The autoscaler's decision in `/function/{id}/scale`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ScaleRecord {
    /// Instances wanted now (within `min_instances..=max_instances`).
    pub desired: u32,
}

/// The instance counts `GET /function/{id}` shows.
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Instances {
    /// `min_instances` (as defaulted).
    pub min: u32,
    /// `max_instances`.
    pub max: u32,
    /// What the autoscaler wants now.
    pub desired: u32,
    /// Backends Running now.
    pub running: u32,
}

impl crate::FunctionDefinition {
    /// The instances wanted given the stored scale decision, if any: for a
    /// function that autoscales, the decision clamped to min..=max (the
    /// definition may have changed since), else its initial count; for
    /// one that does not, `max_instances`.
    pub fn desired(&self, scale: Option<ScaleRecord>) -> u32 {
        if !self.autoscaled() {
            return self.max_instances;
        }
        scale
            .map_or(self.initial_instances(), |s| s.desired)
            .clamp(self.min(), self.max_instances)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::FunctionDefinition;

    fn def(extra: &str) -> FunctionDefinition {
        serde_json::from_str(&format!(
            r#"{{"image": "busybox", "cpu": 1, "memory": 8388608, "invoke_mode": {{"Executable": ["/bin/cat"]}}{extra}}}"#
        ))
        .unwrap()
    }

    #[test]
    fn desired_follows_the_record_within_bounds() {
        let fixed = def(r#", "max_instances": 3"#);
        assert_eq!(fixed.desired(None), 3);
        assert_eq!(fixed.desired(Some(ScaleRecord { desired: 1 })), 3);

        let elastic = def(r#", "max_instances": 5, "min_instances": 0"#);
        assert_eq!(elastic.desired(None), 1, "starts with one");
        assert_eq!(elastic.desired(Some(ScaleRecord { desired: 0 })), 0);
        assert_eq!(elastic.desired(Some(ScaleRecord { desired: 9 })), 5);

        let floor = def(r#", "max_instances": 5, "min_instances": 2"#);
        assert_eq!(floor.desired(None), 2);
        assert_eq!(floor.desired(Some(ScaleRecord { desired: 0 })), 2);
    }

    #[test]
    fn report_round_trips() {
        let r = LoadReport {
            uptime_s: 12.5,
            functions: vec![FunctionLoad {
                function: Uuid::nil(),
                in_flight: 2,
                held: 1,
                busy_s: 3.25,
                requests: 40,
            }],
            instances: vec![],
        };
        let back: LoadReport = serde_json::from_str(&serde_json::to_string(&r).unwrap()).unwrap();
        assert_eq!(back, r);
    }
}

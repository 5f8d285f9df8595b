//! What one function needs, decided from a snapshot: pure logic, no I/O.
//!
//! Given the wanted count and every instance with its node and state, the
//! plan says how many new instances to place (and which nodes to avoid),
//! and which instances to remove now and why. Instances on a node that must
//! be left (drained for evacuation, or in a rollout: the old generation) are
//! *moving*: each stays until a replacement elsewhere runs, so capacity
//! never dips. An instance on a dead node is removed at once (it serves
//! nothing); so is one that failed [`FAILING_AFTER`] times in a row when
//! another node could take it.

use std::collections::HashSet;
use std::net::Ipv4Addr;

use bismuth_model::{Backend, ContainerState};

/// Consecutive failures after which an instance is moved to another node.
pub const FAILING_AFTER: u32 = 5;

/// One instance as the controller sees it.
#[derive(Clone, Debug, PartialEq)]
pub struct Instance {
    pub backend: Backend,
    /// `None` while no status was written.
    pub state: Option<ContainerState>,
    /// Failures in a row reported by its bismuthd.
    pub failures: u32,
    /// Whether its node holds a live session.
    pub node_alive: bool,
    /// Whether it must leave its place (drain with evacuation, or the old
    /// generation of a rollout).
    pub moving: bool,
}

/// Why an instance is removed.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Reason {
    /// Its node is dead.
    NodeLost,
    /// More instances than wanted.
    Extra,
    /// It kept failing, and another node can run it.
    Failing,
    /// It was moving and its replacement runs.
    Replaced,
}

impl Reason {
    /// The label of `bismuth_reschedules_total{reason}`, for those that are reschedules.
    pub fn reschedule_label(self) -> Option<&'static str> {
        match self {
            Reason::NodeLost => Some("node_lost"),
            Reason::Failing => Some("failing"),
            Reason::Replaced => Some("drain"),
            Reason::Extra => None,
        }
    }
}

/// What to do for one function.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Plan {
    /// New instances to place.
    pub place: usize,
    /// Nodes the new instances must not go to.
    pub avoid: HashSet<Ipv4Addr>,
    /// Instances to remove now.
    pub remove: Vec<(Backend, Reason)>,
}

impl Plan {
    /// Whether nothing is to be done.
    pub fn is_empty(&self) -> bool {
        self.place == 0 && self.remove.is_empty()
    }
}

/// Plans `wanted` instances from `instances`. `other_nodes_can_run(ip)`
/// says whether some alive, schedulable node other than `ip` exists (a
/// failing instance is only moved when it does). `removable(instance)`
/// says whether an instance beyond `wanted` may go now (a scale-down takes
/// only idle instances; the others stay until they are).
pub fn plan(
    wanted: usize,
    instances: &[Instance],
    other_nodes_can_run: impl Fn(Ipv4Addr) -> bool,
    removable: impl Fn(&Instance) -> bool,
) -> Plan {
    let mut out = Plan::default();
    let mut stay: Vec<&Instance> = Vec::new();
    let mut moving: Vec<&Instance> = Vec::new();
    for i in instances {
        let failing = i.failures >= FAILING_AFTER && i.state == Some(ContainerState::Failed);
        if !i.node_alive {
            out.remove.push((i.backend, Reason::NodeLost));
        } else if failing && other_nodes_can_run(i.backend.ip) {
            out.remove.push((i.backend, Reason::Failing));
            out.avoid.insert(i.backend.ip);
        } else if i.moving {
            moving.push(i);
        } else {
            stay.push(i);
        }
    }
    // Extras go first where they serve least: not Running, then the later
    // ones in a stable order.
    stay.sort_by_key(|i| (i.state != Some(ContainerState::Running), i.backend));
    let mut excess = stay.len().saturating_sub(wanted);
    let mut at = stay.len();
    while excess > 0 && at > 0 {
        at -= 1;
        if removable(stay[at]) {
            out.remove.push((stay.remove(at).backend, Reason::Extra));
            excess -= 1;
        }
    }
    out.place = wanted.saturating_sub(stay.len());
    // A moving instance stays while the instances that stay do not yet run
    // enough; the Running ones are the last to go.
    let running = stay
        .iter()
        .filter(|i| i.state == Some(ContainerState::Running))
        .count();
    let still_needed = wanted.saturating_sub(running);
    moving.sort_by_key(|i| (i.state != Some(ContainerState::Running), i.backend));
    // (Their nodes stay eligible: a rollout's new generation may share a
    // node with the old one; evacuated nodes take nothing new anyway.)
    for i in moving.iter().skip(still_needed) {
        out.remove.push((i.backend, Reason::Replaced));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use uuid::Uuid;

    fn inst(node: u8, state: ContainerState) -> Instance {
        Instance {
            backend: Backend {
                ip: Ipv4Addr::new(10, 0, 0, node),
                container_id: Uuid::from_u128(u128::from(node) << 64 | rand_id()),
            },
            state: Some(state),
            failures: 0,
            node_alive: true,
            moving: false,
        }
    }

    fn rand_id() -> u128 {
        Uuid::new_v4().as_u128() & 0xffff_ffff
    }

    fn reasons(p: &Plan) -> Vec<Reason> {
        p.remove.iter().map(|(_, r)| *r).collect()
    }

    use ContainerState::*;

    #[test]
    fn steady_state_does_nothing() {
        let all = vec![inst(1, Running), inst(2, Running)];
        assert!(plan(2, &all, |_| true, |_| true).is_empty());
        // Starting counts: it is on its way.
        assert!(plan(1, &[inst(1, Starting)], |_| true, |_| true).is_empty());
    }

    #[test]
    fn a_dead_node_is_replaced_at_once() {
        let mut lost = inst(1, Running);
        lost.node_alive = false;
        let p = plan(2, &[lost.clone(), inst(2, Running)], |_| true, |_| true);
        assert_eq!(p.place, 1);
        assert_eq!(p.remove, vec![(lost.backend, Reason::NodeLost)]);
    }

    #[test]
    fn extras_go_not_running_first() {
        let all = vec![inst(1, Running), inst(2, Starting), inst(3, Running)];
        let p = plan(2, &all, |_| true, |_| true);
        assert_eq!(p.place, 0);
        assert_eq!(p.remove, vec![(all[1].backend, Reason::Extra)]);
        let p = plan(0, &all, |_| true, |_| true);
        assert_eq!(reasons(&p), vec![Reason::Extra; 3]);
    }

    #[test]
    fn missing_instances_are_placed() {
        let p = plan(3, &[inst(1, Running)], |_| true, |_| true);
        assert_eq!(p.place, 2);
        assert!(p.remove.is_empty());
    }

    #[test]
    fn a_failing_instance_moves_only_if_another_node_can_run_it() {
        let mut bad = inst(1, Failed);
        bad.failures = FAILING_AFTER;
        let p = plan(1, &[bad.clone()], |_| true, |_| true);
        assert_eq!(p.place, 1);
        assert_eq!(p.remove, vec![(bad.backend, Reason::Failing)]);
        assert!(p.avoid.contains(&bad.backend.ip));
        // Alone in the fleet: it stays and its bismuthd keeps restarting it.
        assert!(plan(1, &[bad.clone()], |_| false, |_| true).is_empty());
        // Four failures are not yet five.
        bad.failures = FAILING_AFTER - 1;
        assert!(plan(1, &[bad], |_| true, |_| true).is_empty());
    }

    #[test]
    fn moving_instances_leave_once_replacements_run() {
        let mut old = inst(1, Running);
        old.moving = true;
        // Nothing elsewhere yet: place one, keep the old one.
        let p = plan(1, &[old.clone()], |_| true, |_| true);
        assert_eq!(p.place, 1);
        assert!(p.remove.is_empty());
        // The replacement starts: nothing more to do.
        let new = inst(2, Starting);
        assert!(plan(1, &[old.clone(), new.clone()], |_| true, |_| true)
            .remove
            .is_empty());
        assert_eq!(plan(1, &[old.clone(), new], |_| true, |_| true).place, 0);
        // It runs: the old one goes.
        let new = inst(2, Running);
        let p = plan(1, &[old.clone(), new], |_| true, |_| true);
        assert_eq!(p.remove, vec![(old.backend, Reason::Replaced)]);
        assert_eq!(p.place, 0);
    }

    #[test]
    fn a_scale_down_takes_only_removable_instances() {
        let all = vec![inst(1, Running), inst(2, Running), inst(3, Running)];
        let idle = all[1].backend;
        let p = plan(1, &all, |_| true, |i| i.backend == idle);
        assert_eq!(p.remove, vec![(idle, Reason::Extra)]);
        assert_eq!(p.place, 0, "the busy extra stays; nothing new either");
        // None idle: nothing goes.
        assert!(plan(0, &all, |_| true, |_| false).is_empty());
    }

    #[test]
    fn moving_several_keeps_capacity() {
        let olds: Vec<Instance> = (1..=3)
            .map(|n| {
                let mut i = inst(n, Running);
                i.moving = true;
                i
            })
            .collect();
        let mut all = olds.clone();
        all.push(inst(4, Running));
        all.push(inst(5, Starting));
        let p = plan(3, &all, |_| true, |_| true);
        assert_eq!(p.place, 1, "three wanted where two are placed");
        // One new runs: two of the three old stay.
        assert_eq!(reasons(&p), vec![Reason::Replaced]);
    }
}

//! The control-plane controller: keeps every function served by the
//! instances it wants, on alive nodes, whatever happens to the nodes.
//!
//! Every api process campaigns ([`leader`]); the leader keeps a [`view`] of
//! the cluster from watches and runs `reconcile(function)` on the shared
//! controller runtime (`bismuth-controller`) for each function an event
//! touches: it reads the view, asks [`plan`] what to do (replace instances
//! of dead nodes, remove extras, move failing ones and those of evacuated
//! nodes, carry out a [`rollout`]), places new instances with
//! [`bismuth_model::placement::place`], and commits it all in one ZooKeeper
//! transaction that also checks the leader's epoch. Conflicts and errors
//! requeue the function with jittered backoff; the view catches up from
//! the watch meanwhile.

pub mod autoscale;
pub mod leader;
pub mod load;
pub mod plan;
pub mod rollout;
pub mod view;

use std::collections::HashSet;
use std::net::Ipv4Addr;
use std::sync::Arc;
use std::time::Duration;

use bismuth_controller::{Action, Config, Controller};
use bismuth_model::{paths, Backend, ContainerState, FunctionId, ScaleRecord};
use bismuth_zk::store::functions;
use bismuth_zk::{Txn, Zk, ZkError};
use tokio_util::sync::CancellationToken;
use tracing::{info, warn, Instrument};
use uuid::Uuid;

use self::leader::{Candidate, Term};
use self::plan::{Instance, Reason};
use self::rollout::{Rollout, RolloutState};
use self::view::{SharedView, Touched, View};
use crate::metrics::ApiMetrics;
use tokio::sync::broadcast::error::RecvError;

/// How often every function is reconciled even without events (drift).
const RESYNC: Duration = Duration::from_secs(30);
/// When instances wait for room, how soon to look again.
const NO_ROOM_RETRY: Duration = Duration::from_secs(5);

/// Why a reconcile failed (it is retried with backoff).
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error(transparent)]
    Zk(#[from] ZkError),
    #[error("cannot restore the routes: {0}")]
    Restore(String),
}

/// What the controller is told by the api's configuration.
#[derive(Clone, Copy, Debug)]
pub struct Settings {
    /// Where bismuthd listens on every node (its `/load`).
    pub bismuthd_port: u16,
    /// The autoscaler's stable and panic windows.
    pub windows: autoscale::Windows,
}

/// What reconciles share.
#[derive(Debug)]
struct Ctx {
    zk: Zk,
    view: Arc<SharedView>,
    term: Term,
    metrics: Arc<ApiMetrics>,
    board: Arc<load::Board>,
}

impl Ctx {
    fn view(&self) -> std::sync::MutexGuard<'_, View> {
        self.view.lock()
    }
}

/// Campaigns for leadership and, while leading, runs the controller; until
/// `shutdown`.
pub async fn run(
    zk: Zk,
    me: Candidate,
    view: Arc<SharedView>,
    metrics: Arc<ApiMetrics>,
    settings: Settings,
    shutdown: CancellationToken,
) {
    let mut election = zk.watch_tree(leader::CONTROLLER);
    loop {
        let Some(term) = leader::campaign(&zk, &me, &mut election, &shutdown).await else {
            return;
        };
        let stop = shutdown.child_token();
        let leading = lead(
            zk.clone(),
            term,
            Arc::clone(&view),
            Arc::clone(&metrics),
            settings,
            stop.clone(),
        )
        .instrument(tracing::info_span!("controller", epoch = term.epoch));
        tokio::select! {
            _ = leading => {}
            _ = leader::lost(&zk, &me, term, &mut election) => {}
            _ = shutdown.cancelled() => {}
        }
        stop.cancel();
        if shutdown.is_cancelled() {
            // Step down at once rather than after the session timeout.
            let _ = zk.delete(leader::LEADER, None).await;
            return;
        }
    }
}

/// One term: reconcile every function, then those the view's changes
/// touch and those the autoscaler decides about.
async fn lead(
    zk: Zk,
    term: Term,
    view: Arc<SharedView>,
    metrics: Arc<ApiMetrics>,
    settings: Settings,
    stop: CancellationToken,
) {
    let ctl: Controller<FunctionId> = Controller::new("controller");
    let board = Arc::new(load::Board::new(settings.windows));
    let ctx = Arc::new(Ctx {
        zk: zk.clone(),
        view: Arc::clone(&view),
        term,
        metrics,
        board: Arc::clone(&board),
    });
    let autoscaler = load::run(
        zk.clone(),
        Arc::clone(&view),
        board,
        settings.bismuthd_port,
        ctl.clone(),
        stop.clone(),
    );
    let follow = {
        let ctl = ctl.clone();
        let stop = stop.clone();
        let mut touched = view.subscribe();
        let view = Arc::clone(&view);
        async move {
            let all = |ctl: &Controller<FunctionId>| {
                let ids: Vec<FunctionId> = view.lock().functions.keys().copied().collect();
                ctl.enqueue_all(ids);
            };
            all(&ctl);
            let mut resync = tokio::time::interval(RESYNC);
            loop {
                let t = tokio::select! {
                    _ = stop.cancelled() => return,
                    t = touched.recv() => t,
                    _ = resync.tick() => Ok(Touched::All),
                };
                match t {
                    Ok(Touched::Function(id)) => ctl.enqueue(id),
                    Ok(Touched::None) => {}
                    // Everything, or changes were missed: everything.
                    Ok(Touched::All) | Err(RecvError::Lagged(_)) => all(&ctl),
                    Err(RecvError::Closed) => return,
                }
            }
        }
    };
    let reconciler = {
        let ctx = Arc::clone(&ctx);
        ctl.run(
            Config {
                concurrency: 16,
                ..Config::default()
            },
            move |id| {
                let ctx = Arc::clone(&ctx);
                async move { reconcile(&ctx, id).await }
            },
            stop.clone(),
        )
    };
    tokio::join!(follow, reconciler, autoscaler);
}

/// What one reconcile decided, taken from the view under its lock.
struct Decision {
    wanted_place: usize,
    placed: Vec<Ipv4Addr>,
    node_versions: Vec<(Ipv4Addr, bool, i32)>,
    remove: Vec<(Backend, Reason)>,
    backends: Vec<Backend>,
    backends_version: i32,
    /// The rollout record to write, with its version.
    rollout: Option<(Rollout, i32)>,
    /// The autoscaler's decision to store (with the stored record's version,
    /// `None`: create it), and the change it makes (from, to).
    scale: Option<(ScaleRecord, Option<i32>, u32)>,
    /// Delete the wake-up a frontend left.
    wake: bool,
    /// The definition to restore on rollback, with the current one and its version.
    restore: Option<(
        bismuth_model::FunctionDefinition,
        i32,
        bismuth_model::FunctionDefinition,
    )>,
    requeue: Option<Duration>,
}

async fn reconcile(ctx: &Ctx, id: FunctionId) -> Result<Action, Error> {
    let d = match decide(ctx, id) {
        Outcome::Nothing(None) => return Ok(Action::done()),
        Outcome::Nothing(Some(after)) => return Ok(Action::requeue(after)),
        Outcome::Act(d) => d,
    };
    let instances_change = !d.placed.is_empty() || !d.remove.is_empty();
    let changes = instances_change
        || d.rollout.is_some()
        || d.restore.is_some()
        || d.scale.is_some()
        || d.wake;
    if !changes {
        // Nothing could be placed: writing nothing, look again later.
        warn!(function = %id, missing = d.wanted_place, "no node has room for the instances it needs; will retry");
        return Ok(Action::requeue(NO_ROOM_RETRY));
    }
    let mut txn = Txn::new();
    txn.check(leader::EPOCH, ctx.term.epoch);
    let mut backends: Vec<Backend> = d
        .backends
        .iter()
        .filter(|b| !d.remove.iter().any(|(r, _)| r == *b))
        .copied()
        .collect();
    for (ip, enabled, version) in &d.node_versions {
        let state = if *enabled { [1u8] } else { [0u8] };
        txn.set(paths::node(*ip), state.to_vec(), Some(*version));
    }
    for ip in &d.placed {
        let b = Backend {
            ip: *ip,
            container_id: Uuid::new_v4(),
        };
        functions::add_container_creation(&mut txn, b, id);
        backends.push(b);
    }
    for (b, _) in &d.remove {
        functions::add_container_removal(&ctx.zk, &mut txn, *b).await?;
    }
    if instances_change {
        txn.set(
            paths::function_backends(id),
            bismuth_model::pack_backends(&backends),
            Some(d.backends_version),
        );
    } else {
        // Decided on these backends: still them.
        txn.check(paths::function_backends(id), d.backends_version);
    }
    if let Some((record, version, _)) = &d.scale {
        let data = serde_json::to_vec(record).unwrap_or_default();
        match version {
            Some(v) => txn.set(paths::function_scale(id), data, Some(*v)),
            None => txn.create(paths::function_scale(id), data),
        };
    }
    if d.wake {
        txn.delete(paths::function_wake(id), None);
    }
    if let Some((def, version, current)) = &d.restore {
        txn.set(paths::function(id), def.to_json(), Some(*version));
        crate::deploy::route_changes(&ctx.zk, &mut txn, id, current, def)
            .await
            .map_err(|e| Error::Restore(e.to_string()))?;
    }
    if let Some((r, version)) = &d.rollout {
        txn.set(paths::function_rollout(id), r.encode(), Some(*version));
    }
    ctx.zk.commit(&txn).await?;
    if let Some((record, _, from)) = &d.scale {
        ctx.metrics.scaled(id, record.desired > *from);
        info!(function = %id, from, to = record.desired, "scaled");
    }
    for (b, reason) in &d.remove {
        if let Some(label) = reason.reschedule_label() {
            ctx.metrics.rescheduled(label);
        }
        info!(function = %id, node = %b.ip, container = %b.container_id, ?reason, "removed an instance");
    }
    if !d.placed.is_empty() {
        info!(function = %id, nodes = ?d.placed, "placed instances");
    }
    if let Some((r, _)) = &d.rollout {
        info!(function = %id, rollout = %r.id, state = ?r.state, "rollout {:?}", r.state);
    }
    if d.placed.len() < d.wanted_place {
        warn!(function = %id, missing = d.wanted_place - d.placed.len(), "no room for every instance; will retry");
        return Ok(Action::requeue(NO_ROOM_RETRY));
    }
    Ok(d.requeue.map_or(Action::done(), Action::requeue))
}

/// What [`decide`] found.
enum Outcome {
    /// Nothing to write (look again after this long, if set).
    Nothing(Option<Duration>),
    Act(Box<Decision>),
}

/// Reads the view and decides.
fn decide(ctx: &Ctx, id: FunctionId) -> Outcome {
    let view = ctx.view();
    let Some(f) = view.functions.get(&id) else {
        return Outcome::Nothing(None);
    };
    let (Some(def), Some(backends)) = (f.def.as_ref(), f.backends.as_ref()) else {
        return Outcome::Nothing(None);
    };
    let now = rollout::now_ms();
    let mut rollout = f
        .rollout
        .as_ref()
        .filter(|r| r.value.state == RolloutState::Running)
        .cloned();
    let mut old: HashSet<Backend> = rollout
        .as_ref()
        .map(|r| r.value.old.iter().copied().collect())
        .unwrap_or_default();
    old.retain(|b| backends.value.contains(b));
    let mut restore = None;
    let mut remove = Vec::new();
    let mut requeue = None;
    if let Some(r) = rollout.as_mut() {
        if old.is_empty() {
            // Every old instance is gone: done.
            r.value.state = RolloutState::Done;
        } else if now >= r.value.deadline_ms {
            // Too late: the new instances go, the old ones stay.
            let new: Vec<Backend> = backends
                .value
                .iter()
                .filter(|b| !old.contains(b))
                .copied()
                .collect();
            r.value.state = RolloutState::RolledBack;
            r.value.message = Some(why_not_running(&view, &new));
            remove.extend(new.into_iter().map(|b| (b, Reason::Extra)));
            if let Some(previous) = r.value.previous.clone() {
                restore = Some((previous, def.version, def.value.clone()));
            }
        } else {
            requeue = Some(Duration::from_millis(r.value.deadline_ms - now).min(RESYNC));
        }
    }
    let rollout_done = rollout
        .as_ref()
        .is_some_and(|r| r.value.state != RolloutState::Running);
    if rollout_done {
        // Finish (or roll back) first; the next reconcile plans afresh.
        return Outcome::Act(Box::new(Decision {
            wanted_place: 0,
            placed: Vec::new(),
            node_versions: Vec::new(),
            remove,
            backends: backends.value.clone(),
            backends_version: backends.version,
            rollout: rollout.map(|r| (r.value, r.version)),
            restore,
            scale: None,
            wake: false,
            requeue: None,
        }));
    }
    // How many: fixed (max_instances), or what the autoscaler decided
    // (stored in /function/{id}/scale by this reconcile); a frontend's
    // wake-up brings a function at zero to one at once.
    let stored = f.scale.as_ref().map(|s| s.value);
    let mut desired = def.value.desired(stored);
    let mut scale = None;
    let autoscaled = def.value.autoscaled();
    let bounds = autoscale::Bounds {
        min: def.value.min(),
        max: def.value.max_instances,
        concurrency: def.value.concurrency(),
        idle_timeout: def.value.idle_timeout(),
    };
    if autoscaled {
        let mut target = ctx
            .board
            .decision(id)
            .unwrap_or(desired)
            .clamp(bounds.min, bounds.max);
        if f.wake && target == 0 {
            target = ctx.board.woken(id, bounds);
        }
        if target != desired || stored.is_none() {
            scale = Some((
                ScaleRecord { desired: target },
                f.scale.as_ref().map(|s| s.version),
                desired,
            ));
            desired = target;
        }
    }
    let wake = f.wake;
    let instances: Vec<Instance> = backends
        .value
        .iter()
        .map(|b| {
            let c = view.containers.get(&b.container_id);
            let node = view.nodes.get(&b.ip);
            Instance {
                backend: *b,
                state: c.and_then(|c| c.state),
                failures: c.map_or(0, |c| c.failures),
                node_alive: node.is_some_and(|n| n.alive()),
                moving: old.contains(b) || node.is_some_and(|n| n.evacuate),
            }
        })
        .collect();
    // A scale-down takes only instances idle for idle_timeout with nothing
    // in flight (or failed ones); a fixed-size function's extras all go.
    let removable = |i: &Instance| {
        !autoscaled
            || i.state == Some(ContainerState::Failed)
            || ctx.board.idle(i.backend.container_id, bounds.idle_timeout)
    };
    let decided = plan::plan(
        desired as usize,
        &instances,
        |ip| {
            view.nodes
                .iter()
                .any(|(o, n)| *o != ip && n.enabled && n.alive() && !n.evacuate)
        },
        removable,
    );
    if decided.is_empty() && scale.is_none() && !wake {
        return Outcome::Nothing(requeue);
    }
    let candidates = view.candidates(id, &decided.avoid);
    let placed = (1..=decided.place)
        .rev()
        .find_map(|k| {
            bismuth_model::placement::place(candidates.clone(), def.value.cpu, def.value.memory, k)
                .ok()
        })
        .unwrap_or_default();
    let node_versions = placed
        .iter()
        .collect::<HashSet<_>>()
        .into_iter()
        .filter_map(|ip| view.nodes.get(ip).map(|n| (*ip, n.enabled, n.version)))
        .collect();
    Outcome::Act(Box::new(Decision {
        wanted_place: decided.place,
        placed,
        node_versions,
        remove: decided.remove,
        backends: backends.value.clone(),
        backends_version: backends.version,
        rollout: None,
        restore: None,
        scale,
        wake,
        requeue,
    }))
}

/// Why the new instances of a rollout did not all run: the first one not
/// Running, with its state and reason.
fn why_not_running(view: &View, new: &[Backend]) -> String {
    for b in new {
        let c = view.containers.get(&b.container_id);
        let state = c.and_then(|c| c.state);
        if state != Some(ContainerState::Running) {
            let state = state.map_or("not started".to_owned(), |s| format!("{s:?}"));
            let reason = c
                .and_then(|c| c.reason.clone())
                .map(|r| format!(": {r}"))
                .unwrap_or_default();
            return format!(
                "instance {} on node {} was {state}{reason}",
                b.container_id, b.ip
            );
        }
    }
    if new.is_empty() {
        "no new instance could be placed (no node had room)".to_owned()
    } else {
        "the new instances did not all run in time".to_owned()
    }
}

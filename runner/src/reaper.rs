//! Child bookkeeping for PID 1: one thread reaps every child (including
//! orphans re-parented to us) and hands each request its command's status.

use std::collections::HashMap;
use std::process::{Child, Command};
use std::sync::mpsc::{channel, Receiver, Sender};
use std::sync::{Arc, Condvar, Mutex, PoisonError};

use nix::sys::signal::{kill as send_signal, Signal};
use nix::sys::wait::{waitpid, WaitStatus};
use nix::unistd::Pid;

/// Requests waiting for their command, by pid. A status is only ever
/// delivered to the request that spawned that pid: `spawn` registers the
/// pid while holding the lock it forked under, so the reaper (which needs
/// the lock to deliver) cannot see the exit first. Statuses of other
/// processes (orphans re-parented to PID 1) are dropped, never kept: kept,
/// one could answer a later request whose command got the same pid.
#[derive(Default)]
struct State {
    waiting: HashMap<i32, Sender<i32>>,
}

/// Shared handle to the reaper.
#[derive(Clone)]
pub struct Reaper {
    state: Arc<Mutex<State>>,
    /// Signalled on every spawn, so the reaper sleeps while there are no children.
    spawned: Arc<Condvar>,
}

impl Reaper {
    pub fn start() -> Reaper {
        let reaper = Reaper {
            state: Arc::default(),
            spawned: Arc::default(),
        };
        let state = Arc::clone(&reaper.state);
        let spawned = Arc::clone(&reaper.spawned);
        std::thread::spawn(move || loop {
            match waitpid(None::<Pid>, None) {
                Ok(WaitStatus::Exited(pid, code)) => deliver(&state, pid.as_raw(), code),
                Ok(WaitStatus::Signaled(pid, sig, _)) => {
                    deliver(&state, pid.as_raw(), -(sig as i32));
                }
                Ok(_) => {}
                // No children: sleep until the next spawn (or a second, for
                // orphans adopted meanwhile).
                Err(_) => {
                    let guard = state.lock().unwrap_or_else(PoisonError::into_inner);
                    if guard.waiting.is_empty() {
                        let _ = spawned.wait_timeout(guard, std::time::Duration::from_secs(1));
                    }
                }
            }
        });
        reaper
    }

    /// Spawns `cmd`; the receiver yields its exit status.
    pub fn spawn(&self, cmd: &mut Command) -> std::io::Result<(Child, Receiver<i32>)> {
        let (tx, rx) = channel();
        // Held across spawn so the reaper cannot miss the new pid.
        let mut state = self.state.lock().unwrap_or_else(PoisonError::into_inner);
        let child = cmd.spawn()?;
        state.waiting.insert(child.id() as i32, tx);
        self.spawned.notify_all();
        Ok((child, rx))
    }
}

fn deliver(state: &Mutex<State>, pid: i32, status: i32) {
    let mut state = state.lock().unwrap_or_else(PoisonError::into_inner);
    if let Some(tx) = state.waiting.remove(&pid) {
        let _ = tx.send(status);
    }
}

/// SIGKILLs a command.
pub fn kill(pid: u32) {
    let _ = send_signal(Pid::from_raw(pid as i32), Signal::SIGKILL);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_status_nobody_waits_for_is_never_handed_to_a_later_request() {
        let state = Mutex::new(State::default());
        // An orphan with pid 4242 exits while no request has that pid ...
        deliver(&state, 4242, 7);
        // ... then a request's command gets the reused pid 4242.
        let (tx, rx) = channel();
        state.lock().unwrap().waiting.insert(4242, tx);
        assert!(rx.try_recv().is_err(), "the orphan's status answered");
        deliver(&state, 4242, 0);
        assert_eq!(rx.recv().unwrap(), 0);
    }
}

//! `bismuth-runner --init -- COMMAND [ARG...]`: PID 1 of a Server-mode
//! container. A server run as PID 1 ignores SIGTERM (the kernel drops
//! signals PID 1 has no handler for), so every removal used to wait the
//! whole grace period; this init starts the server as its child, forwards
//! the usual signals to it, reaps every process re-parented to it, and
//! exits with the server's status (128 + signal if it was killed), like
//! tini. Signals are blocked and taken with `sigwait` (a blocked signal is
//! queued even for PID 1), so no handler and no `unsafe` is needed. They are
//! blocked only once the child runs (a child inherits the mask; without
//! `unsafe` it cannot be reset in between), so a signal in the first
//! microseconds is lost, as it would be for any process without a handler.

use std::process::Command;

use nix::sys::signal::{kill, SigSet, Signal};
use nix::sys::wait::{waitpid, WaitPidFlag, WaitStatus};
use nix::unistd::Pid;

/// Signals passed on to the server.
const FORWARDED: [Signal; 7] = [
    Signal::SIGTERM,
    Signal::SIGINT,
    Signal::SIGHUP,
    Signal::SIGQUIT,
    Signal::SIGUSR1,
    Signal::SIGUSR2,
    Signal::SIGWINCH,
];

/// Runs `command` as the only child and never returns.
pub fn run(command: &[String]) -> ! {
    let mut set = SigSet::empty();
    for s in FORWARDED {
        set.add(s);
    }
    set.add(Signal::SIGCHLD);
    let child = match Command::new(&command[0]).args(&command[1..]).spawn() {
        Ok(c) => c,
        Err(e) => {
            eprintln!("bismuth-runner: cannot start {:?}: {e}", command[0]);
            std::process::exit(127);
        }
    };
    let main = Pid::from_raw(child.id() as i32);
    if let Err(e) = set.thread_block() {
        eprintln!("bismuth-runner: cannot block signals: {e}");
        std::process::exit(1);
    }
    // A child that exited before the block sent its SIGCHLD unseen: look once.
    let mut sig = Signal::SIGCHLD;
    loop {
        if sig != Signal::SIGCHLD {
            let _ = kill(main, sig);
        }
        // Reap everything that exited; the server's end is ours.
        loop {
            match waitpid(None::<Pid>, Some(WaitPidFlag::WNOHANG)) {
                Ok(WaitStatus::Exited(pid, code)) if pid == main => std::process::exit(code),
                Ok(WaitStatus::Signaled(pid, s, _)) if pid == main => {
                    std::process::exit(128 + s as i32)
                }
                Ok(WaitStatus::StillAlive) | Err(_) => break,
                Ok(_) => {}
            }
        }
        sig = loop {
            if let Ok(s) = set.wait() {
                break s;
            }
        };
    }
}

//! bismuth-runner: PID 1 of an Executable-mode container. It listens on a
//! Unix socket in a directory bismuthd shares with the container and, for
//! each connection, runs the function's command once: the request body on
//! its stdin, its stdout framed back, then its exit status. Its stderr goes
//! to the container's log. One process per request without a containerd exec
//! (about 50 ms each) is what keeps Executable mode fast.
//!
//! Usage: `bismuth-runner SOCKET -- COMMAND [ARG...]`; with `--init` instead
//! of a socket it is the init of a Server-mode container (see `init.rs`).
//!
//! Wire format (see `bismuthd/src/exec.rs` for the other side):
//! - request: `u32` big-endian length, then that many bytes of `KEY=VALUE\n`
//!   lines (`BISMUTH_TIMEOUT_MS` sets the time limit; every other line is
//!   added to the command's environment), then the body until the client
//!   shuts down its write half.
//! - response: frames of `u8` kind, `u32` big-endian length, data. Kind 1:
//!   stdout bytes. Kind 2: the end, data an `i32` (exit code, or minus the
//!   signal number). Kind 3: the end, data a message (the command did not start).

mod init;
mod protocol;
mod reaper;

use std::io::{Read, Write};
use std::os::unix::net::{UnixListener, UnixStream};
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::Duration;

use protocol::{read_header, write_frame, Frame};
use reaper::Reaper;

/// The limit when a request names none.
const DEFAULT_TIMEOUT: Duration = Duration::from_secs(30);

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let Some(sep) = args.iter().position(|a| a == "--") else {
        usage();
    };
    if sep != 2 || args.len() <= sep + 1 {
        usage();
    }
    if args[1] == "--init" {
        init::run(&args[sep + 1..]);
    }
    let socket = &args[1];
    let command: Arc<Vec<String>> = Arc::new(args[sep + 1..].to_vec());
    stop_on_sigterm();

    let _ = std::fs::remove_file(socket);
    let listener = match UnixListener::bind(socket) {
        Ok(l) => l,
        Err(e) => {
            eprintln!("bismuth-runner: cannot listen on {socket}: {e}");
            std::process::exit(1);
        }
    };
    let reaper = Reaper::start();
    eprintln!(
        "bismuth-runner: ready on {socket} for {:?}",
        command.as_slice()
    );
    for conn in listener.incoming() {
        match conn {
            Ok(stream) => {
                let command = Arc::clone(&command);
                let reaper = reaper.clone();
                std::thread::spawn(move || {
                    if let Err(e) = serve(stream, &command, &reaper) {
                        eprintln!("bismuth-runner: request failed: {e}");
                    }
                });
            }
            Err(e) => eprintln!("bismuth-runner: accept failed: {e}"),
        }
    }
}

/// As PID 1 the runner would ignore SIGTERM (the kernel drops signals PID
/// 1 has no handler for) and every removal would wait out the grace period.
/// bismuthd stops a container only once its requests have finished, so
/// SIGTERM and SIGINT end the runner at once. They are blocked before any
/// thread starts (every thread inherits the mask; the commands it spawns
/// start with a clear one) and taken by one thread with `sigwait`.
fn stop_on_sigterm() {
    use nix::sys::signal::{SigSet, Signal};
    let mut stop = SigSet::empty();
    stop.add(Signal::SIGTERM);
    stop.add(Signal::SIGINT);
    if let Err(e) = stop.thread_block() {
        eprintln!("bismuth-runner: cannot block SIGTERM: {e}");
        return;
    }
    std::thread::spawn(move || loop {
        if let Ok(sig) = stop.wait() {
            eprintln!("bismuth-runner: {sig:?}: stopping");
            std::process::exit(0);
        }
    });
}

fn usage() -> ! {
    eprintln!("usage: bismuth-runner SOCKET -- COMMAND [ARG...]");
    eprintln!("       bismuth-runner --init -- COMMAND [ARG...]");
    std::process::exit(2);
}

/// Runs the command once for one connection.
fn serve(mut stream: UnixStream, command: &[String], reaper: &Reaper) -> std::io::Result<()> {
    let Some(header) = read_header(&mut stream)? else {
        return Ok(()); // a probe: nothing to run
    };
    let mut timeout = DEFAULT_TIMEOUT;
    let mut cmd = Command::new(&command[0]);
    cmd.args(&command[1..])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit());
    for (key, value) in &header {
        if key == "BISMUTH_TIMEOUT_MS" {
            if let Ok(ms) = value.parse() {
                timeout = Duration::from_millis(ms);
            }
        } else {
            cmd.env(key, value);
        }
    }

    let (mut child, exited) = match reaper.spawn(&mut cmd) {
        Ok(spawned) => spawned,
        Err(e) => {
            let msg = format!("cannot start {:?}: {e}", command[0]);
            eprintln!("bismuth-runner: {msg}");
            return write_frame(&mut stream, Frame::Failed(&msg));
        }
    };
    let pid = child.id();

    // Body → stdin on its own thread, so a command that writes before it
    // reads all of its input cannot deadlock against us.
    let mut stdin = child.stdin.take();
    let mut body = stream.try_clone()?;
    let feeder = std::thread::spawn(move || {
        if let Some(stdin) = stdin.as_mut() {
            let _ = std::io::copy(&mut body, stdin);
        }
        drop(stdin);
    });

    // The time limit: kill the command if it has not exited by then.
    let (done_tx, done_rx) = std::sync::mpsc::channel::<()>();
    let killer = std::thread::spawn(move || {
        if done_rx.recv_timeout(timeout) == Err(std::sync::mpsc::RecvTimeoutError::Timeout) {
            eprintln!("bismuth-runner: pid {pid} ran over {timeout:?}; killing it");
            reaper::kill(pid);
        }
    });

    let mut out = child.stdout.take();
    let mut buf = vec![0u8; 64 * 1024];
    let mut client_gone = false;
    if let Some(out) = out.as_mut() {
        loop {
            match out.read(&mut buf) {
                Ok(0) | Err(_) => break,
                Ok(n) => {
                    if !client_gone && write_frame(&mut stream, Frame::Stdout(&buf[..n])).is_err() {
                        // The caller left: stop the work it asked for.
                        client_gone = true;
                        reaper::kill(pid);
                    }
                }
            }
        }
    }
    let status = exited.recv().unwrap_or(-9);
    let _ = done_tx.send(());
    let _ = killer.join();
    // The feeder ends when the client closes its side or the pipe breaks.
    let _ = stream.shutdown(std::net::Shutdown::Read);
    let _ = feeder.join();
    if client_gone {
        return Ok(());
    }
    write_frame(&mut stream, Frame::Exit(status))?;
    stream.flush()
}

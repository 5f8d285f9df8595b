//! gVisor for `"isolation": "sandbox"`: the function's system calls are
//! served by gVisor's user-space kernel (`runsc`, Debian's package) instead
//! of the host's. Debian's runsc ships no containerd shim, so containerd's
//! runc shim (`io.containerd.runc.v2`) drives runsc in runc's place: its
//! `BinaryName` option names a wrapper bismuthd writes into its run
//! directory at start-up, which runs runsc on the ptrace platform (no KVM
//! on these hosts) and lets the runner create its Unix socket in the host
//! directory bound into the container (`--host-uds=create`). runsc keeps
//! its state under its own root. Everything else about the container (its
//! network namespace, svcprovider, limits, logs) is the same as under runc.
//!
//! Networking: gVisor's own stack (`--network=sandbox`) refuses to start on
//! these kernels: runsc 20221219 takes a namespace in which
//! `/proc/sys/net/core/rmem_default` exists for the host's root namespace,
//! and Linux 6 shows that file in every namespace. So the sandbox runs in
//! the container's own network namespace on the host's stack
//! (`--network=host`): its sockets are still only that namespace's veth,
//! behind the same nftables rules; every other system call is gVisor's.

use std::io::Write;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use prost::Message;

/// containerd's `containerd.runc.v1.Options`, the runc shim's options
/// (only the fields bismuthd sets; the others keep their defaults).
#[derive(Clone, PartialEq, prost::Message)]
struct RuncOptions {
    /// The runc-compatible binary the shim runs.
    #[prost(string, tag = "6")]
    binary_name: String,
    /// Its state directory.
    #[prost(string, tag = "7")]
    root: String,
}

const OPTIONS_TYPE_URL: &str = "containerd.runc.v1.Options";

/// What a sandboxed container is created with.
#[derive(Clone, Debug)]
pub struct Sandbox {
    wrapper: PathBuf,
    root: PathBuf,
}

impl Sandbox {
    /// Writes the wrapper for `runsc` into `run_dir`.
    pub fn prepare(runsc: &Path, run_dir: &Path) -> std::io::Result<Sandbox> {
        if !runsc.is_file() {
            return Err(std::io::Error::new(
                std::io::ErrorKind::NotFound,
                format!(
                    "runsc not found at {} (apt-get install runsc, or --runsc PATH)",
                    runsc.display()
                ),
            ));
        }
        let wrapper = run_dir.join("runsc-sandbox");
        let tmp = run_dir.join(".runsc-sandbox.new");
        let quoted = shell_words::quote(&runsc.to_string_lossy()).into_owned();
        {
            let mut f = std::fs::File::create(&tmp)?;
            write!(
                f,
                "#!/bin/sh\n# Written by bismuthd: runsc in runc's place for \"isolation\": \"sandbox\".\n\
                 exec {quoted} --platform=ptrace --network=host --host-uds=create \"$@\"\n"
            )?;
            f.set_permissions(std::fs::Permissions::from_mode(0o755))?;
        }
        std::fs::rename(&tmp, &wrapper)?;
        Ok(Sandbox {
            wrapper,
            root: run_dir.join("runsc"),
        })
    }

    /// The container's runtime options: the runc shim running the wrapper.
    pub fn runtime_options(&self) -> prost_types::Any {
        prost_types::Any {
            type_url: OPTIONS_TYPE_URL.into(),
            value: RuncOptions {
                binary_name: self.wrapper.to_string_lossy().into_owned(),
                root: self.root.to_string_lossy().into_owned(),
            }
            .encode_to_vec(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn writes_the_wrapper_and_encodes_the_options() {
        let dir = tempfile::tempdir().unwrap();
        let missing = Sandbox::prepare(Path::new("/nonexistent/runsc"), dir.path()).unwrap_err();
        assert!(
            missing.to_string().contains("apt-get install runsc"),
            "{missing}"
        );
        let fake = dir.path().join("my runsc");
        std::fs::write(&fake, "").unwrap();
        let s = Sandbox::prepare(&fake, dir.path()).unwrap();
        let script = std::fs::read_to_string(dir.path().join("runsc-sandbox")).unwrap();
        assert!(script.contains("exec '"), "{script}");
        assert!(
            script.contains("--platform=ptrace --network=host --host-uds=create \"$@\""),
            "{script}"
        );
        let any = s.runtime_options();
        assert_eq!(any.type_url, "containerd.runc.v1.Options");
        let back = RuncOptions::decode(any.value.as_slice()).unwrap();
        assert!(back.binary_name.ends_with("/runsc-sandbox"));
        assert!(back.root.ends_with("/runsc"));
    }
}

//! Where ZooKeeper is and which environment to use, from flags or environment variables.

use std::time::Duration;

/// The `--zookeeper` and `--zookeeper-env` flags every Bismuth binary takes.
#[derive(Clone, Debug, clap::Args)]
pub struct ZkArgs {
    /// ZooKeeper ensemble, HOST:PORT[,HOST:PORT…]
    #[arg(
        long = "zookeeper",
        env = "BISMUTH_ZOOKEEPER",
        default_value = "127.0.0.1:2181"
    )]
    pub zookeeper: String,
    /// Environment: everything lives under the znode /{env}
    #[arg(
        long = "zookeeper-env",
        env = "BISMUTH_ZOOKEEPER_ENV",
        default_value = "default"
    )]
    pub zookeeper_env: String,
    /// Milliseconds without contact after which ZooKeeper ends a session
    /// (and a node whose bismuthd held it counts as dead); the servers
    /// clamp it to 2-20 ticks
    #[arg(
        long = "zookeeper-session-timeout-ms",
        env = "BISMUTH_ZOOKEEPER_SESSION_TIMEOUT_MS",
        default_value_t = 5_000
    )]
    pub session_timeout_ms: u64,
}

impl ZkArgs {
    /// Validates the flags into a [`ZkConfig`] with default timeouts.
    pub fn config(&self) -> Result<ZkConfig, ConfigError> {
        if !(400..=600_000).contains(&self.session_timeout_ms) {
            return Err(ConfigError::SessionTimeout(self.session_timeout_ms));
        }
        let mut c = ZkConfig::new(&self.zookeeper, &self.zookeeper_env)?;
        c.session_timeout = Duration::from_millis(self.session_timeout_ms);
        Ok(c)
    }
}

/// A validated connection configuration.
#[derive(Clone, Debug)]
pub struct ZkConfig {
    /// `host:port` entries.
    pub servers: Vec<String>,
    /// Environment name; the chroot is `/{env}`.
    pub env: String,
    /// Session timeout negotiated with the server.
    pub session_timeout: Duration,
    /// How long connecting may take before giving up.
    pub connect_timeout: Duration,
    /// Keep the session open when the process ends (its ephemeral znodes
    /// live until it times out): bismuthd, whose restart must not look like
    /// the node's death.
    pub detached: bool,
}

/// A bad `--zookeeper` or `--zookeeper-env` value.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum ConfigError {
    /// The server list is empty or an entry is not `host:port`.
    #[error("invalid --zookeeper {value:?}: {reason}")]
    Servers {
        /// The flag's value.
        value: String,
        /// What is wrong.
        reason: String,
    },
    /// The environment name cannot be a znode name.
    #[error("invalid --zookeeper-env {0:?}: use 1-64 letters, digits, '-' or '_'")]
    Env(String),
    /// The session timeout is out of range.
    #[error("invalid --zookeeper-session-timeout-ms {0}: use 400 to 600000")]
    SessionTimeout(u64),
}

impl ZkConfig {
    /// Validates a server list and environment name; timeouts get defaults
    /// (10 s session, 5 s connect; the daemons' flag defaults to 5 s).
    pub fn new(servers: &str, env: &str) -> Result<Self, ConfigError> {
        let bad = |reason: String| ConfigError::Servers {
            value: servers.to_owned(),
            reason,
        };
        let list: Vec<String> = servers
            .split(',')
            .map(str::trim)
            .filter(|s| !s.is_empty())
            .map(str::to_owned)
            .collect();
        if list.is_empty() {
            return Err(bad("no servers given".into()));
        }
        for s in &list {
            let Some((host, port)) = s.rsplit_once(':') else {
                return Err(bad(format!("{s:?} is not HOST:PORT")));
            };
            if host.is_empty() || port.parse::<u16>().map_or(true, |p| p == 0) {
                return Err(bad(format!(
                    "{s:?} is not HOST:PORT with a port from 1 to 65535"
                )));
            }
        }
        let env_ok = !env.is_empty()
            && env.len() <= 64
            && env
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_');
        if !env_ok {
            return Err(ConfigError::Env(env.to_owned()));
        }
        Ok(ZkConfig {
            servers: list,
            env: env.to_owned(),
            session_timeout: Duration::from_secs(10),
            connect_timeout: Duration::from_secs(5),
            detached: false,
        })
    }

    /// The chroot path, `/{env}`.
    pub fn chroot(&self) -> String {
        format!("/{}", self.env)
    }

    /// The server list as one connect string.
    pub fn servers_string(&self) -> String {
        self.servers.join(",")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_lists_and_envs() {
        let c = ZkConfig::new("a:2181, b:2182", "test_1").unwrap();
        assert_eq!(c.servers, ["a:2181", "b:2182"]);
        assert_eq!(c.chroot(), "/test_1");
    }

    #[test]
    fn rejects_bad_values() {
        assert!(matches!(
            ZkConfig::new("", "x"),
            Err(ConfigError::Servers { .. })
        ));
        assert!(matches!(
            ZkConfig::new("host", "x"),
            Err(ConfigError::Servers { .. })
        ));
        assert!(matches!(
            ZkConfig::new("host:0", "x"),
            Err(ConfigError::Servers { .. })
        ));
        assert!(matches!(
            ZkConfig::new("h:1", "a/b"),
            Err(ConfigError::Env(_))
        ));
        assert!(matches!(ZkConfig::new("h:1", ""), Err(ConfigError::Env(_))));
    }
}

//! Validation of a [`FunctionDefinition`] with messages that name the field.

use std::collections::HashSet;
use std::fmt;

use crate::function::{FunctionDefinition, InvokeMode};
use crate::{git, hostname, image_ref};

/// The smallest memory limit a function may ask for (4 MiB).
pub const MIN_MEMORY: u64 = 4 * 1024 * 1024;

/// The most CPU a single function may ask for, in cores.
pub const MAX_CPU: f64 = 256.0;

/// The most instances a function may ask for.
pub const MAX_INSTANCES: u32 = 10_000;

/// The most requests one instance may be asked to serve at once.
pub const MAX_CONCURRENCY: u32 = 100_000;

/// The longest `idle_timeout`, in seconds (30 days).
pub const MAX_IDLE_TIMEOUT_S: f64 = 30.0 * 24.0 * 3600.0;

/// One thing wrong with a definition, and where.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FieldError {
    /// JSON path of the field, e.g. `routes[1].hostname`.
    pub field: String,
    /// What is wrong with it.
    pub message: String,
}

impl fmt::Display for FieldError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.field, self.message)
    }
}

/// Everything wrong with a definition (never empty).
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub struct InvalidDefinition(pub Vec<FieldError>);

impl fmt::Display for InvalidDefinition {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let parts: Vec<String> = self.0.iter().map(ToString::to_string).collect();
        write!(f, "invalid function definition: {}", parts.join("; "))
    }
}

impl FunctionDefinition {
    /// Checks every field; returns all problems found, each naming its field.
    pub fn validate(&self) -> Result<(), InvalidDefinition> {
        let mut errors = Vec::new();
        let mut err = |field: &str, message: String| {
            errors.push(FieldError {
                field: field.to_owned(),
                message,
            });
        };

        if let Err(e) = image_ref::ImageRef::parse(&self.image) {
            err("image", e.to_string());
        }
        if let Some(repo) = &self.repo {
            if let Err(e) = git::validate_url(repo.url()) {
                err("repo[0]", e);
            }
            if let Err(e) = git::validate_branch(repo.branch()) {
                err("repo[1]", e);
            }
        }
        if !self.cpu.is_finite() || self.cpu <= 0.0 {
            err(
                "cpu",
                format!("must be a number of cores greater than 0, got {}", self.cpu),
            );
        } else if self.cpu > MAX_CPU {
            err(
                "cpu",
                format!("must be at most {MAX_CPU} cores, got {}", self.cpu),
            );
        }
        if self.memory < MIN_MEMORY {
            err(
                "memory",
                format!(
                    "must be at least {MIN_MEMORY} bytes (4 MiB), got {}",
                    self.memory
                ),
            );
        }
        match &self.invoke_mode {
            InvokeMode::Executable(argv) => check_argv("invoke_mode.Executable", argv, &mut err),
            InvokeMode::Server(argv, port) => {
                check_argv("invoke_mode.Server[0]", argv, &mut err);
                if *port == 0 {
                    err(
                        "invoke_mode.Server[1]",
                        "port must be 1-65535, got 0".into(),
                    );
                }
            }
        }
        if self.max_instances == 0 {
            err("max_instances", "must be at least 1".into());
        } else if self.max_instances > MAX_INSTANCES {
            err(
                "max_instances",
                format!(
                    "must be at most {MAX_INSTANCES}, got {}",
                    self.max_instances
                ),
            );
        }
        if let Some(min) = self.min_instances {
            if min > self.max_instances {
                err(
                    "min_instances",
                    format!(
                        "must be at most max_instances ({}), got {min}",
                        self.max_instances
                    ),
                );
            }
        }
        match self.concurrency {
            Some(0) => err("concurrency", "must be at least 1".into()),
            Some(c) if c > MAX_CONCURRENCY => err(
                "concurrency",
                format!("must be at most {MAX_CONCURRENCY}, got {c}"),
            ),
            _ => {}
        }
        if let Some(t) = self.idle_timeout {
            if !t.is_finite() || t < 0.0 {
                err(
                    "idle_timeout",
                    format!("must be a number of seconds, 0 or more, got {t}"),
                );
            } else if t > MAX_IDLE_TIMEOUT_S {
                err(
                    "idle_timeout",
                    format!("must be at most {MAX_IDLE_TIMEOUT_S} seconds (30 days), got {t}"),
                );
            }
        }
        let mut seen = HashSet::new();
        for (i, route) in self.routes.iter().enumerate() {
            let field = format!("routes[{i}].hostname");
            if let Err(e) = hostname::validate(&route.hostname) {
                err(&field, e);
            } else if !seen.insert(hostname::normalize(&route.hostname)) {
                err(&field, format!("{:?} is listed twice", route.hostname));
            }
        }

        if errors.is_empty() {
            Ok(())
        } else {
            Err(InvalidDefinition(errors))
        }
    }
}

fn check_argv(field: &str, argv: &[String], err: &mut impl FnMut(&str, String)) {
    match argv.first() {
        None => err(field, "command must not be empty".into()),
        Some(cmd) if cmd.is_empty() => err(field, "command's first word must not be empty".into()),
        Some(_) => {}
    }
    if argv.iter().any(|a| a.contains('\0')) {
        err(field, "arguments must not contain NUL bytes".into());
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::function::{GitRepo, Route};

    fn valid() -> FunctionDefinition {
        FunctionDefinition {
            image: "docker.io/library/python:3.11".into(),
            repo: None,
            svc_group_id: None,
            cpu: 0.5,
            memory: 128 << 20,
            svc_quotas: None,
            invoke_mode: InvokeMode::Server(vec!["/usr/bin/python3".into()], 8000),
            max_instances: 1,
            routes: vec![Route {
                hostname: "app.example.com".into(),
            }],
            min_instances: None,
            concurrency: None,
            idle_timeout: None,
            isolation: None,
        }
    }

    fn fields(def: &FunctionDefinition) -> Vec<String> {
        def.validate()
            .unwrap_err()
            .0
            .into_iter()
            .map(|e| e.field)
            .collect()
    }

    #[test]
    fn valid_definition_passes() {
        valid().validate().unwrap();
    }

    #[test]
    fn each_bad_field_is_named() {
        let mut d = valid();
        d.cpu = 0.0;
        assert_eq!(fields(&d), ["cpu"]);
        d.cpu = f64::NAN;
        assert_eq!(fields(&d), ["cpu"]);

        let mut d = valid();
        d.memory = MIN_MEMORY - 1;
        assert_eq!(fields(&d), ["memory"]);

        let mut d = valid();
        d.invoke_mode = InvokeMode::Server(vec!["/bin/sh".into()], 0);
        assert_eq!(fields(&d), ["invoke_mode.Server[1]"]);

        let mut d = valid();
        d.invoke_mode = InvokeMode::Executable(vec![]);
        assert_eq!(fields(&d), ["invoke_mode.Executable"]);

        let mut d = valid();
        d.max_instances = 0;
        assert_eq!(fields(&d), ["max_instances"]);

        let mut d = valid();
        d.max_instances = 3;
        d.min_instances = Some(4);
        assert_eq!(fields(&d), ["min_instances"]);
        d.min_instances = Some(0);
        d.validate().unwrap();

        let mut d = valid();
        d.concurrency = Some(0);
        assert_eq!(fields(&d), ["concurrency"]);
        d.concurrency = Some(MAX_CONCURRENCY + 1);
        assert_eq!(fields(&d), ["concurrency"]);

        let mut d = valid();
        d.idle_timeout = Some(-1.0);
        assert_eq!(fields(&d), ["idle_timeout"]);
        d.idle_timeout = Some(f64::INFINITY);
        assert_eq!(fields(&d), ["idle_timeout"]);
        d.idle_timeout = Some(0.0);
        d.validate().unwrap();

        let mut d = valid();
        d.image = "UPPER/case".into();
        assert_eq!(fields(&d), ["image"]);

        let mut d = valid();
        d.routes.push(Route {
            hostname: "bad_host!".into(),
        });
        assert_eq!(fields(&d), ["routes[1].hostname"]);

        let mut d = valid();
        d.routes.push(Route {
            hostname: "APP.example.com.".into(),
        });
        assert_eq!(
            fields(&d),
            ["routes[1].hostname"],
            "duplicate after normalizing"
        );

        let mut d = valid();
        d.repo = Some(GitRepo("not a url".into(), "main..x".into()));
        assert_eq!(fields(&d), ["repo[0]", "repo[1]"]);
    }

    #[test]
    fn message_is_readable() {
        let mut d = valid();
        d.memory = 1;
        let msg = d.validate().unwrap_err().to_string();
        assert_eq!(
            msg,
            "invalid function definition: memory: must be at least 4194304 bytes (4 MiB), got 1"
        );
    }
}

//! The command-line syntax for invoke modes, as in the original `bismuthctl`:
//! `exec:/bin/ls -l` and `server:8000:/usr/local/bin/python3 -m http.server`.
//! Arguments are split like a shell would (quotes group words).

use crate::function::InvokeMode;

/// Why an invoke-mode string could not be parsed.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("invalid invoke mode {input:?}: {reason} (expected 'exec:CMD ARGS…' or 'server:PORT:CMD ARGS…')")]
pub struct InvokeSyntaxError {
    /// The rejected input.
    pub input: String,
    /// What is wrong with it.
    pub reason: String,
}

/// Parses `exec:CMD…` or `server:PORT:CMD…`.
pub fn parse_invoke_mode(input: &str) -> Result<InvokeMode, InvokeSyntaxError> {
    let fail = |reason: String| InvokeSyntaxError {
        input: input.to_owned(),
        reason,
    };
    let argv = |cmd: &str| -> Result<Vec<String>, InvokeSyntaxError> {
        let words = shell_words::split(cmd).map_err(|e| fail(format!("bad quoting: {e}")))?;
        if words.is_empty() {
            return Err(fail("the command is empty".into()));
        }
        Ok(words)
    };
    if let Some(cmd) = input.strip_prefix("exec:") {
        return Ok(InvokeMode::Executable(argv(cmd)?));
    }
    if let Some(rest) = input.strip_prefix("server:") {
        let Some((port, cmd)) = rest.split_once(':') else {
            return Err(fail("missing ':' after the port".into()));
        };
        let port: u16 = match port.parse() {
            Ok(p) if p > 0 => p,
            _ => {
                return Err(fail(format!(
                    "port {port:?} is not a number from 1 to 65535"
                )))
            }
        };
        return Ok(InvokeMode::Server(argv(cmd)?, port));
    }
    Err(fail("it must start with 'exec:' or 'server:'".into()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn v(words: &[&str]) -> Vec<String> {
        words.iter().map(|w| w.to_string()).collect()
    }

    #[test]
    fn original_examples() {
        assert_eq!(
            parse_invoke_mode("exec:/bin/ls").unwrap(),
            InvokeMode::Executable(v(&["/bin/ls"]))
        );
        assert_eq!(
            parse_invoke_mode("server:8000:/usr/local/bin/python3 -m http.server").unwrap(),
            InvokeMode::Server(v(&["/usr/local/bin/python3", "-m", "http.server"]), 8000)
        );
    }

    #[test]
    fn quotes_group_words() {
        assert_eq!(
            parse_invoke_mode("exec:/bin/sh -c 'echo hi; cat'").unwrap(),
            InvokeMode::Executable(v(&["/bin/sh", "-c", "echo hi; cat"]))
        );
    }

    #[test]
    fn errors() {
        for bad in [
            "",
            "run:/bin/ls",
            "exec:",
            "exec:   ",
            "server:0:/x",
            "server:99999:/x",
            "server:80",
            "server:x:/y",
            "exec:'unclosed",
        ] {
            assert!(
                parse_invoke_mode(bad).is_err(),
                "{bad:?} should be rejected"
            );
        }
        let e = parse_invoke_mode("server:abc:/bin/x").unwrap_err();
        assert!(e.to_string().contains("port \"abc\""), "{e}");
    }
}

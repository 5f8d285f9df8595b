//! Container image references (`[registry[:port]/]path[:tag][@digest]`), parsed
//! by the grammar of the OCI distribution reference and normalized the way
//! containerd expects (`python:3.11` → `docker.io/library/python:3.11`).

use std::fmt;

/// The registry assumed when a reference names none.
pub const DEFAULT_REGISTRY: &str = "docker.io";

/// A parsed image reference.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ImageRef {
    /// Registry host, with port if any (`docker.io`, `127.0.0.1:5000`).
    pub registry: String,
    /// Repository path (`library/python`).
    pub repository: String,
    /// Tag, if given.
    pub tag: Option<String>,
    /// Digest (`sha256:…`), if given.
    pub digest: Option<String>,
}

/// Why a string is not an image reference.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{reference:?} is not a valid image reference: {reason}")]
pub struct ImageRefError {
    /// The rejected input.
    pub reference: String,
    /// What is wrong with it.
    pub reason: &'static str,
}

impl ImageRef {
    /// Parses a reference, filling in the default registry, `library/` and no tag.
    pub fn parse(s: &str) -> Result<ImageRef, ImageRefError> {
        let fail = |reason| ImageRefError {
            reference: s.to_owned(),
            reason,
        };
        if s.is_empty() {
            return Err(fail("it is empty"));
        }
        if s.len() > 512 {
            return Err(fail("it is longer than 512 characters"));
        }
        let (rest, digest) = match s.split_once('@') {
            Some((rest, digest)) => {
                check_digest(digest).map_err(fail)?;
                (rest, Some(digest.to_owned()))
            }
            None => (s, None),
        };
        // A ':' after the last '/' starts the tag; one before it is a registry port.
        let last_slash = rest.rfind('/').map_or(0, |i| i + 1);
        let (name, tag) = match rest[last_slash..].find(':') {
            Some(i) => {
                let tag = &rest[last_slash + i + 1..];
                check_tag(tag).map_err(fail)?;
                (&rest[..last_slash + i], Some(tag.to_owned()))
            }
            None => (rest, None),
        };
        if name.is_empty() {
            return Err(fail("it has no repository name"));
        }
        let (registry, path) = match name.split_once('/') {
            Some((first, path))
                if first.contains('.') || first.contains(':') || first == "localhost" =>
            {
                check_registry(first).map_err(fail)?;
                (first.to_owned(), path.to_owned())
            }
            _ => (DEFAULT_REGISTRY.to_owned(), name.to_owned()),
        };
        if path.len() > 255 {
            return Err(fail("its repository path is longer than 255 characters"));
        }
        for component in path.split('/') {
            check_path_component(component).map_err(fail)?;
        }
        let repository = if registry == DEFAULT_REGISTRY && !path.contains('/') {
            format!("library/{path}")
        } else {
            path
        };
        Ok(ImageRef {
            registry,
            repository,
            tag,
            digest,
        })
    }

    /// The fully qualified name containerd stores the image under, with `:latest`
    /// when neither tag nor digest was given.
    pub fn canonical(&self) -> String {
        self.to_string()
    }
}

impl fmt::Display for ImageRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.registry, self.repository)?;
        match (&self.tag, &self.digest) {
            (Some(tag), _) => write!(f, ":{tag}")?,
            (None, None) => write!(f, ":latest")?,
            (None, Some(_)) => {}
        }
        if let Some(digest) = &self.digest {
            write!(f, "@{digest}")?;
        }
        Ok(())
    }
}

fn check_registry(host: &str) -> Result<(), &'static str> {
    let (name, port) = match host.rsplit_once(':') {
        Some((name, port)) => (name, Some(port)),
        None => (host, None),
    };
    if let Some(port) = port {
        if port.parse::<u16>().map_or(true, |p| p == 0) {
            return Err("its registry port is not a number from 1 to 65535");
        }
    }
    let label_ok = |l: &str| {
        !l.is_empty()
            && l.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
            && !l.starts_with('-')
            && !l.ends_with('-')
    };
    if name.split('.').all(label_ok) {
        Ok(())
    } else {
        Err("its registry host is not a valid host name")
    }
}

fn check_path_component(c: &str) -> Result<(), &'static str> {
    const BAD: &str =
        "its repository path must be lowercase letters, digits and single separators (. _ __ -)";
    if c.is_empty() {
        return Err("its repository path has an empty component");
    }
    let bytes = c.as_bytes();
    if !bytes[0].is_ascii_alphanumeric() || !bytes[bytes.len() - 1].is_ascii_alphanumeric() {
        return Err(BAD);
    }
    let mut i = 0;
    while i < bytes.len() {
        let b = bytes[i];
        if b.is_ascii_lowercase() || b.is_ascii_digit() {
            i += 1;
            continue;
        }
        // A separator run: '.', '_', '__' or any number of '-'.
        let start = i;
        while i < bytes.len() && matches!(bytes[i], b'.' | b'_' | b'-') {
            i += 1;
        }
        let sep = &c[start..i];
        let ok = sep == "." || sep == "_" || sep == "__" || sep.bytes().all(|b| b == b'-');
        if sep.is_empty() || !ok {
            return Err(BAD);
        }
    }
    Ok(())
}

fn check_tag(tag: &str) -> Result<(), &'static str> {
    let word = |b: u8| b.is_ascii_alphanumeric() || b == b'_';
    let bytes = tag.as_bytes();
    if bytes.is_empty() || bytes.len() > 128 {
        return Err("its tag must be 1 to 128 characters");
    }
    if !word(bytes[0]) || !bytes.iter().all(|&b| word(b) || b == b'.' || b == b'-') {
        return Err("its tag may contain only letters, digits, '_', '.' and '-' and must not start with '.' or '-'");
    }
    Ok(())
}

fn check_digest(digest: &str) -> Result<(), &'static str> {
    let Some((algorithm, hex)) = digest.split_once(':') else {
        return Err("its digest must look like sha256:<hex>");
    };
    let algo_ok = !algorithm.is_empty()
        && algorithm
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b"+._-".contains(&b));
    if !algo_ok || hex.len() < 32 || !hex.bytes().all(|b| b.is_ascii_hexdigit()) {
        return Err("its digest must look like sha256:<at least 32 hex digits>");
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn canon(s: &str) -> String {
        ImageRef::parse(s).unwrap().canonical()
    }

    #[test]
    fn normalizes_like_containerd() {
        assert_eq!(canon("python:3.11"), "docker.io/library/python:3.11");
        assert_eq!(canon("busybox"), "docker.io/library/busybox:latest");
        assert_eq!(
            canon("docker.io/library/python:3.11"),
            "docker.io/library/python:3.11"
        );
        assert_eq!(canon("org/app"), "docker.io/org/app:latest");
        assert_eq!(
            canon("127.0.0.1:5000/bismuth/busybox:1"),
            "127.0.0.1:5000/bismuth/busybox:1"
        );
        assert_eq!(canon("localhost/x:y"), "localhost/x:y");
        let digest = format!("sha256:{}", "a".repeat(64));
        assert_eq!(
            canon(&format!("busybox@{digest}")),
            format!("docker.io/library/busybox@{digest}")
        );
        assert_eq!(
            canon("a/b__c/d-e.f:1.0-rc_1"),
            "docker.io/a/b__c/d-e.f:1.0-rc_1"
        );
    }

    #[test]
    fn rejects_malformed() {
        for bad in [
            "",
            "UPPER",
            "a//b",
            "a/",
            ":tag",
            "name:",
            "name:-x",
            "name:.x",
            "a___b",
            "a..b",
            "-a",
            "a-",
            "reg:0/x",
            "reg:99999/x",
            "name@sha256:xyz",
            "name@sha256",
            "my image",
            "bad!host.com/x",
        ] {
            assert!(ImageRef::parse(bad).is_err(), "{bad:?} should be rejected");
        }
    }

    #[test]
    fn error_names_input_and_reason() {
        let e = ImageRef::parse("Python").unwrap_err();
        assert_eq!(
            e.to_string(),
            "\"Python\" is not a valid image reference: its repository path must be lowercase letters, digits and single separators (. _ __ -)"
        );
    }
}

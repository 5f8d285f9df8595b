//! Route hostnames: validation as DNS names and the normal form used as a znode name.

/// Lowercases and strips one trailing dot, so `App.Example.COM.` routes like `app.example.com`.
pub fn normalize(hostname: &str) -> String {
    hostname
        .strip_suffix('.')
        .unwrap_or(hostname)
        .to_ascii_lowercase()
}

/// Checks that `hostname` is a valid DNS name (RFC 1123 labels, at most 253 characters).
pub fn validate(hostname: &str) -> Result<(), String> {
    let name = hostname.strip_suffix('.').unwrap_or(hostname);
    if name.is_empty() {
        return Err("hostname must not be empty".into());
    }
    if name.len() > 253 {
        return Err(format!(
            "hostname is {} characters, at most 253 are allowed",
            name.len()
        ));
    }
    for label in name.split('.') {
        if label.is_empty() {
            return Err(format!("{hostname:?} has an empty label"));
        }
        if label.len() > 63 {
            return Err(format!(
                "{hostname:?} has a label longer than 63 characters"
            ));
        }
        if !label
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-')
        {
            return Err(format!(
                "{hostname:?} may contain only letters, digits, '-' and '.'"
            ));
        }
        if label.starts_with('-') || label.ends_with('-') {
            return Err(format!(
                "{hostname:?} has a label that starts or ends with '-'"
            ));
        }
    }
    if name.parse::<std::net::Ipv4Addr>().is_ok() {
        return Err(format!("{hostname:?} is an IP address, not a hostname"));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accepts_dns_names() {
        for h in [
            "test.host.internal",
            "localhost",
            "a-b.c0",
            "x.example.com.",
            "A.B",
        ] {
            validate(h).unwrap_or_else(|e| panic!("{h}: {e}"));
        }
    }

    #[test]
    fn rejects_bad_names() {
        let long_label = format!("{}.com", "a".repeat(64));
        let long_name = ["abcdefghi"; 30].join(".");
        for h in [
            "",
            ".",
            "a..b",
            "-a.com",
            "a-.com",
            "a_b.com",
            "a b",
            "host:80",
            "1.2.3.4",
            &long_label,
            &long_name,
        ] {
            assert!(validate(h).is_err(), "{h:?} should be rejected");
        }
    }

    #[test]
    fn normalizes() {
        assert_eq!(normalize("App.Example.COM."), "app.example.com");
    }
}

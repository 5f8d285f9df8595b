//! W3C trace context: continue the caller's `traceparent` with a new span
//! id, or start a trace when there is none (or it is malformed).

/// Returns the `traceparent` for the upstream request and the response.
pub fn next_traceparent(incoming: Option<&str>) -> String {
    let mut out = String::with_capacity(55);
    out.push_str("00-");
    let flags = match incoming.and_then(parse) {
        Some((trace, flags)) => {
            out.push_str(trace);
            flags
        }
        None => {
            push_hex(&mut out, &rand::random::<[u8; 16]>());
            "01"
        }
    };
    out.push('-');
    let span = loop {
        let s = rand::random::<[u8; 8]>();
        if s != [0; 8] {
            break s;
        }
    };
    push_hex(&mut out, &span);
    out.push('-');
    out.push_str(flags);
    out
}

/// The trace id of a well-formed `traceparent`, else "".
pub fn trace_id(traceparent: &str) -> &str {
    parse(traceparent).map_or("", |(trace, _)| trace)
}

/// Parses `00-<32 hex>-<16 hex>-<2 hex>`; returns trace id and flags.
fn parse(value: &str) -> Option<(&str, &str)> {
    let mut parts = value.trim().split('-');
    let (version, trace, parent, flags) =
        (parts.next()?, parts.next()?, parts.next()?, parts.next()?);
    let is_hex = |s: &str, n: usize| {
        s.len() == n
            && s.bytes()
                .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
    };
    let valid = version == "00"
        && parts.next().is_none()
        && is_hex(trace, 32)
        && is_hex(parent, 16)
        && is_hex(flags, 2)
        && trace.bytes().any(|b| b != b'0')
        && parent.bytes().any(|b| b != b'0');
    valid.then_some((trace, flags))
}

/// Appends `bytes` in lower-case hex (per request: no formatter).
fn push_hex(out: &mut String, bytes: &[u8]) {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    for b in bytes {
        out.push(char::from(DIGITS[usize::from(b >> 4)]));
        out.push(char::from(DIGITS[usize::from(b & 0xf)]));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn continues_a_valid_trace() {
        let incoming = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
        let next = next_traceparent(Some(incoming));
        assert!(
            next.starts_with("00-4bf92f3577b34da6a3ce929d0e0e4736-"),
            "{next}"
        );
        assert!(next.ends_with("-01"));
        assert_ne!(next, incoming, "a new span id");
        assert!(parse(&next).is_some());
    }

    #[test]
    fn starts_a_trace_when_missing_or_malformed() {
        for bad in [
            None,
            Some("garbage"),
            Some("00-00000000000000000000000000000000-00f067aa0ba902b7-01"),
            Some("01-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"),
        ] {
            let t = next_traceparent(bad);
            assert!(parse(&t).is_some(), "{t}");
            assert_eq!(t.len(), 55);
        }
    }
}

//! W3C trace context: continue the caller's `traceparent` with a new span
//! id, or start a trace when there is none (or it is malformed).

use std::fmt::Write;

/// Returns the `traceparent` for the upstream request and the response.
pub fn next_traceparent(incoming: Option<&str>) -> String {
    let (trace_id, flags) = match incoming.and_then(parse) {
        Some((trace, flags)) => (trace.to_owned(), flags.to_owned()),
        None => (hex(&rand::random::<[u8; 16]>()), "01".to_owned()),
    };
    let span = loop {
        let s = rand::random::<[u8; 8]>();
        if s != [0; 8] {
            break hex(&s);
        }
    };
    format!("00-{trace_id}-{span}-{flags}")
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

fn hex(bytes: &[u8]) -> String {
    let mut s = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        let _ = write!(s, "{b:02x}");
    }
    s
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

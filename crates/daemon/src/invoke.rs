//! The invocation path both proxies share: `/invoke/{container or function id}[/rest]`.

use uuid::Uuid;

/// Splits `/invoke/{id}[/rest]` into the id and `/rest` (`/` when absent);
/// `Some(Err(id))` when the id is not a UUID, `None` for other paths.
pub fn target(path: &str) -> Option<Result<(Uuid, &str), &str>> {
    let after = path.strip_prefix("/invoke/")?;
    let (id, rest) = match after.find('/') {
        Some(i) => (&after[..i], &after[i..]),
        None => (after, "/"),
    };
    Some(id.parse().map(|u| (u, rest)).map_err(|_| id))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn invoke_paths() {
        let id = Uuid::new_v4();
        assert_eq!(target(&format!("/invoke/{id}")), Some(Ok((id, "/"))));
        assert_eq!(target(&format!("/invoke/{id}/a/b")), Some(Ok((id, "/a/b"))));
        assert_eq!(target(&format!("/invoke/{id}/")), Some(Ok((id, "/"))));
        assert_eq!(target("/invoke/nope/x"), Some(Err("nope")));
        assert_eq!(target("/other"), None);
    }
}

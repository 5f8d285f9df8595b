//! Where a store lives (`sqlite:DIR` or a `postgres://` URL) and what a
//! service group may be called, checked before anything is opened.

use std::path::PathBuf;

/// Where to store, parsed from `--store` / `--svc-store`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum StoreUrl {
    /// SQLite databases and blob files under this directory.
    Sqlite(PathBuf),
    /// A PostgreSQL connection URL.
    Postgres(String),
}

/// A store location or group name that cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum UrlError {
    #[error("sqlite: needs a directory, e.g. sqlite:/var/lib/bismuth/svc")]
    NoDirectory,
    #[error("invalid store {0:?}: use sqlite:DIR or a postgres:// URL")]
    Scheme(String),
    #[error("invalid group {0:?}: use 1-64 letters, digits, '-' or '_'")]
    Group(String),
}

impl StoreUrl {
    /// Parses `sqlite:DIR` or `postgres://…`.
    pub fn parse(store: &str) -> Result<StoreUrl, UrlError> {
        if let Some(dir) = store.strip_prefix("sqlite:") {
            if dir.is_empty() {
                return Err(UrlError::NoDirectory);
            }
            Ok(StoreUrl::Sqlite(PathBuf::from(dir)))
        } else if store.starts_with("postgres://") || store.starts_with("postgresql://") {
            Ok(StoreUrl::Postgres(store.to_owned()))
        } else {
            Err(UrlError::Scheme(store.to_owned()))
        }
    }
}

/// Checks a service group's name (it names a directory of the SQLite store).
pub fn validate_group(group: &str) -> Result<(), UrlError> {
    let ok = !group.is_empty()
        && group.len() <= 64
        && group
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_');
    if ok {
        Ok(())
    } else {
        Err(UrlError::Group(group.to_owned()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_both_backends_and_refuses_the_rest() {
        assert_eq!(
            StoreUrl::parse("sqlite:/x").unwrap(),
            StoreUrl::Sqlite("/x".into())
        );
        assert!(matches!(
            StoreUrl::parse("postgres://u@h/db").unwrap(),
            StoreUrl::Postgres(_)
        ));
        assert!(matches!(
            StoreUrl::parse("sqlite:"),
            Err(UrlError::NoDirectory)
        ));
        assert!(matches!(
            StoreUrl::parse("mysql://x"),
            Err(UrlError::Scheme(_))
        ));
        assert!(validate_group("a-b_c1").is_ok());
        assert!(validate_group("../x").is_err());
        assert!(validate_group("").is_err());
    }
}

//! Keys of K/V entries, secrets and blobs: what a function may name things.
//! Letters, digits and `. _ ~ -`, with `/` separating non-empty segments
//! that are not `.` or `..`; at most 512 bytes. Keys never reach a file
//! system path (blobs are stored under random names), but they are checked
//! all the same so no store has to care.

/// Longest key accepted.
pub const MAX_KEY_LEN: usize = 512;

/// Checks a key; the error says what is wrong with it.
pub fn validate(key: &str) -> Result<(), String> {
    if key.is_empty() {
        return Err("key must not be empty".into());
    }
    if key.len() > MAX_KEY_LEN {
        return Err(format!(
            "key is {} bytes; at most {MAX_KEY_LEN} are allowed",
            key.len()
        ));
    }
    for segment in key.split('/') {
        if segment.is_empty() {
            return Err(format!(
                "key {key:?} has an empty segment (leading, trailing or double '/')"
            ));
        }
        if segment == "." || segment == ".." {
            return Err(format!("key {key:?} has a '.' or '..' segment"));
        }
        if let Some(c) = segment
            .chars()
            .find(|c| !(c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '~' | '-')))
        {
            return Err(format!(
                "key {key:?} contains {c:?}; use letters, digits, '.', '_', '~', '-' and '/'"
            ));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accepts_ordinary_keys() {
        for k in [
            "a",
            "user-1",
            "dir/sub/file.txt",
            "v1.2_x~y",
            &"k".repeat(512),
        ] {
            validate(k).unwrap_or_else(|e| panic!("{k}: {e}"));
        }
    }

    #[test]
    fn rejects_tricks() {
        for k in [
            "",
            "/a",
            "a/",
            "a//b",
            "..",
            "a/../b",
            "./a",
            "a b",
            "a%2fb",
            "a\\b",
            "a\0",
            "ü",
            &"k".repeat(513),
        ] {
            assert!(validate(k).is_err(), "{k:?} should be rejected");
        }
    }
}

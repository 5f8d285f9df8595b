//! Git repository URLs and branch names, checked before anything is written.

/// Accepts `https://`, `http://`, `git://`, `ssh://` and `file://` URLs and
/// scp-like `user@host:path`, the forms `git clone` takes.
pub fn validate_url(url: &str) -> Result<(), String> {
    if url.is_empty() {
        return Err("repository URL must not be empty".into());
    }
    if url.chars().any(|c| c.is_whitespace() || c.is_control()) {
        return Err(format!(
            "repository URL {url:?} must not contain spaces or control characters"
        ));
    }
    if url.starts_with('-') {
        return Err(format!("repository URL {url:?} must not start with '-'"));
    }
    if let Some((scheme, rest)) = url.split_once("://") {
        if !matches!(scheme, "https" | "http" | "git" | "ssh" | "file") {
            return Err(format!(
                "repository URL scheme {scheme:?} is not supported (use https, http, git, ssh or file)"
            ));
        }
        let (host, path) = rest.split_once('/').unwrap_or((rest, ""));
        if scheme != "file" && host.is_empty() {
            return Err(format!("repository URL {url:?} has no host"));
        }
        if path.is_empty() {
            return Err(format!("repository URL {url:?} has no path"));
        }
        return Ok(());
    }
    // scp-like syntax: [user@]host:path
    match url.split_once(':') {
        Some((host, path)) if !host.is_empty() && !path.is_empty() && !host.contains('/') => Ok(()),
        _ => Err(format!(
            "repository URL {url:?} is neither a URL (https://host/path) nor user@host:path"
        )),
    }
}

/// Checks a branch name against `git check-ref-format` rules.
pub fn validate_branch(branch: &str) -> Result<(), String> {
    let bad = |why: &str| Err(format!("branch {branch:?} {why}"));
    if branch.is_empty() {
        return bad("must not be empty");
    }
    if branch.len() > 255 {
        return bad("is longer than 255 characters");
    }
    if branch.starts_with('-') || branch.starts_with('/') || branch.ends_with('/') {
        return bad("must not start with '-' or '/' or end with '/'");
    }
    if branch.ends_with('.') || branch.ends_with(".lock") {
        return bad("must not end with '.' or '.lock'");
    }
    if branch == "@" || branch.contains("..") || branch.contains("@{") || branch.contains("//") {
        return bad("must not be '@' or contain '..', '@{' or '//'");
    }
    if branch
        .chars()
        .any(|c| c.is_control() || c == ' ' || "~^:?*[\\".contains(c))
    {
        return bad("must not contain spaces, control characters or any of ~^:?*[\\");
    }
    if branch.split('/').any(|part| part.starts_with('.')) {
        return bad("must not have a component starting with '.'");
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls() {
        for ok in [
            "https://git.example/org/app.git",
            "http://127.0.0.1:8080/x.git",
            "git://host/repo",
            "ssh://git@host/repo.git",
            "file:///srv/git/app.git",
            "git@github.com:org/app.git",
        ] {
            validate_url(ok).unwrap_or_else(|e| panic!("{ok}: {e}"));
        }
        for bad in [
            "",
            "not a url",
            "ftp://host/x",
            "https://",
            "https://host",
            "-oProxy=x",
            "/just/a/path",
        ] {
            assert!(validate_url(bad).is_err(), "{bad:?} should be rejected");
        }
    }

    #[test]
    fn branches() {
        for ok in ["main", "feature/x", "v1.2", "release-2024"] {
            validate_branch(ok).unwrap_or_else(|e| panic!("{ok}: {e}"));
        }
        for bad in [
            "", "-x", "a..b", "a b", "x.lock", "a/", "/a", "a//b", "@", "a@{b", "a:b", ".hidden",
            "a/.b",
        ] {
            assert!(validate_branch(bad).is_err(), "{bad:?} should be rejected");
        }
    }
}

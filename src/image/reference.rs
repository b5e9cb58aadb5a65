//! Image names the way Docker spells and normalizes them.
//!
//! `busybox` means `docker.io/library/busybox:latest`; `layerfs/busybox` means
//! `docker.io/layerfs/busybox:latest`; a first component with a `.` or `:` (or
//! `localhost`) is a registry host. [`Reference::parse`] turns any of these into the full
//! form the store keys its tags by, and [`Reference::familiar`] gives back the short form
//! Docker shows. Grammar from distribution/reference: path components
//! `[a-z0-9]+(?:(?:[._]|__|[-]+)[a-z0-9]+)*`, tags `[\w][\w.-]{0,127}`.

use std::fmt;

use crate::error::{Error, Result};

/// Docker Hub's canonical host name.
pub const DEFAULT_DOMAIN: &str = "docker.io";
/// An older spelling of Docker Hub that normalizes to [`DEFAULT_DOMAIN`].
const LEGACY_DEFAULT_DOMAIN: &str = "index.docker.io";
/// The namespace of Docker Hub's official images.
const OFFICIAL_REPO_PREFIX: &str = "library/";
/// The tag a reference without one gets.
pub const DEFAULT_TAG: &str = "latest";
/// distribution/reference's limit on the whole name.
const NAME_TOTAL_LENGTH_MAX: usize = 255;
/// distribution/reference's limit on a tag (`[\w][\w.-]{0,127}`).
const TAG_LENGTH_MAX: usize = 128;

/// A normalized `domain/path:tag` reference.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Reference {
    domain: String,
    path: String,
    tag: String,
}

impl Reference {
    /// Parses and normalizes `name[:tag]`; the tag defaults to `latest`. Digest
    /// references (`name@sha256:…`) are refused: the store keeps tags only.
    pub fn parse(s: &str) -> Result<Reference> {
        let bad = |detail: &str| Error::InvalidReference {
            reference: s.to_string(),
            detail: detail.to_string(),
        };
        if s.is_empty() {
            return Err(bad("empty name"));
        }
        if s.contains('@') {
            return Err(bad("digest references (@sha256:…) are not supported here"));
        }
        if s.len() == 64 && s.bytes().all(|b| b.is_ascii_hexdigit()) {
            return Err(bad("a 64-digit hex string is an image id, not a name"));
        }
        // The tag is what follows the last ':' after the last '/', so that a registry
        // port (`localhost:5000/x`) is not taken for a tag.
        let last_slash = s.rfind('/').map_or(0, |i| i + 1);
        let (name, tag) = match s[last_slash..].rfind(':') {
            Some(i) => (&s[..last_slash + i], Some(&s[last_slash + i + 1..])),
            None => (s, None),
        };
        let tag = match tag {
            Some(t) => {
                if !valid_tag(t) {
                    return Err(bad("invalid tag (want [A-Za-z0-9_][A-Za-z0-9_.-]{0,127})"));
                }
                t.to_string()
            }
            None => DEFAULT_TAG.to_string(),
        };
        let (domain, path) = split_domain(name);
        if !valid_domain(&domain) {
            return Err(bad("invalid registry host"));
        }
        if path.is_empty() || !path.split('/').all(valid_path_component) {
            return Err(bad(
                "invalid repository name (lowercase letters, digits and . _ - separators)",
            ));
        }
        if domain.len() + 1 + path.len() > NAME_TOTAL_LENGTH_MAX {
            return Err(bad("name longer than 255 characters"));
        }
        Ok(Reference { domain, path, tag })
    }

    /// `domain/path` (the repository), e.g. `docker.io/library/busybox`.
    pub fn name(&self) -> String {
        format!("{}/{}", self.domain, self.path)
    }

    /// The tag, e.g. `latest`.
    pub fn tag(&self) -> &str {
        &self.tag
    }

    /// The repository as Docker shows it: `busybox`, `layerfs/busybox`, `quay.io/x/y`.
    pub fn familiar_name(&self) -> String {
        if self.domain == DEFAULT_DOMAIN {
            match self.path.strip_prefix(OFFICIAL_REPO_PREFIX) {
                Some(rest) if !rest.contains('/') => rest.to_string(),
                _ => self.path.clone(),
            }
        } else {
            self.name()
        }
    }

    /// `familiar_name:tag`.
    pub fn familiar(&self) -> String {
        format!("{}:{}", self.familiar_name(), self.tag)
    }
}

impl fmt::Display for Reference {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}:{}", self.domain, self.path, self.tag)
    }
}

/// distribution/reference's splitDockerDomain.
fn split_domain(name: &str) -> (String, String) {
    let (mut domain, mut rest) = match name.split_once('/') {
        Some((first, rest))
            if first.contains(['.', ':'])
                || first == "localhost"
                || first.to_lowercase() != first =>
        {
            (first.to_string(), rest.to_string())
        }
        _ => (DEFAULT_DOMAIN.to_string(), name.to_string()),
    };
    if domain == LEGACY_DEFAULT_DOMAIN {
        domain = DEFAULT_DOMAIN.to_string();
    }
    if domain == DEFAULT_DOMAIN && !rest.contains('/') {
        rest = format!("{OFFICIAL_REPO_PREFIX}{rest}");
    }
    (domain, rest)
}

fn valid_tag(t: &str) -> bool {
    let b = t.as_bytes();
    let word = |c: u8| c.is_ascii_alphanumeric() || c == b'_';
    !b.is_empty()
        && b.len() <= TAG_LENGTH_MAX
        && word(b[0])
        && b[1..].iter().all(|&c| word(c) || c == b'.' || c == b'-')
}

/// `[a-z0-9]+(?:(?:[._]|__|[-]+)[a-z0-9]+)*`
pub fn valid_path_component(c: &str) -> bool {
    let b = c.as_bytes();
    let alnum = |x: u8| x.is_ascii_lowercase() || x.is_ascii_digit();
    let (Some(&first), Some(&last)) = (b.first(), b.last()) else {
        return false;
    };
    if !alnum(first) || !alnum(last) {
        return false;
    }
    let mut i = 0;
    while i < b.len() {
        if alnum(b[i]) {
            i += 1;
            continue;
        }
        // A separator run: one '.', one '_', exactly "__", or any number of '-'.
        let start = i;
        while i < b.len() && !alnum(b[i]) {
            i += 1;
        }
        let sep = &b[start..i];
        let ok = sep == b"." || sep == b"_" || sep == b"__" || sep.iter().all(|&x| x == b'-');
        if !ok {
            return false;
        }
    }
    true
}

fn valid_domain(d: &str) -> bool {
    let (host, port) = match d.rsplit_once(':') {
        Some((h, p)) => (h, Some(p)),
        None => (d, None),
    };
    if let Some(p) = port
        && (p.is_empty() || !p.bytes().all(|b| b.is_ascii_digit()))
    {
        return false;
    }
    !host.is_empty()
        && host.split('.').all(|c| {
            let b = c.as_bytes();
            !b.is_empty()
                && b.iter().all(|&x| x.is_ascii_alphanumeric() || x == b'-')
                && b[0] != b'-'
                && b[b.len() - 1] != b'-'
        })
}

/// Turns a directory or file stem into a repository name, or `None` when nothing valid
/// is left: lowercase, and runs of characters outside `[a-z0-9._-]` become one `-`.
pub fn sanitize_repo_name(stem: &str) -> Option<String> {
    let mut out = String::new();
    for ch in stem.chars().flat_map(char::to_lowercase) {
        if ch.is_ascii_lowercase() || ch.is_ascii_digit() || matches!(ch, '.' | '_' | '-') {
            out.push(ch);
        } else if !out.ends_with('-') {
            out.push('-');
        }
    }
    let out = out
        .trim_matches(|c: char| !c.is_ascii_alphanumeric())
        .to_string();
    (valid_path_component(&out)).then_some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn normalizes_like_docker() {
        let cases = [
            (
                "busybox",
                "docker.io/library/busybox:latest",
                "busybox:latest",
            ),
            (
                "busybox:1.36",
                "docker.io/library/busybox:1.36",
                "busybox:1.36",
            ),
            (
                "layerfs/busybox",
                "docker.io/layerfs/busybox:latest",
                "layerfs/busybox:latest",
            ),
            (
                "docker.io/layerfs/busybox:latest",
                "docker.io/layerfs/busybox:latest",
                "layerfs/busybox:latest",
            ),
            (
                "index.docker.io/library/debian:bookworm",
                "docker.io/library/debian:bookworm",
                "debian:bookworm",
            ),
            (
                "localhost:5000/test:1",
                "localhost:5000/test:1",
                "localhost:5000/test:1",
            ),
            ("localhost/x", "localhost/x:latest", "localhost/x:latest"),
            ("quay.io/a/b/c:v1", "quay.io/a/b/c:v1", "quay.io/a/b/c:v1"),
            (
                "a__b-c.d",
                "docker.io/library/a__b-c.d:latest",
                "a__b-c.d:latest",
            ),
        ];
        for (input, full, familiar) in cases {
            let r = Reference::parse(input).unwrap();
            assert_eq!(r.to_string(), full, "{input}");
            assert_eq!(r.familiar(), familiar, "{input}");
        }
    }

    #[test]
    fn rejects_bad_names() {
        for bad in [
            "",
            "Busybox",
            "busybox:",
            "busybox:-x",
            "a/../b",
            "-a",
            "a..b",
            "a___b",
            "x@sha256:e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855",
            "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855",
            "a//b",
            "a/",
        ] {
            assert!(Reference::parse(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn sanitizes_stems() {
        assert_eq!(
            sanitize_repo_name("Busybox Zstd").as_deref(),
            Some("busybox-zstd")
        );
        assert_eq!(
            sanitize_repo_name("busybox.oci").as_deref(),
            Some("busybox.oci")
        );
        assert_eq!(sanitize_repo_name("__"), None);
        assert_eq!(sanitize_repo_name("é"), None);
    }
}

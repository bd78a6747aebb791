//! What an edge route changes, compiled: the path (prefix, whole path with
//! template captures, or a regular expression), query parameters and
//! headers. Built once by config validation; applied per request.

use std::borrow::Cow;
use std::fmt::Write as _;
use std::sync::Arc;

use http::header::{HeaderMap, HeaderName, HeaderValue};
use regex::Regex;

use super::matcher::{query_pairs, Captures, PathTemplate};

/// Literal text and template captures, `/v2/users/{id}`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Piece {
    /// Copied as is.
    Literal(String),
    /// A `path_template` capture, by index.
    Capture(usize),
}

/// A text with `{name}` captures, resolved against a path template.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Pieces(pub Vec<Piece>);

impl Pieces {
    /// Parses `text`; every `{name}` must be a capture of `template`.
    pub fn parse(text: &str, template: Option<&PathTemplate>) -> Result<Pieces, String> {
        let mut pieces = Vec::new();
        let mut rest = text;
        while let Some(open) = rest.find('{') {
            if open > 0 {
                pieces.push(Piece::Literal(rest[..open].to_string()));
            }
            let close = rest[open..]
                .find('}')
                .ok_or_else(|| format!("unclosed {{ in {text:?}"))?;
            let name = &rest[open + 1..open + close];
            let index = template
                .and_then(|t| t.capture(name))
                .ok_or_else(|| match template {
                    Some(t) => format!(
                        "{{{name}}} is not a capture of match.path_template (captures: {})",
                        t.names.join(", ")
                    ),
                    None => format!("{{{name}}} needs a match.path_template that captures it"),
                })?;
            pieces.push(Piece::Capture(index));
            rest = &rest[open + close + 1..];
        }
        if rest.contains('}') {
            return Err(format!("unopened }} in {text:?}"));
        }
        if !rest.is_empty() {
            pieces.push(Piece::Literal(rest.to_string()));
        }
        Ok(Pieces(pieces))
    }

    /// The text with captures from `path` filled in.
    pub fn render(&self, path: &str, captures: &Captures) -> String {
        let mut out = String::with_capacity(path.len() + 16);
        for piece in &self.0 {
            match piece {
                Piece::Literal(text) => out.push_str(text),
                Piece::Capture(index) => out.push_str(captures.get(path, *index)),
            }
        }
        out
    }
}

/// The one path rewrite of a route.
#[derive(Debug, Clone)]
pub enum PathRewrite {
    /// Replace the matched `path_prefix` (`from`, without trailing `/`) by
    /// `to` (without trailing `/`; empty strips the prefix).
    Prefix {
        /// The route's `path_prefix`.
        from: String,
        /// The replacement.
        to: String,
    },
    /// Replace the whole path.
    Template(Pieces),
    /// Replace every match of `regex` by `replace` (`$1`, `${name}`).
    Regex {
        /// The expression.
        regex: Arc<Regex>,
        /// The replacement.
        replace: String,
    },
}

impl PathRewrite {
    /// The new path for `path`, which matched the route (with `captures`).
    pub fn apply<'a>(&self, path: &'a str, captures: &Captures) -> Cow<'a, str> {
        match self {
            PathRewrite::Prefix { from, to } => {
                let rest = if from == "/" {
                    path
                } else {
                    path.strip_prefix(from.as_str()).unwrap_or(path)
                };
                let joined = replace_prefix(to, rest);
                Cow::Owned(joined)
            }
            PathRewrite::Template(pieces) => Cow::Owned(pieces.render(path, captures)),
            PathRewrite::Regex { regex, replace } => regex.replace_all(path, replace.as_str()),
        }
    }
}

/// `to` followed by `rest` (empty or starting with `/`), never empty and
/// never with a doubled `/` at the seam.
pub fn replace_prefix(to: &str, rest: &str) -> String {
    let mut out = String::with_capacity(to.len() + rest.len() + 1);
    out.push_str(to);
    match (to.ends_with('/'), rest.strip_prefix('/')) {
        (true, Some(rest)) => out.push_str(rest),
        _ => out.push_str(rest),
    }
    if !out.starts_with('/') {
        out.insert(0, '/');
    }
    out
}

/// The group names and numbers a regex replacement refers to must exist.
pub fn check_replacement(regex: &Regex, replace: &str) -> Result<(), String> {
    let bytes = replace.as_bytes();
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] != b'$' {
            i += 1;
            continue;
        }
        let (name, next) = match bytes.get(i + 1) {
            Some(b'$') => {
                i += 2;
                continue;
            }
            Some(b'{') => match replace[i + 2..].find('}') {
                Some(end) => (&replace[i + 2..i + 2 + end], i + 3 + end),
                None => return Err(format!("unclosed ${{ in {replace:?}")),
            },
            _ => {
                let len = replace[i + 1..]
                    .bytes()
                    .take_while(|b| b.is_ascii_alphanumeric() || *b == b'_')
                    .count();
                (&replace[i + 1..i + 1 + len], i + 1 + len)
            }
        };
        let known = match name.parse::<usize>() {
            Ok(n) => n < regex.captures_len(),
            Err(_) => regex.capture_names().flatten().any(|n| n == name),
        };
        if !known {
            return Err(format!(
                "${name} is not a group of the pattern (write ${{1}}x rather than $1x, $$ for a $)"
            ));
        }
        i = next;
    }
    Ok(())
}

/// Header changes, applied remove → set → add.
#[derive(Debug, Clone, Default)]
pub struct HeaderChanges {
    /// Removed.
    pub remove: Vec<HeaderName>,
    /// Replaced.
    pub set: Vec<(HeaderName, HeaderValue)>,
    /// Appended.
    pub add: Vec<(HeaderName, HeaderValue)>,
}

impl HeaderChanges {
    /// Whether there is nothing to do.
    pub fn is_empty(&self) -> bool {
        self.remove.is_empty() && self.set.is_empty() && self.add.is_empty()
    }

    /// Applies the changes to `headers`.
    pub fn apply(&self, headers: &mut HeaderMap) {
        for name in &self.remove {
            headers.remove(name);
        }
        for (name, value) in &self.set {
            headers.insert(name.clone(), value.clone());
        }
        for (name, value) in &self.add {
            headers.append(name.clone(), value.clone());
        }
    }
}

/// Query parameter changes, applied remove → set → add (names and values
/// as written in the config, encoded when added).
#[derive(Debug, Clone, Default)]
pub struct QueryChanges {
    /// Removed (every value).
    pub remove: Vec<String>,
    /// Replaced (every value of the name goes, this one is appended).
    pub set: Vec<(String, String)>,
    /// Appended.
    pub add: Vec<(String, String)>,
}

impl QueryChanges {
    /// The new query string (`None`: no query) for `query`.
    pub fn apply(&self, query: Option<&str>) -> Option<String> {
        let mut out = String::with_capacity(query.map_or(0, str::len) + 32);
        for pair in query.into_iter().flat_map(|q| q.split('&')) {
            if pair.is_empty() {
                continue;
            }
            let Some((name, _)) = query_pairs(Some(pair)).next() else {
                continue;
            };
            let dropped =
                self.remove.iter().any(|r| *r == name) || self.set.iter().any(|(s, _)| *s == name);
            if !dropped {
                push_sep(&mut out);
                out.push_str(pair);
            }
        }
        for (name, value) in self.set.iter().chain(&self.add) {
            push_sep(&mut out);
            encode_component(&mut out, name);
            out.push('=');
            encode_component(&mut out, value);
        }
        (!out.is_empty()).then_some(out)
    }
}

fn push_sep(out: &mut String) {
    if !out.is_empty() {
        out.push('&');
    }
}

/// Percent-encodes a query name or value: unreserved characters as they
/// are, every other byte `%XX`.
pub fn encode_component(out: &mut String, text: &str) {
    for byte in text.bytes() {
        if byte.is_ascii_alphanumeric() || matches!(byte, b'-' | b'.' | b'_' | b'~') {
            out.push(byte as char);
        } else {
            let _ = write!(out, "%{byte:02X}");
        }
    }
}

/// Whether `text` may stand in a request path as written (the characters
/// RFC 3986 allows in a path, and `%` escapes).
pub fn valid_path_text(text: &str) -> bool {
    text.bytes()
        .all(|b| b.is_ascii_alphanumeric() || b"-._~!$&'()*+,;=:@/%".contains(&b))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn captures(template: &str, path: &str) -> (PathTemplate, Captures) {
        let t = PathTemplate::parse(template).unwrap();
        let mut c = Captures::default();
        let matched = crate::edge::matcher::PathMatch::Template(t.clone());
        let m = crate::edge::matcher::RequestMatch {
            path: Some(matched),
            ..Default::default()
        };
        let headers = HeaderMap::new();
        let view = crate::edge::matcher::RequestView {
            host: None,
            path,
            query: None,
            method: &http::Method::GET,
            headers: &headers,
        };
        assert!(m.matches(&view, &mut c));
        (t, c)
    }

    #[test]
    fn prefix_rewrites_on_segment_boundaries() {
        let strip = PathRewrite::Prefix {
            from: "/api".into(),
            to: String::new(),
        };
        let none = Captures::default();
        assert_eq!(strip.apply("/api/users", &none), "/users");
        assert_eq!(strip.apply("/api", &none), "/");
        let replace = PathRewrite::Prefix {
            from: "/api".into(),
            to: "/v2".into(),
        };
        assert_eq!(replace.apply("/api/users?x", &none), "/v2/users?x");
        assert_eq!(replace.apply("/api", &none), "/v2");
        let root = PathRewrite::Prefix {
            from: "/".into(),
            to: "/app".into(),
        };
        assert_eq!(root.apply("/x", &none), "/app/x");
    }

    #[test]
    fn whole_path_rewrites_use_captures() {
        let (t, c) = captures("/users/{id}/{rest=**}", "/users/42/a/b");
        let pieces = Pieces::parse("/v2/u/{id}/{rest}", Some(&t)).unwrap();
        assert_eq!(
            PathRewrite::Template(pieces).apply("/users/42/a/b", &c),
            "/v2/u/42/a/b"
        );
        assert!(Pieces::parse("/x/{nope}", Some(&t)).is_err());
        assert!(Pieces::parse("/x/{id}", None).is_err());
        assert!(Pieces::parse("/x/{id", Some(&t)).is_err());
    }

    #[test]
    fn regex_rewrites_and_their_groups() {
        let regex = Arc::new(Regex::new("^/old/(?P<rest>.*)$").unwrap());
        let rewrite = PathRewrite::Regex {
            regex: regex.clone(),
            replace: "/new/${rest}".into(),
        };
        assert_eq!(rewrite.apply("/old/a/b", &Captures::default()), "/new/a/b");
        assert!(check_replacement(&regex, "/x/$1/${rest}/$$").is_ok());
        assert!(check_replacement(&regex, "/x/$2").is_err());
        assert!(check_replacement(&regex, "/x/$1x").is_err());
        assert!(check_replacement(&regex, "/x/${other}").is_err());
    }

    #[test]
    fn query_changes_keep_encoding_correct() {
        let ops = QueryChanges {
            remove: vec!["debug".into()],
            set: vec![("page".into(), "1".into())],
            add: vec![("tag".into(), "a b&c".into())],
        };
        assert_eq!(
            ops.apply(Some("q=x%20y&debug=1&page=7&page=8&tag=z"))
                .unwrap(),
            "q=x%20y&tag=z&page=1&tag=a%20b%26c"
        );
        assert_eq!(ops.apply(None).unwrap(), "page=1&tag=a%20b%26c");
        let remove_only = QueryChanges {
            remove: vec!["a b".into()],
            ..Default::default()
        };
        assert_eq!(remove_only.apply(Some("a+b=1")), None);
        assert_eq!(remove_only.apply(Some("a%20b=1&c")).unwrap(), "c");
    }

    #[test]
    fn header_changes_remove_set_add() {
        let ops = HeaderChanges {
            remove: vec![HeaderName::from_static("x-a")],
            set: vec![(
                HeaderName::from_static("x-b"),
                HeaderValue::from_static("set"),
            )],
            add: vec![(
                HeaderName::from_static("x-b"),
                HeaderValue::from_static("added"),
            )],
        };
        let mut headers = HeaderMap::new();
        headers.insert("x-a", HeaderValue::from_static("1"));
        headers.insert("x-b", HeaderValue::from_static("old"));
        ops.apply(&mut headers);
        assert!(!headers.contains_key("x-a"));
        let values: Vec<_> = headers.get_all("x-b").iter().collect();
        assert_eq!(values, ["set", "added"]);
    }
}

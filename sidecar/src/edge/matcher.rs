//! What an edge route matches, compiled: hosts, one path condition,
//! methods, headers, cookies and query parameters. Built once by config
//! validation (`config::edge_routes`); evaluated per request without
//! compiling or allocating, except the captures of a path template.

use std::borrow::Cow;
use std::sync::Arc;

use http::header::{HeaderMap, HeaderName, COOKIE};
use http::Method;
use regex::Regex;

/// A host condition; names are lower case, the request's port is ignored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HostMatch {
    /// Exactly this name.
    Exact(String),
    /// `*.example.test`: one or more labels before this suffix (kept with
    /// its leading dot, `.example.test`).
    Suffix(String),
}

impl HostMatch {
    /// Whether `host` (any case, no port) matches.
    pub fn matches(&self, host: &str) -> bool {
        let host = host.strip_suffix('.').unwrap_or(host);
        match self {
            HostMatch::Exact(name) => host.eq_ignore_ascii_case(name),
            HostMatch::Suffix(suffix) => {
                host.len() > suffix.len()
                    && host.is_char_boundary(host.len() - suffix.len())
                    && host[host.len() - suffix.len()..].eq_ignore_ascii_case(suffix)
            }
        }
    }
}

/// The one path condition of a route.
#[derive(Debug, Clone)]
pub enum PathMatch {
    /// The whole path.
    Exact(String),
    /// A prefix on segment boundaries, without its trailing `/` (`/` itself
    /// matches every path).
    Prefix(String),
    /// A regular expression anchored at both ends.
    Regex(Arc<Regex>),
    /// A template with captures.
    Template(PathTemplate),
}

impl PathMatch {
    /// Whether `path` matches; a template's captures go to `captures`.
    fn matches(&self, path: &str, captures: &mut Captures) -> bool {
        match self {
            PathMatch::Exact(exact) => path == exact,
            PathMatch::Prefix(prefix) => prefix_matches(prefix, path),
            PathMatch::Regex(regex) => regex.is_match(path),
            PathMatch::Template(template) => template.matches(path, captures),
        }
    }
}

/// Whether `prefix` (no trailing `/`, or `/`) is a segment prefix of `path`.
pub fn prefix_matches(prefix: &str, path: &str) -> bool {
    prefix == "/"
        || path
            .strip_prefix(prefix)
            .is_some_and(|rest| rest.is_empty() || rest.starts_with('/'))
}

/// One segment of a path template.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Segment {
    /// Exactly this text.
    Literal(String),
    /// One non-empty segment, captured at this index.
    Capture(usize),
    /// Every remaining segment (possibly none), captured at this index.
    Rest(usize),
}

/// `/users/{id}/orders/{order}`, `/static/{rest=**}`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PathTemplate {
    /// The segments after the leading `/`.
    pub segments: Vec<Segment>,
    /// Capture names, by index.
    pub names: Vec<Arc<str>>,
}

/// What a path template captured: byte ranges of the request path, by
/// capture index.
#[derive(Debug, Clone, Default)]
pub struct Captures(Vec<(usize, usize)>);

impl Captures {
    /// The text of capture `index` in `path` (the path that matched).
    pub fn get<'a>(&self, path: &'a str, index: usize) -> &'a str {
        self.0
            .get(index)
            .and_then(|&(start, end)| path.get(start..end))
            .unwrap_or("")
    }
}

impl PathTemplate {
    /// Parses a template; the error says what is wrong with it.
    pub fn parse(text: &str) -> Result<PathTemplate, String> {
        let rest = text
            .strip_prefix('/')
            .ok_or_else(|| "must start with /".to_string())?;
        let mut segments = Vec::new();
        let mut names: Vec<Arc<str>> = Vec::new();
        let parts: Vec<&str> = rest.split('/').collect();
        for (i, part) in parts.iter().enumerate() {
            let Some(inner) = part.strip_prefix('{').and_then(|p| p.strip_suffix('}')) else {
                if part.contains(['{', '}']) {
                    return Err(format!(
                        "segment {part:?}: a capture must be a whole segment, {{name}} or {{name=**}}"
                    ));
                }
                segments.push(Segment::Literal((*part).to_string()));
                continue;
            };
            let (name, rest) = match inner.split_once('=') {
                Some((name, "**")) => (name, true),
                Some((name, "*")) => (name, false),
                Some(_) => {
                    return Err(format!(
                        "segment {part:?}: only {{name}}, {{name=*}} and {{name=**}} are captures"
                    ))
                }
                None => (inner, false),
            };
            if !valid_capture_name(name) {
                return Err(format!(
                    "capture name {name:?}: letters, digits and _, not starting with a digit"
                ));
            }
            if names.iter().any(|n| &**n == name) {
                return Err(format!("capture {name:?} appears twice"));
            }
            if rest && i + 1 != parts.len() {
                return Err(format!("{{{name}=**}} must be the last segment"));
            }
            let index = names.len();
            names.push(Arc::from(name));
            segments.push(if rest {
                Segment::Rest(index)
            } else {
                Segment::Capture(index)
            });
        }
        Ok(PathTemplate { segments, names })
    }

    /// The index of capture `name`.
    pub fn capture(&self, name: &str) -> Option<usize> {
        self.names.iter().position(|n| &**n == name)
    }

    fn matches(&self, path: &str, captures: &mut Captures) -> bool {
        let found = &mut captures.0;
        found.clear();
        found.resize(self.names.len(), (0, 0));
        let bytes = path.as_bytes();
        let mut pos = 0;
        for segment in &self.segments {
            if let Segment::Rest(index) = segment {
                // `/static/{rest=**}` also matches `/static` (nothing captured).
                if pos < path.len() {
                    if bytes[pos] != b'/' {
                        return false;
                    }
                    found[*index] = (pos + 1, path.len());
                }
                pos = path.len();
                continue;
            }
            if bytes.get(pos) != Some(&b'/') {
                return false;
            }
            let start = pos + 1;
            let end = path[start..].find('/').map_or(path.len(), |i| start + i);
            match segment {
                Segment::Literal(text) => {
                    if &path[start..end] != text {
                        return false;
                    }
                }
                Segment::Capture(index) => {
                    if start == end {
                        return false;
                    }
                    found[*index] = (start, end);
                }
                Segment::Rest(_) => {}
            }
            pos = end;
        }
        pos == path.len()
    }
}

/// A capture name: `[A-Za-z_][A-Za-z0-9_]*`.
pub fn valid_capture_name(name: &str) -> bool {
    let mut bytes = name.bytes();
    bytes
        .next()
        .is_some_and(|b| b.is_ascii_alphabetic() || b == b'_')
        && bytes.all(|b| b.is_ascii_alphanumeric() || b == b'_')
}

/// A condition on one header, cookie or query value.
#[derive(Debug, Clone)]
pub enum ValueMatcher {
    /// Exactly this value.
    Exact(String),
    /// Starts with this.
    Prefix(String),
    /// The whole value matches (anchored at both ends).
    Regex(Arc<Regex>),
    /// `true`: present with any value; `false`: absent.
    Present(bool),
}

impl ValueMatcher {
    /// Whether the values found (every occurrence of the name) satisfy this:
    /// `present` looks at whether there is any, the others at whether one matches.
    fn matches<'a>(&self, mut values: impl Iterator<Item = Cow<'a, str>>) -> bool {
        match self {
            ValueMatcher::Present(present) => values.next().is_some() == *present,
            ValueMatcher::Exact(exact) => values.any(|v| v == exact.as_str()),
            ValueMatcher::Prefix(prefix) => values.any(|v| v.starts_with(prefix.as_str())),
            ValueMatcher::Regex(regex) => values.any(|v| regex.is_match(&v)),
        }
    }
}

/// Every condition of a route, compiled.
#[derive(Debug, Clone, Default)]
pub struct RequestMatch {
    /// Any of these hosts; empty: any host.
    pub hosts: Vec<HostMatch>,
    /// The path condition, if any.
    pub path: Option<PathMatch>,
    /// Any of these methods; empty: any.
    pub methods: Vec<Method>,
    /// Header conditions.
    pub headers: Vec<(HeaderName, ValueMatcher)>,
    /// Cookie conditions.
    pub cookies: Vec<(String, ValueMatcher)>,
    /// Query parameter conditions (names decoded).
    pub query: Vec<(String, ValueMatcher)>,
}

/// The parts of a request routes look at.
pub struct RequestView<'a> {
    /// The host, without port; `None` when the request names none.
    pub host: Option<&'a str>,
    /// The path as routing sees it.
    pub path: &'a str,
    /// The query string, undecoded.
    pub query: Option<&'a str>,
    /// The method.
    pub method: &'a Method,
    /// The headers.
    pub headers: &'a HeaderMap,
}

/// A route condition, named for `POST /explain`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Condition<'a> {
    /// `host`.
    Host,
    /// `methods`.
    Method,
    /// The path condition.
    Path,
    /// A header condition.
    Header(&'a HeaderName),
    /// A cookie condition.
    Cookie(&'a str),
    /// A query parameter condition.
    Query(&'a str),
}

impl std::fmt::Display for Condition<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Condition::Host => f.write_str("host"),
            Condition::Method => f.write_str("method"),
            Condition::Path => f.write_str("path"),
            Condition::Header(name) => write!(f, "header {name}"),
            Condition::Cookie(name) => write!(f, "cookie {name}"),
            Condition::Query(name) => write!(f, "query {name}"),
        }
    }
}

impl RequestMatch {
    /// Whether every condition holds; a path template's captures go to `captures`.
    pub fn matches(&self, req: &RequestView<'_>, captures: &mut Captures) -> bool {
        self.first_mismatch(req, captures).is_none()
    }

    /// The first condition that does not hold, `None` when all do.
    pub fn first_mismatch(
        &self,
        req: &RequestView<'_>,
        captures: &mut Captures,
    ) -> Option<Condition<'_>> {
        if !self.hosts.is_empty()
            && !req
                .host
                .is_some_and(|host| self.hosts.iter().any(|h| h.matches(host)))
        {
            return Some(Condition::Host);
        }
        if !self.methods.is_empty() && !self.methods.contains(req.method) {
            return Some(Condition::Method);
        }
        if let Some(path) = &self.path {
            if !path.matches(req.path, captures) {
                return Some(Condition::Path);
            }
        }
        for (name, matcher) in &self.headers {
            let values = req
                .headers
                .get_all(name)
                .iter()
                .filter_map(|v| v.to_str().ok())
                .map(Cow::Borrowed);
            if !matcher.matches(values) {
                return Some(Condition::Header(name));
            }
        }
        for (name, matcher) in &self.cookies {
            if !matcher.matches(cookies(req.headers, name)) {
                return Some(Condition::Cookie(name));
            }
        }
        for (name, matcher) in &self.query {
            if !matcher.matches(query_values(req.query, name)) {
                return Some(Condition::Query(name));
            }
        }
        None
    }
}

/// Every value of cookie `name` in the request's `Cookie` header(s).
fn cookies<'a>(headers: &'a HeaderMap, name: &'a str) -> impl Iterator<Item = Cow<'a, str>> {
    headers
        .get_all(COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(move |pair| {
            let (key, value) = pair.trim().split_once('=')?;
            let value = value.trim();
            let value = value
                .strip_prefix('"')
                .and_then(|v| v.strip_suffix('"'))
                .unwrap_or(value);
            (key.trim() == name).then_some(Cow::Borrowed(value))
        })
}

/// Every value of query parameter `name`, percent-decoded.
fn query_values<'a>(
    query: Option<&'a str>,
    name: &'a str,
) -> impl Iterator<Item = Cow<'a, str>> + 'a {
    query_pairs(query).filter_map(move |(key, value)| (key == name).then_some(value))
}

/// The query string's pairs, names and values percent-decoded (`+` is a space).
pub fn query_pairs(query: Option<&str>) -> impl Iterator<Item = (Cow<'_, str>, Cow<'_, str>)> {
    query
        .into_iter()
        .flat_map(|q| q.split('&'))
        .filter(|pair| !pair.is_empty())
        .map(|pair| {
            let (key, value) = pair.split_once('=').unwrap_or((pair, ""));
            (percent_decode(key), percent_decode(value))
        })
}

/// Percent-decodes a query component (`+` is a space); borrows when
/// nothing is encoded. Malformed escapes stay as written.
pub fn percent_decode(text: &str) -> Cow<'_, str> {
    if !text.contains(['%', '+']) {
        return Cow::Borrowed(text);
    }
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'+' => out.push(b' '),
            b'%' => match (
                bytes.get(i + 1).and_then(|b| hex(*b)),
                bytes.get(i + 2).and_then(|b| hex(*b)),
            ) {
                (Some(high), Some(low)) => {
                    out.push(high << 4 | low);
                    i += 2;
                }
                _ => out.push(b'%'),
            },
            byte => out.push(byte),
        }
        i += 1;
    }
    Cow::Owned(String::from_utf8_lossy(&out).into_owned())
}

fn hex(byte: u8) -> Option<u8> {
    (byte as char).to_digit(16).map(|d| d as u8)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hosts_exact_and_wildcard() {
        let exact = HostMatch::Exact("api.example.test".into());
        assert!(exact.matches("API.example.test"));
        assert!(exact.matches("api.example.test."));
        assert!(!exact.matches("x.api.example.test"));
        let wild = HostMatch::Suffix(".example.test".into());
        assert!(wild.matches("a.example.test"));
        assert!(wild.matches("a.b.Example.test"));
        assert!(!wild.matches("example.test"));
        assert!(!wild.matches("aexample.test"));
    }

    #[test]
    fn prefixes_match_on_segment_boundaries() {
        assert!(prefix_matches("/api", "/api"));
        assert!(prefix_matches("/api", "/api/x"));
        assert!(!prefix_matches("/api", "/apix"));
        assert!(prefix_matches("/", "/anything"));
    }

    #[test]
    fn templates_capture_segments_and_the_rest() {
        let t = PathTemplate::parse("/users/{id}/orders/{order}").unwrap();
        let mut c = Captures::default();
        let path = "/users/42/orders/7";
        assert!(t.matches(path, &mut c));
        assert_eq!(c.get(path, 0), "42");
        assert_eq!(c.get(path, 1), "7");
        assert!(!t.matches("/users/42/orders", &mut c));
        assert!(!t.matches("/users//orders/7", &mut c));
        assert!(!t.matches("/users/42/orders/7/x", &mut c));
        let t = PathTemplate::parse("/static/{rest=**}").unwrap();
        let path = "/static/a/b.css";
        assert!(t.matches(path, &mut c));
        assert_eq!(c.get(path, 0), "a/b.css");
        assert!(t.matches("/static", &mut c));
        assert!(!t.matches("/staticx", &mut c));
        for bad in [
            "users/{id}",
            "/a/{x}{y}",
            "/{r=**}/x",
            "/{1a}",
            "/{a}/{a}",
            "/x{id}",
        ] {
            assert!(PathTemplate::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn query_values_are_decoded() {
        let q = Some("a=1&b=x%20y&c=p+q&a=2&flag&bad=%zz");
        let values: Vec<_> = query_values(q, "a").collect();
        assert_eq!(values, ["1", "2"]);
        assert_eq!(query_values(q, "b").next().unwrap(), "x y");
        assert_eq!(query_values(q, "c").next().unwrap(), "p q");
        assert_eq!(query_values(q, "flag").next().unwrap(), "");
        assert_eq!(query_values(q, "bad").next().unwrap(), "%zz");
        assert_eq!(percent_decode("%41%4a%"), "AJ%");
    }

    #[test]
    fn cookies_are_found_in_every_header() {
        let mut headers = HeaderMap::new();
        headers.append(COOKIE, "a=1; session=\"xyz\"".parse().unwrap());
        headers.append(COOKIE, "beta=on".parse().unwrap());
        assert_eq!(cookies(&headers, "session").next().unwrap(), "xyz");
        assert_eq!(cookies(&headers, "beta").next().unwrap(), "on");
        assert!(cookies(&headers, "missing").next().is_none());
    }
}

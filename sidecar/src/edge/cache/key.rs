//! The cache key of a request: the route, the method, then the route's
//! `key` parts in their order, e.g.
//! `api GET example.test /items/1 ?page=2 accept-language=fr`.
//! Values that could hold spaces are percent-escaped, so two different
//! requests never write the same key.

use http::header::{HeaderName, AUTHORIZATION, COOKIE, HOST};
use http::Request;

use crate::http::Body;
use crate::policy::auth::Principal;
use crate::telemetry::RequestInfo;

/// One part of a route's cache key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum KeyPart {
    /// The method (always part of the key; accepted for clarity).
    Method,
    /// The `Host` (or the URI's authority), lower case.
    Host,
    /// The path.
    Path,
    /// The query, as sent.
    Query,
    /// A request header's value.
    Header(HeaderName),
    /// One cookie's value.
    Cookie(String),
    /// The authenticated consumer.
    Consumer,
    /// A claim of the caller's token.
    Claim(String),
}

impl KeyPart {
    /// Parses `method`, `host`, `path`, `query`, `header:<name>`,
    /// `cookie:<name>`, `consumer`, `claim:<name>`.
    pub fn parse(text: &str) -> Result<KeyPart, String> {
        let part = match text.split_once(':') {
            None => match text {
                "method" => KeyPart::Method,
                "host" => KeyPart::Host,
                "path" => KeyPart::Path,
                "query" => KeyPart::Query,
                "consumer" => KeyPart::Consumer,
                _ => return Err(unknown(text)),
            },
            Some(("header", name)) => HeaderName::from_bytes(name.as_bytes())
                .map(KeyPart::Header)
                .map_err(|_| format!("{name:?} is not a header name"))?,
            Some(("cookie", name)) if !name.is_empty() => KeyPart::Cookie(name.to_string()),
            Some(("claim", name)) if !name.is_empty() => KeyPart::Claim(name.to_string()),
            _ => return Err(unknown(text)),
        };
        Ok(part)
    }

    /// Whether this part tells callers apart, so responses to requests with
    /// credentials may be shared under it.
    pub fn names_caller(&self) -> bool {
        match self {
            KeyPart::Consumer | KeyPart::Claim(_) | KeyPart::Cookie(_) => true,
            KeyPart::Header(name) => name == AUTHORIZATION,
            _ => false,
        }
    }
}

fn unknown(text: &str) -> String {
    format!(
        "unknown key part {text:?} (expected method, host, path, query, header:<name>, \
         cookie:<name>, consumer or claim:<name>)"
    )
}

/// The key of `req` on `route` under `parts`.
pub fn compose(route: &str, parts: &[KeyPart], req: &Request<Body>) -> String {
    let mut key = String::with_capacity(64);
    key.push_str(route);
    key.push(' ');
    key.push_str(req.method().as_str());
    for part in parts {
        match part {
            KeyPart::Method => continue,
            KeyPart::Host => {
                key.push(' ');
                let host = req
                    .headers()
                    .get(HOST)
                    .and_then(|v| v.to_str().ok())
                    .or_else(|| req.uri().authority().map(|a| a.as_str()))
                    .unwrap_or_default();
                escape_into(&mut key, &host.to_ascii_lowercase());
            }
            KeyPart::Path => {
                key.push(' ');
                key.push_str(req.uri().path());
            }
            KeyPart::Query => {
                key.push_str(" ?");
                key.push_str(req.uri().query().unwrap_or_default());
            }
            KeyPart::Header(name) => {
                key.push(' ');
                key.push_str(name.as_str());
                key.push('=');
                if let Some(value) = super::policy::vary_value(req.headers(), name) {
                    escape_into(&mut key, &String::from_utf8_lossy(&value));
                }
            }
            KeyPart::Cookie(name) => {
                key.push_str(" cookie:");
                escape_into(&mut key, name);
                key.push('=');
                if let Some(value) = cookie(req, name) {
                    escape_into(&mut key, value);
                }
            }
            KeyPart::Consumer => {
                key.push_str(" consumer=");
                let info = req.extensions().get::<RequestInfo>();
                if let Some(consumer) = info.and_then(RequestInfo::consumer) {
                    escape_into(&mut key, consumer);
                }
            }
            KeyPart::Claim(name) => {
                key.push_str(" claim:");
                escape_into(&mut key, name);
                key.push('=');
                let principal = req.extensions().get::<Principal>();
                match principal.and_then(|p| p.claims.get(name)) {
                    Some(serde_json::Value::String(text)) => escape_into(&mut key, text),
                    Some(other) => escape_into(&mut key, &other.to_string()),
                    None => {}
                }
            }
        }
    }
    key
}

/// Whether the request carries credentials (`Authorization` or `Cookie`).
pub fn has_credentials(req: &Request<Body>) -> bool {
    req.headers().contains_key(AUTHORIZATION) || req.headers().contains_key(COOKIE)
}

/// One cookie's value from the `Cookie` headers.
fn cookie<'r>(req: &'r Request<Body>, name: &str) -> Option<&'r str> {
    req.headers()
        .get_all(COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|pair| pair.trim().split_once('='))
        .find(|(n, _)| *n == name)
        .map(|(_, value)| value)
}

/// Appends `text` with `%`, spaces and control characters percent-escaped.
fn escape_into(key: &mut String, text: &str) {
    use std::fmt::Write as _;
    for c in text.chars() {
        if c == '%' || c == ' ' || c.is_control() {
            let _ = write!(key, "%{:02X}", u32::from(c));
        } else {
            key.push(c);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parts(list: &[&str]) -> Vec<KeyPart> {
        list.iter().map(|p| KeyPart::parse(p).unwrap()).collect()
    }

    #[test]
    fn parts_parse_and_name_callers() {
        assert_eq!(KeyPart::parse("path"), Ok(KeyPart::Path));
        assert!(KeyPart::parse("header:accept-language").is_ok());
        assert!(KeyPart::parse("header:bad name").is_err());
        assert!(KeyPart::parse("cookie:").is_err());
        assert!(KeyPart::parse("body").is_err());
        let callers: Vec<bool> = parts(&[
            "path",
            "header:authorization",
            "cookie:sid",
            "consumer",
            "claim:sub",
            "header:accept",
        ])
        .iter()
        .map(KeyPart::names_caller)
        .collect();
        assert_eq!(callers, [false, true, true, true, true, false]);
    }

    #[test]
    fn keys_follow_the_parts_in_order() {
        let req = Request::builder()
            .method("GET")
            .uri("/items/1?page=2")
            .header("host", "Example.TEST")
            .header("accept-language", "fr ch")
            .header("cookie", "a=1; sid=xyz")
            .body(crate::http::empty())
            .unwrap();
        let key = compose(
            "api",
            &parts(&[
                "method",
                "host",
                "path",
                "query",
                "header:accept-language",
                "cookie:sid",
            ]),
            &req,
        );
        assert_eq!(
            key,
            "api GET example.test /items/1 ?page=2 accept-language=fr%20ch cookie:sid=xyz"
        );
        assert_eq!(compose("api", &parts(&["path"]), &req), "api GET /items/1");
    }
}

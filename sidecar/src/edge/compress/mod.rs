//! Response compression (gzip, brotli, zstd) chosen from `Accept-Encoding`,
//! and request decompression, per route (`edge.routes[].compress`).
//!
//! Sits below CORS, auth and rate limits (a refusal is small and never
//! worth compressing) and above the cache and transformations (the cache
//! keeps one identity copy, compressed per client here; transformations
//! see plain bodies both ways).
//!
//! Reads: the [`MatchedRoute`]'s [`CompressSettings`], the request's
//! `Accept-Encoding`, `Content-Encoding` and method, the response's
//! status, `Content-Type`, `Content-Encoding`, `Content-Length` and
//! `Cache-Control`. Writes: `Content-Encoding`, `Vary: Accept-Encoding`, a
//! weak `ETag`, and drops `Content-Length` and `Accept-Ranges` of the
//! responses it compresses; decodes request bodies (see [`decode`]).
//!
//! Decisions:
//! - A response is left as it is when it already has a `Content-Encoding`,
//!   has status 1xx, 204, 206 or 304, answers a HEAD, says
//!   `Cache-Control: no-transform`, has a content type not in the route's
//!   list, or declares a `Content-Length` under `min_size` (unknown length:
//!   compressed).
//! - Every response of a listed content type gets `Vary: Accept-Encoding`,
//!   compressed or not, so a shared cache keeps the variants apart.
//! - Compression streams: one frame in, one flushed frame out (see
//!   [`encode`]).
//!
//! Errors: [`DecompressError`] (415 for a coding the proxy cannot decode,
//! 400 for corrupt data); a decoded body over the bound fails with
//! `HygieneError::BodyTooLarge` (413).

mod coded;
mod decode;
mod encode;
pub(crate) mod negotiate;

use std::sync::Arc;

use arc_swap::ArcSwap;
use http::header::{
    HeaderMap, HeaderValue, ACCEPT_RANGES, CACHE_CONTROL, CONTENT_ENCODING, CONTENT_LENGTH,
    CONTENT_TYPE, ETAG, VARY,
};
use http::{Method, Request, Response, StatusCode};
use http_body::Body as _;
use http_body_util::BodyExt;
use mesh_api::config::Encoding;
use tower::layer::layer_fn;
use tower::Layer;

use super::MatchedRoute;
use crate::config::Settings;
use crate::http::{Body, HttpService};

pub use decode::{decompress_error, DecompressError};

/// A route's compression settings, compiled.
#[derive(Debug, Clone, Default)]
pub struct CompressSettings {
    /// Encodings offered, in the route's order of preference.
    pub encodings: Vec<Encoding>,
    /// Responses declaring a smaller `Content-Length` are not compressed.
    pub min_size: u64,
    /// Content types compressed.
    pub content_types: Vec<MediaRange>,
    /// Compression level per encoding.
    pub levels: Levels,
    /// Decode request bodies sent with a `Content-Encoding`.
    pub decompress_requests: bool,
    /// Largest decoded request body when the route sets no `max_body`.
    pub max_decoded: u64,
}

/// Compression levels per encoding.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Levels {
    /// gzip, 1 to 9.
    pub gzip: u32,
    /// Brotli, 0 to 11.
    pub br: u32,
    /// Zstandard, 1 to 19.
    pub zstd: i32,
}

impl Default for Levels {
    /// Levels that keep up with a stream: gzip 6, brotli 4, zstd 3.
    fn default() -> Self {
        Self {
            gzip: 6,
            br: 4,
            zstd: 3,
        }
    }
}

/// A content type pattern: `*/*`, `text/*`, `application/*+json` or
/// `application/json`; compared without case, parameters ignored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum MediaRange {
    /// `*/*`: anything.
    Any,
    /// `type/*`, the type.
    Type(String),
    /// `type/*+suffix`: the type and `+suffix`.
    Suffix(String, String),
    /// `type/subtype`: the type and the subtype.
    Exact(String, String),
}

impl MediaRange {
    /// Parses a pattern as written in `content_types`.
    pub fn parse(text: &str) -> Result<MediaRange, String> {
        let lower = text.trim().to_ascii_lowercase();
        let bad = || {
            format!(
                "invalid content type {text:?} (expected type/subtype, type/* or type/*+suffix, e.g. application/json, text/*)"
            )
        };
        let (kind, subtype) = lower.split_once('/').ok_or_else(bad)?;
        let token = |s: &str| {
            !s.is_empty()
                && s.bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b"!#$&-^_.+".contains(&b))
        };
        match (kind, subtype) {
            ("*", "*") => Ok(MediaRange::Any),
            (kind, "*") if token(kind) => Ok(MediaRange::Type(kind.into())),
            (kind, subtype) if token(kind) => match subtype.strip_prefix("*+") {
                Some(suffix) if token(suffix) => {
                    Ok(MediaRange::Suffix(kind.into(), format!("+{suffix}")))
                }
                None if token(subtype) => Ok(MediaRange::Exact(kind.into(), subtype.into())),
                _ => Err(bad()),
            },
            _ => Err(bad()),
        }
    }

    /// Whether a `Content-Type` value's media type falls in this range.
    fn matches(&self, kind: &str, subtype: &str) -> bool {
        match self {
            MediaRange::Any => true,
            MediaRange::Type(t) => t.eq_ignore_ascii_case(kind),
            MediaRange::Suffix(t, suffix) => {
                t.eq_ignore_ascii_case(kind)
                    && subtype.len() > suffix.len()
                    && subtype
                        .get(subtype.len() - suffix.len()..)
                        .is_some_and(|end| end.eq_ignore_ascii_case(suffix))
            }
            MediaRange::Exact(t, s) => {
                t.eq_ignore_ascii_case(kind) && s.eq_ignore_ascii_case(subtype)
            }
        }
    }
}

impl CompressSettings {
    /// Whether the route compresses responses of this `Content-Type`.
    fn compresses(&self, content_type: Option<&HeaderValue>) -> bool {
        let Some(essence) = content_type
            .and_then(|v| v.to_str().ok())
            .map(|v| v.split(';').next().unwrap_or_default().trim())
        else {
            return false;
        };
        let Some((kind, subtype)) = essence.split_once('/') else {
            return false;
        };
        self.content_types.iter().any(|r| r.matches(kind, subtype))
    }
}

/// What the request says about its response's compression.
struct Plan {
    /// The coding negotiated from `Accept-Encoding`; `None`: identity.
    encoding: Option<Encoding>,
    /// A HEAD request: its response has no body to compress.
    head: bool,
}

/// The compression layer: reads the [`MatchedRoute`]'s settings; routes
/// without `compress:` pass straight through. A decoded request body is
/// bounded by the route's `max_body`, else `limits.max_body`, and never
/// more than the route's `max_decoded`.
pub fn layer(
    running: Arc<ArcSwap<Settings>>,
) -> impl Layer<HttpService, Service = HttpService> + Clone {
    layer_fn(move |inner: HttpService| {
        let running = running.clone();
        crate::http::direct_fn(move |mut req: Request<Body>| {
            let settings = req.extensions().get::<MatchedRoute>().and_then(|matched| {
                let route = matched.settings();
                let settings = route.compress.clone()?;
                let limit = route
                    .max_body
                    .or_else(|| running.load().limits.max_body)
                    .map_or(settings.max_decoded, |limit| {
                        limit.min(settings.max_decoded)
                    });
                Some((settings, limit))
            });
            let Some((settings, limit)) = settings else {
                return inner.call_ref(req);
            };
            let inner = inner.clone();
            Box::pin(async move {
                if settings.decompress_requests {
                    decode::decode_request(&mut req, limit)?;
                }
                let plan = Plan {
                    encoding: negotiate::choose(req.headers(), &settings.encodings),
                    head: req.method() == Method::HEAD,
                };
                let response = inner.call_ref(req).await?;
                Ok(compress(&settings, &plan, response))
            })
        })
    })
}

/// The response, compressed when the route, the request and the response
/// allow it.
fn compress(settings: &CompressSettings, plan: &Plan, response: Response<Body>) -> Response<Body> {
    let (mut parts, body) = response.into_parts();
    if !compressible(settings, parts.status, &parts.headers) {
        return Response::from_parts(parts, body);
    }
    add_vary(&mut parts.headers);
    let too_small = declared_length(&parts.headers).is_some_and(|n| n < settings.min_size);
    let encoding = match plan.encoding {
        Some(encoding) if !plan.head && !too_small && !body.is_end_stream() => encoding,
        _ => return Response::from_parts(parts, body),
    };
    let body = match encode::CompressedBody::compressed(body, encoding, &settings.levels) {
        Ok(compressed) => compressed.boxed_unsync(),
        Err((body, err)) => {
            // The response is still whole: send it as it is.
            tracing::debug!(error = %err, encoding = encoding.as_str(), "encoder not created");
            return Response::from_parts(parts, body);
        }
    };
    let headers = &mut parts.headers;
    headers.insert(
        CONTENT_ENCODING,
        HeaderValue::from_static(encoding.as_str()),
    );
    headers.remove(CONTENT_LENGTH);
    headers.remove(ACCEPT_RANGES);
    weaken_etag(headers);
    Response::from_parts(parts, body)
}

/// Whether the route may compress this response at all (its coding,
/// status, `Cache-Control` and content type), whatever the client accepts.
fn compressible(settings: &CompressSettings, status: StatusCode, headers: &HeaderMap) -> bool {
    let status_ok = !(status.is_informational()
        || status == StatusCode::NO_CONTENT
        || status == StatusCode::PARTIAL_CONTENT
        || status == StatusCode::NOT_MODIFIED);
    status_ok
        && !headers.contains_key(CONTENT_ENCODING)
        && !no_transform(headers)
        && settings.compresses(headers.get(CONTENT_TYPE))
}

/// `Cache-Control: no-transform`.
fn no_transform(headers: &HeaderMap) -> bool {
    headers.get_all(CACHE_CONTROL).iter().any(|value| {
        value
            .as_bytes()
            .split(|b| *b == b',')
            .any(|directive| directive.trim_ascii().eq_ignore_ascii_case(b"no-transform"))
    })
}

/// The response's `Content-Length`, when it declares a valid one.
fn declared_length(headers: &HeaderMap) -> Option<u64> {
    headers
        .get(CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse().ok())
}

/// Adds `Accept-Encoding` to `Vary` unless it is there already (or `*`).
fn add_vary(headers: &mut HeaderMap) {
    let mut fields = 0;
    for value in headers.get_all(VARY) {
        fields += 1;
        let listed = value.as_bytes().split(|b| *b == b',').any(|name| {
            let name = name.trim_ascii();
            name == b"*" || name.eq_ignore_ascii_case(b"accept-encoding")
        });
        if listed {
            return;
        }
    }
    let joined = match (fields, headers.get(VARY)) {
        (1, Some(existing)) => {
            let mut text = existing.as_bytes().to_vec();
            text.extend_from_slice(b", Accept-Encoding");
            HeaderValue::from_bytes(&text).ok()
        }
        _ => None,
    };
    match joined {
        Some(value) => {
            headers.insert(VARY, value);
        }
        None => {
            headers.append(VARY, HeaderValue::from_static("Accept-Encoding"));
        }
    }
}

/// A strong `ETag` becomes weak: the compressed bytes are not the bytes
/// the tag names.
fn weaken_etag(headers: &mut HeaderMap) {
    let Some(etag) = headers.get(ETAG) else {
        return;
    };
    if etag.as_bytes().starts_with(b"W/") {
        return;
    }
    let mut weak = b"W/".to_vec();
    weak.extend_from_slice(etag.as_bytes());
    if let Ok(value) = HeaderValue::from_bytes(&weak) {
        headers.insert(ETAG, value);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn settings() -> CompressSettings {
        CompressSettings {
            encodings: vec![Encoding::Br, Encoding::Gzip],
            min_size: 100,
            content_types: ["text/*", "application/json", "application/*+xml"]
                .iter()
                .map(|t| MediaRange::parse(t).unwrap())
                .collect(),
            levels: Levels::default(),
            decompress_requests: false,
            max_decoded: 1 << 20,
        }
    }

    fn response(headers: &[(&str, &str)], status: u16, body: &'static str) -> Response<Body> {
        let mut builder = Response::builder().status(status);
        for (name, value) in headers {
            builder = builder.header(*name, *value);
        }
        builder.body(crate::http::full(body)).unwrap()
    }

    fn plan(encoding: Option<Encoding>) -> Plan {
        Plan {
            encoding,
            head: false,
        }
    }

    const LONG: &str = "a long enough text body, repeated, a long enough text body, repeated, a long enough text body, repeated";

    #[test]
    fn content_types_match_ranges_without_parameters() {
        let s = settings();
        let yes = |t: &'static str| s.compresses(Some(&HeaderValue::from_static(t)));
        assert!(yes("text/html; charset=utf-8"));
        assert!(yes("Application/JSON"));
        assert!(yes("application/atom+xml"));
        assert!(!yes("application/xml"));
        assert!(!yes("image/png"));
        assert!(!yes("application/jsonx"));
        assert!(!s.compresses(None));
        assert!(MediaRange::parse("*/json").is_err());
        assert!(MediaRange::parse("json").is_err());
        assert_eq!(MediaRange::parse("*/*"), Ok(MediaRange::Any));
    }

    #[test]
    fn compressed_responses_get_their_headers() {
        let r = compress(
            &settings(),
            &plan(Some(Encoding::Gzip)),
            response(
                &[
                    ("content-type", "text/plain"),
                    ("content-length", "104"),
                    ("etag", "\"v1\""),
                    ("vary", "Origin"),
                    ("accept-ranges", "bytes"),
                ],
                200,
                LONG,
            ),
        );
        let h = r.headers();
        assert_eq!(h["content-encoding"], "gzip");
        assert!(h.get("content-length").is_none());
        assert!(h.get("accept-ranges").is_none());
        assert_eq!(h["etag"], "W/\"v1\"");
        assert_eq!(h["vary"], "Origin, Accept-Encoding");
    }

    /// Response headers, status, the negotiated coding, and whether the
    /// response should carry `Vary`.
    type Case = (
        &'static [(&'static str, &'static str)],
        u16,
        Option<Encoding>,
        bool,
    );

    #[test]
    fn responses_left_alone() {
        let cases: [Case; 7] = [
            (
                &[("content-type", "image/png")],
                200,
                Some(Encoding::Br),
                false,
            ),
            (
                &[("content-type", "text/plain"), ("content-encoding", "gzip")],
                200,
                Some(Encoding::Br),
                false,
            ),
            (
                &[("content-type", "text/plain")],
                304,
                Some(Encoding::Br),
                false,
            ),
            (
                &[("content-type", "text/plain")],
                206,
                Some(Encoding::Br),
                false,
            ),
            (
                &[
                    ("content-type", "text/plain"),
                    ("cache-control", "public, No-Transform"),
                ],
                200,
                Some(Encoding::Br),
                false,
            ),
            (
                &[("content-type", "text/plain"), ("content-length", "99")],
                200,
                Some(Encoding::Br),
                true,
            ),
            (
                &[("content-type", "text/plain"), ("vary", "accept-encoding")],
                200,
                None,
                true,
            ),
        ];
        for (i, (headers, status, encoding, vary)) in cases.into_iter().enumerate() {
            let before = response(headers, status, LONG);
            let expected = before.headers().get("content-encoding").cloned();
            let r = compress(&settings(), &plan(encoding), before);
            assert_eq!(
                r.headers().get("content-encoding").cloned(),
                expected,
                "case {i}"
            );
            let varies: Vec<_> = r.headers().get_all("vary").iter().collect();
            assert_eq!(varies.len(), usize::from(vary), "case {i}: {varies:?}");
        }
        let head = Plan {
            encoding: Some(Encoding::Br),
            head: true,
        };
        let r = compress(
            &settings(),
            &head,
            response(&[("content-type", "text/plain")], 200, LONG),
        );
        assert!(r.headers().get("content-encoding").is_none());
        assert_eq!(r.headers()["vary"], "Accept-Encoding");
    }
}

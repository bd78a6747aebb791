//! HTTP caching rules (RFC 9111) as a shared cache applies them:
//! `Cache-Control` directives of requests and responses, HTTP dates,
//! a response's freshness lifetime, whether it may be stored, and the
//! validators of client conditionals. Pure functions, no I/O.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use http::header::{
    HeaderMap, HeaderName, HeaderValue, AGE, CACHE_CONTROL, DATE, ETAG, EXPIRES, IF_MODIFIED_SINCE,
    IF_NONE_MATCH, LAST_MODIFIED, PRAGMA, SET_COOKIE, VARY,
};
use http::StatusCode;

/// The directives of a message's `Cache-Control` headers.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct CacheControl {
    /// `no-store`: never stored.
    pub no_store: bool,
    /// `no-cache` (also `Pragma: no-cache` on a request): revalidate before use.
    pub no_cache: bool,
    /// `private`: for one user, never in a shared cache.
    pub private: bool,
    /// `max-age`.
    pub max_age: Option<Duration>,
    /// `s-maxage`: `max-age` for shared caches, implies `proxy-revalidate`.
    pub s_maxage: Option<Duration>,
    /// `must-revalidate` or `proxy-revalidate`: never served stale.
    pub must_revalidate: bool,
    /// `stale-while-revalidate`.
    pub stale_while_revalidate: Option<Duration>,
    /// `stale-if-error`.
    pub stale_if_error: Option<Duration>,
}

impl CacheControl {
    /// Parses every `Cache-Control` header of `headers`. Unknown
    /// directives are ignored; an unreadable delta (`max-age=soon`) counts
    /// as 0 (stale), a repeated one keeps the smallest.
    pub fn parse(headers: &HeaderMap) -> CacheControl {
        let mut cc = CacheControl::default();
        for value in headers.get_all(CACHE_CONTROL) {
            let Ok(text) = value.to_str() else {
                continue;
            };
            for directive in text.split(',') {
                cc.apply(directive.trim());
            }
        }
        cc
    }

    /// A request's directives: `Pragma: no-cache` counts as `no-cache`
    /// when there is no `Cache-Control`.
    pub fn of_request(headers: &HeaderMap) -> CacheControl {
        let mut cc = CacheControl::parse(headers);
        if !headers.contains_key(CACHE_CONTROL) {
            cc.no_cache |= headers
                .get_all(PRAGMA)
                .iter()
                .filter_map(|v| v.to_str().ok())
                .any(|v| {
                    v.split(',')
                        .any(|d| d.trim().eq_ignore_ascii_case("no-cache"))
                });
        }
        cc
    }

    fn apply(&mut self, directive: &str) {
        let (name, value) = match directive.split_once('=') {
            Some((name, value)) => (name.trim(), Some(value.trim().trim_matches('"'))),
            None => (directive, None),
        };
        let delta = || Some(value.and_then(|v| v.parse().ok()).unwrap_or(0));
        let keep_min = |slot: &mut Option<Duration>, secs: Option<u64>| {
            let new = Duration::from_secs(secs.unwrap_or(0));
            *slot = Some(slot.map_or(new, |old| old.min(new)));
        };
        match name.to_ascii_lowercase().as_str() {
            "no-store" => self.no_store = true,
            // The field-name forms (`no-cache="set-cookie"`) are taken whole.
            "no-cache" => self.no_cache = true,
            "private" => self.private = true,
            "must-revalidate" | "proxy-revalidate" => self.must_revalidate = true,
            "max-age" => keep_min(&mut self.max_age, delta()),
            "s-maxage" => keep_min(&mut self.s_maxage, delta()),
            "stale-while-revalidate" => keep_min(&mut self.stale_while_revalidate, delta()),
            "stale-if-error" => keep_min(&mut self.stale_if_error, delta()),
            _ => {}
        }
    }
}

/// How long a response is fresh: `s-maxage`, else `max-age`, else
/// `Expires` − `Date` (an unreadable `Expires` means already expired),
/// else the route's `ttl`.
pub fn freshness_lifetime(cc: &CacheControl, headers: &HeaderMap, ttl: Duration) -> Duration {
    if let Some(lifetime) = cc.s_maxage.or(cc.max_age) {
        return lifetime;
    }
    if let Some(expires) = headers.get(EXPIRES) {
        let Some(expires) = parse_http_date(expires) else {
            return Duration::ZERO;
        };
        let date = headers
            .get(DATE)
            .and_then(parse_http_date)
            .unwrap_or_else(SystemTime::now);
        return expires.duration_since(date).unwrap_or(Duration::ZERO);
    }
    ttl
}

/// The response's `Age` when it arrived.
pub fn initial_age(headers: &HeaderMap) -> Duration {
    headers
        .get(AGE)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse().ok())
        .map(Duration::from_secs)
        .unwrap_or(Duration::ZERO)
}

/// Why a response is not stored.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NotStored {
    /// The status is not among the route's `statuses`.
    Status,
    /// `no-store`.
    NoStore,
    /// `private`: for one user.
    Private,
    /// `Set-Cookie`: for one user.
    SetCookie,
    /// `Vary: *`: no two requests alike.
    VaryAll,
    /// `no-cache` without a validator to revalidate with.
    NoValidator,
}

/// Whether a shared cache may store this response.
pub fn storable(
    status: StatusCode,
    headers: &HeaderMap,
    cc: &CacheControl,
    statuses: &[StatusCode],
) -> Result<(), NotStored> {
    if !statuses.contains(&status) {
        return Err(NotStored::Status);
    }
    if cc.no_store {
        return Err(NotStored::NoStore);
    }
    if cc.private {
        return Err(NotStored::Private);
    }
    if headers.contains_key(SET_COOKIE) {
        return Err(NotStored::SetCookie);
    }
    if vary_names(headers).is_none() {
        return Err(NotStored::VaryAll);
    }
    if cc.no_cache && !has_validator(headers) {
        return Err(NotStored::NoValidator);
    }
    Ok(())
}

/// Whether `headers` carry an `ETag` or `Last-Modified`.
pub fn has_validator(headers: &HeaderMap) -> bool {
    headers.contains_key(ETAG) || headers.contains_key(LAST_MODIFIED)
}

/// The request headers a response varies on (lower case), `None` for `Vary: *`.
pub fn vary_names(headers: &HeaderMap) -> Option<Vec<HeaderName>> {
    let mut names = Vec::new();
    for value in headers.get_all(VARY) {
        let text = value.to_str().unwrap_or("*");
        for name in text.split(',').map(str::trim).filter(|n| !n.is_empty()) {
            if name == "*" {
                return None;
            }
            // A name that is not a header name can never match: treat as `*`.
            let name = HeaderName::from_bytes(name.to_ascii_lowercase().as_bytes()).ok()?;
            if !names.contains(&name) {
                names.push(name);
            }
        }
    }
    Some(names)
}

/// A request header's value as `Vary` compares it: every line joined.
pub fn vary_value(headers: &HeaderMap, name: &HeaderName) -> Option<Vec<u8>> {
    let mut values = headers.get_all(name).iter();
    let first = values.next()?;
    let mut joined = first.as_bytes().to_vec();
    for value in values {
        joined.extend_from_slice(b", ");
        joined.extend_from_slice(value.as_bytes());
    }
    Some(joined)
}

/// Whether a client's conditional (`If-None-Match`, else
/// `If-Modified-Since`) holds against a stored response's validators, so
/// the client may be answered 304.
pub fn not_modified(request: &HeaderMap, stored: &HeaderMap) -> bool {
    if request.contains_key(IF_NONE_MATCH) {
        let Some(etag) = stored.get(ETAG).and_then(|v| v.to_str().ok()) else {
            return false;
        };
        return request
            .get_all(IF_NONE_MATCH)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .flat_map(|v| v.split(','))
            .map(str::trim)
            .any(|tag| tag == "*" || weak_eq(tag, etag));
    }
    let since = request.get(IF_MODIFIED_SINCE).and_then(parse_http_date);
    let modified = stored.get(LAST_MODIFIED).and_then(parse_http_date);
    matches!((since, modified), (Some(since), Some(modified)) if modified <= since)
}

/// Weak comparison of two entity tags (`W/"a"` equals `"a"`).
fn weak_eq(a: &str, b: &str) -> bool {
    let strip = |t: &str| t.strip_prefix("W/").unwrap_or(t).to_string();
    strip(a) == strip(b)
}

/// Parses an IMF-fixdate (`Sun, 06 Nov 1994 08:49:37 GMT`), the one form
/// senders must use; the obsolete forms are treated as unreadable.
pub fn parse_http_date(value: &HeaderValue) -> Option<SystemTime> {
    let text = value.to_str().ok()?.trim();
    let (_, rest) = text.split_once(", ")?;
    let mut fields = rest.split(' ');
    let day: u64 = fields.next()?.parse().ok()?;
    let month = fields.next()?;
    let month = MONTHS.iter().position(|m| *m == month)? as u64 + 1;
    let year: u64 = fields.next()?.parse().ok()?;
    let time: Vec<u64> = fields
        .next()?
        .split(':')
        .map(|p| p.parse().ok())
        .collect::<Option<_>>()?;
    if fields.next() != Some("GMT") || fields.next().is_some() || time.len() != 3 {
        return None;
    }
    if !(1..=31).contains(&day) || year < 1970 || time[0] > 23 || time[1] > 59 || time[2] > 60 {
        return None;
    }
    let days = days_from_civil(year, month, day);
    let secs = days * 86_400 + time[0] * 3600 + time[1] * 60 + time[2];
    Some(UNIX_EPOCH + Duration::from_secs(secs))
}

const MONTHS: [&str; 12] = [
    "Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec",
];

/// Days from 1970-01-01 to a date on or after it (proleptic Gregorian).
fn days_from_civil(year: u64, month: u64, day: u64) -> u64 {
    let (y, m) = if month <= 2 {
        (year - 1, month + 9)
    } else {
        (year, month - 3)
    };
    let era = y / 400;
    let yoe = y - era * 400;
    let doy = (153 * m + 2) / 5 + day - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(pairs: &[(&str, &str)]) -> HeaderMap {
        let mut map = HeaderMap::new();
        for (name, value) in pairs {
            map.append(
                HeaderName::from_bytes(name.as_bytes()).unwrap(),
                HeaderValue::from_str(value).unwrap(),
            );
        }
        map
    }

    fn secs(n: u64) -> Option<Duration> {
        Some(Duration::from_secs(n))
    }

    #[test]
    fn cache_control_directives_parse() {
        let cc = CacheControl::parse(&headers(&[
            ("cache-control", "public, Max-Age=60, s-maxage=\"120\""),
            (
                "cache-control",
                "stale-while-revalidate=10, stale-if-error=300, must-revalidate",
            ),
        ]));
        assert_eq!(cc.max_age, secs(60));
        assert_eq!(cc.s_maxage, secs(120));
        assert_eq!(cc.stale_while_revalidate, secs(10));
        assert_eq!(cc.stale_if_error, secs(300));
        assert!(cc.must_revalidate && !cc.no_store && !cc.private && !cc.no_cache);

        let cc = CacheControl::parse(&headers(&[(
            "cache-control",
            "no-store, private=\"x\", no-cache=\"set-cookie\"",
        )]));
        assert!(cc.no_store && cc.private && cc.no_cache);
    }

    #[test]
    fn bad_and_repeated_deltas_are_conservative() {
        let cc = CacheControl::parse(&headers(&[("cache-control", "max-age=soon")]));
        assert_eq!(cc.max_age, secs(0));
        let cc = CacheControl::parse(&headers(&[("cache-control", "max-age=60, max-age=5")]));
        assert_eq!(cc.max_age, secs(5));
    }

    #[test]
    fn pragma_counts_only_without_cache_control() {
        assert!(CacheControl::of_request(&headers(&[("pragma", "no-cache")])).no_cache);
        let both = headers(&[("pragma", "no-cache"), ("cache-control", "max-age=5")]);
        assert!(!CacheControl::of_request(&both).no_cache);
    }

    #[test]
    fn freshness_prefers_s_maxage_then_max_age_then_expires_then_ttl() {
        let ttl = Duration::from_secs(30);
        let lifetime = |pairs: &[(&str, &str)]| {
            let h = headers(pairs);
            freshness_lifetime(&CacheControl::parse(&h), &h, ttl)
        };
        assert_eq!(
            lifetime(&[("cache-control", "max-age=10, s-maxage=20")]),
            Duration::from_secs(20)
        );
        assert_eq!(
            lifetime(&[
                ("cache-control", "max-age=10"),
                ("expires", "Sun, 06 Nov 1994 09:49:37 GMT")
            ]),
            Duration::from_secs(10)
        );
        assert_eq!(
            lifetime(&[
                ("date", "Sun, 06 Nov 1994 08:49:37 GMT"),
                ("expires", "Sun, 06 Nov 1994 09:49:37 GMT")
            ]),
            Duration::from_secs(3600)
        );
        assert_eq!(lifetime(&[("expires", "0")]), Duration::ZERO);
        assert_eq!(lifetime(&[("content-type", "text/plain")]), ttl);
    }

    #[test]
    fn http_dates_parse() {
        let at = |text| parse_http_date(&HeaderValue::from_static(text));
        assert_eq!(
            at("Sun, 06 Nov 1994 08:49:37 GMT"),
            Some(UNIX_EPOCH + Duration::from_secs(784_111_777))
        );
        assert_eq!(at("Thu, 01 Jan 1970 00:00:00 GMT"), Some(UNIX_EPOCH));
        assert_eq!(
            at("Tue, 29 Feb 2028 12:00:00 GMT"),
            Some(UNIX_EPOCH + Duration::from_secs(1_835_438_400))
        );
        assert_eq!(at("Sunday, 06-Nov-94 08:49:37 GMT"), None);
        assert_eq!(at("Sun, 06 Nov 1994 08:49:37 CET"), None);
        assert_eq!(at("tomorrow"), None);
    }

    #[test]
    fn shared_cache_refuses_personal_and_unvaried_responses() {
        let ok = [StatusCode::OK];
        let check = |status: StatusCode, pairs: &[(&str, &str)]| {
            let h = headers(pairs);
            storable(status, &h, &CacheControl::parse(&h), &ok)
        };
        assert_eq!(
            check(StatusCode::OK, &[("cache-control", "max-age=5")]),
            Ok(())
        );
        assert_eq!(check(StatusCode::CREATED, &[]), Err(NotStored::Status));
        assert_eq!(
            check(StatusCode::OK, &[("cache-control", "no-store")]),
            Err(NotStored::NoStore)
        );
        assert_eq!(
            check(StatusCode::OK, &[("cache-control", "private, max-age=60")]),
            Err(NotStored::Private)
        );
        assert_eq!(
            check(StatusCode::OK, &[("set-cookie", "a=b")]),
            Err(NotStored::SetCookie)
        );
        assert_eq!(
            check(StatusCode::OK, &[("vary", "accept, *")]),
            Err(NotStored::VaryAll)
        );
        assert_eq!(
            check(StatusCode::OK, &[("cache-control", "no-cache")]),
            Err(NotStored::NoValidator)
        );
        assert_eq!(
            check(
                StatusCode::OK,
                &[("cache-control", "no-cache"), ("etag", "\"v1\"")]
            ),
            Ok(())
        );
    }

    #[test]
    fn vary_names_are_lower_case_and_unique() {
        let h = headers(&[
            ("vary", "Accept-Language, accept-encoding"),
            ("vary", "ACCEPT-LANGUAGE"),
        ]);
        let names = vary_names(&h).unwrap();
        assert_eq!(
            names,
            vec![
                HeaderName::from_static("accept-language"),
                HeaderName::from_static("accept-encoding")
            ]
        );
    }

    #[test]
    fn conditionals_against_stored_validators() {
        let stored = headers(&[
            ("etag", "\"v1\""),
            ("last-modified", "Sun, 06 Nov 1994 08:49:37 GMT"),
        ]);
        let cond = |pairs: &[(&str, &str)]| not_modified(&headers(pairs), &stored);
        assert!(cond(&[("if-none-match", "\"v0\", W/\"v1\"")]));
        assert!(cond(&[("if-none-match", "*")]));
        assert!(!cond(&[("if-none-match", "\"v2\"")]));
        // If-None-Match wins over If-Modified-Since.
        assert!(!cond(&[
            ("if-none-match", "\"v2\""),
            ("if-modified-since", "Sun, 06 Nov 1994 08:49:37 GMT")
        ]));
        assert!(cond(&[(
            "if-modified-since",
            "Sun, 06 Nov 1994 08:49:37 GMT"
        )]));
        assert!(!cond(&[(
            "if-modified-since",
            "Sun, 06 Nov 1994 08:49:36 GMT"
        )]));
        assert!(!cond(&[]));
    }
}

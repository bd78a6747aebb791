//! gRPC deadlines (`grpc-timeout`, gRPC over HTTP/2 spec): read from the
//! caller's request, and rewritten on each attempt to the time that is left,
//! so the upstream never works past a deadline the caller has given up on.

use std::time::Duration;

use http::{HeaderMap, HeaderName, HeaderValue};
use tokio::time::Instant;

const HEADER: HeaderName = HeaderName::from_static("grpc-timeout");

/// The caller's gRPC deadline, if it sent a valid one.
pub fn grpc_timeout(headers: &HeaderMap) -> Option<Duration> {
    let value = headers.get(&HEADER)?.to_str().ok()?;
    let (digits, unit) = value.split_at(value.len().checked_sub(1)?);
    // At most 8 digits (spec).
    if digits.is_empty() || digits.len() > 8 {
        return None;
    }
    let n: u64 = digits.parse().ok()?;
    Some(match unit {
        "H" => Duration::from_secs(n.saturating_mul(3600)),
        "M" => Duration::from_secs(n.saturating_mul(60)),
        "S" => Duration::from_secs(n),
        "m" => Duration::from_millis(n),
        "u" => Duration::from_micros(n),
        "n" => Duration::from_nanos(n),
        _ => return None,
    })
}

/// Rewrites a request's `grpc-timeout` (if it has one) to what is left before `expires`.
pub fn propagate(headers: &mut HeaderMap, expires: Instant) {
    if !headers.contains_key(&HEADER) {
        return;
    }
    let left = expires.saturating_duration_since(crate::clock::now());
    let millis = left.as_millis().clamp(1, 99_999_999);
    if let Ok(value) = HeaderValue::from_str(&format!("{millis}m")) {
        headers.insert(HEADER, value);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(value: &str) -> HeaderMap {
        let mut map = HeaderMap::new();
        map.insert(HEADER, HeaderValue::from_str(value).unwrap());
        map
    }

    #[test]
    fn parses_every_unit_and_refuses_garbage() {
        assert_eq!(grpc_timeout(&headers("5S")), Some(Duration::from_secs(5)));
        assert_eq!(
            grpc_timeout(&headers("250m")),
            Some(Duration::from_millis(250))
        );
        assert_eq!(grpc_timeout(&headers("2M")), Some(Duration::from_secs(120)));
        assert_eq!(
            grpc_timeout(&headers("10u")),
            Some(Duration::from_micros(10))
        );
        for bad in ["", "S", "5", "5s", "123456789S", "-1S"] {
            assert_eq!(grpc_timeout(&headers(bad)), None, "{bad:?}");
        }
    }

    #[tokio::test(start_paused = true)]
    async fn the_upstream_gets_what_is_left() {
        let mut map = headers("1S");
        let expires = Instant::now() + Duration::from_secs(1);
        tokio::time::advance(Duration::from_millis(300)).await;
        propagate(&mut map, expires);
        assert_eq!(map[HEADER], "700m");
        let mut plain = HeaderMap::new();
        propagate(&mut plain, expires);
        assert!(
            plain.is_empty(),
            "only requests that carry a deadline get one"
        );
    }
}

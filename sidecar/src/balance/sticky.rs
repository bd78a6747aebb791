//! Sticky sessions: the key a request is hashed by for ring-hash balancing
//! (a header, a cookie, or the client's IP). A missing cookie is minted by
//! the proxy and returned with `Set-Cookie`, so the client's next requests
//! land on the same endpoint.

use std::hash::{DefaultHasher, Hash, Hasher};

use http::header::{HeaderName, HeaderValue, COOKIE};
use http::Request;

use super::Policy;
use crate::http::{Body, ConnInfo};

/// What ring hash hashes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HashKey {
    /// A request header's value.
    Header(HeaderName),
    /// A cookie's value; minted when absent.
    Cookie(String),
    /// The client's IP address.
    SourceIp,
}

/// A request's sticky key, and the cookie to set when it was minted.
#[derive(Debug, Default)]
pub struct StickyKey {
    /// The hash to find on the ring; `None`: no key, balance as P2C.
    pub hash: Option<u64>,
    /// `Set-Cookie` for the response.
    pub set_cookie: Option<HeaderValue>,
}

/// A stable hash (the same in every replica and run of this build).
pub fn hash<T: Hash + ?Sized>(value: &T) -> u64 {
    let mut hasher = DefaultHasher::new();
    value.hash(&mut hasher);
    hasher.finish()
}

/// The sticky key of `req` under `policy`.
pub fn key(policy: &Policy, req: &Request<Body>) -> StickyKey {
    let Policy::RingHash(key) = policy else {
        return StickyKey::default();
    };
    match key {
        HashKey::Header(name) => StickyKey {
            hash: req.headers().get(name).map(|v| hash(v.as_bytes())),
            set_cookie: None,
        },
        HashKey::SourceIp => StickyKey {
            hash: req
                .extensions()
                .get::<ConnInfo>()
                .and_then(|c| c.peer)
                .map(|peer| hash(&peer.ip())),
            set_cookie: None,
        },
        HashKey::Cookie(name) => match cookie(req, name) {
            Some(value) => StickyKey {
                hash: Some(hash(value.as_bytes())),
                set_cookie: None,
            },
            None => {
                let value = format!("{:016x}", fastrand::u64(..));
                StickyKey {
                    hash: Some(hash(value.as_bytes())),
                    set_cookie: HeaderValue::from_str(&format!("{name}={value}; Path=/; HttpOnly"))
                        .ok(),
                }
            }
        },
    }
}

/// The value of cookie `name`, from any `Cookie` header.
fn cookie<'a>(req: &'a Request<Body>, name: &str) -> Option<&'a str> {
    req.headers()
        .get_all(COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .find_map(|pair| {
            let (k, v) = pair.trim().split_once('=')?;
            (k == name).then_some(v)
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cookie_key_is_read_or_minted() {
        let policy = Policy::RingHash(HashKey::Cookie("mesh-sticky".into()));
        let req = Request::builder()
            .header("cookie", "a=1; mesh-sticky=abc")
            .body(crate::http::empty())
            .unwrap();
        let key = key(&policy, &req);
        assert_eq!(key.hash, Some(hash("abc".as_bytes())));
        assert!(key.set_cookie.is_none());
        let fresh = super::key(&policy, &Request::new(crate::http::empty()));
        let set = fresh.set_cookie.unwrap();
        assert!(set.to_str().unwrap().starts_with("mesh-sticky="), "{set:?}");
    }

    #[test]
    fn no_key_means_no_hash() {
        let policy = Policy::RingHash(HashKey::Header(HeaderName::from_static("x-user")));
        assert!(key(&policy, &Request::new(crate::http::empty()))
            .hash
            .is_none());
        assert!(key(&Policy::P2cEwma, &Request::new(crate::http::empty()))
            .hash
            .is_none());
    }
}

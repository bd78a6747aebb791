//! The edge front layer, above routing: who the client is, and the
//! forwarding headers that tell the upstream.
//!
//! The client is the connection's peer (already the PROXY-protocol address
//! when the listener reads one). When the peer is one of
//! `edge.trusted_proxies`, its `X-Forwarded-For` (else `Forwarded: for=`)
//! is walked right to left, skipping trusted addresses: the first untrusted
//! one is the client. Upstream headers:
//! - `X-Forwarded-For`: from a trusted peer, its chain plus the peer; from
//!   anyone else, replaced by the client's address.
//! - `X-Forwarded-Proto`: a trusted peer's `http` / `https` kept, else
//!   `https` when the connection is TLS, `http` otherwise.
//! - `X-Forwarded-Host`: a trusted peer's kept, else the request's `Host`.
//! - `Forwarded` (RFC 7239): a trusted peer's kept and this hop appended
//!   (`for=` the peer, `proto=`, `host=`); from anyone else replaced by
//!   this hop's element.
//! - `X-Request-Id`: the client's kept when it is 1 to 128 visible ASCII
//!   characters (from any client: it names a request, it grants nothing),
//!   else a new random UUID (v4); echoed on the response.
//!
//! Reads: [`ConnInfo`] (peer, TLS), the running settings' trusted proxies.
//! Writes: the headers above, the client address and request ID into
//! [`RequestInfo`]. Errors: none of its own; failures below are answered
//! here (through `errors::response`) so the request ID reaches every answer.

use std::fmt::Write as _;
use std::net::IpAddr;
use std::sync::Arc;

use arc_swap::ArcSwap;
use http::header::{HeaderMap, HeaderName, HeaderValue, FORWARDED, HOST};
use http::Request;
use tower::layer::layer_fn;
use tower::Layer;

use crate::cidr::Cidr;
use crate::config::Settings;
use crate::http::{Body, ConnInfo, HttpService};
use crate::telemetry::RequestInfo;

/// `X-Forwarded-For`.
pub const X_FORWARDED_FOR: HeaderName = HeaderName::from_static("x-forwarded-for");
/// `X-Forwarded-Proto`.
pub const X_FORWARDED_PROTO: HeaderName = HeaderName::from_static("x-forwarded-proto");
/// `X-Forwarded-Host`.
pub const X_FORWARDED_HOST: HeaderName = HeaderName::from_static("x-forwarded-host");
/// `X-Request-Id`.
pub const X_REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");

/// Longest request ID kept from a client.
const MAX_REQUEST_ID: usize = 128;

/// Who the client is, and the forwarding headers that say so upstream.
pub fn front_layer(
    settings: Arc<ArcSwap<Settings>>,
) -> impl Layer<HttpService, Service = HttpService> + Clone {
    layer_fn(move |inner: HttpService| {
        let settings = settings.clone();
        crate::http::shared_fn(move |mut req: Request<Body>| {
            let request_id = {
                let settings = settings.load();
                let trusted = settings
                    .edge
                    .as_ref()
                    .map_or(&[][..], |edge| &edge.trusted_proxies[..]);
                front(&mut req, trusted)
            };
            let grpc = crate::http::is_grpc(req.headers());
            let inner = inner.clone();
            async move {
                let mut response = match inner.call_ref(req).await {
                    Ok(response) => response,
                    Err(err) => crate::errors::response(&err, grpc),
                };
                response.headers_mut().insert(X_REQUEST_ID, request_id);
                Ok(response)
            }
        })
    })
}

/// Works out the client and sets the forwarding headers; returns the request ID.
fn front(req: &mut Request<Body>, trusted: &[Cidr]) -> HeaderValue {
    let (peer, tls) = req
        .extensions()
        .get::<ConnInfo>()
        .map_or((None, false), |conn| {
            (conn.peer.map(|p| p.ip().to_canonical()), conn.tls)
        });
    let peer_trusted = peer.is_some_and(|ip| Cidr::any_contains(trusted, ip));
    // HTTP/2 carries the host as `:authority` (the URI's), not `Host`.
    let host = req.headers().get(HOST).cloned().or_else(|| {
        req.uri()
            .authority()
            .and_then(|a| HeaderValue::from_str(a.as_str()).ok())
    });
    let headers = req.headers_mut();
    let client = match peer {
        Some(peer) if peer_trusted => Some(client_behind(headers, trusted, peer)),
        other => other,
    };
    let proto = if tls { "https" } else { "http" };
    set_forwarded_for(headers, peer, client, peer_trusted);
    let kept_proto = peer_trusted
        && headers
            .get(&X_FORWARDED_PROTO)
            .and_then(|v| v.to_str().ok())
            .is_some_and(|v| v.eq_ignore_ascii_case("http") || v.eq_ignore_ascii_case("https"));
    if !kept_proto {
        headers.insert(X_FORWARDED_PROTO, HeaderValue::from_static(proto));
    }
    if !(peer_trusted && headers.contains_key(&X_FORWARDED_HOST)) {
        match &host {
            Some(host) => headers.insert(X_FORWARDED_HOST, host.clone()),
            None => headers.remove(&X_FORWARDED_HOST),
        };
    }
    set_forwarded(headers, peer.or(client), proto, host.as_ref(), peer_trusted);
    let request_id = headers
        .get(&X_REQUEST_ID)
        .filter(|id| valid_request_id(id.as_bytes()))
        .cloned()
        .unwrap_or_else(new_request_id);
    headers.insert(X_REQUEST_ID, request_id.clone());
    if let Some(info) = req.extensions().get::<RequestInfo>() {
        if let Some(client) = client {
            info.set_client(client);
        }
        if let Ok(id) = request_id.to_str() {
            info.set_request_id(Arc::from(id));
        }
    }
    request_id
}

/// The client behind the trusted `peer`: walking the forwarding chain
/// right to left, the first address that is not a trusted proxy (or the
/// last one read, when every hop is trusted or a hop is unreadable).
fn client_behind(headers: &HeaderMap, trusted: &[Cidr], peer: IpAddr) -> IpAddr {
    let mut client = peer;
    let walk = |hop: Option<IpAddr>, client: &mut IpAddr| match hop {
        Some(ip) => {
            *client = ip;
            Cidr::any_contains(trusted, ip)
        }
        None => false,
    };
    if headers.contains_key(&X_FORWARDED_FOR) {
        let hops: Vec<&str> = list_items(headers, &X_FORWARDED_FOR).collect();
        for hop in hops.iter().rev() {
            if !walk(parse_node(hop), &mut client) {
                break;
            }
        }
    } else {
        let hops: Vec<&str> = forwarded_for(headers).collect();
        for hop in hops.iter().rev() {
            if !walk(parse_node(hop), &mut client) {
                break;
            }
        }
    }
    client
}

/// The comma-separated items of every `name` header, trimmed.
fn list_items<'a>(headers: &'a HeaderMap, name: &HeaderName) -> impl Iterator<Item = &'a str> {
    headers
        .get_all(name)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .map(str::trim)
        .filter(|item| !item.is_empty())
}

/// The `for=` value of each `Forwarded` element (empty when an element has none).
fn forwarded_for(headers: &HeaderMap) -> impl Iterator<Item = &str> {
    list_items(headers, &FORWARDED).map(|element| {
        element
            .split(';')
            .filter_map(|pair| pair.trim().split_once('='))
            .find(|(key, _)| key.trim().eq_ignore_ascii_case("for"))
            .map_or("", |(_, value)| value.trim())
    })
}

/// An address as `X-Forwarded-For` or `Forwarded: for=` write it:
/// `192.0.2.1`, `192.0.2.1:443`, `2001:db8::1`, `[2001:db8::1]:443`, quoted or not.
pub fn parse_node(text: &str) -> Option<IpAddr> {
    let text = text.trim();
    let text = text
        .strip_prefix('"')
        .and_then(|t| t.strip_suffix('"'))
        .unwrap_or(text);
    if let Ok(ip) = text.parse::<IpAddr>() {
        return Some(ip.to_canonical());
    }
    if let Some(rest) = text.strip_prefix('[') {
        let (ip, _) = rest.split_once(']')?;
        return ip.parse::<IpAddr>().ok().map(|ip| ip.to_canonical());
    }
    let (ip, port) = text.rsplit_once(':')?;
    port.parse::<u16>().ok()?;
    ip.parse::<std::net::Ipv4Addr>().ok().map(IpAddr::V4)
}

/// `X-Forwarded-For`: a trusted peer's chain plus the peer, else the client alone.
fn set_forwarded_for(
    headers: &mut HeaderMap,
    peer: Option<IpAddr>,
    client: Option<IpAddr>,
    peer_trusted: bool,
) {
    let value = match (peer, client) {
        (Some(peer), _) if peer_trusted => {
            let mut chain = String::with_capacity(64);
            for item in list_items(headers, &X_FORWARDED_FOR) {
                chain.push_str(item);
                chain.push_str(", ");
            }
            _ = write!(chain, "{peer}");
            chain
        }
        (_, Some(client)) => client.to_string(),
        (_, None) => {
            headers.remove(&X_FORWARDED_FOR);
            return;
        }
    };
    match HeaderValue::try_from(value) {
        Ok(value) => headers.insert(X_FORWARDED_FOR, value),
        Err(_) => headers.remove(&X_FORWARDED_FOR),
    };
}

/// `Forwarded`: this hop's element, after a trusted peer's elements.
fn set_forwarded(
    headers: &mut HeaderMap,
    peer: Option<IpAddr>,
    proto: &str,
    host: Option<&HeaderValue>,
    peer_trusted: bool,
) {
    let mut value = String::with_capacity(64);
    if peer_trusted {
        for element in list_items(headers, &FORWARDED) {
            value.push_str(element);
            value.push_str(", ");
        }
    }
    match peer {
        // Writing to a String cannot fail.
        Some(IpAddr::V4(ip)) => _ = write!(value, "for={ip}"),
        Some(IpAddr::V6(ip)) => _ = write!(value, "for=\"[{ip}]\""),
        None => value.push_str("for=unknown"),
    }
    value.push_str(";proto=");
    value.push_str(proto);
    if let Some(host) = host.and_then(|h| h.to_str().ok()) {
        value.push_str(";host=");
        push_token_or_quoted(&mut value, host);
    }
    match HeaderValue::try_from(value) {
        Ok(value) => headers.insert(FORWARDED, value),
        Err(_) => headers.remove(FORWARDED),
    };
}

/// `text` as an RFC 9110 token when it is one, else as a quoted string.
fn push_token_or_quoted(out: &mut String, text: &str) {
    let token = !text.is_empty()
        && text
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b));
    if token {
        out.push_str(text);
        return;
    }
    out.push('"');
    for c in text.chars() {
        if c == '"' || c == '\\' {
            out.push('\\');
        }
        out.push(c);
    }
    out.push('"');
}

/// 1 to 128 visible ASCII characters.
fn valid_request_id(id: &[u8]) -> bool {
    !id.is_empty() && id.len() <= MAX_REQUEST_ID && id.iter().all(|b| (0x21..0x7f).contains(b))
}

/// A random UUID (version 4).
fn new_request_id() -> HeaderValue {
    let bits = fastrand::u128(..);
    let bits = (bits & !(0xf << 76)) | (0x4 << 76);
    let bits = (bits & !(0x3 << 62)) | (0x2 << 62);
    let id = format!(
        "{:08x}-{:04x}-{:04x}-{:04x}-{:012x}",
        (bits >> 96) as u32,
        (bits >> 80) as u16,
        (bits >> 64) as u16,
        (bits >> 48) as u16,
        bits & 0xffff_ffff_ffff
    );
    HeaderValue::try_from(id).unwrap_or_else(|_| HeaderValue::from_static("0"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cidrs(list: &[&str]) -> Vec<Cidr> {
        list.iter().map(|c| Cidr::parse(c).unwrap()).collect()
    }

    fn request(peer: &str, tls: bool, headers: &[(&str, &str)]) -> Request<Body> {
        let mut builder = Request::builder()
            .uri("/x")
            .header("host", "shop.test:8443");
        for (name, value) in headers {
            builder = builder.header(*name, *value);
        }
        let mut req = builder.body(crate::http::empty()).unwrap();
        req.extensions_mut().insert(ConnInfo {
            peer: Some(peer.parse().unwrap()),
            tls,
            ..Default::default()
        });
        req.extensions_mut().insert(RequestInfo::default());
        req
    }

    fn client(req: &Request<Body>) -> IpAddr {
        req.extensions()
            .get::<RequestInfo>()
            .unwrap()
            .client()
            .unwrap()
    }

    #[test]
    fn the_chain_is_walked_right_to_left_past_trusted_proxies() {
        let trusted = cidrs(&["10.0.0.0/8", "192.168.1.1"]);
        let headers = |xff: &str| {
            let mut h = HeaderMap::new();
            h.insert(X_FORWARDED_FOR, xff.parse().unwrap());
            h
        };
        let peer: IpAddr = "10.0.0.1".parse().unwrap();
        let walk = |xff: &str| client_behind(&headers(xff), &trusted, peer).to_string();
        assert_eq!(walk("203.0.113.7"), "203.0.113.7");
        assert_eq!(
            walk("1.1.1.1, 203.0.113.7, 10.2.3.4, 192.168.1.1"),
            "203.0.113.7"
        );
        // Every hop trusted: the leftmost one.
        assert_eq!(walk("10.9.9.9, 10.1.1.1"), "10.9.9.9");
        // An unreadable hop ends the walk at the last address read.
        assert_eq!(walk("203.0.113.7, garbage, 10.1.1.1"), "10.1.1.1");
        assert_eq!(walk("[2001:db8::7]:1234, 10.1.1.1"), "2001:db8::7");
        assert_eq!(walk("203.0.113.7:5555"), "203.0.113.7");
        let mut forwarded = HeaderMap::new();
        forwarded.insert(
            FORWARDED,
            "for=198.51.100.1;proto=https, for=\"[2001:db8::9]:80\", for=10.0.0.5"
                .parse()
                .unwrap(),
        );
        assert_eq!(
            client_behind(&forwarded, &trusted, peer).to_string(),
            "2001:db8::9"
        );
    }

    #[test]
    fn a_trusted_peer_extends_the_chain() {
        let trusted = cidrs(&["127.0.0.1"]);
        let mut req = request(
            "127.0.0.1:4000",
            false,
            &[
                ("x-forwarded-for", "203.0.113.7"),
                ("x-forwarded-proto", "https"),
                ("forwarded", "for=203.0.113.7;proto=https"),
                ("x-request-id", "abc-123"),
            ],
        );
        let id = front(&mut req, &trusted);
        assert_eq!(client(&req).to_string(), "203.0.113.7");
        let h = req.headers();
        assert_eq!(h[X_FORWARDED_FOR], "203.0.113.7, 127.0.0.1");
        assert_eq!(h[X_FORWARDED_PROTO], "https");
        assert_eq!(h[X_FORWARDED_HOST], "shop.test:8443");
        assert_eq!(
            h[FORWARDED],
            "for=203.0.113.7;proto=https, for=127.0.0.1;proto=http;host=\"shop.test:8443\""
        );
        assert_eq!(id, "abc-123");
        assert_eq!(h[X_REQUEST_ID], "abc-123");
    }

    #[test]
    fn an_untrusted_peer_is_the_client() {
        let mut req = request(
            "[2001:db8::1]:4000",
            true,
            &[
                ("x-forwarded-for", "1.2.3.4"),
                ("x-forwarded-proto", "http"),
                ("x-forwarded-host", "evil.test"),
                ("forwarded", "for=1.2.3.4"),
                ("x-request-id", "has space"),
            ],
        );
        let id = front(&mut req, &cidrs(&["127.0.0.1"]));
        assert_eq!(client(&req).to_string(), "2001:db8::1");
        let h = req.headers();
        assert_eq!(h[X_FORWARDED_FOR], "2001:db8::1");
        assert_eq!(h[X_FORWARDED_PROTO], "https");
        assert_eq!(h[X_FORWARDED_HOST], "shop.test:8443");
        assert_eq!(
            h[FORWARDED],
            "for=\"[2001:db8::1]\";proto=https;host=\"shop.test:8443\""
        );
        let id = id.to_str().unwrap();
        assert_eq!(id.len(), 36);
        assert_eq!(&id[14..15], "4");
        assert_eq!(h[X_REQUEST_ID], id);
    }

    #[test]
    fn request_ids_are_visible_ascii_up_to_128() {
        assert!(valid_request_id(b"a"));
        assert!(valid_request_id(&[b'x'; 128]));
        assert!(!valid_request_id(&[b'x'; 129]));
        assert!(!valid_request_id(b""));
        assert!(!valid_request_id(b"a b"));
        assert!(!valid_request_id("é".as_bytes()));
    }
}

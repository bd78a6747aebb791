//! PROXY protocol v1 (text) and v2 (binary) headers, sent first on a
//! connection by an L4 balancer in front of an edge listener to say who
//! the client is. Reads at most one header, bounded in size and time;
//! bytes read past it are handed back ([`Rewind`]).
//! Reads: the connection's first bytes. Writes: nothing.
//! Errors: [`ProxyProtocolError`] (missing, malformed, oversized,
//! truncated header, timeout): the connection is closed.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::time::Duration;

use bytes::BytesMut;
use tokio::io::{AsyncRead, AsyncReadExt};

use crate::detect::Rewind;

/// The v2 signature (12 bytes).
const V2_SIGNATURE: &[u8; 12] = b"\r\n\r\n\0\r\nQUIT\n";
/// The v1 prefix.
const V1_PREFIX: &[u8] = b"PROXY ";
/// Longest v1 header, CRLF included (spec: 107 bytes).
const V1_MAX: usize = 107;
/// Fixed part of a v2 header: signature, version/command, family, length.
const V2_FIXED: usize = 16;
/// Longest v2 header accepted: addresses plus a reasonable amount of TLVs.
pub(crate) const V2_MAX: usize = 4096;

/// What a header says about the client.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Header {
    /// The client's address, as seen by the balancer.
    Proxied(SocketAddr),
    /// No client address (v2 `LOCAL`, v1 `UNKNOWN`, or an address family
    /// other than IP): the TCP peer stays the client.
    Local,
}

/// Why a connection's header was refused.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum ProxyProtocolError {
    /// The connection does not start with a PROXY protocol signature.
    #[error("no PROXY protocol header")]
    Missing,
    /// The header is malformed.
    #[error("invalid PROXY protocol header: {0}")]
    Invalid(&'static str),
    /// The header is longer than allowed.
    #[error("PROXY protocol header too long")]
    Oversized,
    /// The connection ended inside the header.
    #[error("connection closed inside the PROXY protocol header")]
    Truncated,
    /// The header did not arrive in time.
    #[error("no complete PROXY protocol header within {0:?}")]
    Timeout(Duration),
    /// Reading failed.
    #[error("reading the PROXY protocol header: {0}")]
    Io(String),
}

/// Reads one header from the start of `io` within `timeout`; the bytes
/// after it stay readable from the returned stream.
pub async fn read<I>(
    mut io: I,
    timeout: Duration,
) -> Result<(Header, Rewind<I>), ProxyProtocolError>
where
    I: AsyncRead + Unpin,
{
    let mut buf = BytesMut::with_capacity(256);
    let deadline = tokio::time::Instant::now() + timeout;
    loop {
        if let Some((header, used)) = parse(&buf)? {
            let rest = buf.split_off(used);
            return Ok((header, Rewind::new(rest.freeze(), io)));
        }
        // Never read past the longest header the parser could still accept.
        let room = V2_MAX.saturating_sub(buf.len()).max(1);
        let mut limited = (&mut io).take(room as u64);
        match tokio::time::timeout_at(deadline, limited.read_buf(&mut buf)).await {
            Err(_elapsed) => return Err(ProxyProtocolError::Timeout(timeout)),
            Ok(Ok(0)) => return Err(ProxyProtocolError::Truncated),
            Ok(Ok(_)) => {}
            Ok(Err(err)) => return Err(ProxyProtocolError::Io(err.to_string())),
        }
    }
}

/// Parses a header at the start of `buf`: the header and its length, or
/// `None` when more bytes are needed.
pub fn parse(buf: &[u8]) -> Result<Option<(Header, usize)>, ProxyProtocolError> {
    let Some(&first) = buf.first() else {
        return Ok(None);
    };
    if first == V1_PREFIX[0] {
        let common = buf.len().min(V1_PREFIX.len());
        if buf[..common] != V1_PREFIX[..common] {
            return Err(ProxyProtocolError::Missing);
        }
        parse_v1(buf)
    } else if first == V2_SIGNATURE[0] {
        let common = buf.len().min(V2_SIGNATURE.len());
        if buf[..common] != V2_SIGNATURE[..common] {
            return Err(ProxyProtocolError::Missing);
        }
        parse_v2(buf)
    } else {
        Err(ProxyProtocolError::Missing)
    }
}

/// `PROXY TCP4 <src> <dst> <sport> <dport>\r\n`, `TCP6`, or `UNKNOWN ...\r\n`.
fn parse_v1(buf: &[u8]) -> Result<Option<(Header, usize)>, ProxyProtocolError> {
    let window = &buf[..buf.len().min(V1_MAX)];
    let Some(end) = window.windows(2).position(|w| w == b"\r\n") else {
        return if buf.len() >= V1_MAX {
            Err(ProxyProtocolError::Oversized)
        } else if window.contains(&b'\n') {
            Err(ProxyProtocolError::Invalid("v1 line ends without CR"))
        } else {
            Ok(None)
        };
    };
    let line = std::str::from_utf8(&window[V1_PREFIX.len()..end])
        .map_err(|_| ProxyProtocolError::Invalid("v1 header is not ASCII"))?;
    let used = end + 2;
    let mut fields = line.split(' ');
    let family = fields.next().unwrap_or_default();
    if family == "UNKNOWN" {
        return Ok(Some((Header::Local, used)));
    }
    let fields: Vec<&str> = fields.collect();
    let [src, dst, sport, dport] = fields[..] else {
        return Err(ProxyProtocolError::Invalid("v1 header needs 4 fields"));
    };
    let ip: IpAddr = match family {
        "TCP4" => src
            .parse::<Ipv4Addr>()
            .map(IpAddr::V4)
            .map_err(|_| ProxyProtocolError::Invalid("v1 source is not an IPv4 address"))?,
        "TCP6" => src
            .parse::<Ipv6Addr>()
            .map(IpAddr::V6)
            .map_err(|_| ProxyProtocolError::Invalid("v1 source is not an IPv6 address"))?,
        _ => {
            return Err(ProxyProtocolError::Invalid(
                "v1 family is not TCP4, TCP6 or UNKNOWN",
            ))
        }
    };
    if dst.parse::<IpAddr>().map(|d| d.is_ipv4()) != Ok(ip.is_ipv4()) {
        return Err(ProxyProtocolError::Invalid(
            "v1 destination is not an address of the family",
        ));
    }
    let port = v1_port(sport)?;
    v1_port(dport)?;
    Ok(Some((Header::Proxied(SocketAddr::new(ip, port)), used)))
}

/// A v1 port: decimal digits only, at most 65535.
fn v1_port(text: &str) -> Result<u16, ProxyProtocolError> {
    if text.is_empty() || !text.bytes().all(|b| b.is_ascii_digit()) {
        return Err(ProxyProtocolError::Invalid("v1 port is not a number"));
    }
    text.parse()
        .map_err(|_| ProxyProtocolError::Invalid("v1 port out of range"))
}

/// Signature, version 2 + command, family + transport, length, addresses, TLVs.
fn parse_v2(buf: &[u8]) -> Result<Option<(Header, usize)>, ProxyProtocolError> {
    if buf.len() < V2_FIXED {
        return Ok(None);
    }
    let version_command = buf[12];
    if version_command >> 4 != 2 {
        return Err(ProxyProtocolError::Invalid("v2 version is not 2"));
    }
    let family = buf[13];
    let len = usize::from(u16::from_be_bytes([buf[14], buf[15]]));
    let used = V2_FIXED + len;
    if used > V2_MAX {
        return Err(ProxyProtocolError::Oversized);
    }
    if buf.len() < used {
        return Ok(None);
    }
    let body = &buf[V2_FIXED..used];
    match version_command & 0x0f {
        // LOCAL: the balancer's own connection (health check).
        0 => return Ok(Some((Header::Local, used))),
        1 => {}
        _ => {
            return Err(ProxyProtocolError::Invalid(
                "v2 command is not LOCAL or PROXY",
            ))
        }
    }
    let addr = match family >> 4 {
        // AF_INET: src, dst (4 bytes each), sport, dport.
        1 => {
            let b: &[u8; 12] = body.get(..12).and_then(|b| b.try_into().ok()).ok_or(
                ProxyProtocolError::Invalid("v2 IPv4 addresses are cut short"),
            )?;
            let ip = Ipv4Addr::new(b[0], b[1], b[2], b[3]);
            SocketAddr::new(IpAddr::V4(ip), u16::from_be_bytes([b[8], b[9]]))
        }
        // AF_INET6: src, dst (16 bytes each), sport, dport.
        2 => {
            let b: &[u8; 36] = body.get(..36).and_then(|b| b.try_into().ok()).ok_or(
                ProxyProtocolError::Invalid("v2 IPv6 addresses are cut short"),
            )?;
            let mut octets = [0u8; 16];
            octets.copy_from_slice(&b[..16]);
            SocketAddr::new(
                IpAddr::V6(Ipv6Addr::from(octets)),
                u16::from_be_bytes([b[32], b[33]]),
            )
        }
        // AF_UNSPEC, AF_UNIX: no IP client to take.
        0 | 3 => return Ok(Some((Header::Local, used))),
        _ => return Err(ProxyProtocolError::Invalid("v2 address family is unknown")),
    };
    Ok(Some((Header::Proxied(addr), used)))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn v2(command: u8, family: u8, body: &[u8]) -> Vec<u8> {
        let mut out = V2_SIGNATURE.to_vec();
        out.push(0x20 | command);
        out.push(family);
        out.extend_from_slice(&u16::try_from(body.len()).unwrap().to_be_bytes());
        out.extend_from_slice(body);
        out
    }

    fn proxied(text: &str) -> Header {
        Header::Proxied(text.parse().unwrap())
    }

    #[test]
    fn v1_tcp4() {
        let bytes = b"PROXY TCP4 203.0.113.7 10.0.0.1 51234 443\r\nGET /";
        let (header, used) = parse(bytes).unwrap().unwrap();
        assert_eq!(header, proxied("203.0.113.7:51234"));
        assert_eq!(&bytes[used..], b"GET /");
    }

    #[test]
    fn v1_tcp6() {
        let bytes = b"PROXY TCP6 2001:db8::7 2001:db8::1 4000 443\r\n";
        let (header, used) = parse(bytes).unwrap().unwrap();
        assert_eq!(header, proxied("[2001:db8::7]:4000"));
        assert_eq!(used, bytes.len());
    }

    #[test]
    fn v1_unknown_keeps_the_tcp_peer() {
        let bytes = b"PROXY UNKNOWN ffff::1 ffff::2 1 2\r\n";
        assert_eq!(parse(bytes).unwrap().unwrap().0, Header::Local);
        assert_eq!(
            parse(b"PROXY UNKNOWN\r\n").unwrap().unwrap(),
            (Header::Local, 15)
        );
    }

    #[test]
    fn v1_malformed() {
        for bad in [
            &b"PROXY TCP4 203.0.113.7 10.0.0.1 51234\r\n"[..],
            b"PROXY TCP4 2001:db8::7 10.0.0.1 1 2\r\n",
            b"PROXY TCP6 203.0.113.7 10.0.0.1 1 2\r\n",
            b"PROXY TCP4 203.0.113.7 10.0.0.1 70000 443\r\n",
            b"PROXY TCP4 203.0.113.7 10.0.0.1 +1 443\r\n",
            b"PROXY UDP4 203.0.113.7 10.0.0.1 1 2\r\n",
            b"PROXY TCP4 203.0.113.7 10.0.0.1 1 2\n",
        ] {
            assert!(
                matches!(parse(bad), Err(ProxyProtocolError::Invalid(_))),
                "{:?}",
                String::from_utf8_lossy(bad)
            );
        }
    }

    #[test]
    fn v1_oversized() {
        let mut bytes = b"PROXY TCP4 ".to_vec();
        bytes.resize(200, b'1');
        assert_eq!(parse(&bytes), Err(ProxyProtocolError::Oversized));
    }

    #[test]
    fn v1_truncated_waits_for_more() {
        assert_eq!(parse(b"PRO"), Ok(None));
        assert_eq!(parse(b"PROXY TCP4 203.0.113.7"), Ok(None));
    }

    #[test]
    fn v2_ipv4() {
        let mut body = vec![203, 0, 113, 7, 10, 0, 0, 1];
        body.extend_from_slice(&51234u16.to_be_bytes());
        body.extend_from_slice(&443u16.to_be_bytes());
        let mut bytes = v2(1, 0x11, &body);
        let header_len = bytes.len();
        bytes.extend_from_slice(b"GET /");
        let (header, used) = parse(&bytes).unwrap().unwrap();
        assert_eq!(header, proxied("203.0.113.7:51234"));
        assert_eq!(used, header_len);
    }

    #[test]
    fn v2_ipv6_with_tlvs() {
        let src: Ipv6Addr = "2001:db8::7".parse().unwrap();
        let dst: Ipv6Addr = "2001:db8::1".parse().unwrap();
        let mut body = src.octets().to_vec();
        body.extend_from_slice(&dst.octets());
        body.extend_from_slice(&4000u16.to_be_bytes());
        body.extend_from_slice(&443u16.to_be_bytes());
        body.extend_from_slice(&[0x04, 0x00, 0x02, 0xab, 0xcd]); // a NOOP TLV
        let bytes = v2(1, 0x21, &body);
        let (header, used) = parse(&bytes).unwrap().unwrap();
        assert_eq!(header, proxied("[2001:db8::7]:4000"));
        assert_eq!(used, bytes.len());
    }

    #[test]
    fn v2_local_keeps_the_tcp_peer() {
        let bytes = v2(0, 0x00, &[]);
        assert_eq!(parse(&bytes).unwrap().unwrap(), (Header::Local, 16));
        let bytes = v2(0, 0x11, &[0; 12]);
        assert_eq!(parse(&bytes).unwrap().unwrap(), (Header::Local, 28));
    }

    #[test]
    fn v2_truncated_and_short() {
        let full = v2(1, 0x11, &[203, 0, 113, 7, 10, 0, 0, 1, 0, 80, 1, 187]);
        for cut in 1..full.len() {
            assert_eq!(parse(&full[..cut]), Ok(None), "cut at {cut}");
        }
        // A length too short for the addresses of its family.
        let short = v2(1, 0x11, &[203, 0, 113, 7]);
        assert!(matches!(parse(&short), Err(ProxyProtocolError::Invalid(_))));
        let short6 = v2(1, 0x21, &[0; 20]);
        assert!(matches!(
            parse(&short6),
            Err(ProxyProtocolError::Invalid(_))
        ));
    }

    #[test]
    fn v2_bad_version_command_family() {
        let mut bytes = v2(1, 0x11, &[0; 12]);
        bytes[12] = 0x11;
        assert!(matches!(parse(&bytes), Err(ProxyProtocolError::Invalid(_))));
        let bytes = v2(2, 0x11, &[0; 12]);
        assert!(matches!(parse(&bytes), Err(ProxyProtocolError::Invalid(_))));
        let bytes = v2(1, 0x41, &[0; 12]);
        assert!(matches!(parse(&bytes), Err(ProxyProtocolError::Invalid(_))));
    }

    #[test]
    fn v2_oversized() {
        let mut bytes = V2_SIGNATURE.to_vec();
        bytes.extend_from_slice(&[0x21, 0x11, 0xff, 0xff]);
        assert_eq!(parse(&bytes), Err(ProxyProtocolError::Oversized));
    }

    #[test]
    fn garbage_is_missing() {
        for bad in [
            &b"GET / HTTP/1.1\r\n"[..],
            b"\x16\x03\x01\x02\x00",
            b"PRI * HTTP/2.0",
            b"PROXZ TCP4",
            b"\r\n\r\nX",
        ] {
            assert_eq!(parse(bad), Err(ProxyProtocolError::Missing), "{bad:?}");
        }
    }

    #[tokio::test]
    async fn read_hands_back_what_follows() {
        let mut stream: &[u8] = b"PROXY TCP4 198.51.100.1 10.0.0.1 1234 80\r\nGET / HTTP/1.1\r\n";
        let (header, mut rest) = read(&mut stream, Duration::from_secs(1)).await.unwrap();
        assert_eq!(header, proxied("198.51.100.1:1234"));
        let mut after = String::new();
        rest.read_to_string(&mut after).await.unwrap();
        assert_eq!(after, "GET / HTTP/1.1\r\n");
    }

    #[tokio::test]
    async fn read_fails_on_truncation_and_silence() {
        let stream: &[u8] = b"PROXY TCP4 198.51.100.1";
        assert_eq!(
            read(stream, Duration::from_secs(1)).await.err(),
            Some(ProxyProtocolError::Truncated)
        );
        let (_client, server) = tokio::io::duplex(64);
        assert_eq!(
            read(server, Duration::from_millis(20)).await.err(),
            Some(ProxyProtocolError::Timeout(Duration::from_millis(20)))
        );
    }
}

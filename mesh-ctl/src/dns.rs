//! A small DNS client over UDP, std only, for `--srv`: one SRV query to
//! one nameserver (`--dns ADDR`, else the first `nameserver` of
//! /etc/resolv.conf), then an A/AAAA query for each target the answer's
//! additional section does not already give.
//! Reads: the answer, checked byte by byte (bounded name compression, no
//! read past the message). Writes: the query.
//! Errors: a `String` naming the nameserver and what went wrong.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr, UdpSocket};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

const TYPE_A: u16 = 1;
const TYPE_AAAA: u16 = 28;
const TYPE_SRV: u16 = 33;
const CLASS_IN: u16 = 1;

/// One SRV record.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Srv {
    pub priority: u16,
    pub weight: u16,
    pub port: u16,
    pub target: String,
}

/// The nameserver to ask: `given` (`IP` or `IP:PORT`), else resolv.conf's first.
pub fn nameserver(given: Option<&str>) -> Result<SocketAddr, String> {
    let text = match given {
        Some(given) => given.trim().to_string(),
        None => {
            let conf = std::fs::read_to_string("/etc/resolv.conf")
                .map_err(|e| format!("cannot read /etc/resolv.conf: {e}"))?;
            conf.lines()
                .filter_map(|line| line.trim().strip_prefix("nameserver"))
                .map(|rest| rest.trim().to_string())
                .next()
                .ok_or("/etc/resolv.conf names no nameserver; use --dns ADDR")?
        }
    };
    text.parse::<SocketAddr>()
        .or_else(|_| text.parse::<IpAddr>().map(|ip| SocketAddr::new(ip, 53)))
        .map_err(|_| format!("nameserver {text:?}: expected IP or IP:PORT"))
}

/// The admin addresses an SRV name points at, sorted by priority then
/// weight (highest first), each target resolved.
pub fn resolve_srv(
    name: &str,
    server: SocketAddr,
    timeout: Duration,
) -> Result<Vec<String>, String> {
    let answer = query(name, TYPE_SRV, server, timeout)?;
    let mut records: Vec<Srv> = answer.srv;
    if records.is_empty() {
        return Err(format!("{name}: no SRV records (nameserver {server})"));
    }
    records.sort_by(|a, b| a.priority.cmp(&b.priority).then(b.weight.cmp(&a.weight)));
    let mut admins = Vec::new();
    for record in records {
        let known: Vec<IpAddr> = answer
            .addresses
            .iter()
            .filter(|(owner, _)| owner.eq_ignore_ascii_case(&record.target))
            .map(|(_, ip)| *ip)
            .collect();
        let ips = if known.is_empty() {
            let mut found = query(&record.target, TYPE_A, server, timeout)?.addresses;
            if found.is_empty() {
                found = query(&record.target, TYPE_AAAA, server, timeout)?.addresses;
            }
            found.into_iter().map(|(_, ip)| ip).collect()
        } else {
            known
        };
        let ip = ips
            .first()
            .ok_or_else(|| format!("{name}: target {} has no address", record.target))?;
        admins.push(SocketAddr::new(*ip, record.port).to_string());
    }
    Ok(admins)
}

/// What an answer holds: SRV records and addresses by owner name.
#[derive(Debug, Default)]
struct Answer {
    srv: Vec<Srv>,
    addresses: Vec<(String, IpAddr)>,
}

fn query(name: &str, qtype: u16, server: SocketAddr, timeout: Duration) -> Result<Answer, String> {
    let id = (SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.subsec_nanos())
        & 0xffff) as u16;
    let message = encode_query(id, name, qtype)?;
    let bind: SocketAddr = if server.is_ipv4() {
        (Ipv4Addr::UNSPECIFIED, 0).into()
    } else {
        (Ipv6Addr::UNSPECIFIED, 0).into()
    };
    let fail = |what: &str, e: std::io::Error| format!("DNS {what} to {server}: {e}");
    let socket = UdpSocket::bind(bind).map_err(|e| fail("socket", e))?;
    socket.connect(server).map_err(|e| fail("connect", e))?;
    socket
        .set_read_timeout(Some(timeout))
        .map_err(|e| fail("socket", e))?;
    let mut buf = [0u8; 4096];
    for _attempt in 0..2 {
        socket.send(&message).map_err(|e| fail("send", e))?;
        loop {
            match socket.recv(&mut buf) {
                Ok(n) => match parse_answer(&buf[..n], id) {
                    Ok(Some(answer)) => return Ok(answer),
                    Ok(None) => continue, // another query's answer
                    Err(e) => return Err(format!("{name}: nameserver {server}: {e}")),
                },
                Err(e)
                    if matches!(
                        e.kind(),
                        std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                    ) =>
                {
                    break
                }
                Err(e) => return Err(fail("receive", e)),
            }
        }
    }
    Err(format!(
        "{name}: nameserver {server} did not answer within {timeout:?}"
    ))
}

fn encode_query(id: u16, name: &str, qtype: u16) -> Result<Vec<u8>, String> {
    let mut out = Vec::with_capacity(32 + name.len());
    out.extend_from_slice(&id.to_be_bytes());
    out.extend_from_slice(&[0x01, 0x00]); // recursion desired
    out.extend_from_slice(&[0, 1, 0, 0, 0, 0, 0, 0]); // one question
    for label in name.trim_end_matches('.').split('.') {
        if label.is_empty() || label.len() > 63 {
            return Err(format!("{name:?} is not a valid DNS name"));
        }
        out.push(label.len() as u8);
        out.extend_from_slice(label.as_bytes());
    }
    out.push(0);
    out.extend_from_slice(&qtype.to_be_bytes());
    out.extend_from_slice(&CLASS_IN.to_be_bytes());
    Ok(out)
}

/// `Ok(None)`: not the answer to query `id`.
fn parse_answer(msg: &[u8], id: u16) -> Result<Option<Answer>, String> {
    let short = || "answer cut short".to_string();
    let u16_at = |at: usize| -> Result<u16, String> {
        msg.get(at..at + 2)
            .map(|b| u16::from_be_bytes([b[0], b[1]]))
            .ok_or_else(short)
    };
    if u16_at(0)? != id {
        return Ok(None);
    }
    let flags = u16_at(2)?;
    if flags & 0x8000 == 0 {
        return Ok(None);
    }
    match flags & 0x000f {
        0 => {}
        3 => return Err("no such name (NXDOMAIN)".into()),
        2 => return Err("server failure (SERVFAIL)".into()),
        rcode => return Err(format!("error code {rcode}")),
    }
    let questions = u16_at(4)?;
    let records = usize::from(u16_at(6)?) + usize::from(u16_at(8)?) + usize::from(u16_at(10)?);
    let mut at = 12;
    for _ in 0..questions {
        at = read_name(msg, at)?.1 + 4;
    }
    let mut answer = Answer::default();
    for _ in 0..records {
        let (owner, next) = read_name(msg, at)?;
        let rtype = u16_at(next)?;
        let length = usize::from(u16_at(next + 8)?);
        let data = next + 10;
        let rdata = msg.get(data..data + length).ok_or_else(short)?;
        match (rtype, rdata.len()) {
            (TYPE_A, 4) => {
                let ip = Ipv4Addr::new(rdata[0], rdata[1], rdata[2], rdata[3]);
                answer.addresses.push((owner, ip.into()));
            }
            (TYPE_AAAA, 16) => {
                let mut octets = [0u8; 16];
                octets.copy_from_slice(rdata);
                answer
                    .addresses
                    .push((owner, Ipv6Addr::from(octets).into()));
            }
            (TYPE_SRV, 7..) => answer.srv.push(Srv {
                priority: u16_at(data)?,
                weight: u16_at(data + 2)?,
                port: u16_at(data + 4)?,
                target: read_name(msg, data + 6)?.0,
            }),
            _ => {}
        }
        at = data + length;
    }
    Ok(Some(answer))
}

/// The name at `at` (following compression pointers, at most 32) and the
/// offset just after it where it was written.
fn read_name(msg: &[u8], mut at: usize) -> Result<(String, usize), String> {
    let mut name = String::new();
    let mut end = None;
    for _ in 0..128 {
        let len = *msg.get(at).ok_or("name runs past the answer")?;
        match len {
            0 => {
                let name = if name.is_empty() { ".".into() } else { name };
                return Ok((name, end.unwrap_or(at + 1)));
            }
            l if l & 0xc0 == 0xc0 => {
                let low = *msg.get(at + 1).ok_or("name runs past the answer")?;
                end.get_or_insert(at + 2);
                at = usize::from(l & 0x3f) << 8 | usize::from(low);
            }
            l if l & 0xc0 == 0 => {
                let label = msg
                    .get(at + 1..at + 1 + usize::from(l))
                    .ok_or("name runs past the answer")?;
                if !name.is_empty() {
                    name.push('.');
                }
                name.push_str(&String::from_utf8_lossy(label));
                at += 1 + usize::from(l);
            }
            _ => return Err("bad label".into()),
        }
    }
    Err("name too long or compression loop".into())
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    /// An answer to `_admin._tcp.mesh.local SRV` with one SRV record whose
    /// target is compressed, and the target's A record.
    fn sample(id: u16) -> Vec<u8> {
        let mut msg = encode_query(id, "_admin._tcp.mesh.local", TYPE_SRV).unwrap();
        msg[2] = 0x81;
        msg[3] = 0x80;
        msg[7] = 1; // one answer
        msg[11] = 1; // one additional
                     // answer: name pointer to the question (offset 12)
        msg.extend_from_slice(&[0xc0, 12, 0, 33, 0, 1, 0, 0, 0, 60]);
        let target_at = msg.len() + 2 + 6;
        let mut rdata = vec![0, 10, 0, 5, 0x3a, 0x98]; // prio 10, weight 5, port 15000
        rdata.extend_from_slice(&[2, b'a', b'1']);
        rdata.extend_from_slice(&[0xc0, 24]); // "mesh.local" of the question
        msg.extend_from_slice(&(rdata.len() as u16).to_be_bytes());
        msg.extend_from_slice(&rdata);
        // additional: A for the target
        msg.extend_from_slice(&[0xc0, target_at as u8, 0, 1, 0, 1, 0, 0, 0, 60, 0, 4]);
        msg.extend_from_slice(&[127, 0, 0, 7]);
        msg
    }

    #[test]
    fn parses_srv_answers_with_compressed_names() {
        let answer = parse_answer(&sample(7), 7).unwrap().unwrap();
        assert_eq!(
            answer.srv,
            [Srv {
                priority: 10,
                weight: 5,
                port: 15000,
                target: "a1.mesh.local".into()
            }]
        );
        assert_eq!(
            answer.addresses,
            [("a1.mesh.local".to_string(), IpAddr::from([127, 0, 0, 7]))]
        );
        assert!(parse_answer(&sample(7), 8).unwrap().is_none(), "other id");
    }

    #[test]
    fn garbage_never_panics() {
        let good = sample(1);
        for cut in 0..good.len() {
            let _ = parse_answer(&good[..cut], 1);
        }
        let mut looped = good.clone();
        let len = looped.len();
        looped[len - 16] = 0xc0;
        looped[len - 15] = (len - 16) as u8;
        let _ = parse_answer(&looped, 1);
        assert!(encode_query(1, "bad..name", TYPE_A).is_err());
    }

    #[test]
    fn nameserver_takes_ip_or_ip_port() {
        assert_eq!(
            nameserver(Some("127.0.0.1:5353")).unwrap(),
            "127.0.0.1:5353".parse().unwrap()
        );
        assert_eq!(
            nameserver(Some("10.0.0.1")).unwrap(),
            "10.0.0.1:53".parse().unwrap()
        );
        assert!(nameserver(Some("nope")).is_err());
    }
}

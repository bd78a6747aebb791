//! `Accept-Encoding` negotiation (RFC 9110 §12.5.3): the client's q-values
//! decide, the route's order of preference breaks ties.
//!
//! `q=0` refuses a coding, `*` stands for every coding not named, and an
//! `identity` the client prefers to the best coding wins. An entry with a
//! malformed q-value is ignored. No acceptable coding: identity.

use http::header::{HeaderMap, ACCEPT_ENCODING};
use mesh_api::config::Encoding;

/// A q-value in thousandths (`q=0.5` is 500).
type Quality = u16;

/// What a request's `Accept-Encoding` says about each coding.
#[derive(Debug, Default)]
struct Accepted {
    /// Explicit q-values of `br`, `zstd`, `gzip` (index: [`slot`]).
    named: [Option<Quality>; 3],
    /// `*`.
    any: Option<Quality>,
    /// `identity`.
    identity: Option<Quality>,
}

/// Where an encoding's q-value is kept in [`Accepted::named`].
fn slot(encoding: Encoding) -> usize {
    match encoding {
        Encoding::Br => 0,
        Encoding::Zstd => 1,
        Encoding::Gzip => 2,
    }
}

/// The coding a response to these request headers gets: one of `offered`
/// (in the route's order of preference), or `None` for identity.
pub(crate) fn choose(headers: &HeaderMap, offered: &[Encoding]) -> Option<Encoding> {
    let accepted = parse(headers)?;
    let mut best: Option<(Encoding, Quality)> = None;
    for &encoding in offered {
        let quality = accepted.named[slot(encoding)].or(accepted.any).unwrap_or(0);
        // Strictly better only: an equal q keeps the earlier, preferred one.
        if quality > 0 && best.is_none_or(|(_, q)| quality > q) {
            best = Some((encoding, quality));
        }
    }
    let (encoding, quality) = best?;
    match accepted.identity {
        Some(identity) if identity > quality => None,
        _ => Some(encoding),
    }
}

/// Every `Accept-Encoding` field of the request; `None` without one.
fn parse(headers: &HeaderMap) -> Option<Accepted> {
    let mut fields = headers.get_all(ACCEPT_ENCODING).iter().peekable();
    fields.peek()?;
    let mut accepted = Accepted::default();
    for field in fields {
        let Ok(text) = field.to_str() else {
            continue;
        };
        for entry in text.split(',') {
            let mut parts = entry.split(';');
            let coding = parts.next().unwrap_or_default().trim();
            let Some(quality) = quality(parts) else {
                continue;
            };
            let target = if coding == "*" {
                &mut accepted.any
            } else if coding.eq_ignore_ascii_case("identity") {
                &mut accepted.identity
            } else if let Some(encoding) = encoding_named(coding) {
                &mut accepted.named[slot(encoding)]
            } else {
                continue;
            };
            *target = Some(quality);
        }
    }
    Some(accepted)
}

/// The encoding a coding name stands for (`x-gzip` is gzip).
pub(super) fn encoding_named(coding: &str) -> Option<Encoding> {
    [
        ("gzip", Encoding::Gzip),
        ("x-gzip", Encoding::Gzip),
        ("br", Encoding::Br),
        ("zstd", Encoding::Zstd),
    ]
    .into_iter()
    .find(|(name, _)| coding.eq_ignore_ascii_case(name))
    .map(|(_, encoding)| encoding)
}

/// The `q` parameter among an entry's parameters (1 when absent); `None`
/// when it is malformed.
fn quality<'a>(params: impl Iterator<Item = &'a str>) -> Option<Quality> {
    for param in params {
        let Some((name, value)) = param.split_once('=') else {
            continue;
        };
        if name.trim().eq_ignore_ascii_case("q") {
            return qvalue(value.trim());
        }
    }
    Some(1000)
}

/// `0`, `0.5`, `1.000`: at most three decimals, at most 1.
fn qvalue(text: &str) -> Option<Quality> {
    let (whole, fraction) = text.split_once('.').unwrap_or((text, ""));
    if fraction.len() > 3 || !fraction.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let thousandths = fraction
        .bytes()
        .chain(std::iter::repeat(b'0'))
        .take(3)
        .fold(0u16, |acc, b| acc * 10 + u16::from(b - b'0'));
    match whole {
        "0" => Some(thousandths),
        "1" if thousandths == 0 => Some(1000),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use http::HeaderValue;

    use super::*;

    const ALL: [Encoding; 3] = [Encoding::Br, Encoding::Zstd, Encoding::Gzip];

    fn pick(accept: &[&'static str], offered: &[Encoding]) -> Option<&'static str> {
        let mut headers = HeaderMap::new();
        for value in accept {
            headers.append(ACCEPT_ENCODING, HeaderValue::from_static(value));
        }
        choose(&headers, offered).map(Encoding::as_str)
    }

    #[test]
    fn ties_go_to_the_route_preference() {
        assert_eq!(pick(&["gzip, deflate, br, zstd"], &ALL), Some("br"));
        assert_eq!(
            pick(
                &["gzip, deflate, br, zstd"],
                &[Encoding::Gzip, Encoding::Zstd]
            ),
            Some("gzip")
        );
        assert_eq!(pick(&["gzip", "zstd"], &ALL), Some("zstd"));
        assert_eq!(pick(&["x-gzip"], &ALL), Some("gzip"));
        assert_eq!(pick(&["GZip"], &ALL), Some("gzip"));
    }

    #[test]
    fn q_values_decide() {
        assert_eq!(pick(&["gzip;q=0, br"], &ALL), Some("br"));
        assert_eq!(pick(&["br;q=0.5, gzip;q=0.9"], &ALL), Some("gzip"));
        assert_eq!(pick(&["br;q=0.5, gzip ; Q=0.501"], &ALL), Some("gzip"));
        assert_eq!(pick(&["br;q=1.0, gzip;q=1"], &ALL), Some("br"));
        assert_eq!(pick(&["gzip;q=0"], &ALL), None);
        assert_eq!(pick(&["br;q=0, zstd;q=0, gzip;q=0"], &ALL), None);
    }

    #[test]
    fn star_covers_the_codings_not_named() {
        assert_eq!(pick(&["*"], &ALL), Some("br"));
        assert_eq!(pick(&["br;q=0, *"], &ALL), Some("zstd"));
        assert_eq!(pick(&["*;q=0.1, gzip"], &ALL), Some("gzip"));
        assert_eq!(pick(&["*;q=0"], &ALL), None);
        assert_eq!(pick(&["*;q=0, zstd"], &ALL), Some("zstd"));
    }

    #[test]
    fn identity_and_nothing_acceptable() {
        assert_eq!(pick(&[], &ALL), None);
        assert_eq!(pick(&[""], &ALL), None);
        assert_eq!(pick(&["identity"], &ALL), None);
        assert_eq!(pick(&["deflate, compress"], &ALL), None);
        assert_eq!(pick(&["gzip;q=0.5, identity"], &ALL), None);
        assert_eq!(pick(&["gzip, identity;q=0.5"], &ALL), Some("gzip"));
        assert_eq!(pick(&["gzip, identity"], &ALL), Some("gzip"));
        assert_eq!(pick(&["zstd"], &[Encoding::Gzip]), None);
    }

    #[test]
    fn malformed_q_values_drop_their_entry() {
        for bad in ["2", "1.5", "0.1234", "-1", "x", "", ".5"] {
            let header: &'static str =
                Box::leak(format!("br;q={bad}, gzip;q=0.1").into_boxed_str());
            assert_eq!(pick(&[header], &ALL), Some("gzip"), "q={bad}");
        }
        assert_eq!(qvalue("0.5"), Some(500));
        assert_eq!(qvalue("0.05"), Some(50));
        assert_eq!(qvalue("1."), Some(1000));
        assert_eq!(qvalue("0"), Some(0));
    }
}

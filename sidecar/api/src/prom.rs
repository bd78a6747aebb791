//! The Prometheus / OpenMetrics text exposition, read back: what
//! `/metrics` serves, parsed into samples for golden signals
//! ([`crate::golden`]) in the proxy's dashboard and in `mesh-ctl`.
//! Reads: metric names, labels (with `\\`, `\"` and `\n` escapes), values
//! (`+Inf`, `-Inf`, `NaN` included), optional timestamps and exemplars,
//! and `# TYPE` lines; `# HELP`, `# UNIT`, `# EOF` and other comments are
//! skipped. Writes: nothing.
//! Errors: [`ParseError`], naming the line and what is wrong with it.

use std::collections::HashMap;

/// One sample: `name{labels} value`.
#[derive(Debug, Clone, PartialEq)]
pub struct Sample {
    pub name: String,
    /// In the order written.
    pub labels: Labels,
    pub value: f64,
}

impl Sample {
    /// The value of label `name`, if the sample has it.
    pub fn label(&self, name: &str) -> Option<&str> {
        self.labels
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }
}

/// A parsed exposition: every sample, and the declared type of each family.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Exposition {
    /// Family name → `counter`, `gauge`, `histogram`, `summary`, `unknown`...
    pub types: HashMap<String, String>,
    pub samples: Vec<Sample>,
}

impl Exposition {
    /// The samples named `name` exactly.
    pub fn named<'a>(&'a self, name: &'a str) -> impl Iterator<Item = &'a Sample> + 'a {
        self.samples.iter().filter(move |s| s.name == name)
    }
}

/// A line that is not valid exposition text.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("metrics line {line}: {message}")]
pub struct ParseError {
    /// 1-based.
    pub line: usize,
    pub message: String,
}

/// Parses a whole exposition.
pub fn parse(text: &str) -> Result<Exposition, ParseError> {
    let mut out = Exposition::default();
    for (index, line) in text.lines().enumerate() {
        let fail = |message: String| ParseError {
            line: index + 1,
            message,
        };
        let line = line.trim();
        if line.is_empty() {
            continue;
        }
        if let Some(comment) = line.strip_prefix('#') {
            let mut words = comment.split_whitespace();
            if words.next() == Some("TYPE") {
                match (words.next(), words.next()) {
                    (Some(name), Some(kind)) => {
                        out.types.insert(name.to_string(), kind.to_string());
                    }
                    _ => return Err(fail(format!("bad TYPE line {line:?}"))),
                }
            }
            continue;
        }
        out.samples.push(parse_sample(line).map_err(fail)?);
    }
    Ok(out)
}

/// `name{labels} value [timestamp] [# exemplar]`.
fn parse_sample(line: &str) -> Result<Sample, String> {
    let name_end = line
        .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_' || c == ':'))
        .unwrap_or(line.len());
    let name = &line[..name_end];
    if name.is_empty() || name.starts_with(|c: char| c.is_ascii_digit()) {
        return Err(format!("no metric name in {line:?}"));
    }
    let mut rest = &line[name_end..];
    let mut labels = Vec::new();
    if let Some(after_brace) = rest.strip_prefix('{') {
        let (parsed, after) = parse_labels(after_brace)?;
        labels = parsed;
        rest = after;
    }
    if !rest.starts_with([' ', '\t']) {
        return Err(format!("no value after {name:?}"));
    }
    // An exemplar (` # {trace_id="..."} 1.0`) follows the value and timestamp.
    let rest = rest.split(" # ").next().unwrap_or(rest);
    let mut fields = rest.split_whitespace();
    let value = fields
        .next()
        .ok_or_else(|| format!("no value for {name:?}"))?;
    let value = parse_value(value).ok_or_else(|| format!("bad value {value:?} for {name:?}"))?;
    if let Some(timestamp) = fields.next() {
        if timestamp.parse::<f64>().is_err() {
            return Err(format!("bad timestamp {timestamp:?} for {name:?}"));
        }
    }
    if fields.next().is_some() {
        return Err(format!("extra text after the value of {name:?}"));
    }
    Ok(Sample {
        name: name.to_string(),
        labels,
        value,
    })
}

/// Label names and values, in the order written.
type Labels = Vec<(String, String)>;

/// The labels after `{`, up to and including `}`; returns them and the text after.
fn parse_labels(mut text: &str) -> Result<(Labels, &str), String> {
    let mut labels = Vec::new();
    loop {
        text = text.trim_start();
        if let Some(after) = text.strip_prefix('}') {
            return Ok((labels, after));
        }
        let name_end = text
            .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
            .ok_or("unterminated labels")?;
        let name = &text[..name_end];
        if name.is_empty() {
            return Err(format!("bad label name at {text:?}"));
        }
        text = text[name_end..].trim_start();
        text = text
            .strip_prefix('=')
            .ok_or_else(|| format!("no '=' after label {name:?}"))?
            .trim_start();
        text = text
            .strip_prefix('"')
            .ok_or_else(|| format!("label {name:?}: value not quoted"))?;
        let mut value = String::new();
        let mut chars = text.char_indices();
        let end = loop {
            match chars.next() {
                None => return Err(format!("label {name:?}: unterminated value")),
                Some((i, '"')) => break i,
                Some((_, '\\')) => match chars.next() {
                    Some((_, 'n')) => value.push('\n'),
                    Some((_, c @ ('\\' | '"'))) => value.push(c),
                    Some((_, c)) => {
                        value.push('\\');
                        value.push(c);
                    }
                    None => return Err(format!("label {name:?}: unterminated value")),
                },
                Some((_, c)) => value.push(c),
            }
        };
        labels.push((name.to_string(), value));
        text = text[end + 1..].trim_start();
        if let Some(after) = text.strip_prefix(',') {
            text = after;
        } else if !text.starts_with('}') {
            return Err(format!("expected ',' or '}}' after label {name:?}"));
        }
    }
}

fn parse_value(text: &str) -> Option<f64> {
    match text {
        "+Inf" | "Inf" | "inf" | "+inf" => Some(f64::INFINITY),
        "-Inf" | "-inf" => Some(f64::NEG_INFINITY),
        "NaN" | "nan" => Some(f64::NAN),
        _ => text.parse().ok(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_openmetrics_as_the_proxy_writes_it() {
        let text = "# HELP mesh_requests HTTP requests.\n\
# TYPE mesh_requests counter\n\
mesh_requests_total{direction=\"outbound\",upstream=\"orders\",status=\"200\"} 7\n\
# TYPE mesh_request_duration_seconds histogram\n\
# UNIT mesh_request_duration_seconds seconds\n\
mesh_request_duration_seconds_sum{direction=\"outbound\",upstream=\"orders\"} 0.25\n\
mesh_request_duration_seconds_bucket{direction=\"outbound\",upstream=\"orders\",le=\"0.1\"} 3\n\
mesh_request_duration_seconds_bucket{direction=\"outbound\",upstream=\"orders\",le=\"+Inf\"} 7\n\
mesh_identity_cert_expiry_seconds -12\n\
# EOF\n";
        let parsed = parse(text).expect("valid");
        assert_eq!(parsed.types["mesh_requests"], "counter");
        assert_eq!(parsed.types["mesh_request_duration_seconds"], "histogram");
        assert_eq!(parsed.samples.len(), 5);
        let first = &parsed.samples[0];
        assert_eq!(first.name, "mesh_requests_total");
        assert_eq!(first.label("upstream"), Some("orders"));
        assert_eq!(first.label("route"), None);
        assert_eq!(first.value, 7.0);
        assert_eq!(parsed.samples[3].value, 7.0);
        assert_eq!(parsed.samples[3].label("le"), Some("+Inf"));
        assert_eq!(parsed.samples[4].value, -12.0);
        assert!(parsed.samples[4].labels.is_empty());
        assert_eq!(parsed.named("mesh_requests_total").count(), 1);
    }

    #[test]
    fn reads_escapes_timestamps_exemplars_and_odd_spacing() {
        let text = "a{x=\"q\\\"uo\\\\te\\nnl\" , y = \"b,c}\",} 1.5e3 1700000000\n\
b_bucket{le=\"0.5\"} 2 # {trace_id=\"abc\"} 0.3 1700000000.1\n\
c NaN\n\
d{} +Inf\n";
        let parsed = parse(text).expect("valid");
        assert_eq!(
            parsed.samples[0].labels,
            [
                ("x".to_string(), "q\"uo\\te\nnl".to_string()),
                ("y".to_string(), "b,c}".to_string())
            ]
        );
        assert_eq!(parsed.samples[0].value, 1500.0);
        assert_eq!(parsed.samples[1].value, 2.0);
        assert!(parsed.samples[2].value.is_nan());
        assert_eq!(parsed.samples[3].value, f64::INFINITY);
    }

    #[test]
    fn names_the_bad_line() {
        for bad in [
            "x{a=\"1\"",
            "x{a=1} 2",
            "x{a=\"1\" b=\"2\"} 3",
            "x",
            "x{} many",
            "{a=\"1\"} 3",
            "x 1 2 3",
            "# TYPE x",
            "x{a=\"unterminated} 1",
        ] {
            let err = parse(&format!("ok 1\n{bad}\n")).expect_err(bad);
            assert_eq!(err.line, 2, "{bad}: {err}");
        }
    }
}

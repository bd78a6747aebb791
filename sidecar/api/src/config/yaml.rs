//! YAML text → [`Config`], listing every structural error with its path and line.
//!
//! serde stops at the first error, so the loader deserializes, records the
//! error, removes the offending node and tries again until the document
//! deserializes: one run reports every unknown field and every bad value.
//! A [`LineIndex`] maps each YAML path (`outbound.upstreams.orders.listen`,
//! `a.b[0]`) to the line it is written on, for these errors and for the
//! proxy's own validation errors.

use std::collections::HashMap;
use std::fmt;

use serde_norway::Value;
use serde_path_to_error::Segment;
use yaml_rust2::parser::{Event, MarkedEventReceiver, Parser};
use yaml_rust2::scanner::Marker;

use super::Config;

/// One thing wrong with a config file.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub struct ConfigError {
    /// YAML path, e.g. `outbound.upstreams.orders.listen`; empty for the whole file.
    pub path: String,
    /// 1-based line, where known.
    pub line: Option<usize>,
    /// What is wrong.
    pub message: String,
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match (self.path.is_empty(), self.line) {
            (true, Some(line)) => write!(f, "line {line}: {}", self.message),
            (true, None) => f.write_str(&self.message),
            (false, Some(line)) => write!(f, "{} (line {line}): {}", self.path, self.message),
            (false, None) => write!(f, "{}: {}", self.path, self.message),
        }
    }
}

/// Reads a config file's text. On success also returns the [`LineIndex`] so
/// later validation can point at lines too.
pub fn load(text: &str) -> Result<(Config, LineIndex), Vec<ConfigError>> {
    let index = LineIndex::build(text);
    let mut value: Value = serde_norway::from_str(text).map_err(|err| {
        vec![ConfigError {
            path: String::new(),
            line: err.location().map(|l| l.line()),
            message: format!("not valid YAML: {err}"),
        }]
    })?;
    if value.is_null() {
        return Err(vec![ConfigError {
            path: String::new(),
            line: None,
            message: "the file is empty".into(),
        }]);
    }
    let mut errors: Vec<ConfigError> = Vec::new();
    // Every round removes one node, so the loop ends; the bound is a backstop.
    for _ in 0..256 {
        let err = match serde_path_to_error::deserialize::<_, Config>(value.clone()) {
            Ok(config) if errors.is_empty() => return Ok((config, index)),
            Ok(_) => return Err(errors),
            Err(err) => err,
        };
        let segments: Vec<Segment> = err.path().iter().cloned().collect();
        let message = err.into_inner().to_string();
        let path = path_string(&segments);
        // An error on an ancestor of a node already reported follows from
        // removing that node ("missing field"): not a second mistake.
        let consequence = errors
            .iter()
            .any(|e| e.path.starts_with(&path) && e.path.len() > path.len());
        if !consequence {
            errors.push(ConfigError {
                line: index.line(&path),
                path,
                message,
            });
        }
        if segments.is_empty() || !remove(&mut value, &segments) {
            break;
        }
    }
    Err(errors)
}

/// Removes the node at `segments`; false when there is no such node.
fn remove(root: &mut Value, segments: &[Segment]) -> bool {
    let Some((last, parents)) = segments.split_last() else {
        return false;
    };
    let mut node = root;
    for segment in parents {
        node = match (segment, node) {
            (Segment::Map { key } | Segment::Enum { variant: key }, Value::Mapping(map)) => {
                match map.get_mut(key.as_str()) {
                    Some(child) => child,
                    None => return false,
                }
            }
            (Segment::Seq { index }, Value::Sequence(seq)) => match seq.get_mut(*index) {
                Some(child) => child,
                None => return false,
            },
            _ => return false,
        };
    }
    match (last, node) {
        (Segment::Map { key } | Segment::Enum { variant: key }, Value::Mapping(map)) => {
            map.remove(key.as_str()).is_some()
        }
        (Segment::Seq { index }, Value::Sequence(seq)) if *index < seq.len() => {
            seq.remove(*index);
            true
        }
        _ => false,
    }
}

fn path_string(segments: &[Segment]) -> String {
    let mut out = String::new();
    for segment in segments {
        match segment {
            Segment::Seq { index } => out.push_str(&format!("[{index}]")),
            Segment::Map { key } | Segment::Enum { variant: key } => {
                if !out.is_empty() {
                    out.push('.');
                }
                out.push_str(key);
            }
            Segment::Unknown => {
                if !out.is_empty() {
                    out.push('.');
                }
                out.push('?');
            }
        }
    }
    out
}

/// YAML path → the line it is written on.
#[derive(Debug, Clone, Default)]
pub struct LineIndex {
    lines: HashMap<String, usize>,
}

impl LineIndex {
    /// Indexes a document; a document that does not parse gives an empty index.
    pub fn build(text: &str) -> Self {
        let mut walker = Walker::default();
        let mut parser = Parser::new_from_str(text);
        // A syntax error leaves a partial index; the serde error reports it.
        let _ = parser.load(&mut walker, false);
        LineIndex {
            lines: walker.lines,
        }
    }

    /// The line of `path`, or of its nearest written ancestor.
    pub fn line(&self, path: &str) -> Option<usize> {
        let mut path = path;
        loop {
            if let Some(line) = self.lines.get(path) {
                return Some(*line);
            }
            let cut = path.rfind(['.', '['])?;
            path = &path[..cut];
        }
    }
}

enum Frame {
    Map { key: Option<String> },
    Seq { index: usize },
}

#[derive(Default)]
struct Walker {
    stack: Vec<Frame>,
    lines: HashMap<String, usize>,
}

impl Walker {
    fn path(&self) -> String {
        let mut out = String::new();
        for frame in &self.stack {
            match frame {
                Frame::Map { key: Some(key) } => {
                    if !out.is_empty() {
                        out.push('.');
                    }
                    out.push_str(key);
                }
                Frame::Seq { index } => out.push_str(&format!("[{index}]")),
                Frame::Map { key: None } => {}
            }
        }
        out
    }

    /// A value begins at `line` in the current container.
    fn value_starts(&mut self, line: usize) {
        if let Some(Frame::Seq { .. }) = self.stack.last() {
            let path = self.path();
            self.lines.entry(path).or_insert(line);
        }
    }

    /// A value ended: the container moves on to the next key or item.
    fn value_ends(&mut self) {
        match self.stack.last_mut() {
            Some(Frame::Map { key }) => *key = None,
            Some(Frame::Seq { index }) => *index += 1,
            None => {}
        }
    }
}

impl MarkedEventReceiver for Walker {
    fn on_event(&mut self, event: Event, mark: Marker) {
        let line = mark.line();
        match event {
            Event::Scalar(text, ..) => {
                if let Some(Frame::Map { key: key @ None }) = self.stack.last_mut() {
                    *key = Some(text);
                    let path = self.path();
                    self.lines.entry(path).or_insert(line);
                } else {
                    self.value_starts(line);
                    self.value_ends();
                }
            }
            Event::Alias(_) => {
                self.value_starts(line);
                self.value_ends();
            }
            Event::MappingStart(..) => {
                self.value_starts(line);
                self.stack.push(Frame::Map { key: None });
            }
            Event::SequenceStart(..) => {
                self.value_starts(line);
                self.stack.push(Frame::Seq { index: 0 });
            }
            Event::MappingEnd | Event::SequenceEnd => {
                self.stack.pop();
                self.value_ends();
            }
            _ => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lists_every_structural_error_with_path_and_line() {
        let text = "service: web\nadmin:\n  listen: 127.0.0.1:0\n  colour: blue\ninbound:\n  app: 127.0.0.1:8080\n  protocol: smtp\noutbound:\n  upstreams:\n    orders:\n      discovery:\n        endpoints: [127.0.0.1:1]\n      retries: 3\n";
        let errors = load(text).expect_err("three mistakes");
        let rendered: Vec<String> = errors.iter().map(ToString::to_string).collect();
        assert_eq!(errors.len(), 3, "{rendered:#?}");
        assert_eq!(errors[0].path, "admin.colour");
        assert_eq!(errors[0].line, Some(4));
        assert!(
            errors[0].message.starts_with("unknown field `colour`"),
            "{rendered:?}"
        );
        assert_eq!(errors[1].path, "inbound.protocol");
        assert_eq!(errors[1].line, Some(7));
        assert_eq!(errors[2].path, "outbound.upstreams.orders.retries");
        assert_eq!(errors[2].line, Some(13));
    }

    #[test]
    fn missing_required_field_is_named() {
        let errors = load("inbound:\n  app: 127.0.0.1:1\n").expect_err("no service");
        assert_eq!(errors.len(), 1);
        assert!(errors[0].message.contains("service"), "{:?}", errors[0]);
    }

    #[test]
    fn syntax_error_has_a_line() {
        let errors = load("service: web\nadmin: [\n").expect_err("bad yaml");
        assert!(errors[0].line.is_some(), "{:?}", errors[0]);
    }

    #[test]
    fn index_knows_sequence_items() {
        let index = LineIndex::build("a:\n  b:\n    - x\n    - y: 1\n      z: 2\n");
        assert_eq!(index.line("a.b[1].z"), Some(5));
        assert_eq!(index.line("a.b[0]"), Some(3));
        assert_eq!(index.line("a.b[1].nope"), Some(4));
    }

    #[test]
    fn omitted_sections_get_the_same_defaults_as_empty_ones() {
        let (omitted, _) = load("service: web\n").expect("valid");
        let (empty, _) =
            load("service: web\nadmin: {}\nlog: {}\nreload: {}\ndrain: {}\noutbound: {}\n")
                .expect("valid");
        assert_eq!(omitted, empty);
    }

    #[test]
    fn balance_is_a_name_or_a_ring_hash_map() {
        let up = |balance: &str| {
            format!("service: web\noutbound:\n  upstreams:\n    a:\n      discovery: {{ endpoints: [127.0.0.1:1] }}\n      balance: {balance}\n")
        };
        let (config, _) = load(&up("round_robin")).expect("a name");
        assert_eq!(
            config.outbound.upstreams["a"].balance,
            crate::config::Balance::RoundRobin
        );
        let (config, _) = load(&up("{ ring_hash: { key: source_ip } }")).expect("a map");
        assert!(matches!(
            config.outbound.upstreams["a"].balance,
            crate::config::Balance::RingHash(_)
        ));
        let errors = load(&up("fastest")).expect_err("unknown policy");
        assert_eq!(errors[0].path, "outbound.upstreams.a.balance");
    }

    #[test]
    fn a_good_file_loads() {
        let (config, _) = load("service: web\ninbound: { app: 127.0.0.1:8080 }\n").expect("valid");
        assert_eq!(config.service, "web");
        assert_eq!(
            config.inbound.map(|i| i.listen),
            Some("0.0.0.0:15006".into())
        );
    }
}

//! `google.api.http` rules compiled into bindings: an HTTP method and a path
//! template (`/v1/{name=shelves/*/books/*}:publish`) mapped onto a gRPC
//! method, with where the body goes (`*`, one field, nowhere) and which
//! response field is the body. Methods without a rule get
//! `POST /package.Service/Method` with the whole message as the body.
//!
//! Decisions: templates with a verb are tried first, then those with more
//! literal segments, so a specific template wins over a general one;
//! single-segment variables are fully percent-decoded, multi-segment ones
//! (`{path=**}`, `{name=shelves/*/books/*}`) keep `%2F` encoded.

use http::Method;
use prost_reflect::{
    DescriptorPool, DynamicMessage, FieldDescriptor, Kind, MessageDescriptor, MethodDescriptor,
    Value,
};

/// One segment of a template, flattened (variables mark ranges of these).
#[derive(Debug, Clone, PartialEq, Eq)]
enum Segment {
    /// Matches this text exactly.
    Literal(String),
    /// `*`: one segment.
    Single,
    /// `**`: zero or more segments.
    Multi,
}

/// `{field.path=segments}`: the segments `[start, end)` fill `field`.
#[derive(Debug, Clone)]
struct Variable {
    field: Vec<String>,
    start: usize,
    end: usize,
}

/// A compiled path template.
#[derive(Debug, Clone)]
pub struct PathTemplate {
    segments: Vec<Segment>,
    variables: Vec<Variable>,
    verb: Option<String>,
}

/// A captured path variable: the field path and its decoded value.
pub type Capture = (Vec<String>, String);

impl PathTemplate {
    /// Parses `/seg/{var=a/*}/x:verb`.
    pub fn parse(text: &str) -> Result<PathTemplate, String> {
        let rest = text
            .strip_prefix('/')
            .ok_or_else(|| format!("path template {text:?} must start with '/'"))?;
        let (body, verb) = split_verb(rest);
        let mut template = PathTemplate {
            segments: Vec::new(),
            variables: Vec::new(),
            verb: verb.map(str::to_string),
        };
        for token in split_top_level(body).map_err(|e| format!("{text:?}: {e}"))? {
            if let Some(inner) = token.strip_prefix('{') {
                let inner = inner
                    .strip_suffix('}')
                    .ok_or_else(|| format!("{text:?}: unclosed variable"))?;
                let (field, segs) = inner.split_once('=').unwrap_or((inner, "*"));
                if field.is_empty() {
                    return Err(format!("{text:?}: empty variable name"));
                }
                let start = template.segments.len();
                for seg in segs.split('/') {
                    template.segments.push(segment(seg, text)?);
                }
                template.variables.push(Variable {
                    field: field.split('.').map(str::to_string).collect(),
                    start,
                    end: template.segments.len(),
                });
            } else {
                template.segments.push(segment(token, text)?);
            }
        }
        // Each `**` multiplies the ways a path can split: with two or more,
        // matching a peer's path backtracks exponentially (found by fuzzing).
        let segments = &template.segments;
        let doubles = segments.iter().filter(|s| **s == Segment::Multi).count();
        if doubles > 1 {
            return Err(format!("{text:?}: at most one `**` per template"));
        }
        Ok(template)
    }

    /// The field paths the template binds.
    pub fn fields(&self) -> impl Iterator<Item = &[String]> {
        self.variables.iter().map(|v| v.field.as_slice())
    }

    /// Matches a raw (percent-encoded) request path; the captures on success.
    pub fn matches(&self, path: &str) -> Option<Vec<Capture>> {
        let path = path.strip_prefix('/')?;
        let path = match &self.verb {
            Some(verb) => path.strip_suffix(verb.as_str())?.strip_suffix(':')?,
            None => path,
        };
        let parts: Vec<&str> = if path.is_empty() {
            Vec::new()
        } else {
            path.split('/').collect()
        };
        let mut bounds = vec![(0, 0); self.segments.len()];
        if !match_from(&self.segments, 0, &parts, 0, &mut bounds) {
            return None;
        }
        let mut captures = Vec::with_capacity(self.variables.len());
        for var in &self.variables {
            let from = bounds.get(var.start).map_or(parts.len(), |b| b.0);
            let to = var
                .end
                .checked_sub(1)
                .and_then(|last| bounds.get(last))
                .map_or(from, |b| b.1);
            let raw = parts.get(from..to).unwrap_or_default();
            let multi = var.end - var.start > 1
                || self.segments[var.start..var.end].contains(&Segment::Multi);
            let value = if multi {
                raw.iter()
                    .map(|part| percent_decode(part, true))
                    .collect::<Option<Vec<_>>>()?
                    .join("/")
            } else {
                percent_decode(raw.first().copied().unwrap_or_default(), false)?
            };
            captures.push((var.field.clone(), value));
        }
        Some(captures)
    }

    /// The path for field values (the inverse of [`Self::matches`]):
    /// single-segment variables fully percent-encoded, multi-segment ones
    /// with `/` kept. `Err` names a variable without a value (or a value
    /// that does not fit its segments).
    pub fn expand(&self, value: impl Fn(&[String]) -> Option<String>) -> Result<String, String> {
        let mut out = String::new();
        let mut at = 0;
        while at < self.segments.len() {
            out.push('/');
            if let Some(var) = self.variables.iter().find(|v| v.start == at) {
                let name = var.field.join(".");
                let text = value(&var.field)
                    .filter(|text| !text.is_empty())
                    .ok_or_else(|| format!("path variable `{name}` is empty"))?;
                let multi = var.end - var.start > 1
                    || self.segments[var.start..var.end].contains(&Segment::Multi);
                let encoded = percent_encode(&text, multi);
                let segments = &self.segments[var.start..var.end];
                let parts: Vec<&str> = encoded.split('/').collect();
                let mut bounds = vec![(0, 0); segments.len()];
                if multi && !match_from(segments, 0, &parts, 0, &mut bounds) {
                    return Err(format!(
                        "`{name}` = {text:?} does not fit the path template"
                    ));
                }
                out.push_str(&encoded);
                at = var.end;
                continue;
            }
            match &self.segments[at] {
                Segment::Literal(text) => out.push_str(text),
                _ => return Err("the path template has a wildcard outside a variable".into()),
            }
            at += 1;
        }
        if self.segments.is_empty() {
            out.push('/');
        }
        if let Some(verb) = &self.verb {
            out.push(':');
            out.push_str(verb);
        }
        Ok(out)
    }

    /// How specific the template is: verb first, then literal count.
    fn rank(&self) -> (bool, usize) {
        let literals = self
            .segments
            .iter()
            .filter(|s| matches!(s, Segment::Literal(_)))
            .count();
        (self.verb.is_some(), literals)
    }
}

/// Splits `a/b:verb` into the segments and the verb (a `:` after the last
/// `/` and outside braces).
fn split_verb(rest: &str) -> (&str, Option<&str>) {
    let mut depth = 0usize;
    let mut verb_at = None;
    for (i, c) in rest.char_indices() {
        match c {
            '{' => depth += 1,
            '}' => depth = depth.saturating_sub(1),
            '/' if depth == 0 => verb_at = None,
            ':' if depth == 0 => verb_at = Some(i),
            _ => {}
        }
    }
    match verb_at {
        Some(i) => (&rest[..i], Some(&rest[i + 1..])),
        None => (rest, None),
    }
}

/// Splits on `/` outside braces.
fn split_top_level(body: &str) -> Result<Vec<&str>, &'static str> {
    let mut tokens = Vec::new();
    let mut depth = 0usize;
    let mut start = 0;
    for (i, c) in body.char_indices() {
        match c {
            '{' if depth > 0 => return Err("nested variables"),
            '{' => depth = 1,
            '}' => depth = 0,
            '/' if depth == 0 => {
                tokens.push(&body[start..i]);
                start = i + 1;
            }
            _ => {}
        }
    }
    if depth > 0 {
        return Err("unclosed variable");
    }
    tokens.push(&body[start..]);
    Ok(tokens)
}

fn segment(text: &str, template: &str) -> Result<Segment, String> {
    match text {
        "" => Err(format!("{template:?}: empty segment")),
        "*" => Ok(Segment::Single),
        "**" => Ok(Segment::Multi),
        _ if text.contains(['{', '}', '*', '=']) => {
            Err(format!("{template:?}: invalid segment {text:?}"))
        }
        _ => Ok(Segment::Literal(text.to_string())),
    }
}

/// Backtracking match of `segments[ti..]` against `parts[pi..]`, recording
/// each template segment's `[from, to)` range of parts.
fn match_from(
    segments: &[Segment],
    ti: usize,
    parts: &[&str],
    pi: usize,
    bounds: &mut [(usize, usize)],
) -> bool {
    let Some(segment) = segments.get(ti) else {
        return pi == parts.len();
    };
    match segment {
        Segment::Literal(text) => {
            if parts.get(pi) != Some(&text.as_str()) {
                return false;
            }
            bounds[ti] = (pi, pi + 1);
            match_from(segments, ti + 1, parts, pi + 1, bounds)
        }
        Segment::Single => {
            if parts.get(pi).is_none_or(|p| p.is_empty()) {
                return false;
            }
            bounds[ti] = (pi, pi + 1);
            match_from(segments, ti + 1, parts, pi + 1, bounds)
        }
        Segment::Multi => {
            for end in (pi..=parts.len()).rev() {
                bounds[ti] = (pi, end);
                if match_from(segments, ti + 1, parts, end, bounds) {
                    return true;
                }
            }
            false
        }
    }
}

/// Percent-encodes a path variable's value: unreserved characters (and
/// `/` when `keep_slash`) stay as they are.
pub fn percent_encode(text: &str, keep_slash: bool) -> String {
    let mut out = String::with_capacity(text.len());
    for byte in text.bytes() {
        let plain = byte.is_ascii_alphanumeric()
            || matches!(byte, b'-' | b'.' | b'_' | b'~')
            || (keep_slash && byte == b'/');
        if plain {
            out.push(char::from(byte));
        } else {
            out.push_str(&format!("%{byte:02X}"));
        }
    }
    out
}

/// Percent-decodes one segment; `keep_slash` leaves `%2F` encoded.
/// `None` for invalid UTF-8.
pub fn percent_decode(text: &str, keep_slash: bool) -> Option<String> {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let decoded = (bytes[i] == b'%')
            .then(|| bytes.get(i + 1..i + 3))
            .flatten()
            .and_then(|hex| std::str::from_utf8(hex).ok())
            .and_then(|hex| u8::from_str_radix(hex, 16).ok());
        match decoded {
            Some(b'/') if keep_slash => {
                out.extend_from_slice(&bytes[i..i + 3]);
                i += 3;
            }
            Some(byte) => {
                out.push(byte);
                i += 3;
            }
            None => {
                out.push(bytes[i]);
                i += 1;
            }
        }
    }
    String::from_utf8(out).ok()
}

/// Where the HTTP body goes in the request message.
#[derive(Debug, Clone)]
pub enum BodyRule {
    /// No body: path and query fill the message.
    None,
    /// `body: "*"`: the body is the message (path variables override).
    All,
    /// `body: "field"`: the body is this top-level field.
    Field(FieldDescriptor),
}

/// One HTTP binding of a gRPC method.
#[derive(Debug, Clone)]
pub struct Binding {
    /// `None`: any method (`custom: { kind: "*" }`).
    pub method: Option<Method>,
    /// The path template.
    pub template: PathTemplate,
    /// The gRPC method.
    pub rpc: MethodDescriptor,
    /// Where the body goes.
    pub body: BodyRule,
    /// `response_body`: this field of the response is the HTTP body.
    pub response_body: Option<FieldDescriptor>,
    /// The template as written, for the OpenAPI document and logs.
    pub pattern: String,
    /// From `additional_bindings` (the reverse bridge prefers the main rule).
    pub additional: bool,
}

/// Every binding of the selected services, most specific first.
pub fn bindings(pool: &DescriptorPool, services: &[String]) -> Result<Vec<Binding>, Vec<String>> {
    let http_ext = pool.get_extension_by_name("google.api.http");
    let mut out = Vec::new();
    let mut errors = Vec::new();
    for service in pool.services() {
        if !services.is_empty() && !services.iter().any(|s| s == service.full_name()) {
            continue;
        }
        for rpc in service.methods() {
            let rule = http_ext.as_ref().and_then(|ext| {
                let options = rpc.options();
                options
                    .has_extension(ext)
                    .then(|| options.get_extension(ext).as_message().cloned())
                    .flatten()
            });
            let result = match rule {
                Some(rule) => rule_bindings(&rpc, &rule, true),
                None => Ok(vec![default_binding(&rpc)]),
            };
            match result {
                Ok(list) => out.extend(list),
                Err(err) => errors.push(format!("{}: {err}", rpc.full_name())),
            }
        }
    }
    if !errors.is_empty() {
        return Err(errors);
    }
    // Stable: among equals, the order of the descriptors.
    out.sort_by_key(|b| std::cmp::Reverse(b.template.rank()));
    Ok(out)
}

/// `POST /package.Service/Method`, body `*`.
fn default_binding(rpc: &MethodDescriptor) -> Binding {
    let pattern = format!("/{}/{}", rpc.parent_service().full_name(), rpc.name());
    Binding {
        method: Some(Method::POST),
        template: PathTemplate {
            segments: vec![
                Segment::Literal(rpc.parent_service().full_name().to_string()),
                Segment::Literal(rpc.name().to_string()),
            ],
            variables: Vec::new(),
            verb: None,
        },
        rpc: rpc.clone(),
        body: BodyRule::All,
        response_body: None,
        pattern,
        additional: false,
    }
}

/// A `google.api.http` rule (and its additional bindings).
fn rule_bindings(
    rpc: &MethodDescriptor,
    rule: &DynamicMessage,
    top: bool,
) -> Result<Vec<Binding>, String> {
    let text = |name: &str| -> String {
        rule.get_field_by_name(name)
            .and_then(|v| v.as_str().map(str::to_string))
            .unwrap_or_default()
    };
    let mut method_pattern = None;
    for (name, method) in [
        ("get", Method::GET),
        ("put", Method::PUT),
        ("post", Method::POST),
        ("delete", Method::DELETE),
        ("patch", Method::PATCH),
    ] {
        if rule.has_field_by_name(name) {
            method_pattern = Some((Some(method), text(name)));
        }
    }
    if rule.has_field_by_name("custom") {
        if let Some(Value::Message(custom)) = rule.get_field_by_name("custom").as_deref() {
            let kind = custom
                .get_field_by_name("kind")
                .and_then(|v| v.as_str().map(str::to_string))
                .unwrap_or_default();
            let path = custom
                .get_field_by_name("path")
                .and_then(|v| v.as_str().map(str::to_string))
                .unwrap_or_default();
            let method = match kind.as_str() {
                "*" => None,
                _ => Some(
                    Method::from_bytes(kind.as_bytes())
                        .map_err(|_| format!("invalid custom method {kind:?}"))?,
                ),
            };
            method_pattern = Some((method, path));
        }
    }
    let mut out = Vec::new();
    if let Some((method, pattern)) = method_pattern {
        let input = rpc.input();
        let template = PathTemplate::parse(&pattern)?;
        for field in template.fields() {
            field_path(&input, field)?;
        }
        let body = match text("body").as_str() {
            "" => BodyRule::None,
            "*" => BodyRule::All,
            name => BodyRule::Field(
                input
                    .get_field_by_name(name)
                    .ok_or_else(|| format!("body: no field {name:?} in {}", input.full_name()))?,
            ),
        };
        let response_body = match text("response_body").as_str() {
            "" => None,
            name => Some(rpc.output().get_field_by_name(name).ok_or_else(|| {
                format!(
                    "response_body: no field {name:?} in {}",
                    rpc.output().full_name()
                )
            })?),
        };
        out.push(Binding {
            method,
            template,
            rpc: rpc.clone(),
            body,
            response_body,
            pattern,
            additional: !top,
        });
    }
    if top {
        if let Some(Value::List(extra)) = rule.get_field_by_name("additional_bindings").as_deref() {
            for item in extra {
                if let Value::Message(item) = item {
                    out.extend(rule_bindings(rpc, item, false)?);
                }
            }
        }
    }
    Ok(out)
}

/// The fields along a dotted path (proto or JSON names), each but the last
/// a singular message.
pub fn field_path(
    message: &MessageDescriptor,
    path: &[String],
) -> Result<Vec<FieldDescriptor>, String> {
    let mut current = message.clone();
    let mut fields = Vec::with_capacity(path.len());
    for (i, name) in path.iter().enumerate() {
        let field = current
            .get_field_by_name(name)
            .or_else(|| current.get_field_by_json_name(name))
            .ok_or_else(|| format!("no field {:?} in {}", path.join("."), message.full_name()))?;
        if i + 1 < path.len() {
            match field.kind() {
                Kind::Message(next) if !field.is_list() && !field.is_map() => current = next,
                _ => return Err(format!("{:?}: {name} is not a message", path.join("."))),
            }
        }
        fields.push(field);
    }
    Ok(fields)
}

/// The first binding matching the request, and its captures.
pub fn find<'a>(
    bindings: &'a [Binding],
    method: &Method,
    path: &str,
) -> Option<(&'a Binding, Vec<Capture>)> {
    bindings.iter().find_map(|binding| {
        let method_ok = binding.method.as_ref().is_none_or(|m| m == method);
        if !method_ok {
            return None;
        }
        binding
            .template
            .matches(path)
            .map(|captures| (binding, captures))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Found by fuzzing: with many `**`, matching a long path of `*`
    /// segments backtracked for minutes. Such templates are refused, and
    /// one `**` still matches a long path.
    #[test]
    fn a_template_with_two_double_wildcards_is_refused() {
        assert!(PathTemplate::parse("/v1/{a=**}/x/{b=**}").is_err());
        assert!(PathTemplate::parse("/*/**/*/**").is_err());
        let one = PathTemplate::parse("/v1/{path=**}/x/*").unwrap();
        let long = format!("/v1/{}y/z", "a/".repeat(2000));
        assert!(one.matches(&long).is_none());
        let hit = format!("/v1/{}x/z", "a/".repeat(2000));
        assert!(one.matches(&hit).is_some());
    }

    fn captures(template: &str, path: &str) -> Option<Vec<(String, String)>> {
        let t = PathTemplate::parse(template).unwrap();
        t.matches(path)
            .map(|c| c.into_iter().map(|(f, v)| (f.join("."), v)).collect())
    }

    fn pair(f: &str, v: &str) -> (String, String) {
        (f.to_string(), v.to_string())
    }

    #[test]
    fn single_variables_and_literals() {
        assert_eq!(
            captures(
                "/v1/shelves/{shelf}/books/{book}",
                "/v1/shelves/1/books/b%20x"
            ),
            Some(vec![pair("shelf", "1"), pair("book", "b x")])
        );
        assert_eq!(captures("/v1/shelves/{shelf}", "/v1/shelves/1/books"), None);
        assert_eq!(captures("/v1/shelves/{shelf}", "/v1/shelves/"), None);
        assert_eq!(captures("/v1/shelves/{shelf}", "/v2/shelves/1"), None);
        // A single-segment variable decodes an encoded slash.
        assert_eq!(
            captures("/v1/{id}", "/v1/a%2Fb"),
            Some(vec![pair("id", "a/b")])
        );
    }

    #[test]
    fn segment_patterns_nested_fields_and_double_star() {
        assert_eq!(
            captures(
                "/v1/{book.name=shelves/*/books/*}",
                "/v1/shelves/s1/books/b2"
            ),
            Some(vec![pair("book.name", "shelves/s1/books/b2")])
        );
        assert_eq!(
            captures("/v1/{book.name=shelves/*/books/*}", "/v1/shelves/s1/books"),
            None
        );
        assert_eq!(
            captures("/v1/files/{path=**}", "/v1/files/a/b%2Fc/d%20e.txt"),
            Some(vec![pair("path", "a/b%2Fc/d e.txt")])
        );
        assert_eq!(
            captures("/v1/{name=**}/meta", "/v1/a/b/meta"),
            Some(vec![pair("name", "a/b")])
        );
    }

    #[test]
    fn expansion_inverts_matching() {
        let t = PathTemplate::parse("/v1/{name=shelves/*/books/*}:publish").unwrap();
        let path = t
            .expand(|f| (f == ["name"]).then(|| "shelves/s 1/books/b2".to_string()))
            .unwrap();
        assert_eq!(path, "/v1/shelves/s%201/books/b2:publish");
        assert_eq!(
            t.matches(&path),
            Some(vec![(
                vec!["name".to_string()],
                "shelves/s 1/books/b2".into()
            )])
        );
        // The value must fit the variable's segments.
        assert!(t.expand(|_| Some("shelves/1".into())).is_err());
        assert!(t.expand(|_| None).is_err());
        let t = PathTemplate::parse("/v1/books/{id}").unwrap();
        assert_eq!(
            t.expand(|_| Some("a/b c".into())).unwrap(),
            "/v1/books/a%2Fb%20c"
        );
        let t = PathTemplate::parse("/v1/files/{path=**}").unwrap();
        assert_eq!(
            t.expand(|_| Some("a/b.txt".into())).unwrap(),
            "/v1/files/a/b.txt"
        );
    }

    #[test]
    fn verbs_must_match_exactly() {
        let t = "/v1/{name=shelves/*/books/*}:publish";
        assert_eq!(
            captures(t, "/v1/shelves/1/books/2:publish"),
            Some(vec![pair("name", "shelves/1/books/2")])
        );
        assert_eq!(captures(t, "/v1/shelves/1/books/2"), None);
        assert_eq!(captures(t, "/v1/shelves/1/books/2:archive"), None);
        assert!(PathTemplate::parse("v1/x").is_err());
        assert!(PathTemplate::parse("/v1/{x").is_err());
        assert!(PathTemplate::parse("/v1//x").is_err());
    }
}

//! The proto3 JSON mapping (prost-reflect serde): request messages built
//! from the body, path variables and query parameters; response messages
//! printed with the route's options. A JSON error names the field path
//! (`book.pageCount`, `tags[1]`), found by re-checking the failing value
//! field by field (errors are rare; the happy path deserializes once).

use prost_reflect::{
    DeserializeOptions, DynamicMessage, FieldDescriptor, Kind, MessageDescriptor, SerializeOptions,
};
use serde_json::{Map, Value};

use super::rules::{field_path, BodyRule, Capture};

/// How responses are printed.
#[derive(Debug, Clone, Copy, Default)]
pub struct Print {
    /// Print default-valued fields.
    pub emit_defaults: bool,
    /// Keep `.proto` field names.
    pub proto_names: bool,
}

/// A request the JSON mapping refuses: where, and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JsonError {
    /// The field path (`book.title`, `tags[2]`), empty for the whole body.
    pub path: String,
    /// What is wrong.
    pub message: String,
}

impl std::fmt::Display for JsonError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if self.path.is_empty() {
            write!(f, "{}", self.message)
        } else {
            write!(f, "field `{}`: {}", self.path, self.message)
        }
    }
}

fn error(path: impl Into<String>, message: impl Into<String>) -> JsonError {
    JsonError {
        path: path.into(),
        message: message.into(),
    }
}

/// The JSON object of a request before the body: path captures, then
/// query parameters on the fields still free (unless the body is `*`).
pub fn base_object(
    input: &MessageDescriptor,
    captures: &[Capture],
    query: Option<&str>,
    body: &BodyRule,
) -> Result<Map<String, Value>, JsonError> {
    let mut root = Map::new();
    for (path, value) in captures {
        let fields = field_path(input, path).map_err(|e| error(path.join("."), e))?;
        set_path(&mut root, &fields, value, false).map_err(|e| error(path.join("."), e))?;
    }
    let query = match (query, body) {
        (Some(q), BodyRule::None | BodyRule::Field(_)) => q,
        _ => return Ok(root),
    };
    for pair in query.split('&').filter(|p| !p.is_empty()) {
        let (key, value) = pair.split_once('=').unwrap_or((pair, ""));
        let key = form_decode(key).ok_or_else(|| error(key, "invalid percent-encoding"))?;
        let value = form_decode(value).ok_or_else(|| error(&key, "invalid percent-encoding"))?;
        let path: Vec<String> = key.split('.').map(str::to_string).collect();
        if captures.iter().any(|(bound, _)| *bound == path) {
            continue;
        }
        let fields = field_path(input, &path).map_err(|e| error(&key, e))?;
        if let (BodyRule::Field(body), Some(first)) = (body, fields.first()) {
            if body == first {
                continue;
            }
        }
        set_path(&mut root, &fields, &value, true).map_err(|e| error(&key, e))?;
    }
    Ok(root)
}

/// Puts the text `value` at `fields` (nested objects created), typed by the
/// leaf field; a repeated leaf gets it appended when `append`.
fn set_path(
    root: &mut Map<String, Value>,
    fields: &[FieldDescriptor],
    value: &str,
    append: bool,
) -> Result<(), String> {
    let Some((leaf, parents)) = fields.split_last() else {
        return Ok(());
    };
    let mut object = root;
    for field in parents {
        let slot = take_key(object, field).unwrap_or_else(|| Value::Object(Map::new()));
        let slot = object.entry(field.name().to_string()).or_insert(slot);
        object = match slot {
            Value::Object(map) => map,
            _ => return Err(format!("{} is not an object", field.name())),
        };
    }
    if leaf.is_map() {
        return Err("map fields cannot be set from the path or query".into());
    }
    let typed = typed(&leaf.kind(), value)?;
    if leaf.is_list() && append {
        let slot = take_key(object, leaf).unwrap_or_else(|| Value::Array(Vec::new()));
        let slot = object.entry(leaf.name().to_string()).or_insert(slot);
        match slot {
            Value::Array(items) => items.push(typed),
            _ => return Err("not a list".into()),
        }
    } else if leaf.is_list() {
        take_key(object, leaf);
        object.insert(leaf.name().to_string(), Value::Array(vec![typed]));
    } else {
        take_key(object, leaf);
        object.insert(leaf.name().to_string(), typed);
    }
    Ok(())
}

/// Removes a field's entry, whichever name (proto or JSON) it is under.
fn take_key(object: &mut Map<String, Value>, field: &FieldDescriptor) -> Option<Value> {
    object
        .remove(field.name())
        .or_else(|| object.remove(field.json_name()))
}

/// Text from a path or query as the JSON value the field's mapping reads.
fn typed(kind: &Kind, text: &str) -> Result<Value, String> {
    Ok(match kind {
        Kind::Bool => match text {
            "true" => Value::Bool(true),
            "false" => Value::Bool(false),
            _ => return Err(format!("expected true or false, got {text:?}")),
        },
        Kind::Int32 | Kind::Sint32 | Kind::Sfixed32 | Kind::Uint32 | Kind::Fixed32 => {
            match text.parse::<i64>() {
                Ok(n) => Value::from(n),
                Err(_) => return Err(format!("expected an integer, got {text:?}")),
            }
        }
        Kind::Float | Kind::Double => match text.parse::<f64>() {
            Ok(n) if n.is_finite() => Value::from(n),
            _ => Value::String(text.to_string()),
        },
        Kind::Enum(_) => match text.parse::<i64>() {
            Ok(n) => Value::from(n),
            Err(_) => Value::String(text.to_string()),
        },
        Kind::Message(message) if message.full_name().ends_with("Value") => {
            // Wrappers print as their wrapped value.
            match message.get_field_by_name("value") {
                Some(inner) if message.full_name().starts_with("google.protobuf.") => {
                    typed(&inner.kind(), text)?
                }
                _ => Value::String(text.to_string()),
            }
        }
        _ => Value::String(text.to_string()),
    })
}

/// `application/x-www-form-urlencoded` decoding of one key or value.
fn form_decode(text: &str) -> Option<String> {
    super::rules::percent_decode(&text.replace('+', " "), false)
}

/// Merges the body into the base object per the rule; path and query
/// values win over the body's.
pub fn merge_body(
    mut base: Map<String, Value>,
    body: &BodyRule,
    json: Option<Value>,
) -> Result<Value, JsonError> {
    match (body, json) {
        (BodyRule::None, _) | (_, None) => Ok(Value::Object(base)),
        (BodyRule::All, Some(Value::Object(mut object))) => {
            for (key, value) in std::mem::take(&mut base) {
                merge_into(&mut object, key, value);
            }
            Ok(Value::Object(object))
        }
        (BodyRule::All, Some(_)) => Err(error("", "the body must be a JSON object")),
        (BodyRule::Field(field), Some(mut value)) => {
            // Path values inside the body field (`{book.name}`) win.
            if let (Some(Value::Object(bound)), Value::Object(body)) =
                (take_key(&mut base, field), &mut value)
            {
                for (key, item) in bound {
                    merge_into(body, key, item);
                }
            }
            base.insert(field.name().to_string(), value);
            Ok(Value::Object(base))
        }
    }
}

/// Puts `value` at `key`, merging objects (the new value wins on leaves).
fn merge_into(object: &mut Map<String, Value>, key: String, value: Value) {
    match (object.get_mut(&key), value) {
        (Some(Value::Object(existing)), Value::Object(new)) => {
            for (k, v) in new {
                merge_into(existing, k, v);
            }
        }
        (_, value) => {
            object.insert(key, value);
        }
    }
}

/// Parses a body as JSON; `None` for an empty body.
pub fn parse_body(bytes: &[u8]) -> Result<Option<Value>, JsonError> {
    if bytes.iter().all(u8::is_ascii_whitespace) {
        return Ok(None);
    }
    serde_json::from_slice(bytes)
        .map(Some)
        .map_err(|e| error("", format!("malformed JSON: {e}")))
}

fn deserialize_options() -> DeserializeOptions {
    DeserializeOptions::new().deny_unknown_fields(true)
}

/// The JSON value as a message of `desc`; an error names the field path.
pub fn to_message(desc: &MessageDescriptor, value: Value) -> Result<DynamicMessage, JsonError> {
    match DynamicMessage::deserialize_with_options(desc.clone(), &value, &deserialize_options()) {
        Ok(message) => Ok(message),
        Err(err) => {
            Err(locate(desc, &value, String::new()).unwrap_or_else(|| error("", err.to_string())))
        }
    }
}

/// Finds the first field of `value` that does not map onto `desc`.
fn locate(desc: &MessageDescriptor, value: &Value, at: String) -> Option<JsonError> {
    let Value::Object(object) = value else {
        return None;
    };
    if desc.full_name().starts_with("google.protobuf.") {
        return None;
    }
    let join = |key: &str| {
        if at.is_empty() {
            key.to_string()
        } else {
            format!("{at}.{key}")
        }
    };
    for (key, item) in object {
        let Some(field) = desc
            .get_field_by_json_name(key)
            .or_else(|| desc.get_field_by_name(key))
        else {
            return Some(error(join(key), "unknown field"));
        };
        let single = Value::Object(Map::from_iter([(key.clone(), item.clone())]));
        let Err(err) =
            DynamicMessage::deserialize_with_options(desc.clone(), &single, &deserialize_options())
        else {
            continue;
        };
        let path = join(key);
        let nested = match (field.kind(), item) {
            (Kind::Message(inner), Value::Array(items)) if field.is_list() => {
                items.iter().enumerate().find_map(|(i, element)| {
                    let element_path = format!("{path}[{i}]");
                    match DynamicMessage::deserialize_with_options(
                        inner.clone(),
                        element,
                        &deserialize_options(),
                    ) {
                        Ok(_) => None,
                        Err(e) => Some(
                            locate(&inner, element, element_path.clone())
                                .unwrap_or_else(|| error(element_path, e.to_string())),
                        ),
                    }
                })
            }
            (Kind::Message(inner), item) if !field.is_list() && !field.is_map() => {
                locate(&inner, item, path.clone())
            }
            (_, Value::Array(items)) if field.is_list() => items
                .iter()
                .position(|element| !scalar_ok(&field, element))
                .map(|i| error(format!("{path}[{i}]"), err.to_string())),
            _ => None,
        };
        return Some(nested.unwrap_or_else(|| error(path, err.to_string())));
    }
    None
}

/// Whether one element of a repeated scalar field deserializes.
fn scalar_ok(field: &FieldDescriptor, element: &Value) -> bool {
    let single = Value::Object(Map::from_iter([(
        field.name().to_string(),
        Value::Array(vec![element.clone()]),
    )]));
    DynamicMessage::deserialize_with_options(
        field.parent_message().clone(),
        &single,
        &deserialize_options(),
    )
    .is_ok()
}

/// A message as JSON; with `field`, only that field's value.
pub fn render(
    message: &DynamicMessage,
    print: Print,
    field: Option<&FieldDescriptor>,
) -> Result<Value, serde_json::Error> {
    let options = SerializeOptions::new()
        .skip_default_fields(!print.emit_defaults)
        .use_proto_field_name(print.proto_names);
    let Some(field) = field else {
        return message.serialize_with_options(serde_json::value::Serializer, &options);
    };
    let key = if print.proto_names {
        field.name()
    } else {
        field.json_name()
    };
    let full = message.serialize_with_options(
        serde_json::value::Serializer,
        &options.clone().skip_default_fields(false),
    )?;
    Ok(match full {
        Value::Object(mut object) => object.remove(key).unwrap_or(Value::Null),
        _ => Value::Null,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use prost_reflect::DescriptorPool;

    const PROTO: &str = r#"
        syntax = "proto3";
        package t;
        import "google/protobuf/timestamp.proto";
        import "google/protobuf/wrappers.proto";
        enum Genre { GENRE_UNSPECIFIED = 0; FICTION = 1; HISTORY = 2; }
        message Filter { string author = 1; Genre genre = 2; }
        message Req {
          string parent = 1;
          int32 page_size = 2;
          Filter filter = 3;
          repeated string tags = 4;
          bool deleted = 5;
          google.protobuf.Timestamp after = 6;
          google.protobuf.Int32Value min_rating = 7;
          int64 big = 8;
          repeated Filter filters = 9;
        }
    "#;

    /// Serves the test proto as `t.proto`.
    struct TestProto;

    impl protox::file::FileResolver for TestProto {
        fn open_file(&self, name: &str) -> Result<protox::file::File, protox::Error> {
            match name {
                "t.proto" => protox::file::File::from_source(name, PROTO),
                _ => Err(protox::Error::file_not_found(name)),
            }
        }
    }

    fn request() -> MessageDescriptor {
        let mut chain = protox::file::ChainFileResolver::new();
        chain.add(TestProto);
        chain.add(protox::file::GoogleFileResolver::new());
        let mut compiler = protox::Compiler::with_file_resolver(chain);
        compiler.include_imports(true);
        compiler.open_file("t.proto").unwrap();
        let pool =
            DescriptorPool::decode(compiler.encode_file_descriptor_set().as_slice()).unwrap();
        pool.get_message_by_name("t.Req").unwrap()
    }

    fn build(query: &str, captures: &[(&str, &str)]) -> Result<Value, JsonError> {
        let desc = request();
        let captures: Vec<Capture> = captures
            .iter()
            .map(|(f, v)| (f.split('.').map(str::to_string).collect(), v.to_string()))
            .collect();
        let base = base_object(&desc, &captures, Some(query), &BodyRule::None)?;
        let message = to_message(&desc, Value::Object(base))?;
        Ok(render(&message, Print::default(), None).unwrap())
    }

    #[test]
    fn query_parameters_fill_nested_repeated_enum_and_wkt_fields() {
        let json = build(
            "pageSize=20&filter.author=Ada+L%C3%B6w&filter.genre=HISTORY&tags=a&tags=b&deleted=true&after=2024-01-02T03:04:05Z&min_rating=4&big=9007199254740993",
            &[("parent", "shelves/1")],
        )
        .unwrap();
        assert_eq!(json["parent"], "shelves/1");
        assert_eq!(json["pageSize"], 20);
        assert_eq!(json["filter"]["author"], "Ada Löw");
        assert_eq!(json["filter"]["genre"], "HISTORY");
        assert_eq!(json["tags"], serde_json::json!(["a", "b"]));
        assert_eq!(json["deleted"], true);
        assert_eq!(json["after"], "2024-01-02T03:04:05Z");
        assert_eq!(json["minRating"], 4);
        assert_eq!(json["big"], "9007199254740993");
        // Enums by number too; a path variable wins over the same query key.
        let json = build("filter.genre=1&parent=other", &[("parent", "p")]).unwrap();
        assert_eq!(json["filter"]["genre"], "FICTION");
        assert_eq!(json["parent"], "p");
    }

    #[test]
    fn bad_query_parameters_name_the_parameter() {
        assert_eq!(build("nope=1", &[]).unwrap_err().path, "nope");
        assert_eq!(build("pageSize=ten", &[]).unwrap_err().path, "pageSize");
        assert_eq!(build("deleted=yes", &[]).unwrap_err().path, "deleted");
        assert_eq!(
            build("filter.genre=POETRY", &[]).unwrap_err().path,
            "filter.genre"
        );
    }

    #[test]
    fn body_errors_name_the_field_path() {
        let desc = request();
        let path = |body: &str| {
            let value: Value = serde_json::from_str(body).unwrap();
            to_message(&desc, value).unwrap_err().path
        };
        assert_eq!(path(r#"{"pageSize": "x"}"#), "pageSize");
        assert_eq!(path(r#"{"filter": {"author": 5}}"#), "filter.author");
        assert_eq!(path(r#"{"filter": {"colour": "red"}}"#), "filter.colour");
        assert_eq!(path(r#"{"tags": ["a", 3]}"#), "tags[1]");
        assert_eq!(
            path(r#"{"filters": [{}, {"genre": "NOPE"}]}"#),
            "filters[1].genre"
        );
        assert_eq!(path(r#"{"after": "yesterday"}"#), "after");
        assert_eq!(path(r#"{"unknown": 1}"#), "unknown");
    }
}

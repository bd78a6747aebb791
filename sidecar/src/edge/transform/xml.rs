//! XML ↔ JSON, both ways, with one set of conventions ([`XmlSettings`]):
//! an element is a JSON member named after it; its attributes are members
//! named with the attribute prefix (`@id`); an element with only text is a
//! string (always a string: no guessing of numbers), an empty one `null`;
//! text beside attributes or children is the text member (`#text`, joined
//! and trimmed); repeated siblings are an array, and so is every element
//! named in `arrays`. Namespace prefixes are stripped (`soap:Body` is
//! `Body`, `xmlns` declarations dropped) or kept as written.
//!
//! Reading XML refuses what could blow up or reach outside: a DOCTYPE
//! (so no entity is ever declared, let alone expanded), references to
//! anything but the five predefined entities and character references,
//! nesting deeper than [`MAX_DEPTH`]. Writing XML escapes every text and
//! attribute, refuses names that are not XML names and characters XML
//! cannot carry, so no JSON string can change the document's structure.

use std::collections::{HashMap, HashSet};

use mesh_api::config::Namespaces;
use quick_xml::events::{BytesStart, Event};
use quick_xml::Reader;

use super::document::Json;

/// Deepest element nesting read (the JSON side is bounded by serde_json).
pub const MAX_DEPTH: usize = 100;

/// The mapping conventions, compiled.
#[derive(Debug, Clone)]
pub struct XmlSettings {
    /// Root element of XML written from JSON; `None`: the JSON's only key.
    pub root: Option<String>,
    /// Prefix of attribute members.
    pub attribute_prefix: String,
    /// Key of the text member.
    pub text_key: String,
    /// Element names always read as arrays.
    pub arrays: HashSet<String>,
    /// Namespace prefixes stripped or kept when reading.
    pub namespaces: Namespaces,
}

impl Default for XmlSettings {
    fn default() -> Self {
        XmlSettings {
            root: None,
            attribute_prefix: "@".into(),
            text_key: "#text".into(),
            arrays: HashSet::new(),
            namespaces: Namespaces::Strip,
        }
    }
}

/// Why XML could not be read or written; the text says what and where.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("{0}")]
pub struct XmlError(pub String);

/// Whether `name` is an XML name (element or attribute), prefixes allowed.
pub fn is_xml_name(name: &str) -> bool {
    let mut chars = name.chars();
    let Some(first) = chars.next() else {
        return false;
    };
    (first.is_alphabetic() || first == '_' || first == ':')
        && chars.all(|c| c.is_alphanumeric() || matches!(c, '_' | ':' | '-' | '.' | '·'))
}

// ---- XML → JSON ----------------------------------------------------------

/// An element being read: its members so far and its text.
struct Open {
    name: String,
    members: Vec<(String, Json)>,
    /// Member positions by key, built once an element has many children.
    index: Option<HashMap<String, usize>>,
    text: String,
}

impl Open {
    fn new(name: String) -> Self {
        Open {
            name,
            members: Vec::new(),
            index: None,
            text: String::new(),
        }
    }

    /// Where the member `key` is, if any.
    fn position(&mut self, key: &str) -> Option<usize> {
        const INDEXED_FROM: usize = 16;
        if self.members.len() < INDEXED_FROM {
            return self.members.iter().rposition(|(k, _)| k == key);
        }
        let members = &self.members;
        let index = self.index.get_or_insert_with(|| {
            let mut index = HashMap::with_capacity(members.len() * 2);
            for (i, (k, _)) in members.iter().enumerate() {
                index.insert(k.clone(), i);
            }
            index
        });
        index.get(key).copied()
    }

    /// Adds a child element's value: a repeated name becomes an array.
    fn add_child(&mut self, name: String, value: Json, always_array: bool) {
        match self.position(&name) {
            Some(at) => match &mut self.members[at].1 {
                Json::Array(items) => items.push(value),
                first => {
                    let first = std::mem::replace(first, Json::Null);
                    self.members[at].1 = Json::Array(vec![first, value]);
                }
            },
            None => {
                let value = if always_array {
                    Json::Array(vec![value])
                } else {
                    value
                };
                if let Some(index) = &mut self.index {
                    index.insert(name.clone(), self.members.len());
                }
                self.members.push((name, value));
            }
        }
    }

    /// The element's JSON value.
    fn close(mut self, text_key: &str) -> Json {
        if self.members.is_empty() {
            return if self.text.is_empty() {
                Json::Null
            } else {
                Json::String(self.text)
            };
        }
        let text = self.text.trim();
        if !text.is_empty() {
            self.members
                .push((text_key.to_owned(), Json::String(text.to_owned())));
        }
        Json::Object(self.members)
    }
}

/// Reads an XML document into `{"<root>": <value>}`.
pub fn to_json(xml: &[u8], settings: &XmlSettings) -> Result<Json, XmlError> {
    let mut reader = Reader::from_reader(xml);
    reader.config_mut().check_end_names = true;
    let mut stack: Vec<Open> = Vec::new();
    let mut root: Option<Json> = None;
    loop {
        let event = reader.read_event().map_err(|err| {
            XmlError(format!(
                "malformed XML at byte {}: {err}",
                reader.error_position()
            ))
        })?;
        let at = reader.buffer_position();
        match event {
            Event::Start(start) => {
                let open = open_element(&start, settings, stack.len(), root.is_some(), at)?;
                stack.push(open);
            }
            Event::Empty(start) => {
                let open = open_element(&start, settings, stack.len(), root.is_some(), at)?;
                close_element(open, &mut stack, &mut root, settings);
            }
            Event::End(_) => {
                let open = stack
                    .pop()
                    .ok_or_else(|| XmlError(format!("unexpected end tag at byte {at}")))?;
                close_element(open, &mut stack, &mut root, settings);
            }
            Event::Text(text) => {
                let text = text.decode().map_err(|err| not_utf8(err, at))?;
                add_text(&mut stack, &text, at)?;
            }
            Event::CData(data) => {
                let text = data.decode().map_err(|err| not_utf8(err, at))?;
                add_text(&mut stack, &text, at)?;
            }
            Event::GeneralRef(reference) => {
                let text = resolve_reference(&reference, at)?;
                add_text(&mut stack, &text, at)?;
            }
            Event::DocType(_) => {
                return Err(XmlError(format!(
                    "DOCTYPE declarations are refused (byte {at})"
                )))
            }
            Event::Decl(_) | Event::PI(_) | Event::Comment(_) => {}
            Event::Eof => break,
        }
    }
    if let Some(open) = stack.last() {
        return Err(XmlError(format!("element <{}> is not closed", open.name)));
    }
    root.ok_or_else(|| XmlError("no root element".into()))
}

/// A start tag read: its name and attributes.
fn open_element(
    start: &BytesStart<'_>,
    settings: &XmlSettings,
    depth: usize,
    have_root: bool,
    at: u64,
) -> Result<Open, XmlError> {
    if depth == 0 && have_root {
        return Err(XmlError(format!("second root element at byte {at}")));
    }
    if depth >= MAX_DEPTH {
        return Err(XmlError(format!(
            "elements nested deeper than {MAX_DEPTH} (byte {at})"
        )));
    }
    let raw_name = match settings.namespaces {
        Namespaces::Strip => start.local_name().into_inner(),
        Namespaces::Keep => start.name().into_inner(),
    };
    let mut open = Open::new(utf8(raw_name, at)?.to_owned());
    for attribute in start.attributes() {
        let attribute = attribute
            .map_err(|err| XmlError(format!("malformed attribute at byte {at}: {err}")))?;
        let key = attribute.key;
        let name = match settings.namespaces {
            Namespaces::Strip if key.as_namespace_binding().is_some() => continue,
            Namespaces::Strip => key.local_name().into_inner(),
            Namespaces::Keep => key.into_inner(),
        };
        let value = attribute
            .unescape_value()
            .map_err(|err| XmlError(format!("malformed attribute value at byte {at}: {err}")))?;
        let member = format!("{}{}", settings.attribute_prefix, utf8(name, at)?);
        // Two prefixes, one local name (`a:x`, `b:x`): the first one stays.
        if !open.members.iter().any(|(key, _)| *key == member) {
            open.members
                .push((member, Json::String(value.into_owned())));
        }
    }
    Ok(open)
}

/// Closes `open`: into its parent, or as the document's root.
fn close_element(open: Open, stack: &mut [Open], root: &mut Option<Json>, settings: &XmlSettings) {
    let name = open.name.clone();
    let always_array = settings.arrays.contains(&name);
    let value = open.close(&settings.text_key);
    match stack.last_mut() {
        Some(parent) => parent.add_child(name, value, always_array),
        None => *root = Some(Json::Object(vec![(name, value)])),
    }
}

/// Text inside the current element; outside the root only whitespace.
fn add_text(stack: &mut [Open], text: &str, at: u64) -> Result<(), XmlError> {
    match stack.last_mut() {
        Some(open) => {
            open.text.push_str(text);
            Ok(())
        }
        None if text.trim().is_empty() => Ok(()),
        None => Err(XmlError(format!(
            "text outside the root element at byte {at}"
        ))),
    }
}

/// `&amp;` and the other predefined entities, `&#38;` / `&#x26;`; any
/// other entity is refused (none can be declared: DOCTYPE is refused).
fn resolve_reference(
    reference: &quick_xml::events::BytesRef<'_>,
    at: u64,
) -> Result<String, XmlError> {
    if reference.is_char_ref() {
        return match reference.resolve_char_ref() {
            Ok(Some(c)) => Ok(c.to_string()),
            _ => Err(XmlError(format!(
                "invalid character reference at byte {at}"
            ))),
        };
    }
    let name = reference.decode().map_err(|err| not_utf8(err, at))?;
    quick_xml::escape::resolve_xml_entity(&name)
        .map(str::to_owned)
        .ok_or_else(|| XmlError(format!("unknown entity &{name}; at byte {at}")))
}

fn utf8(bytes: &[u8], at: u64) -> Result<&str, XmlError> {
    std::str::from_utf8(bytes).map_err(|_| XmlError(format!("name is not UTF-8 at byte {at}")))
}

fn not_utf8(err: impl std::fmt::Display, at: u64) -> XmlError {
    XmlError(format!("text is not UTF-8 at byte {at}: {err}"))
}

// ---- JSON → XML ----------------------------------------------------------

/// The XML declaration every written document starts with.
const DECLARATION: &str = "<?xml version=\"1.0\" encoding=\"UTF-8\"?>";

/// Writes `doc` as an XML document: inside `settings.root` when set, else
/// `doc` must be an object with one member naming the root element.
pub fn from_json(doc: &Json, settings: &XmlSettings) -> Result<Vec<u8>, XmlError> {
    let mut out = String::from(DECLARATION);
    match &settings.root {
        Some(root) => write_element(&mut out, root, &[], doc, settings)?,
        None => {
            let (name, value) = single_member(doc).ok_or_else(|| {
                XmlError(
                    "the JSON body must be an object with exactly one member, the root element"
                        .into(),
                )
            })?;
            write_element(&mut out, name, &[], value, settings)?;
        }
    }
    Ok(out.into_bytes())
}

/// The one member of a one-member object.
fn single_member(doc: &Json) -> Option<(&str, &Json)> {
    match doc {
        Json::Object(members) if members.len() == 1 => {
            members.first().map(|(k, v)| (k.as_str(), v))
        }
        _ => None,
    }
}

/// Writes `<name extra…>` with `value` as its content. `extra` attributes
/// are written as given (namespace declarations the caller built).
pub fn write_element(
    out: &mut String,
    name: &str,
    extra: &[(&str, &str)],
    value: &Json,
    settings: &XmlSettings,
) -> Result<(), XmlError> {
    if !is_xml_name(name) {
        return Err(XmlError(format!(
            "{name:?} is not a valid XML element name"
        )));
    }
    out.push('<');
    out.push_str(name);
    for (attribute, text) in extra {
        write_attribute(out, attribute, text)?;
    }
    match value {
        Json::Null => out.push_str("/>"),
        Json::Array(_) => {
            return Err(XmlError(format!(
                "<{name}> cannot hold a JSON array directly (an array is repeated elements: put it under a key)"
            )))
        }
        Json::Object(members) => write_object(out, name, members, settings)?,
        scalar => {
            out.push('>');
            escape_text(out, &scalar.scalar_text().unwrap_or_default())?;
            close_tag(out, name);
        }
    }
    Ok(())
}

/// The rest of an element from an object: attributes, then text and
/// children in member order.
fn write_object(
    out: &mut String,
    name: &str,
    members: &[(String, Json)],
    settings: &XmlSettings,
) -> Result<(), XmlError> {
    let prefix = settings.attribute_prefix.as_str();
    for (key, value) in members {
        if let Some(attribute) = key.strip_prefix(prefix) {
            let text = value.scalar_text().ok_or_else(|| {
                XmlError(format!(
                    "attribute {key:?} of <{name}> must be a string, number, boolean or null"
                ))
            })?;
            write_attribute(out, attribute, &text)?;
        }
    }
    let content: Vec<&(String, Json)> = members
        .iter()
        .filter(|(key, _)| !key.starts_with(prefix))
        .collect();
    if content.is_empty() {
        out.push_str("/>");
        return Ok(());
    }
    out.push('>');
    for (key, value) in content {
        if *key == settings.text_key {
            let text = value.scalar_text().ok_or_else(|| {
                XmlError(format!(
                    "the text of <{name}> must be a string, number or boolean"
                ))
            })?;
            escape_text(out, &text)?;
        } else if let Json::Array(items) = value {
            for item in items {
                write_element(out, key, &[], item, settings)?;
            }
        } else {
            write_element(out, key, &[], value, settings)?;
        }
    }
    close_tag(out, name);
    Ok(())
}

fn close_tag(out: &mut String, name: &str) {
    out.push_str("</");
    out.push_str(name);
    out.push('>');
}

/// ` name="escaped value"`.
fn write_attribute(out: &mut String, name: &str, value: &str) -> Result<(), XmlError> {
    if !is_xml_name(name) {
        return Err(XmlError(format!(
            "{name:?} is not a valid XML attribute name"
        )));
    }
    out.push(' ');
    out.push_str(name);
    out.push_str("=\"");
    escape(out, value, true)?;
    out.push('"');
    Ok(())
}

/// Element text, escaped.
pub fn escape_text(out: &mut String, text: &str) -> Result<(), XmlError> {
    escape(out, text, false)
}

/// Escapes markup characters; in attributes also quotes and the
/// whitespace attribute normalisation would turn into spaces. Characters
/// XML 1.0 cannot carry are refused.
fn escape(out: &mut String, text: &str, attribute: bool) -> Result<(), XmlError> {
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' if attribute => out.push_str("&quot;"),
            '\'' if attribute => out.push_str("&apos;"),
            '\t' if attribute => out.push_str("&#9;"),
            '\n' if attribute => out.push_str("&#10;"),
            '\r' => out.push_str("&#13;"),
            '\t' | '\n' => out.push(c),
            '\u{0}'..='\u{1f}' | '\u{fffe}' | '\u{ffff}' => {
                return Err(XmlError(format!(
                    "U+{:04X} cannot be written in XML",
                    u32::from(c)
                )))
            }
            c => out.push(c),
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn read(xml: &str) -> serde_json::Value {
        read_with(xml, &XmlSettings::default())
    }

    fn read_with(xml: &str, settings: &XmlSettings) -> serde_json::Value {
        let doc = to_json(xml.as_bytes(), settings).unwrap();
        serde_json::from_slice(&doc.to_vec()).unwrap()
    }

    fn write(json: &str) -> Result<String, XmlError> {
        write_with(json, &XmlSettings::default())
    }

    fn write_with(json: &str, settings: &XmlSettings) -> Result<String, XmlError> {
        let doc = Json::parse(json.as_bytes()).unwrap();
        from_json(&doc, settings).map(|bytes| String::from_utf8(bytes).unwrap())
    }

    #[test]
    fn elements_attributes_text_and_arrays() {
        let xml = r##"<?xml version="1.0"?>
            <!-- an order -->
            <order id="7" status="new">
              <customer>Ada &amp; Co &#x263A;</customer>
              <item sku="a">pen</item>
              <item sku="b">ink</item>
              <note><![CDATA[<b>fragile</b>]]></note>
              <gift/>
              <p>Hello <b>world</b> again</p>
            </order>"##;
        let json = read(xml);
        assert_eq!(
            json,
            serde_json::json!({"order": {
                "@id": "7", "@status": "new",
                "customer": "Ada & Co ☺",
                "item": [{"@sku": "a", "#text": "pen"}, {"@sku": "b", "#text": "ink"}],
                "note": "<b>fragile</b>",
                "gift": null,
                "p": {"b": "world", "#text": "Hello  again"}
            }})
        );
        // Document order is kept.
        let text = String::from_utf8(
            to_json(xml.as_bytes(), &XmlSettings::default())
                .unwrap()
                .to_vec(),
        )
        .unwrap();
        assert!(text.find("customer").unwrap() < text.find("item").unwrap());
        assert!(text.find("\"item\"").unwrap() < text.find("\"note\"").unwrap());
    }

    #[test]
    fn configured_arrays_and_namespaces() {
        let xml = r##"<s:r xmlns:s="urn:s" xmlns:x="urn:x" x:kind="k"><s:item>1</s:item><empty></empty></s:r>"##;
        let mut settings = XmlSettings {
            arrays: HashSet::from(["item".to_string()]),
            attribute_prefix: "_".into(),
            ..XmlSettings::default()
        };
        assert_eq!(
            read_with(xml, &settings),
            serde_json::json!({"r": {"_kind": "k", "item": ["1"], "empty": null}})
        );
        settings.namespaces = Namespaces::Keep;
        settings.arrays.clear();
        assert_eq!(
            read_with(xml, &settings),
            serde_json::json!({"s:r": {"_xmlns:s": "urn:s", "_xmlns:x": "urn:x", "_x:kind": "k", "s:item": "1", "empty": null}})
        );
    }

    #[test]
    fn a_byte_order_mark_is_not_text() {
        assert_eq!(read("\u{feff}<a>1</a>"), serde_json::json!({"a": "1"}));
    }

    #[test]
    fn one_local_name_under_two_prefixes_keeps_the_first_attribute() {
        let xml = r##"<r xmlns:a="urn:a" xmlns:b="urn:b" a:x="1" b:x="2"/>"##;
        assert_eq!(read(xml), serde_json::json!({"r": {"@x": "1"}}));
    }

    #[test]
    fn many_distinct_and_repeated_children() {
        let mut xml = String::from("<r>");
        for i in 0..40 {
            xml.push_str(&format!("<k{i}>{i}</k{i}><rep>{i}</rep>"));
        }
        xml.push_str("</r>");
        let json = read(&xml);
        assert_eq!(json["r"]["k39"], "39");
        assert_eq!(json["r"]["rep"].as_array().unwrap().len(), 40);
    }

    #[test]
    fn refuses_doctype_entities_and_malformed_documents() {
        let laughs = r##"<?xml version="1.0"?><!DOCTYPE lolz [<!ENTITY lol "lol"><!ENTITY lol2 "&lol;&lol;">]><lolz>&lol2;</lolz>"##;
        let err = to_json(laughs.as_bytes(), &XmlSettings::default()).unwrap_err();
        assert!(err.0.contains("DOCTYPE"), "{err}");
        let xxe = r##"<r>&xxe;</r>"##;
        let err = to_json(xxe.as_bytes(), &XmlSettings::default()).unwrap_err();
        assert!(err.0.contains("unknown entity &xxe;"), "{err}");
        for bad in [
            "<a><b></a>",
            "<a>",
            "",
            "<a/><b/>",
            "text<a/>",
            "<a x='1' x='2'/>",
            "<a x='&foo;'/>",
        ] {
            assert!(
                to_json(bad.as_bytes(), &XmlSettings::default()).is_err(),
                "{bad}"
            );
        }
        let deep = "<a>".repeat(MAX_DEPTH + 1);
        let err = to_json(deep.as_bytes(), &XmlSettings::default()).unwrap_err();
        assert!(err.0.contains("deeper"), "{err}");
    }

    #[test]
    fn writes_json_as_xml_in_member_order() {
        let xml = write(r##"{"order":{"@id":7,"zeta":"z","item":[{"@sku":"a","#text":"pen"},"ink"],"gift":null,"paid":true,"total":9.5,"empty":{}}}"##).unwrap();
        assert_eq!(
            xml,
            "<?xml version=\"1.0\" encoding=\"UTF-8\"?><order id=\"7\"><zeta>z</zeta><item sku=\"a\">pen</item><item>ink</item><gift/><paid>true</paid><total>9.5</total><empty/></order>"
        );
        let settings = XmlSettings {
            root: Some("request".into()),
            ..XmlSettings::default()
        };
        assert_eq!(
            write_with(r##"{"a":1,"b":2}"##, &settings).unwrap(),
            "<?xml version=\"1.0\" encoding=\"UTF-8\"?><request><a>1</a><b>2</b></request>"
        );
        assert!(write(r##"{"a":1,"b":2}"##)
            .unwrap_err()
            .0
            .contains("exactly one member"));
        assert!(write(r##"[1]"##).is_err());
    }

    #[test]
    fn escapes_text_and_attributes_and_refuses_bad_names() {
        let xml =
            write(r##"{"n":{"@q":"a\"b'<c>&\n","#text":"</n><evil x=\"1\"/>&amp;\r"}}"##).unwrap();
        assert_eq!(
            xml,
            "<?xml version=\"1.0\" encoding=\"UTF-8\"?><n q=\"a&quot;b&apos;&lt;c&gt;&amp;&#10;\">&lt;/n&gt;&lt;evil x=\"1\"/&gt;&amp;amp;&#13;</n>"
        );
        // What was written reads back as the same strings.
        let back = read(&xml);
        assert_eq!(back["n"]["@q"], "a\"b'<c>&\n");
        assert_eq!(back["n"]["#text"], "</n><evil x=\"1\"/>&amp;");
        for bad in [
            r##"{"a b":1}"##,
            r##"{"x":{"<evil/>":1}}"##,
            r##"{"x":{"@a=\"1\"":1}}"##,
            r##"{"1x":1}"##,
            r##"{"x":"\u0001"}"##,
            r##"{"x":{"@a":[1]}}"##,
            r##"{"x":[[1]]}"##,
        ] {
            assert!(write(bad).is_err(), "{bad}");
        }
    }
}

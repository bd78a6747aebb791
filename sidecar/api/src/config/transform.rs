//! Body transformation on a route (`transform:`): XML ↔ JSON, SOAP ↔ REST,
//! JSON reshaping.

use serde::{Deserialize, Serialize};

/// What a route does to request and response bodies. Either `request` /
/// `response` conversions (XML ↔ JSON) or `soap`, plus optional `json`
/// reshaping of the JSON side.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Transform {
    /// What the client's request body becomes: `none` (as sent) or
    /// `json_to_xml`.
    #[serde(default)]
    pub request: RequestConversion,
    /// What the upstream's response body becomes: `none` (as sent) or
    /// `xml_to_json`.
    #[serde(default)]
    pub response: ResponseConversion,
    /// How XML maps to JSON (names, attributes, text, arrays, namespaces).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub xml: Option<XmlMapping>,
    /// Call a SOAP service as REST/JSON (instead of `request` / `response`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub soap: Option<Soap>,
    /// Largest body (request or response) this route buffers to transform
    /// (default `1MiB`): a larger request is refused (413), a larger
    /// upstream answer is a 502.
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        deserialize_with = "super::optional_size"
    )]
    pub max_body: Option<String>,
    /// Changes to the JSON side of the exchange.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub json: Option<JsonReshaping>,
}

/// A request body conversion.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RequestConversion {
    /// The body goes upstream as the client sent it.
    #[default]
    None,
    /// The client's JSON becomes an XML document.
    JsonToXml,
}

/// A response body conversion.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ResponseConversion {
    /// The body reaches the client as the upstream sent it.
    #[default]
    None,
    /// The upstream's XML becomes JSON.
    XmlToJson,
}

/// The XML ↔ JSON mapping conventions.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct XmlMapping {
    /// Root element of the XML made from JSON: set, the whole JSON body is
    /// its content; unset, the JSON must be an object with one key, the
    /// root element's name.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub root: Option<String>,
    /// Prefix of JSON keys that are XML attributes (default `@`).
    #[serde(default = "default_attributes")]
    pub attributes: String,
    /// JSON key of an element's text when it also has attributes or
    /// children (default `#text`).
    #[serde(default = "default_text")]
    pub text: String,
    /// Element names that are always JSON arrays, even when they occur once.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub arrays: Vec<String>,
    /// Namespace prefixes in XML → JSON: `strip` (default: `soap:Body` is
    /// `Body`, `xmlns` attributes dropped) or `keep` (names as written).
    #[serde(default)]
    pub namespaces: Namespaces,
}

impl Default for XmlMapping {
    fn default() -> Self {
        XmlMapping {
            root: None,
            attributes: default_attributes(),
            text: default_text(),
            arrays: Vec::new(),
            namespaces: Namespaces::default(),
        }
    }
}

/// What XML → JSON does with namespace prefixes.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Namespaces {
    /// Local names only; `xmlns` declarations dropped.
    #[default]
    Strip,
    /// Names exactly as written, `xmlns` declarations as attributes.
    Keep,
}

fn default_attributes() -> String {
    "@".into()
}

fn default_text() -> String {
    "#text".into()
}

/// A SOAP service called as REST: the client's JSON is the operation's
/// content, the answer's Body content comes back as JSON, Faults as JSON
/// errors.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Soap {
    /// `"1.1"` (default) or `"1.2"`.
    #[serde(default = "default_soap_version", deserialize_with = "soap_version")]
    pub version: String,
    /// The operation's action URI: `SOAPAction` (1.1) or the `action`
    /// parameter of the Content-Type (1.2).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub action: Option<String>,
    /// The operation element the JSON body goes into (required).
    pub operation: String,
    /// The operation element's namespace URI.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub namespace: Option<String>,
    /// HTTP status per fault code (`Client`, `Server.Busy`, `Sender`),
    /// over the defaults: Client / Sender 400, anything else 502.
    #[serde(default, skip_serializing_if = "std::collections::BTreeMap::is_empty")]
    pub faults: std::collections::BTreeMap<String, u16>,
}

fn default_soap_version() -> String {
    "1.1".into()
}

/// A SOAP version as written: `"1.1"`, or the bare YAML number `1.1`.
fn soap_version<'de, D: serde::Deserializer<'de>>(deserializer: D) -> Result<String, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum Version {
        Number(f64),
        Text(String),
    }
    Ok(match Version::deserialize(deserializer)? {
        Version::Number(number) => format!("{number:?}"),
        Version::Text(text) => text,
    })
}

/// JSON reshaping on each side of the exchange.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct JsonReshaping {
    /// Applied to the client's JSON before it goes upstream (before any
    /// conversion to XML).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub request: Option<Reshape>,
    /// Applied to the JSON the client receives (after any conversion from
    /// XML).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub response: Option<Reshape>,
}

/// Field changes, applied in this order: `rename`, `move`, `remove`; each
/// sees the result of the one before. Paths are dotted (`address.zip`);
/// a path crossing an array applies to each of its elements.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Reshape {
    /// Field path → its new name (the field stays where it is).
    #[serde(default, skip_serializing_if = "Pairs::is_empty")]
    pub rename: Pairs,
    /// Field path → the path it moves to (objects on the way are created),
    /// in the order written.
    #[serde(default, rename = "move", skip_serializing_if = "Pairs::is_empty")]
    pub moves: Pairs,
    /// Field paths removed.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub remove: Vec<String>,
}

/// A YAML mapping of strings to strings, in the order written.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Pairs(pub Vec<(String, String)>);

impl Pairs {
    /// No pair.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

impl Serialize for Pairs {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        use serde::ser::SerializeMap;
        let mut map = serializer.serialize_map(Some(self.0.len()))?;
        for (key, value) in &self.0 {
            map.serialize_entry(key, value)?;
        }
        map.end()
    }
}

impl<'de> Deserialize<'de> for Pairs {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct PairsVisitor;
        impl<'de> serde::de::Visitor<'de> for PairsVisitor {
            type Value = Pairs;
            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("a mapping of field paths to strings")
            }
            fn visit_map<A: serde::de::MapAccess<'de>>(
                self,
                mut map: A,
            ) -> Result<Pairs, A::Error> {
                let mut pairs = Vec::new();
                while let Some(pair) = map.next_entry::<String, String>()? {
                    pairs.push(pair);
                }
                Ok(Pairs(pairs))
            }
        }
        deserializer.deserialize_map(PairsVisitor)
    }
}

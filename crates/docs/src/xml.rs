//! A bounded, namespace-aware walk over an XML document: the one XML reader of this crate.
//!
//! Elements are matched by namespace URI and local name, never by the prefix a document
//! happens to use (`cda:title` bound to `urn:hl7-org:v3` is `title`; bound to anything else it
//! is not). A DOCTYPE is refused, so no entity is ever declared or expanded; only the five
//! predefined entities and character references are resolved. Depth and size are capped.

use quick_xml::NsReader;
use quick_xml::events::Event;
use quick_xml::name::{Namespace, ResolveResult};

use crate::DocumentError;

/// What the visitor sees.
pub(crate) enum Visit<'a> {
    /// An element opened. `path` holds the local names from the root to it; an element outside
    /// the namespace appears as `""`, so no path through it matches.
    Open {
        path: &'a [String],
        attrs: &'a [(String, String)],
    },
    /// An element closed, with the text directly inside it (whitespace trimmed).
    Close { path: &'a [String], text: &'a str },
}

/// Whether to read on.
#[derive(PartialEq, Eq)]
pub(crate) enum Flow {
    Continue,
    Stop,
}

/// Elements nested deeper than this are refused.
pub(crate) const MAX_DEPTH: usize = 256;

/// Walks `xml`, calling `visit` for elements in one of the namespaces `ns`.
pub(crate) fn walk(
    xml: &str,
    ns: &[&str],
    mut visit: impl FnMut(Visit<'_>) -> Flow,
) -> Result<(), DocumentError> {
    let mut reader = NsReader::from_str(xml);
    let config = reader.config_mut();
    config.expand_empty_elements = true;
    config.check_end_names = true;
    let mut path: Vec<String> = Vec::new();
    let mut texts: Vec<String> = Vec::new();
    let mut attrs: Vec<(String, String)> = Vec::new();
    loop {
        let (resolved, event) = reader
            .read_resolved_event()
            .map_err(|e| DocumentError::Xml(e.to_string()))?;
        let in_ns = matches!(resolved, ResolveResult::Bound(Namespace(n)) if ns.contains(&n));
        match event {
            Event::DocType(_) => {
                return Err(DocumentError::Xml("a DOCTYPE is not accepted".into()));
            }
            Event::Start(start) => {
                if path.len() >= MAX_DEPTH {
                    return Err(DocumentError::Xml(format!(
                        "nested deeper than {MAX_DEPTH}"
                    )));
                }
                let name = if in_ns {
                    start.local_name().into_inner().to_string()
                } else {
                    String::new()
                };
                attrs.clear();
                for attr in start.attributes() {
                    let attr = attr.map_err(|e| DocumentError::Xml(e.to_string()))?;
                    if attr.key.prefix().is_some() {
                        continue;
                    }
                    let value = attr
                        .normalized_value(quick_xml::XmlVersion::Implicit1_0)
                        .map_err(|e| DocumentError::Xml(e.to_string()))?;
                    attrs.push((
                        attr.key.local_name().into_inner().to_string(),
                        value.into_owned(),
                    ));
                }
                path.push(name);
                texts.push(String::new());
                if visit(Visit::Open {
                    path: &path,
                    attrs: &attrs,
                }) == Flow::Stop
                {
                    return Ok(());
                }
            }
            Event::End(_) => {
                let text = texts.pop().unwrap_or_default();
                let flow = visit(Visit::Close {
                    path: &path,
                    text: text.trim(),
                });
                path.pop();
                if flow == Flow::Stop {
                    return Ok(());
                }
            }
            Event::Text(text) => {
                if let Some(top) = texts.last_mut() {
                    top.push_str(&text.xml10_content());
                }
            }
            Event::CData(data) => {
                if let Some(top) = texts.last_mut() {
                    top.push_str(&data);
                }
            }
            Event::GeneralRef(reference) => {
                let resolved = match reference.resolve_char_ref() {
                    Ok(Some(c)) => c.to_string(),
                    Ok(None) => quick_xml::escape::resolve_predefined_entity(&reference)
                        .ok_or_else(|| DocumentError::Xml("an undeclared entity".into()))?
                        .to_string(),
                    Err(e) => return Err(DocumentError::Xml(e.to_string())),
                };
                if let Some(top) = texts.last_mut() {
                    top.push_str(&resolved);
                }
            }
            Event::Eof => {
                return if path.is_empty() {
                    Ok(())
                } else {
                    Err(DocumentError::Xml(
                        "the document ends inside an element".into(),
                    ))
                };
            }
            Event::Comment(_) | Event::Decl(_) | Event::PI(_) | Event::Empty(_) => {}
        }
    }
}

/// The UTF-8 text of an XML document (a BOM dropped); other encodings are refused.
pub(crate) fn text(bytes: &[u8]) -> Result<&str, DocumentError> {
    let bytes = bytes.strip_prefix(b"\xEF\xBB\xBF").unwrap_or(bytes);
    std::str::from_utf8(bytes).map_err(|_| DocumentError::Xml("not UTF-8".into()))
}

/// Whether `path` ends with the local names in `tail`.
pub(crate) fn ends_with(path: &[String], tail: &[&str]) -> bool {
    path.len() >= tail.len()
        && path[path.len() - tail.len()..]
            .iter()
            .zip(tail)
            .all(|(a, b)| a == b)
}

/// Whether `path` is exactly the local names in `full`.
pub(crate) fn is(path: &[String], full: &[&str]) -> bool {
    path.len() == full.len() && ends_with(path, full)
}

/// The value of attribute `name`.
pub(crate) fn attr<'a>(attrs: &'a [(String, String)], name: &str) -> Option<&'a str> {
    attrs
        .iter()
        .find(|(k, _)| k == name)
        .map(|(_, v)| v.as_str())
        .filter(|v| !v.is_empty())
}

//! Result files → rows of named fields, each with its position in the file.
//!
//! A file that cannot be read as a whole (bad encoding, broken XML, no CSV
//! header, too many rows) is a [`FileError`]; a row that is malformed on its
//! own (wrong number of CSV fields) is a [`RowError`] and does not stop the
//! others.

use super::config::{Encoding, InboundConfig, InboundFormat};
use quick_xml::Reader;
use quick_xml::events::Event;
use std::collections::BTreeMap;

/// One result in a file.
#[derive(Debug, Clone, PartialEq)]
pub struct Row {
    /// 1-based position among the file's rows: with the file's hash, what
    /// makes the result unique.
    pub ordinal: usize,
    /// Where it is, for reports (`line 12`, `item 3`).
    pub at: String,
    pub fields: BTreeMap<String, String>,
}

/// A row that could not be read.
#[derive(Debug, Clone, PartialEq)]
pub struct RowError {
    pub at: String,
    pub reason: String,
}

/// A file that cannot be read at all.
#[derive(Debug, Clone, PartialEq)]
pub struct FileError(pub String);

/// Decodes `bytes` (a UTF-8 BOM is dropped).
pub fn decode(bytes: &[u8], encoding: Encoding) -> Result<String, FileError> {
    match encoding {
        Encoding::Utf8 => {
            let bytes = bytes.strip_prefix(b"\xEF\xBB\xBF").unwrap_or(bytes);
            std::str::from_utf8(bytes).map(str::to_string).map_err(|e| {
                let line = 1 + bytes[..e.valid_up_to()].iter().filter(|b| **b == b'\n').count();
                FileError(format!(
                    "line {line}: not valid UTF-8 (is the file ISO-8859-1? set encoding = \"iso-8859-1\")"
                ))
            })
        }
        // ISO-8859-1 maps every byte to the code point of the same value.
        Encoding::Latin1 => Ok(bytes.iter().map(|b| char::from(*b)).collect()),
    }
}

/// Encodes text for a vendor file.
pub fn encode(text: String, encoding: Encoding) -> Result<Vec<u8>, String> {
    match encoding {
        Encoding::Utf8 => Ok(text.into_bytes()),
        Encoding::Latin1 => text
            .chars()
            .enumerate()
            .map(|(i, c)| {
                u8::try_from(u32::from(c))
                    .map_err(|_| format!("character {i} ('{c}') cannot be written in ISO-8859-1"))
            })
            .collect(),
    }
}

/// Splits a decoded file into rows.
pub fn rows(text: &str, cfg: &InboundConfig) -> Result<Vec<Result<Row, RowError>>, FileError> {
    let out = match cfg.format {
        InboundFormat::Csv => csv_rows(text, cfg.csv.delimiter, cfg.max_rows)?,
        InboundFormat::Xml => xml_rows(text, &cfg.row_element, cfg.max_rows)?,
        InboundFormat::Json => json_rows(text, cfg.max_rows)?,
    };
    if out.is_empty() {
        return Err(FileError("the file holds no result".into()));
    }
    Ok(out)
}

fn too_many(max: usize) -> FileError {
    FileError(format!(
        "more than max_rows ({max}) results: nothing applied; split the file"
    ))
}

/// RFC 4180 CSV with a header line; quoted fields may span lines.
fn csv_rows(
    text: &str,
    delimiter: char,
    max_rows: usize,
) -> Result<Vec<Result<Row, RowError>>, FileError> {
    let mut records: Vec<(usize, Result<Vec<String>, String>)> = Vec::new();
    let mut chars = text.chars().peekable();
    let mut line = 1;
    loop {
        // One record.
        let start = line;
        let mut fields = Vec::new();
        let mut field = String::new();
        let mut quoted = false;
        let mut at_field_start = true;
        let mut bad = None;
        let mut ended = false;
        loop {
            let Some(c) = chars.next() else {
                ended = true;
                if quoted {
                    bad = Some("a quoted field is never closed".to_string());
                }
                break;
            };
            if quoted {
                match c {
                    '"' if chars.peek() == Some(&'"') => {
                        chars.next();
                        field.push('"');
                    }
                    '"' => quoted = false,
                    '\n' => {
                        line += 1;
                        field.push('\n');
                    }
                    c => field.push(c),
                }
                continue;
            }
            match c {
                '"' if at_field_start => {
                    quoted = true;
                    at_field_start = false;
                }
                c if c == delimiter => {
                    fields.push(std::mem::take(&mut field));
                    at_field_start = true;
                }
                '\r' if chars.peek() == Some(&'\n') => {}
                '\n' => {
                    line += 1;
                    break;
                }
                c => {
                    field.push(c);
                    at_field_start = false;
                }
            }
        }
        let blank = fields.is_empty() && field.trim().is_empty() && bad.is_none();
        if !blank {
            fields.push(field);
            records.push((start, bad.map_or(Ok(fields), Err)));
            if records.len() > max_rows + 1 {
                return Err(too_many(max_rows));
            }
        }
        if ended {
            break;
        }
    }
    let mut records = records.into_iter();
    let header = match records.next() {
        Some((_, Ok(h))) => h
            .into_iter()
            .map(|h| h.trim().to_string())
            .collect::<Vec<_>>(),
        Some((l, Err(e))) => return Err(FileError(format!("line {l}: header: {e}"))),
        None => return Err(FileError("the file is empty (no header line)".into())),
    };
    Ok(records
        .enumerate()
        .map(|(i, (line, rec))| {
            let at = format!("line {line}");
            let values = rec.map_err(|reason| RowError {
                at: at.clone(),
                reason,
            })?;
            if values.len() != header.len() {
                return Err(RowError {
                    at,
                    reason: format!("{} fields, the header has {}", values.len(), header.len()),
                });
            }
            Ok(Row {
                ordinal: i + 1,
                at,
                fields: header.iter().cloned().zip(values).collect(),
            })
        })
        .collect())
}

/// Incremental byte offset → line number (offsets only grow).
struct Lines<'a> {
    text: &'a [u8],
    counted_to: usize,
    line: usize,
}

impl Lines<'_> {
    fn at(&mut self, pos: usize) -> usize {
        let pos = pos.min(self.text.len());
        if pos > self.counted_to {
            self.line += self.text[self.counted_to..pos]
                .iter()
                .filter(|b| **b == b'\n')
                .count();
            self.counted_to = pos;
        }
        self.line
    }
}

type Fields = BTreeMap<String, String>;

fn attributes(e: &quick_xml::events::BytesStart<'_>) -> Result<Fields, String> {
    let mut fields = BTreeMap::new();
    for a in e.attributes() {
        let a = a.map_err(|e| e.to_string())?;
        let k = a.key.local_name().as_ref().to_string();
        let v = a
            .normalized_value(quick_xml::XmlVersion::Implicit1_0)
            .map_err(|e| e.to_string())?;
        fields.insert(k, v.into_owned());
    }
    Ok(fields)
}

/// Every `row_element` is a row; its attributes and child elements are the fields.
fn xml_rows(
    text: &str,
    row_element: &str,
    max_rows: usize,
) -> Result<Vec<Result<Row, RowError>>, FileError> {
    // Not trimmed: trimming would eat spaces next to `&amp;`; values are
    // trimmed when mapped.
    let mut reader = Reader::from_str(text);
    let mut lines = Lines {
        text: text.as_bytes(),
        counted_to: 0,
        line: 1,
    };
    let mut out = Vec::new();
    let mut row: Option<(usize, Fields)> = None;
    // Inside a row: the child element whose text is being read, and depth.
    let mut field: Option<(String, String)> = None;
    let mut depth_in_row = 0usize;
    let is_row = |e: &quick_xml::events::BytesStart<'_>| e.local_name().as_ref() == row_element;
    loop {
        let event = match reader.read_event() {
            Ok(e) => e,
            Err(e) => {
                let line = lines.at(reader.error_position() as usize);
                return Err(FileError(format!("line {line}: not well-formed XML: {e}")));
            }
        };
        let line = lines.at(reader.buffer_position() as usize);
        let bad = |e: String| FileError(format!("line {line}: not well-formed XML: {e}"));
        match event {
            Event::Start(e) if row.is_none() && is_row(&e) => {
                row = Some((line, attributes(&e).map_err(bad)?));
                depth_in_row = 0;
            }
            Event::Empty(e) if row.is_none() && is_row(&e) => {
                row = Some((line, attributes(&e).map_err(bad)?));
                finish_row(&mut out, &mut row, max_rows)?;
            }
            // Outside a row: containers, headers, anything else.
            Event::Start(_) | Event::Empty(_) if row.is_none() => {}
            Event::Start(e) => {
                depth_in_row += 1;
                if depth_in_row == 1 {
                    let k = e.local_name().as_ref().to_string();
                    field = Some((k, String::new()));
                }
            }
            Event::Empty(e) => {
                if depth_in_row == 0
                    && let Some((_, fields)) = row.as_mut()
                {
                    let k = e.local_name().as_ref().to_string();
                    fields.entry(k).or_default();
                }
            }
            Event::Text(t) => {
                if let Some((_, v)) = field.as_mut() {
                    v.push_str(&t.xml10_content());
                }
            }
            Event::CData(t) => {
                if let Some((_, v)) = field.as_mut() {
                    v.push_str(&t.xml10_content());
                }
            }
            Event::GeneralRef(r) => {
                let resolved = match r.resolve_char_ref() {
                    Ok(Some(c)) => c.to_string(),
                    Ok(None) => {
                        let name = r.xml10_content();
                        quick_xml::escape::resolve_predefined_entity(&name)
                            .map(str::to_string)
                            .ok_or_else(|| {
                                FileError(format!(
                                    "line {line}: unknown entity &{name}; (entities are not expanded)"
                                ))
                            })?
                    }
                    Err(e) => return Err(bad(e.to_string())),
                };
                if let Some((_, v)) = field.as_mut() {
                    v.push_str(&resolved);
                }
            }
            Event::End(_) if row.is_some() => {
                if depth_in_row == 0 {
                    finish_row(&mut out, &mut row, max_rows)?;
                } else {
                    if depth_in_row == 1
                        && let (Some((k, v)), Some((_, fields))) = (field.take(), row.as_mut())
                    {
                        fields.insert(k, v);
                    }
                    depth_in_row -= 1;
                }
            }
            Event::Eof => break,
            _ => {}
        }
    }
    Ok(out)
}

fn finish_row(
    out: &mut Vec<Result<Row, RowError>>,
    row: &mut Option<(usize, BTreeMap<String, String>)>,
    max_rows: usize,
) -> Result<(), FileError> {
    if let Some((line, fields)) = row.take() {
        if out.len() == max_rows {
            return Err(too_many(max_rows));
        }
        out.push(Ok(Row {
            ordinal: out.len() + 1,
            at: format!("line {line}"),
            fields,
        }));
    }
    Ok(())
}

/// One object, or an array of objects; scalar members are the fields.
fn json_rows(text: &str, max_rows: usize) -> Result<Vec<Result<Row, RowError>>, FileError> {
    let value: serde_json::Value = serde_json::from_str(text)
        .map_err(|e| FileError(format!("line {}: not valid JSON: {e}", e.line())))?;
    let items = match value {
        serde_json::Value::Array(items) => items,
        obj @ serde_json::Value::Object(_) => vec![obj],
        _ => {
            return Err(FileError(
                "expected an object or an array of objects".into(),
            ));
        }
    };
    if items.len() > max_rows {
        return Err(too_many(max_rows));
    }
    Ok(items
        .into_iter()
        .enumerate()
        .map(|(i, item)| {
            let at = format!("item {}", i + 1);
            let serde_json::Value::Object(map) = item else {
                return Err(RowError {
                    at,
                    reason: "not an object".into(),
                });
            };
            let fields = map
                .into_iter()
                .filter_map(|(k, v)| {
                    let text = match v {
                        serde_json::Value::String(s) => s,
                        serde_json::Value::Number(n) => n.to_string(),
                        serde_json::Value::Bool(b) => b.to_string(),
                        _ => return None,
                    };
                    Some((k, text))
                })
                .collect();
            Ok(Row {
                ordinal: i + 1,
                at,
                fields,
            })
        })
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cfg(format: &str) -> InboundConfig {
        let toml = format!(
            r#"{{"folder": "x", "format": "{format}", "fields": {{"practice_id": "id"}}}}"#
        );
        serde_json::from_str(&toml).unwrap()
    }

    #[test]
    fn csv_with_quotes_multiline_and_bad_rows() {
        let text = "id;esito;motivo\r\np1;OK;\"a; \"\"b\"\"\nc\"\np2;KO\n\np3;OK;x\n";
        let rows = rows(text, &cfg("csv")).unwrap();
        assert_eq!(rows.len(), 3);
        let r1 = rows[0].as_ref().unwrap();
        assert_eq!(r1.at, "line 2");
        assert_eq!(r1.fields["motivo"], "a; \"b\"\nc");
        let e = rows[1].as_ref().unwrap_err();
        assert_eq!(e.at, "line 4");
        assert!(e.reason.contains("2 fields"), "{}", e.reason);
        let r3 = rows[2].as_ref().unwrap();
        assert_eq!((r3.at.as_str(), r3.ordinal), ("line 6", 3));
    }

    #[test]
    fn xml_rows_from_children_and_attributes() {
        let text = "<?xml version=\"1.0\"?>\n<esiti>\n  <result id=\"p1\">\n    <esito>OK</esito>\n    <motivo>a &amp; b &#65;</motivo>\n  </result>\n  <result id=\"p2\"/>\n</esiti>\n";
        let rows = rows(text, &cfg("xml")).unwrap();
        assert_eq!(rows.len(), 2);
        let r1 = rows[0].as_ref().unwrap();
        assert_eq!(r1.fields["id"], "p1");
        assert_eq!(r1.fields["motivo"], "a & b A");
        assert_eq!(r1.at, "line 3");
        assert_eq!(rows[1].as_ref().unwrap().fields["id"], "p2");
        assert_eq!(rows[1].as_ref().unwrap().at, "line 7");
    }

    #[test]
    fn xml_entities_are_not_expanded() {
        let text = "<!DOCTYPE r [<!ENTITY x SYSTEM \"file:///etc/passwd\">]><r><result><id>&x;</id></result></r>";
        let err = rows(text, &cfg("xml")).unwrap_err();
        assert!(err.0.contains("unknown entity &x;"), "{}", err.0);
    }

    #[test]
    fn row_limit_refuses_the_whole_file() {
        let mut c = cfg("csv");
        c.max_rows = 2;
        let err = rows("id\na\nb\nc\n", &c).unwrap_err();
        assert!(err.0.contains("max_rows"), "{}", err.0);
        assert!(rows("id\na\nb\n", &c).is_ok());
    }

    #[test]
    fn encodings() {
        assert_eq!(
            decode(b"\xEF\xBB\xBFcitt\xC3\xA0", Encoding::Utf8).unwrap(),
            "città"
        );
        assert_eq!(decode(b"citt\xE0", Encoding::Latin1).unwrap(), "città");
        assert!(
            decode(b"a\nb\xE0", Encoding::Utf8)
                .unwrap_err()
                .0
                .contains("line 2")
        );
        assert_eq!(
            encode("città".into(), Encoding::Latin1).unwrap(),
            b"citt\xE0"
        );
        assert!(encode("€".into(), Encoding::Latin1).is_err());
    }
}

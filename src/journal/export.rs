//! Exporting a journal for other tools: MongoDB canonical Extended JSON, one document per line
//! (what `mongoimport` reads), or concatenated BSON documents (what `mongorestore` and `bsondump`
//! read).
//!
//! In: a verified journal and the one namespace to export (these tools load one collection per
//! file). Out: the namespace's documents in journal order, written to any `Write`. Blocking:
//! async callers run it in `spawn_blocking`.
//!
//! Extended JSON keeps field order and every type: doubles are always `$numberDouble` (also
//! `-0.0`, `NaN`, `Infinity`), integers `$numberInt` / `$numberLong`, and so on, as the
//! Extended JSON v2 specification's canonical mode says.

use std::io::Write;
use std::path::Path;

use mongodb::bson::{Bson, RawBsonRef, RawDocument};
use serde_json::{json, Map, Value};

use super::reader::JournalReader;
use super::{JournalError, Op};

/// Output formats of `journal export`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum ExportFormat {
    /// Canonical Extended JSON, one document per line.
    Ndjson,
    /// Concatenated BSON documents.
    Bson,
}

#[derive(Debug, thiserror::Error)]
pub enum ExportError {
    #[error(transparent)]
    Journal(#[from] JournalError),
    #[error("cannot write to {target}: {source}")]
    Write {
        target: String,
        #[source]
        source: std::io::Error,
    },
    #[error(
        "record {seq} of {ns} is a sync's change (a delete, or a document that changes again \
         later): an export holds each document once, so such a journal cannot be exported"
    )]
    Change { seq: u64, ns: String },
    #[error("record {seq} of {ns} cannot be written as Extended JSON: {reason}")]
    Convert {
        seq: u64,
        ns: String,
        reason: String,
    },
}

/// Writes the documents of `ns` among the journal's first `records` records; returns how many.
pub fn export(
    dir: &Path,
    ns: &str,
    records: u64,
    format: ExportFormat,
    out: &mut impl Write,
    target: &str,
) -> Result<u64, ExportError> {
    let write_failed = |source| ExportError::Write {
        target: target.to_string(),
        source,
    };
    let mut reader = JournalReader::open(dir)?;
    let mut written = 0;
    let mut line = Vec::new();
    while let Some(frame) = reader.next_frame()? {
        if frame.header.first_seq >= records {
            break;
        }
        for (i, record) in frame.records().enumerate() {
            if record.ns != ns || record.op == Op::Moved {
                continue;
            }
            if record.op != Op::Upsert {
                return Err(ExportError::Change {
                    seq: frame.header.first_seq + i as u64,
                    ns: ns.to_string(),
                });
            }
            match format {
                ExportFormat::Bson => out.write_all(record.doc.as_bytes()),
                ExportFormat::Ndjson => {
                    let value =
                        canonical_extjson(record.doc).map_err(|reason| ExportError::Convert {
                            seq: frame.header.first_seq + i as u64,
                            ns: ns.to_string(),
                            reason,
                        })?;
                    line.clear();
                    serde_json::to_writer(&mut line, &value).expect("JSON values serialise");
                    line.push(b'\n');
                    out.write_all(&line)
                }
            }
            .map_err(write_failed)?;
            written += 1;
        }
    }
    out.flush().map_err(write_failed)?;
    Ok(written)
}

/// A document as canonical Extended JSON, fields in their order.
pub fn canonical_extjson(doc: &RawDocument) -> Result<Value, String> {
    let mut map = Map::new();
    for element in doc.iter() {
        let (key, value) = element.map_err(|e| e.to_string())?;
        if map
            .insert(key.to_string(), canonical_value(value)?)
            .is_some()
        {
            return Err(format!(
                "field {key:?} appears twice, which JSON objects cannot hold"
            ));
        }
    }
    Ok(Value::Object(map))
}

fn canonical_value(value: RawBsonRef<'_>) -> Result<Value, String> {
    Ok(match value {
        RawBsonRef::Double(f) => json!({ "$numberDouble": double_text(f) }),
        RawBsonRef::Document(doc) => canonical_extjson(doc)?,
        RawBsonRef::Array(array) => Value::Array(
            array
                .into_iter()
                .map(|v| canonical_value(v.map_err(|e| e.to_string())?))
                .collect::<Result<_, _>>()?,
        ),
        // Every other type is one value whose canonical form the bson crate writes.
        other => Bson::try_from(other.to_raw_bson())
            .map_err(|e| e.to_string())?
            .into_canonical_extjson(),
    })
}

/// The `$numberDouble` string: shortest text that reads back to the same double.
fn double_text(f: f64) -> String {
    if f.is_nan() {
        "NaN".into()
    } else if f.is_infinite() {
        if f > 0.0 { "Infinity" } else { "-Infinity" }.into()
    } else {
        // Debug formatting keeps the sign of zero and a ".0" on integral values.
        format!("{f:?}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use mongodb::bson::{doc, Document, RawDocumentBuf};

    fn round_trip(doc: &Document) -> Document {
        let raw = RawDocumentBuf::from_document(doc).unwrap();
        let value = canonical_extjson(&raw).unwrap();
        match Bson::try_from(value).unwrap() {
            Bson::Document(d) => d,
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn doubles_and_field_order() {
        let doc = doc! { "z": 1.0, "a": -0.0, "m": f64::NAN, "i": f64::NEG_INFINITY,
        "big": 1e300, "tiny": 5e-324, "n": 7, "l": 7i64 };
        let raw = RawDocumentBuf::from_document(&doc).unwrap();
        let text = canonical_extjson(&raw).unwrap().to_string();
        assert_eq!(
            text,
            r#"{"z":{"$numberDouble":"1.0"},"a":{"$numberDouble":"-0.0"},"m":{"$numberDouble":"NaN"},"i":{"$numberDouble":"-Infinity"},"big":{"$numberDouble":"1e300"},"tiny":{"$numberDouble":"5e-324"},"n":{"$numberInt":"7"},"l":{"$numberLong":"7"}}"#
        );
        let back = round_trip(&doc);
        assert_eq!(
            back.keys().collect::<Vec<_>>(),
            doc.keys().collect::<Vec<_>>()
        );
        assert!(back.get_f64("a").unwrap().is_sign_negative());
        assert_eq!(back.get_f64("tiny").unwrap(), 5e-324);
    }

    #[test]
    fn refuses_duplicate_fields() {
        let mut raw = RawDocumentBuf::new();
        raw.append("a", 1);
        raw.append("a", 2);
        assert!(canonical_extjson(&raw).unwrap_err().contains("twice"));
    }
}

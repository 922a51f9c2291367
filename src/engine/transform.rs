//! Transforms: what a job changes in each document on its way to the destination — fields
//! dropped, renamed, set, redacted or replaced by a keyed hash — for masked and trimmed copies.
//!
//! In: a namespace's [`Steps`] (parsed from a transform file's JSON, [`Step::parse`]) and the
//! key for `hmac`. Out: [`Steps::apply`] turns a raw document into what is written. A document
//! that no step touches passes as it is, without being decoded; one that a step touches is
//! decoded once, changed step by step, and encoded once.
//!
//! Paths are dotted; a step on a path a document lacks does nothing; a path through an array
//! applies to each of its elements (and a step's last field holding an array, to each element
//! for `redact` and `hmac`). `_id` is never transformed: resume, sync and verify key on it.

use std::fmt;
use std::sync::Arc;

use mongodb::bson::{Bson, Document, RawDocument, RawDocumentBuf};
use ring::hmac;

use crate::state::hex;

/// The key of `hmac` steps.
#[derive(Clone)]
pub struct HmacKey(hmac::Key);

impl HmacKey {
    /// A key from its bytes (a key file's content, the environment's variable).
    pub fn new(secret: &[u8]) -> HmacKey {
        HmacKey(hmac::Key::new(hmac::HMAC_SHA256, secret))
    }

    /// Which key this is, without showing it: hex digits of its HMAC of a fixed text. Two
    /// runs with the same key have the same fingerprint.
    pub fn fingerprint(&self) -> String {
        let tag = hmac::sign(&self.0, b"mongoferry: which transform key");
        hex(&tag.as_ref()[..8])
    }
}

impl fmt::Debug for HmacKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("HmacKey(***)")
    }
}

/// One step of a transform.
#[derive(Debug, Clone, PartialEq)]
pub enum Step {
    /// `{"drop": "a.b"}`: the field is removed.
    Drop(Path),
    /// `{"rename": "a.tel", "to": "a.phone"}`: the value moves.
    Rename(Path, Path),
    /// `{"set": "env", "value": "staging"}`: a constant (Extended JSON) is written.
    Set(Path, Bson),
    /// `{"redact": "ssn"}`: a string becomes `"REDACTED"`, anything else `null`.
    Redact(Path),
    /// `{"hmac": "email"}`: the value becomes a keyed HMAC-SHA256 of its canonical BSON: hex
    /// digits for a string (and any other non-number), an `Int64` for a number.
    Hmac(Path),
}

/// A dotted path, as its fields.
#[derive(Debug, Clone, PartialEq)]
pub struct Path(Vec<String>);

impl Path {
    fn parse(text: &str) -> Result<Path, String> {
        let fields: Vec<String> = text.split('.').map(str::to_string).collect();
        if fields.iter().any(|f| f.is_empty() || f.starts_with('$')) {
            return Err(format!("`{text}` is not a dotted path of field names"));
        }
        if fields[0] == "_id" {
            return Err("`_id` cannot be transformed: resume, sync and verify key on it".into());
        }
        Ok(Path(fields))
    }

    fn first(&self) -> &str {
        &self.0[0]
    }
}

impl fmt::Display for Path {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0.join("."))
    }
}

impl Step {
    /// A step from its JSON object; the error says what is wrong with it.
    pub fn parse(json: &serde_json::Value) -> Result<Step, String> {
        let object = json
            .as_object()
            .ok_or("a step is an object such as {\"drop\": \"field\"}")?;
        let text = |key: &str| -> Result<Path, String> {
            let value = object[key]
                .as_str()
                .ok_or_else(|| format!("`{key}` takes a field's dotted path (a string)"))?;
            Path::parse(value)
        };
        let only = |keys: &[&str]| -> Result<(), String> {
            match object.keys().find(|k| !keys.contains(&k.as_str())) {
                Some(extra) => Err(format!("unknown key `{extra}` in this step")),
                None => Ok(()),
            }
        };
        let kind = ["drop", "rename", "set", "redact", "hmac"]
            .into_iter()
            .find(|k| object.contains_key(*k))
            .ok_or("unknown step: use drop, rename, set, redact or hmac")?;
        let step = match kind {
            "drop" => {
                only(&["drop"])?;
                Step::Drop(text("drop")?)
            }
            "rename" => {
                only(&["rename", "to"])?;
                if !object.contains_key("to") {
                    return Err("`rename` needs `to`, the new path".into());
                }
                let (from, to) = (text("rename")?, text("to")?);
                if from == to || to.0.starts_with(&from.0) || from.0.starts_with(&to.0) {
                    return Err(format!("cannot rename `{from}` to `{to}`"));
                }
                Step::Rename(from, to)
            }
            "set" => {
                only(&["set", "value"])?;
                let value = object
                    .get("value")
                    .ok_or("`set` needs `value` (Extended JSON)")?;
                let value = Bson::try_from(value.clone())
                    .map_err(|e| format!("`value` is not Extended JSON: {e}"))?;
                Step::Set(text("set")?, value)
            }
            "redact" => {
                only(&["redact"])?;
                Step::Redact(text("redact")?)
            }
            _ => {
                only(&["hmac"])?;
                Step::Hmac(text("hmac")?)
            }
        };
        Ok(step)
    }

    fn path(&self) -> &Path {
        match self {
            Step::Drop(p)
            | Step::Rename(p, _)
            | Step::Set(p, _)
            | Step::Redact(p)
            | Step::Hmac(p) => p,
        }
    }

    /// Whether the step may change `doc`: a `set` always, another only when the document has
    /// its path's first field.
    fn touches(&self, doc: &RawDocument) -> bool {
        matches!(self, Step::Set(..)) || matches!(doc.get(self.path().first()), Ok(Some(_)))
    }
}

impl Step {
    /// The step as a text that tells any two steps apart (`set`'s value as canonical Extended
    /// JSON, which keeps its type, where the display shows it relaxed).
    pub fn canonical(&self) -> String {
        match self {
            Step::Set(p, value) => format!("set {p} = {}", value.clone().into_canonical_extjson()),
            other => other.to_string(),
        }
    }
}

impl fmt::Display for Step {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Step::Drop(p) => write!(f, "drop {p}"),
            Step::Rename(p, to) => write!(f, "rename {p} to {to}"),
            Step::Set(p, value) => write!(f, "set {p} = {}", value.clone().into_relaxed_extjson()),
            Step::Redact(p) => write!(f, "redact {p}"),
            Step::Hmac(p) => write!(f, "hmac {p}"),
        }
    }
}

/// What a namespace's documents go through, in order.
#[derive(Debug, Clone)]
pub struct Steps {
    steps: Vec<Step>,
    key: Option<HmacKey>,
}

impl Steps {
    /// `steps` with the key their `hmac` steps use (`None`: there must be none).
    pub fn new(steps: Vec<Step>, key: Option<HmacKey>) -> Result<Arc<Steps>, String> {
        if key.is_none() {
            if let Some(step) = steps.iter().find(|s| matches!(s, Step::Hmac(_))) {
                return Err(format!(
                    "`{step}` needs a key: --transform-key-file or MONGOFERRY_TRANSFORM_KEY"
                ));
            }
        }
        Ok(Arc::new(Steps { steps, key }))
    }

    pub fn steps(&self) -> &[Step] {
        &self.steps
    }

    /// The document as it is written; the document as it was, and why, when the steps cannot
    /// read it.
    pub fn apply(&self, raw: RawDocumentBuf) -> Result<RawDocumentBuf, (RawDocumentBuf, String)> {
        if !self.steps.iter().any(|s| s.touches(&raw)) {
            return Ok(raw);
        }
        let mut doc: Document = match raw.to_document() {
            Ok(doc) => doc,
            Err(e) => return Err((raw, format!("a document that cannot be read: {e}"))),
        };
        for step in &self.steps {
            self.apply_step(step, &mut doc);
        }
        RawDocumentBuf::from_document(&doc).map_err(|e| (raw, format!("cannot encode: {e}")))
    }

    fn apply_step(&self, step: &Step, doc: &mut Document) {
        match step {
            Step::Drop(path) => {
                on_parents(doc, &path.0, &mut |parent, field| {
                    parent.remove(field);
                });
            }
            Step::Set(path, value) => set(doc, &path.0, value),
            Step::Redact(path) => on_values(doc, &path.0, &mut redact),
            Step::Hmac(path) => {
                let key = self.key.as_ref().expect("checked in Steps::new");
                on_values(doc, &path.0, &mut |value| *value = digest(key, value));
            }
            Step::Rename(from, to) => {
                // Through the arrays of the paths' common start, in each element the rest.
                let common = from.0.iter().zip(&to.0).take_while(|(a, b)| a == b).count();
                let (from_rest, to_rest) = (&from.0[common..], &to.0[common..]);
                on_documents(doc, &from.0[..common], &mut |parent| {
                    if let Some(value) = take(parent, from_rest) {
                        set(parent, to_rest, &value);
                    }
                });
            }
        }
    }
}

/// Calls `each` on every document at `path` (the document itself for an empty path), through
/// arrays.
fn on_documents(doc: &mut Document, path: &[String], each: &mut dyn FnMut(&mut Document)) {
    let Some((first, rest)) = path.split_first() else {
        return each(doc);
    };
    match doc.get_mut(first) {
        Some(Bson::Document(inner)) => on_documents(inner, rest, each),
        Some(Bson::Array(items)) => {
            for item in items {
                if let Bson::Document(inner) = item {
                    on_documents(inner, rest, each);
                }
            }
        }
        _ => {}
    }
}

/// Calls `each` with every document holding the path's last field, and that field's name.
fn on_parents(doc: &mut Document, path: &[String], each: &mut dyn FnMut(&mut Document, &str)) {
    let (last, parents) = path.split_last().expect("a path has a field");
    on_documents(doc, parents, &mut |parent| each(parent, last));
}

/// Calls `each` on every value at `path`; an array there, on each of its elements.
fn on_values(doc: &mut Document, path: &[String], each: &mut dyn FnMut(&mut Bson)) {
    on_parents(
        doc,
        path,
        &mut |parent, field| match parent.get_mut(field) {
            Some(Bson::Array(items)) => items.iter_mut().for_each(&mut *each),
            Some(value) => each(value),
            None => {}
        },
    );
}

/// Writes `value` at `path`, making the documents on the way (an array on the way: in each
/// of its documents).
fn set(doc: &mut Document, path: &[String], value: &Bson) {
    let (first, rest) = path.split_first().expect("a path has a field");
    if rest.is_empty() {
        doc.insert(first.clone(), value.clone());
        return;
    }
    match doc.get_mut(first) {
        Some(Bson::Document(inner)) => set(inner, rest, value),
        Some(Bson::Array(items)) => {
            for item in items {
                if let Bson::Document(inner) = item {
                    set(inner, rest, value);
                }
            }
        }
        Some(_) => {} // a scalar in the way: left as it is
        None => {
            let mut inner = Document::new();
            set(&mut inner, rest, value);
            doc.insert(first.clone(), inner);
        }
    }
}

/// Removes and returns the value at `path` (no arrays on the way).
fn take(doc: &mut Document, path: &[String]) -> Option<Bson> {
    let (first, rest) = path.split_first()?;
    if rest.is_empty() {
        return doc.remove(first);
    }
    match doc.get_mut(first) {
        Some(Bson::Document(inner)) => take(inner, rest),
        _ => None,
    }
}

fn redact(value: &mut Bson) {
    *value = match value {
        Bson::String(_) => Bson::String("REDACTED".into()),
        _ => Bson::Null,
    };
}

/// The keyed digest of `value`'s canonical BSON: whole numbers of any type as an `Int64`, so
/// that `1`, `NumberLong(1)` and `1.0` give one result; a number gives an `Int64` of the
/// digest's first 8 bytes, anything else its hex digits. `null` stays `null`.
fn digest(key: &HmacKey, value: &Bson) -> Bson {
    let canonical = match value {
        Bson::Null => return Bson::Null,
        Bson::Int32(n) => Bson::Int64(i64::from(*n)),
        Bson::Double(f) if f.fract() == 0.0 && f.abs() < 9.2e18 => Bson::Int64(*f as i64),
        other => other.clone(),
    };
    let numeric = matches!(
        value,
        Bson::Int32(_) | Bson::Int64(_) | Bson::Double(_) | Bson::Decimal128(_)
    );
    // The value as BSON encodes it in a document (its type byte included).
    let encoded = mongodb::bson::to_vec(&mongodb::bson::doc! { "": canonical }).unwrap_or_default();
    let tag = hmac::sign(&key.0, &encoded);
    let tag = tag.as_ref();
    if numeric {
        let mut first = [0u8; 8];
        first.copy_from_slice(&tag[..8]);
        Bson::Int64(i64::from_be_bytes(first))
    } else {
        Bson::String(hex(tag))
    }
}

#[cfg(test)]
mod tests {
    use mongodb::bson::{doc, rawdoc};
    use serde_json::json;

    use super::*;

    fn steps(list: serde_json::Value, key: Option<&[u8]>) -> Arc<Steps> {
        let parsed = list
            .as_array()
            .unwrap()
            .iter()
            .map(|s| Step::parse(s).unwrap())
            .collect();
        Steps::new(parsed, key.map(HmacKey::new)).unwrap()
    }

    fn apply(steps: &Steps, doc: Document) -> Document {
        let raw = RawDocumentBuf::from_document(&doc).unwrap();
        steps.apply(raw).unwrap().to_document().unwrap()
    }

    #[test]
    fn each_step_on_nested_paths_and_through_arrays() {
        let s = steps(
            json!([
                {"drop": "internal.notes"},
                {"rename": "contacts.tel", "to": "contacts.phone"},
                {"redact": "contacts.ssn"},
                {"redact": "tags"},
                {"set": "meta.env", "value": "staging"},
                {"set": "meta.when", "value": {"$date": "2026-01-01T00:00:00Z"}},
            ]),
            None,
        );
        let out = apply(
            &s,
            doc! {
                "_id": 1,
                "internal": { "notes": "x", "keep": true },
                "contacts": [ { "tel": "555", "ssn": "123" }, { "ssn": 7 }, "loose" ],
                "tags": ["a", 2],
            },
        );
        assert_eq!(
            out,
            doc! {
                "_id": 1,
                "internal": { "keep": true },
                "contacts": [ { "ssn": "REDACTED", "phone": "555" }, { "ssn": Bson::Null }, "loose" ],
                "tags": ["REDACTED", Bson::Null],
                "meta": {
                    "env": "staging",
                    "when": mongodb::bson::DateTime::parse_rfc3339_str("2026-01-01T00:00:00Z").unwrap(),
                },
            }
        );
    }

    #[test]
    fn a_document_no_step_touches_passes_as_it_is() {
        let s = steps(json!([{"drop": "secret"}, {"redact": "a.b"}]), None);
        let raw = rawdoc! { "_id": 1, "z": 1.5, "a": 1 };
        let before = raw.as_bytes().to_vec();
        assert_eq!(s.apply(raw).unwrap().as_bytes(), &before[..]);
        // A path a document lacks further down does nothing either.
        let out = apply(&s, doc! { "_id": 2, "a": { "c": 1 } });
        assert_eq!(out, doc! { "_id": 2, "a": { "c": 1 } });
    }

    #[test]
    fn hmac_is_the_same_for_the_same_value_and_key_and_differs_with_another_key() {
        let s = steps(json!([{"hmac": "v"}]), Some(b"k1"));
        let other = steps(json!([{"hmac": "v"}]), Some(b"k2"));
        let email = |s: &Steps| apply(s, doc! { "_id": 1, "v": "ann@example.com" });
        let out = email(&s);
        let hex = out.get_str("v").unwrap();
        assert_eq!(hex.len(), 64);
        assert!(hex.bytes().all(|b| b.is_ascii_hexdigit()));
        assert_eq!(email(&s), out);
        assert_ne!(email(&other), out);
        // Numbers give an Int64, the same for each type of a whole number.
        let n32 = apply(&s, doc! { "_id": 1, "v": 42 });
        let n64 = apply(&s, doc! { "_id": 1, "v": 42_i64 });
        let f = apply(&s, doc! { "_id": 1, "v": 42.0 });
        assert!(matches!(n32.get("v"), Some(Bson::Int64(_))));
        assert_eq!(n32, n64);
        assert_eq!(n32, f);
        assert_ne!(n32, apply(&s, doc! { "_id": 1, "v": 43 }));
    }

    #[test]
    fn bad_steps_say_what_is_wrong() {
        let cases = [
            (json!({"drop": "_id"}), "`_id` cannot be transformed"),
            (
                json!({"rename": "a", "to": "_id"}),
                "`_id` cannot be transformed",
            ),
            (json!({"mask": "a"}), "unknown step"),
            (json!({"drop": "a", "extra": 1}), "unknown key `extra`"),
            (json!({"rename": "a"}), "needs `to`"),
            (json!({"set": "a"}), "needs `value`"),
            (json!({"drop": 5}), "dotted path"),
            (json!({"drop": "a..b"}), "not a dotted path"),
            (json!("drop a"), "a step is an object"),
        ];
        for (json, expected) in cases {
            let e = Step::parse(&json).unwrap_err();
            assert!(e.contains(expected), "{json}: {e}");
        }
        let e = Steps::new(vec![Step::parse(&json!({"hmac": "e"})).unwrap()], None).unwrap_err();
        assert!(e.contains("needs a key"), "{e}");
    }
}

//! MongoDB's sort order of BSON values, on the client side.
//!
//! In: raw BSON values (`_id`s). Out: their order as the server sorts them, and a query that
//! matches everything after a given `_id`. Both are needed because `_id`s of several types can
//! share a collection: `{_id: {$gt: x}}` only matches values of `x`'s own type bracket, so a
//! resumed scan must also ask for every later bracket; and `verify` merges two `_id`-sorted
//! streams, which needs to know which of two `_id`s comes first.

use std::cmp::Ordering;

use mongodb::bson::spec::ElementType;
use mongodb::bson::{doc, Bson, Document, RawBson, RawBsonRef, RawDocument};

/// The server's canonical rank of a BSON type: values of different ranks sort by rank, and
/// types of one rank (the numbers; string and symbol) compare with each other.
pub fn type_rank(t: ElementType) -> i32 {
    match t {
        ElementType::MinKey => -1,
        ElementType::Undefined => 0,
        ElementType::Null => 5,
        ElementType::Double | ElementType::Int32 | ElementType::Int64 | ElementType::Decimal128 => {
            10
        }
        ElementType::String | ElementType::Symbol => 15,
        ElementType::EmbeddedDocument => 20,
        ElementType::Array => 25,
        ElementType::Binary => 30,
        ElementType::ObjectId => 35,
        ElementType::Boolean => 40,
        ElementType::DateTime => 45,
        ElementType::Timestamp => 47,
        ElementType::RegularExpression => 50,
        ElementType::DbPointer => 55,
        ElementType::JavaScriptCode => 60,
        ElementType::JavaScriptCodeWithScope => 65,
        ElementType::MaxKey => 100,
    }
}

/// `$type` aliases of every type, in rank order.
const TYPE_ALIASES: [(ElementType, &str); 21] = [
    (ElementType::MinKey, "minKey"),
    (ElementType::Undefined, "undefined"),
    (ElementType::Null, "null"),
    (ElementType::Double, "double"),
    (ElementType::Int32, "int"),
    (ElementType::Int64, "long"),
    (ElementType::Decimal128, "decimal"),
    (ElementType::String, "string"),
    (ElementType::Symbol, "symbol"),
    (ElementType::EmbeddedDocument, "object"),
    (ElementType::Array, "array"),
    (ElementType::Binary, "binData"),
    (ElementType::ObjectId, "objectId"),
    (ElementType::Boolean, "bool"),
    (ElementType::DateTime, "date"),
    (ElementType::Timestamp, "timestamp"),
    (ElementType::RegularExpression, "regex"),
    (ElementType::DbPointer, "dbPointer"),
    (ElementType::JavaScriptCode, "javascript"),
    (ElementType::JavaScriptCodeWithScope, "javascriptWithScope"),
    (ElementType::MaxKey, "maxKey"),
];

/// How a query can bound the `_id`s on one side of a value.
enum Bound {
    /// NaN sorts before every other number, but `$gt: NaN` matches nothing.
    NaN,
    /// A value range operators compare with (`$gt`, `$lte`), within its type bracket.
    Comparable(Bson),
    /// A type whose values cannot bound a range (regex, code): its whole bracket goes after.
    WholeBracket,
    /// A type with one value (null, MinKey, MaxKey, undefined).
    Singleton,
}

impl Bound {
    fn of(value: &RawBson) -> Self {
        match value.element_type() {
            ElementType::MinKey
            | ElementType::MaxKey
            | ElementType::Null
            | ElementType::Undefined => Bound::Singleton,
            ElementType::RegularExpression
            | ElementType::DbPointer
            | ElementType::JavaScriptCode
            | ElementType::JavaScriptCodeWithScope => Bound::WholeBracket,
            _ if is_nan(value) => Bound::NaN,
            // Not expected for a value read from a server; the whole bracket instead.
            _ => Bson::try_from(value.clone()).map_or(Bound::WholeBracket, Bound::Comparable),
        }
    }
}

fn is_nan(value: &RawBson) -> bool {
    match value {
        RawBson::Double(f) => f.is_nan(),
        RawBson::Decimal128(d) => d.to_string().to_ascii_lowercase().contains("nan"),
        _ => false,
    }
}

/// `$type` aliases of the types whose rank passes `keep`.
fn brackets(keep: impl Fn(i32) -> bool) -> Vec<Bson> {
    TYPE_ALIASES
        .iter()
        .filter(|(ty, _)| keep(type_rank(*ty)))
        .map(|(_, alias)| Bson::String(alias.to_string()))
        .collect()
}

/// `{$or: branches}`, leaving out an empty `$type` list.
fn any_of(branches: Vec<Document>) -> Document {
    let mut branches: Vec<Document> = branches
        .into_iter()
        .filter(|b| {
            b.get_document("_id")
                .ok()
                .and_then(|id| id.get_array("$type").ok())
                .is_none_or(|types| !types.is_empty())
        })
        .collect();
    match branches.len() {
        0 => doc! { "_id": { "$exists": false } },
        1 => branches.remove(0),
        _ => doc! { "$or": branches },
    }
}

/// A query matching every document whose `_id` sorts after `last`, across type brackets.
///
/// Brackets where a range predicate is refused or meaningless (regex, code, singletons such as
/// null) are matched whole from `last`'s bracket on: some documents are copied again, which the
/// idempotent sink makes harmless, and none is skipped.
pub fn after(last: &RawBson) -> Document {
    let rank = type_rank(last.element_type());
    let later = doc! { "_id": { "$type": brackets(|r| r > rank) } };
    match Bound::of(last) {
        // After a NaN come all the other numbers.
        Bound::NaN => any_of(vec![doc! { "_id": { "$gte": f64::NEG_INFINITY } }, later]),
        Bound::Comparable(value) => any_of(vec![doc! { "_id": { "$gt": value } }, later]),
        Bound::WholeBracket => type_filter(brackets(|r| r >= rank)),
        Bound::Singleton => type_filter(brackets(|r| r > rank)),
    }
}

/// A query matching every document whose `_id` does not sort after `last`: exactly the
/// documents [`after`] leaves out, so the ranges `(a, b]` that
/// `{$and: [after(a), up_to(b)]}` selects cover a collection once between them, whatever the
/// types of its `_id`s (partitions are built this way).
pub fn up_to(last: &RawBson) -> Document {
    let rank = type_rank(last.element_type());
    let earlier = doc! { "_id": { "$type": brackets(|r| r < rank) } };
    // `$lte` never matches a NaN, which sorts first among numbers.
    let nan = doc! { "_id": f64::NAN };
    match Bound::of(last) {
        Bound::NaN => any_of(vec![nan, earlier]),
        Bound::Comparable(value) => {
            let mut branches = vec![doc! { "_id": { "$lte": value } }, earlier];
            if rank == type_rank(ElementType::Double) {
                branches.push(nan);
            }
            any_of(branches)
        }
        Bound::WholeBracket => type_filter(brackets(|r| r < rank)),
        Bound::Singleton => type_filter(brackets(|r| r <= rank)),
    }
}

fn type_filter(types: Vec<Bson>) -> Document {
    if types.is_empty() {
        // Nothing sorts after MaxKey; every document has an `_id`, so this matches none.
        doc! { "_id": { "$exists": false } }
    } else {
        doc! { "_id": { "$type": types } }
    }
}

/// An `_id` exactly: its BSON type and its value's bytes. `1`, `1.0` and `NumberLong(1)` are
/// three keys, though the server takes them for one `_id` (its filters and unique index compare
/// numbers by value): a document matched back to an `_id` by value may be another document of
/// the same number, and changes merged by value lose a change of type. Every map, set or
/// equality of `_id`s that stands for documents uses this key.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct IdKey(Vec<u8>);

impl IdKey {
    pub fn of(id: &RawBson) -> IdKey {
        let mut key = vec![id.element_type() as u8];
        key.extend_from_slice(mongodb::bson::rawdoc! { "": id.clone() }.as_bytes());
        IdKey(key)
    }
}

/// A key equal for `_id`s the server takes for the same one, a document's slot at the server:
/// numbers of equal value share one whatever their type (`1`, `1.0`, `NumberLong(1)`), also
/// inside documents and arrays (`{a: 1}`, `{a: 1.0}`), as do a string and a symbol of the same
/// text; anything else by its bytes. Only to see that two changes touch one slot (their order
/// then matters); never to match documents to `_id`s ([`IdKey`]).
pub fn slot_key(id: &RawBson) -> Vec<u8> {
    let mut key = Vec::new();
    slot_into(id.as_raw_bson_ref(), &mut key);
    key
}

/// Appends the slot key of `value`; each value's key is self-delimiting.
fn slot_into(value: RawBsonRef<'_>, key: &mut Vec<u8>) {
    let whole = |key: &mut Vec<u8>, i: i64| {
        key.push(b'i');
        key.extend_from_slice(&i.to_le_bytes());
    };
    let bytes = |key: &mut Vec<u8>, tag: u8, b: &[u8]| {
        key.push(tag);
        key.extend_from_slice(&(b.len() as u64).to_le_bytes());
        key.extend_from_slice(b);
    };
    // A whole decimal past 2^53 would lose its last digits on the way through f64.
    if let RawBsonRef::Decimal128(d) = value {
        if let Ok(i) = d.to_string().parse::<i64>() {
            return whole(key, i);
        }
    }
    match value {
        RawBsonRef::String(s) | RawBsonRef::Symbol(s) => bytes(key, b's', s.as_bytes()),
        RawBsonRef::Document(doc) => {
            key.push(b'd');
            for element in doc {
                let Ok((name, value)) = element else {
                    // Malformed BSON cannot come from a server; its bytes then.
                    return bytes(key, b'x', doc.as_bytes());
                };
                bytes(key, b'e', name.as_bytes());
                slot_into(value, key);
            }
            key.push(b'z');
        }
        RawBsonRef::Array(array) => {
            key.push(b'a');
            for value in array {
                let Ok(value) = value else {
                    return bytes(key, b'x', array.as_bytes());
                };
                key.push(b'e');
                slot_into(value, key);
            }
            key.push(b'z');
        }
        _ => match number(value) {
            Some(Number::Int(i)) => whole(key, i),
            Some(Number::Float(f)) if f.fract() == 0.0 && f.abs() < 9.2e18 => whole(key, f as i64),
            Some(Number::Float(f)) if f.is_nan() => key.push(b'n'),
            Some(Number::Float(f)) => {
                key.push(b'f');
                key.extend_from_slice(&f.to_le_bytes());
            }
            None => {
                key.push(value.element_type() as u8);
                key.extend_from_slice(
                    mongodb::bson::rawdoc! { "": value.to_raw_bson() }.as_bytes(),
                );
            }
        },
    }
}

/// Compares two values the way the server sorts them (simple binary collation).
pub fn compare(a: RawBsonRef<'_>, b: RawBsonRef<'_>) -> Ordering {
    let by_rank = type_rank(a.element_type()).cmp(&type_rank(b.element_type()));
    if by_rank != Ordering::Equal {
        return by_rank;
    }
    use RawBsonRef as V;
    match (a, b) {
        (V::String(x) | V::Symbol(x), V::String(y) | V::Symbol(y)) => {
            x.as_bytes().cmp(y.as_bytes())
        }
        (V::Document(x), V::Document(y)) => compare_documents(x, y),
        // An array's bytes are a document keyed "0", "1", ...
        (V::Array(x), V::Array(y)) => match (
            RawDocument::from_bytes(x.as_bytes()),
            RawDocument::from_bytes(y.as_bytes()),
        ) {
            (Ok(x), Ok(y)) => compare_documents(x, y),
            _ => x.as_bytes().cmp(y.as_bytes()),
        },
        (V::Binary(x), V::Binary(y)) => x
            .bytes
            .len()
            .cmp(&y.bytes.len())
            .then(u8::from(x.subtype).cmp(&u8::from(y.subtype)))
            .then(x.bytes.cmp(y.bytes)),
        (V::ObjectId(x), V::ObjectId(y)) => x.bytes().cmp(&y.bytes()),
        (V::Boolean(x), V::Boolean(y)) => x.cmp(&y),
        (V::DateTime(x), V::DateTime(y)) => x.timestamp_millis().cmp(&y.timestamp_millis()),
        (V::Timestamp(x), V::Timestamp(y)) => (x.time, x.increment).cmp(&(y.time, y.increment)),
        (V::RegularExpression(x), V::RegularExpression(y)) => x
            .pattern
            .as_bytes()
            .cmp(y.pattern.as_bytes())
            .then(x.options.as_bytes().cmp(y.options.as_bytes())),
        (V::JavaScriptCode(x), V::JavaScriptCode(y)) => x.as_bytes().cmp(y.as_bytes()),
        (V::JavaScriptCodeWithScope(x), V::JavaScriptCodeWithScope(y)) => x
            .code
            .as_bytes()
            .cmp(y.code.as_bytes())
            .then_with(|| compare_documents(x.scope, y.scope)),
        (x, y) => match (number(x), number(y)) {
            (Some(x), Some(y)) => compare_numbers(x, y),
            // Singletons (null, min/max key, undefined) and anything left: equal within a rank.
            _ => Ordering::Equal,
        },
    }
}

/// Documents compare element by element: type rank, then field name, then value.
fn compare_documents(a: &RawDocument, b: &RawDocument) -> Ordering {
    let mut left = a.iter();
    let mut right = b.iter();
    loop {
        match (left.next(), right.next()) {
            (None, None) => return Ordering::Equal,
            (None, Some(_)) => return Ordering::Less,
            (Some(_), None) => return Ordering::Greater,
            (Some(Ok((ka, va))), Some(Ok((kb, vb)))) => {
                let order = type_rank(va.element_type())
                    .cmp(&type_rank(vb.element_type()))
                    .then(ka.as_bytes().cmp(kb.as_bytes()))
                    .then_with(|| compare(va, vb));
                if order != Ordering::Equal {
                    return order;
                }
            }
            // Malformed BSON cannot come from a server; order it deterministically anyway.
            _ => return a.as_bytes().cmp(b.as_bytes()),
        }
    }
}

#[derive(Clone, Copy)]
enum Number {
    Int(i64),
    Float(f64),
}

fn number(v: RawBsonRef<'_>) -> Option<Number> {
    match v {
        RawBsonRef::Int32(i) => Some(Number::Int(i.into())),
        RawBsonRef::Int64(i) => Some(Number::Int(i)),
        RawBsonRef::Double(f) => Some(Number::Float(f)),
        // Decimal128 ordering is approximated through f64 (exact for the usual values).
        RawBsonRef::Decimal128(d) => Some(Number::Float(
            d.to_string().parse::<f64>().unwrap_or(f64::NAN),
        )),
        _ => None,
    }
}

/// NaN sorts before every other number, as on the server.
fn compare_numbers(a: Number, b: Number) -> Ordering {
    match (a, b) {
        (Number::Int(x), Number::Int(y)) => x.cmp(&y),
        (Number::Float(x), Number::Float(y)) => compare_floats(x, y),
        (Number::Int(x), Number::Float(y)) => compare_int_float(x, y),
        (Number::Float(x), Number::Int(y)) => compare_int_float(y, x).reverse(),
    }
}

fn compare_floats(x: f64, y: f64) -> Ordering {
    match (x.is_nan(), y.is_nan()) {
        (true, true) => Ordering::Equal,
        (true, false) => Ordering::Less,
        (false, true) => Ordering::Greater,
        // -0.0 and 0.0 are equal, as on the server.
        _ => x.partial_cmp(&y).unwrap_or(Ordering::Equal),
    }
}

/// Exact comparison of an integer with a float (no rounding of large integers).
fn compare_int_float(x: i64, y: f64) -> Ordering {
    if y.is_nan() {
        return Ordering::Greater;
    }
    // i64::MAX as f64 is 2^63, one above the largest i64.
    if y >= i64::MAX as f64 {
        return Ordering::Less;
    }
    if y < i64::MIN as f64 {
        return Ordering::Greater;
    }
    let floor = y.floor();
    match x.cmp(&(floor as i64)) {
        Ordering::Equal if y > floor => Ordering::Less,
        order => order,
    }
}

#[cfg(test)]
mod tests {
    use mongodb::bson::oid::ObjectId;
    use mongodb::bson::spec::BinarySubtype;
    use mongodb::bson::{rawdoc, Binary, DateTime, Decimal128, Regex, Timestamp};

    use super::*;

    /// Values in the order the server sorts them.
    fn sorted_values() -> Vec<Bson> {
        vec![
            Bson::MinKey,
            Bson::Null,
            Bson::Double(f64::NAN),
            Bson::Double(-1.5),
            Bson::Int32(1),
            Bson::Int64(2),
            Bson::Double(2.5),
            "3.5".parse::<Decimal128>().map(Bson::Decimal128).unwrap(),
            Bson::Int64(i64::MAX),
            Bson::String("a".into()),
            Bson::String("b".into()),
            Bson::Document(doc! { "x": 1 }),
            Bson::Document(doc! { "x": 1, "y": 1 }),
            Bson::Document(doc! { "x": "a" }),
            Bson::Binary(Binary {
                subtype: BinarySubtype::Generic,
                bytes: vec![9],
            }),
            Bson::Binary(Binary {
                subtype: BinarySubtype::Generic,
                bytes: vec![1, 2],
            }),
            Bson::ObjectId(ObjectId::from_bytes([0; 12])),
            Bson::ObjectId(ObjectId::from_bytes([1; 12])),
            Bson::Boolean(false),
            Bson::Boolean(true),
            Bson::DateTime(DateTime::from_millis(-5)),
            Bson::DateTime(DateTime::from_millis(5)),
            Bson::Timestamp(Timestamp {
                time: 1,
                increment: 9,
            }),
            Bson::Timestamp(Timestamp {
                time: 2,
                increment: 1,
            }),
            Bson::RegularExpression(Regex {
                pattern: "abc".into(),
                options: "i".into(),
            }),
            Bson::MaxKey,
        ]
    }

    fn raw(v: &Bson) -> RawBson {
        RawBson::try_from(v.clone()).unwrap()
    }

    #[test]
    fn sorts_like_the_server() {
        let values: Vec<RawBson> = sorted_values().iter().map(raw).collect();
        for (i, a) in values.iter().enumerate() {
            for (j, b) in values.iter().enumerate() {
                assert_eq!(
                    compare(a.as_raw_bson_ref(), b.as_raw_bson_ref()),
                    i.cmp(&j),
                    "{a:?} vs {b:?}"
                );
            }
        }
    }

    #[test]
    fn numbers_of_different_types_compare_by_value() {
        let cmp = |a: Bson, b: Bson| compare(raw(&a).as_raw_bson_ref(), raw(&b).as_raw_bson_ref());
        assert_eq!(cmp(Bson::Int32(3), Bson::Double(3.0)), Ordering::Equal);
        assert_eq!(cmp(Bson::Int64(3), Bson::Double(3.5)), Ordering::Less);
        assert_eq!(cmp(Bson::Double(-3.5), Bson::Int64(-3)), Ordering::Less);
        // Rounding i64::MAX to f64 would call these equal.
        assert_eq!(
            cmp(Bson::Int64(i64::MAX - 1), Bson::Double(9.2e18)),
            Ordering::Greater
        );
    }

    #[test]
    fn an_id_key_tells_number_types_apart_and_a_slot_key_does_not() {
        let five: Decimal128 = "5".parse().unwrap();
        let ids = [
            RawBson::Int32(5),
            RawBson::Int64(5),
            RawBson::Double(5.0),
            RawBson::Decimal128(five),
        ];
        for (i, a) in ids.iter().enumerate() {
            for (j, b) in ids.iter().enumerate() {
                assert_eq!(IdKey::of(a) == IdKey::of(b), i == j, "{a:?} {b:?}");
            }
        }
        assert_eq!(slot_key(&ids[0]), slot_key(&ids[1]));
        assert_eq!(slot_key(&ids[0]), slot_key(&ids[2]));
        assert_eq!(slot_key(&ids[0]), slot_key(&ids[3]));
        let big = (1_i64 << 60) + 1;
        let decimal: Decimal128 = big.to_string().parse().unwrap();
        assert_eq!(
            slot_key(&RawBson::Int64(big)),
            slot_key(&RawBson::Decimal128(decimal))
        );
        assert_ne!(
            slot_key(&RawBson::Int64(big)),
            slot_key(&RawBson::Int64(big - 1))
        );
        // Inside documents and arrays too; names and order still count.
        let slot = |doc: mongodb::bson::RawDocumentBuf| slot_key(&RawBson::Document(doc));
        assert_eq!(
            slot(rawdoc! { "a": 1, "b": [2_i64] }),
            slot(rawdoc! { "a": 1.0, "b": [2.0] })
        );
        assert_ne!(
            slot(rawdoc! { "a": 1, "b": 2 }),
            slot(rawdoc! { "b": 2, "a": 1 })
        );
        assert_ne!(slot(rawdoc! { "a": 1 }), slot(rawdoc! { "a": 1, "b": 2 }));
        assert_ne!(slot(rawdoc! { "a": "1" }), slot(rawdoc! { "a": 1 }));
        assert_eq!(
            slot_key(&RawBson::Double(f64::NAN)),
            slot_key(&RawBson::Double(-f64::NAN))
        );
        assert_ne!(IdKey::of(&RawBson::Null), IdKey::of(&RawBson::Undefined));
        assert_eq!(
            IdKey::of(&RawBson::String("a".into())),
            IdKey::of(&RawBson::String("a".into()))
        );
    }

    #[test]
    fn nested_documents_compare_types_before_names() {
        let a = rawdoc! { "a": 5 };
        let b = rawdoc! { "a": "x" };
        assert_eq!(compare_documents(&a, &b), Ordering::Less);
        let c = rawdoc! { "b": 1 };
        assert_eq!(compare_documents(&a, &c), Ordering::Less);
    }

    #[test]
    fn resume_filters_cover_later_brackets() {
        let f = after(&RawBson::Int64(5));
        let or = f.get_array("$or").unwrap();
        assert_eq!(or[0], Bson::Document(doc! { "_id": { "$gt": 5_i64 } }));
        let types = or[1].as_document().unwrap().get_document("_id").unwrap();
        let types = types.get_array("$type").unwrap();
        assert!(types.contains(&Bson::String("string".into())));
        assert!(types.contains(&Bson::String("maxKey".into())));
        assert!(!types.contains(&Bson::String("int".into())));

        // A regex cannot be a range bound: its whole bracket is read again.
        let f = after(&raw(&Bson::RegularExpression(Regex {
            pattern: "a".into(),
            options: String::new(),
        })));
        let types = f.get_document("_id").unwrap().get_array("$type").unwrap();
        assert_eq!(types[0], Bson::String("regex".into()));

        // After null come the numbers, but not null again.
        let f = after(&RawBson::Null);
        let types = f.get_document("_id").unwrap().get_array("$type").unwrap();
        assert!(!types.contains(&Bson::String("null".into())));
        assert!(types.contains(&Bson::String("double".into())));

        assert_eq!(
            after(&RawBson::MaxKey),
            doc! { "_id": { "$exists": false } }
        );

        // After NaN (the smallest number) come every other number, not `$gt: NaN` (none).
        for nan in [
            RawBson::Double(f64::NAN),
            RawBson::Decimal128("NaN".parse().unwrap()),
        ] {
            let f = after(&nan);
            let or = f.get_array("$or").unwrap();
            assert_eq!(
                or[0],
                Bson::Document(doc! { "_id": { "$gte": f64::NEG_INFINITY } })
            );
        }
    }
}

//! Strict JSON for messages the gateway authorises: an object holding the
//! same key twice, or two keys that differ only in case, is refused at any
//! depth. `serde_json::Value` keeps the last of duplicate keys, and an
//! upstream written in another language may keep the first or match keys
//! without regard to case; either way the upstream could act on a `name`
//! other than the one Cola authorised. Refusing such messages leaves only
//! one reading of every message Cola forwards.

use std::collections::HashSet;
use std::fmt;

use serde::de::{self, DeserializeSeed, Deserializer, MapAccess, SeqAccess, Visitor};
use serde_json::{Map, Number, Value};

/// Parses `bytes` as one JSON value, refusing duplicate and case-variant
/// keys.
///
/// # Errors
/// A message saying what is wrong (for the client: it names no internals).
pub fn parse(bytes: &[u8]) -> Result<Value, serde_json::Error> {
    let mut deserializer = serde_json::Deserializer::from_slice(bytes);
    let value = StrictValue.deserialize(&mut deserializer)?;
    deserializer.end()?;
    Ok(value)
}

struct StrictValue;

impl<'de> DeserializeSeed<'de> for StrictValue {
    type Value = Value;

    fn deserialize<D: Deserializer<'de>>(self, deserializer: D) -> Result<Value, D::Error> {
        deserializer.deserialize_any(StrictVisitor)
    }
}

struct StrictVisitor;

impl<'de> Visitor<'de> for StrictVisitor {
    type Value = Value;

    fn expecting(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        formatter.write_str("a JSON value")
    }

    fn visit_bool<E>(self, value: bool) -> Result<Value, E> {
        Ok(Value::Bool(value))
    }

    fn visit_i64<E>(self, value: i64) -> Result<Value, E> {
        Ok(Value::from(value))
    }

    fn visit_u64<E>(self, value: u64) -> Result<Value, E> {
        Ok(Value::from(value))
    }

    fn visit_f64<E: de::Error>(self, value: f64) -> Result<Value, E> {
        Number::from_f64(value)
            .map(Value::Number)
            .ok_or_else(|| E::custom("a number must be finite"))
    }

    fn visit_str<E>(self, value: &str) -> Result<Value, E> {
        Ok(Value::String(value.to_owned()))
    }

    fn visit_string<E>(self, value: String) -> Result<Value, E> {
        Ok(Value::String(value))
    }

    fn visit_unit<E>(self) -> Result<Value, E> {
        Ok(Value::Null)
    }

    fn visit_none<E>(self) -> Result<Value, E> {
        Ok(Value::Null)
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut access: A) -> Result<Value, A::Error> {
        let mut items = Vec::new();
        while let Some(item) = access.next_element_seed(StrictValue)? {
            items.push(item);
        }
        Ok(Value::Array(items))
    }

    fn visit_map<A: MapAccess<'de>>(self, mut access: A) -> Result<Value, A::Error> {
        let mut map = Map::new();
        // The objects of a JSON-RPC message hold a handful of keys, which a
        // scan compares faster than a set hashes them; past `SCAN_LIMIT`
        // keys a set of case-folded keys takes over, so that no object
        // costs more than linear time.
        let mut folded: Option<HashSet<String>> = None;
        while let Some(key) = access.next_key::<String>()? {
            let repeated = match &mut folded {
                Some(folded) => !folded.insert(key.to_lowercase()),
                None => map.keys().any(|seen| same_without_case(seen, &key)),
            };
            if repeated {
                return Err(de::Error::custom(format!(
                    "the key `{}` appears twice (keys are compared without case)",
                    printable(&key)
                )));
            }
            let value = access.next_value_seed(StrictValue)?;
            map.insert(key, value);
            if folded.is_none() && map.len() > SCAN_LIMIT {
                folded = Some(map.keys().map(|key| key.to_lowercase()).collect());
            }
        }
        Ok(Value::Object(map))
    }
}

/// Keys of one object compared by a scan; more go into a set.
const SCAN_LIMIT: usize = 16;

/// Whether two keys are equal once lower-cased (`str::to_lowercase`, so
/// that the Kelvin sign `K` is a `k`), without lower-casing ASCII keys.
fn same_without_case(a: &str, b: &str) -> bool {
    if a.is_ascii() && b.is_ascii() {
        a.eq_ignore_ascii_case(b)
    } else {
        a.to_lowercase() == b.to_lowercase()
    }
}

/// A key as it may be shown in an error: at most 64 characters, without
/// control characters.
fn printable(key: &str) -> String {
    key.chars().filter(|c| !c.is_control()).take(64).collect()
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;
    use serde_json::json;

    use super::*;

    #[test]
    fn a_duplicate_key_is_refused() {
        let refused = parse(br#"{"params":{"name":"a","name":"b"}}"#);
        assert!(refused.is_err());
    }

    #[test]
    fn a_case_variant_key_is_refused_at_any_depth() {
        assert!(parse(br#"{"params":{"name":"a","Name":"b"}}"#).is_err());
        assert!(parse(br#"{"method":"x","METHOD":"y"}"#).is_err());
        assert!(parse(br#"[{"a":{"uri":1,"URI":2}}]"#).is_err());
    }

    #[test]
    fn a_case_variant_is_refused_in_a_large_object_too() {
        let mut fields: Vec<String> = (0..40).map(|n| format!("\"k{n}\":0")).collect();
        fields.push("\"K7\":1".to_owned());
        assert!(parse(format!("{{{}}}", fields.join(",")).as_bytes()).is_err());
        fields.pop();
        fields.push("\"\u{212A}7\":1".to_owned());
        assert!(parse(format!("{{{}}}", fields.join(",")).as_bytes()).is_err());
        fields.pop();
        assert!(parse(format!("{{{}}}", fields.join(",")).as_bytes()).is_ok());
    }

    #[test]
    fn trailing_content_is_refused() {
        assert!(parse(br#"{"a":1} {"a":2}"#).is_err());
    }

    #[test]
    fn a_well_formed_message_reads_as_serde_json_reads_it() {
        let text = br#"{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"x","arguments":{"n":1.5,"l":[true,null,"s"]}}}"#;
        let strict = parse(text).expect("parses");
        let plain: Value = serde_json::from_slice(text).expect("parses");
        assert_eq!(strict, plain);
    }

    proptest! {
        #[test]
        fn any_value_without_duplicates_reads_back_as_itself(
            keys in prop::collection::btree_set("[a-z]{1,6}", 0..6),
            number in any::<i64>(),
        ) {
            let object: Map<String, Value> = keys.into_iter().map(|key| (key, json!(number))).collect();
            let value = Value::Object(object);
            let text = serde_json::to_vec(&value).expect("serialises");
            prop_assert_eq!(parse(&text).expect("parses"), value);
        }

        /// Small objects are scanned and large ones use a set: either way a
        /// key is refused exactly when its lower-cased form came before.
        #[test]
        fn a_key_is_refused_exactly_when_it_repeats_without_case(
            keys in prop::collection::vec(
                prop::sample::select(vec!["a", "A", "k", "K", "\u{212A}", "é", "É", "id", "ID", "name", "Name"])
                    .prop_flat_map(|base| (Just(base), 0..30_u8)),
                0..40,
            ),
        ) {
            let keys: Vec<String> = keys.into_iter().map(|(base, n)| format!("{base}{n}")).collect();
            let mut folded = HashSet::new();
            let repeats = !keys.iter().all(|key| folded.insert(key.to_lowercase()));
            let fields: Vec<String> = keys.iter().map(|key| format!("{}:0", json!(key))).collect();
            let text = format!("{{{}}}", fields.join(","));
            prop_assert_eq!(parse(text.as_bytes()).is_err(), repeats, "{}", text);
        }

        #[test]
        fn arbitrary_bytes_never_panic(bytes in prop::collection::vec(any::<u8>(), 0..128)) {
            let _ = parse(&bytes);
        }
    }
}

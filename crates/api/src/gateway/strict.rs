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
        let mut folded = HashSet::new();
        while let Some(key) = access.next_key::<String>()? {
            if !folded.insert(key.to_lowercase()) {
                return Err(de::Error::custom(format!(
                    "the key `{}` appears twice (keys are compared without case)",
                    printable(&key)
                )));
            }
            let value = access.next_value_seed(StrictValue)?;
            map.insert(key, value);
        }
        Ok(Value::Object(map))
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

        #[test]
        fn arbitrary_bytes_never_panic(bytes in prop::collection::vec(any::<u8>(), 0..128)) {
            let _ = parse(&bytes);
        }
    }
}

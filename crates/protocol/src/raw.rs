//! Messages read as raw JSON, never built whole: an object's members in
//! order, each value the text the sender wrote. What Cola relays it writes
//! back member by member, replacing only what it must (an id, a list), so
//! an answer costs little more memory than its bytes and everything Cola
//! does not own passes as it came.

use std::fmt::Write as _;

use serde::Deserialize;
use serde::de::{MapAccess, Visitor};
use serde_json::value::RawValue;

/// One JSON-RPC message object, its members in order, each value the raw
/// text the sender wrote. A member name written with escapes, or given
/// twice, makes it no message: two readers could take it two ways.
#[derive(Debug, Default)]
pub struct RawMessage<'a> {
    members: Vec<(&'a str, &'a RawValue)>,
}

impl<'a> RawMessage<'a> {
    /// `text` as one JSON object, or `None`.
    #[must_use]
    pub fn parse(text: &'a str) -> Option<Self> {
        serde_json::from_str::<Self>(text).ok()
    }

    #[must_use]
    pub fn get(&self, name: &str) -> Option<&'a RawValue> {
        self.members
            .iter()
            .find(|(member, _)| *member == name)
            .map(|(_, value)| *value)
    }

    /// A message with a `method`: a request or notification of the sender.
    #[must_use]
    pub fn has_method(&self) -> bool {
        self.get("method").is_some()
    }

    /// This object written again, with the members `replaced` names given
    /// new raw values (appended when absent).
    #[must_use]
    pub fn write_with(&self, replaced: &[(&str, &str)]) -> String {
        let size = self
            .members
            .iter()
            .map(|(n, v)| n.len() + v.get().len() + 4);
        let mut text = String::with_capacity(size.sum::<usize>() + 64);
        text.push('{');
        let mut first = true;
        let mut member = |text: &mut String, name: &str, value: &str| {
            if !first {
                text.push(',');
            }
            first = false;
            // A borrowed name has no escapes: written back as it came.
            let _ = write!(text, "\"{name}\":{value}");
        };
        for (name, value) in &self.members {
            let value = replaced
                .iter()
                .find(|(replaced, _)| replaced == name)
                .map_or(value.get(), |(_, new)| *new);
            member(&mut text, name, value);
        }
        for (name, value) in replaced {
            if self.get(name).is_none() {
                member(&mut text, name, value);
            }
        }
        text.push('}');
        text
    }
}

impl<'de> Deserialize<'de> for RawMessage<'de> {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct Members;
        impl<'de> Visitor<'de> for Members {
            type Value = RawMessage<'de>;

            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("a JSON object")
            }

            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
                let mut members: Vec<(&'de str, &'de RawValue)> = Vec::new();
                while let Some((name, value)) = map.next_entry::<&'de str, &'de RawValue>()? {
                    if members.iter().any(|(seen, _)| *seen == name) {
                        return Err(serde::de::Error::custom("a member is given twice"));
                    }
                    members.push((name, value));
                }
                Ok(RawMessage { members })
            }
        }
        deserializer.deserialize_map(Members)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn members_keep_their_order_and_bytes_and_replacements_take_their_place() {
        let text = r#"{"b":1, "a":[2,  3],"s":"\u00e9"}"#;
        let message = RawMessage::parse(text).expect("an object");
        assert_eq!(message.get("a").map(RawValue::get), Some("[2,  3]"));
        assert_eq!(
            message.write_with(&[("a", "0"), ("c", "true")]),
            r#"{"b":1,"a":0,"s":"\u00e9","c":true}"#
        );
    }

    #[test]
    fn a_member_given_twice_or_written_with_escapes_makes_no_message() {
        assert!(RawMessage::parse(r#"{"id":1,"id":2}"#).is_none());
        assert!(RawMessage::parse(r#"{"\u0069d":1}"#).is_none());
        assert!(RawMessage::parse("[1]").is_none());
        assert!(RawMessage::parse("{").is_none());
    }
}

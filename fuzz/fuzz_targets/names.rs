//! `KeyName::parse` and `KeyDescription::parse` on arbitrary text, checked
//! against the documented rules:
//!
//! - a name is trimmed, then must be 1 to 100 characters with no control
//!   character;
//! - a description is at most 500 characters; line feed, carriage return and
//!   tab are allowed, other control characters are not.
//!
//! "Character" means a Unicode scalar value and "control character" means
//! `char::is_control` (general category Cc). Deserialising through serde
//! must apply the same rules.

#![no_main]

use cola_domain::{KeyDescription, KeyName, NameError};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let text = String::from_utf8_lossy(data);
    let json = serde_json::to_string(&*text).expect("a string serialises");
    check_name(&text, &json);
    check_description(&text, &json);
});

fn check_name(text: &str, json: &str) {
    let trimmed = text.trim();
    let count = trimmed.chars().count();
    let has_control = trimmed.chars().any(char::is_control);
    let valid = (1..=100).contains(&count) && !has_control;

    let parsed = KeyName::parse(text);
    assert_eq!(
        parsed.is_ok(),
        valid,
        "KeyName::parse({text:?}) = {parsed:?}"
    );
    match &parsed {
        Ok(name) => {
            let shown = name.as_str();
            assert_eq!(shown, trimmed);
            assert!(!shown.chars().any(char::is_control));
            assert!((1..=100).contains(&shown.chars().count()));
            assert_eq!(shown, shown.trim());
            assert_eq!(name.to_string(), shown);
            assert_eq!(KeyName::parse(shown).as_ref(), Ok(name));
            let back: KeyName =
                serde_json::from_str(&serde_json::to_string(name).expect("a name serialises"))
                    .expect("a serialised name deserialises");
            assert_eq!(&back, name);
        }
        Err(NameError::Empty) => assert!(trimmed.is_empty()),
        Err(NameError::TooLong { max }) => {
            assert_eq!(*max, 100);
            assert!(count > 100);
        }
        Err(NameError::ControlCharacter) => assert!(has_control),
    }
    assert!(
        parsed.is_ok() || trimmed.is_empty() == (parsed == Err(NameError::Empty)),
        "KeyName::parse({text:?}) = {parsed:?}"
    );

    let from_json = serde_json::from_str::<KeyName>(json);
    assert_eq!(
        from_json.ok(),
        parsed.ok(),
        "deserialising {json} disagrees with KeyName::parse"
    );
}

fn check_description(text: &str, json: &str) {
    let count = text.chars().count();
    let has_control = text
        .chars()
        .any(|c| c.is_control() && !matches!(c, '\n' | '\r' | '\t'));
    let valid = count <= 500 && !has_control;

    let parsed = KeyDescription::parse(text);
    assert_eq!(
        parsed.is_ok(),
        valid,
        "KeyDescription::parse({text:?}) = {parsed:?}"
    );
    match &parsed {
        Ok(description) => {
            let shown = description.as_str();
            assert_eq!(shown, text);
            assert!(shown.chars().count() <= 500);
            assert!(
                shown
                    .chars()
                    .all(|c| !c.is_control() || matches!(c, '\n' | '\r' | '\t'))
            );
            assert_eq!(KeyDescription::parse(shown).as_ref(), Ok(description));
        }
        Err(NameError::Empty) => panic!("a description may be empty: {text:?}"),
        Err(NameError::TooLong { max }) => {
            assert_eq!(*max, 500);
            assert!(count > 500);
        }
        Err(NameError::ControlCharacter) => assert!(has_control),
    }

    let from_json = serde_json::from_str::<KeyDescription>(json);
    assert_eq!(
        from_json.ok(),
        parsed.ok(),
        "deserialising {json} disagrees with KeyDescription::parse"
    );
}

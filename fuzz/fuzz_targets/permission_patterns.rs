//! `ToolName::parse`, `ResourcePattern::parse` and `ApiKeyPermissions::new`
//! on arbitrary lists, and `may_use_tool` / `may_read_resource` of its scope on
//! arbitrary probes, checked against a reference model written from the
//! documented rules:
//!
//! - a tool name is 1 to 128 characters of `A-Z a-z 0-9 _ - .`;
//! - a resource pattern is 1 to 2048 characters without whitespace or control
//!   characters, with `*` only as the last character;
//! - a pattern ending in `*` matches every URI that starts with the rest of
//!   it, any other pattern matches only itself;
//! - a list holds at most 100 entries, duplicates are dropped keeping the
//!   first, `None` means no restriction and an empty list allows nothing;
//! - a key needs read or write; a tool needs the access it asks for, a
//!   resource needs read.

#![no_main]

use arbitrary::Arbitrary;
use cola_domain::{ApiKeyPermissions, PermissionsError, ResourcePattern, Surface, ToolName};
use libfuzzer_sys::fuzz_target;

#[derive(Arbitrary, Debug)]
struct Input {
    read: bool,
    write: bool,
    tools: Option<Vec<String>>,
    resources: Option<Vec<String>>,
    tool_probes: Vec<Probe>,
    uri_probes: Vec<Probe>,
}

/// A probe: either any text, or built from a list entry so that matches
/// are common.
#[derive(Arbitrary, Debug)]
enum Probe {
    Text(String),
    Entry(usize),
    EntryWithSuffix(usize, String),
    EntryCut(usize, usize),
}

impl Probe {
    fn resolve(&self, list: Option<&Vec<String>>) -> String {
        let entry = |index: usize| {
            list.filter(|l| !l.is_empty())
                .map(|l| l[index % l.len()].clone())
                .unwrap_or_default()
        };
        match self {
            Probe::Text(text) => text.clone(),
            Probe::Entry(index) => entry(*index),
            Probe::EntryWithSuffix(index, suffix) => {
                let base = entry(*index);
                let stem = base.strip_suffix('*').unwrap_or(&base);
                format!("{stem}{suffix}")
            }
            Probe::EntryCut(index, cut) => {
                let base = entry(*index);
                base.chars()
                    .take(cut % (base.chars().count() + 1))
                    .collect()
            }
        }
    }
}

fuzz_target!(|input: Input| {
    for tool in input.tools.iter().flatten() {
        let parsed = ToolName::parse(tool);
        assert_eq!(
            parsed.is_some(),
            reference_tool_valid(tool),
            "ToolName::parse disagrees with the reference on {tool:?}"
        );
        if let Some(parsed) = parsed {
            assert_eq!(parsed.as_str(), tool);
        }
    }
    for pattern in input.resources.iter().flatten() {
        let parsed = ResourcePattern::parse(pattern);
        assert_eq!(
            parsed.is_some(),
            reference_pattern_valid(pattern),
            "ResourcePattern::parse disagrees with the reference on {pattern:?}"
        );
        if let Some(parsed) = parsed {
            assert_eq!(parsed.as_str(), pattern);
            assert_eq!(parsed.to_string(), *pattern);
        }
    }

    let tool_probes: Vec<String> = input
        .tool_probes
        .iter()
        .map(|p| p.resolve(input.tools.as_ref()))
        .collect();
    let uri_probes: Vec<String> = input
        .uri_probes
        .iter()
        .map(|p| p.resolve(input.resources.as_ref()))
        .collect();

    // Each pattern on its own against every URI probe.
    for pattern in input.resources.iter().flatten() {
        if let Some(parsed) = ResourcePattern::parse(pattern) {
            for uri in &uri_probes {
                assert_eq!(
                    parsed.matches(uri),
                    reference_matches(pattern, uri),
                    "pattern {pattern:?} on {uri:?}"
                );
            }
        }
    }

    let expected_errors = reference_errors(&input);
    let result = ApiKeyPermissions::new(
        input.read,
        input.write,
        input.tools.clone(),
        input.resources.clone(),
    );
    let permissions = match result {
        Err(errors) => {
            assert_eq!(errors, expected_errors, "errors for {input:?}");
            return;
        }
        Ok(permissions) => {
            assert!(
                expected_errors.is_empty(),
                "accepted {input:?}, expected {expected_errors:?}"
            );
            permissions
        }
    };

    assert_eq!(permissions.read(), input.read);
    assert_eq!(permissions.write(), input.write);
    assert_eq!(permissions.read(), input.read);
    assert_eq!(permissions.write(), input.write);
    let tools = input.tools.as_ref().map(|l| dedup(l));
    let resources = input.resources.as_ref().map(|l| dedup(l));
    assert_eq!(
        permissions
            .allowed_tools()
            .map(|l| l.iter().map(|t| t.as_str().to_owned()).collect::<Vec<_>>()),
        tools
    );
    assert_eq!(
        permissions
            .allowed_resources()
            .map(|l| l.iter().map(|p| p.as_str().to_owned()).collect::<Vec<_>>()),
        resources
    );

    let scope = permissions
        .scope_on(Surface::Cola)
        .expect("Cola's own endpoint is always reachable");
    for name in &tool_probes {
        for (read_only, granted) in [(true, input.read), (false, input.write)] {
            let expected = granted
                && tools
                    .as_ref()
                    .is_none_or(|list| list.iter().any(|tool| tool == name));
            assert_eq!(
                scope.may_use_tool(name, read_only),
                expected,
                "may_use_tool({name:?}, read_only: {read_only}) with {permissions:?}"
            );
        }
    }
    for uri in &uri_probes {
        let expected = input.read
            && resources
                .as_ref()
                .is_none_or(|list| list.iter().any(|pattern| reference_matches(pattern, uri)));
        assert_eq!(
            scope.may_read_resource(uri),
            expected,
            "may_read_resource({uri:?}) with {permissions:?}"
        );
    }
});

fn reference_tool_valid(name: &str) -> bool {
    let length = name.chars().count();
    (1..=128).contains(&length)
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.'))
}

fn reference_pattern_valid(pattern: &str) -> bool {
    let chars: Vec<char> = pattern.chars().collect();
    let stars_ok = chars
        .iter()
        .enumerate()
        .all(|(i, &c)| c != '*' || i + 1 == chars.len());
    (1..=2048).contains(&chars.len())
        && stars_ok
        && !chars.iter().any(|c| c.is_control() || c.is_whitespace())
}

fn reference_matches(pattern: &str, uri: &str) -> bool {
    match pattern.strip_suffix('*') {
        Some(stem) => uri.as_bytes().starts_with(stem.as_bytes()),
        None => pattern == uri,
    }
}

/// The errors `ApiKeyPermissions::new` documents, in the order it reports
/// them: no access, then the tool list, then the resource list.
fn reference_errors(input: &Input) -> Vec<(&'static str, PermissionsError)> {
    let mut errors = Vec::new();
    if !input.read && !input.write {
        errors.push(("permissions", PermissionsError::NoAccess));
    }
    if let Some(list) = &input.tools {
        if list.len() > 100 {
            errors.push((
                "permissions.allowed_tools",
                PermissionsError::TooManyEntries,
            ));
        } else if let Some(index) = list.iter().position(|t| !reference_tool_valid(t)) {
            errors.push((
                "permissions.allowed_tools",
                PermissionsError::InvalidToolName { index },
            ));
        }
    }
    if let Some(list) = &input.resources {
        if list.len() > 100 {
            errors.push((
                "permissions.allowed_resources",
                PermissionsError::TooManyEntries,
            ));
        } else if let Some(index) = list.iter().position(|p| !reference_pattern_valid(p)) {
            errors.push((
                "permissions.allowed_resources",
                PermissionsError::InvalidResourcePattern { index },
            ));
        }
    }
    errors
}

fn dedup(list: &[String]) -> Vec<String> {
    let mut kept: Vec<String> = Vec::new();
    for entry in list {
        if !kept.contains(entry) {
            kept.push(entry.clone());
        }
    }
    kept
}

//! Micro-benchmarks of the checks every MCP request runs before and after the
//! verified-key cache: key format + checksum, and the permission checks.
//!
//! `cargo bench -p cola-domain`
#![allow(clippy::unwrap_used, missing_docs)]

use std::hint::black_box;

use cola_domain::{ApiKeyPermissions, ApiKeySecret, Surface};
use criterion::{Criterion, criterion_group, criterion_main};
use rand::rngs::OsRng;

fn key_parse(c: &mut Criterion) {
    let valid = ApiKeySecret::generate(&mut OsRng).unwrap();
    let valid = valid.expose().to_owned();
    // Same length, scheme and alphabet; only the last checksum digit differs.
    let mut bad = valid.clone();
    let last = bad.pop().unwrap();
    bad.push(if last == 'A' { 'B' } else { 'A' });
    assert!(ApiKeySecret::parse(&bad).is_err());

    let mut group = c.benchmark_group("api_key_secret_parse");
    group.bench_function("valid", |b| {
        b.iter(|| ApiKeySecret::parse(black_box(&valid)).is_ok());
    });
    group.bench_function("bad_checksum", |b| {
        b.iter(|| ApiKeySecret::parse(black_box(&bad)).is_err());
    });
    group.finish();
}

fn permissions(c: &mut Criterion) {
    let tools: Vec<String> = (0..10).map(|i| format!("tool_{i}")).collect();
    let resources: Vec<String> = (0..10)
        .map(|i| format!("cola://project-{i}/*"))
        .chain(["cola://keys/0195f0c2-0000-7000-8000-000000000000".to_owned()])
        .collect();
    let permissions = ApiKeyPermissions::new(true, true, Some(tools), Some(resources)).unwrap();
    let unrestricted = ApiKeyPermissions::default();

    let scoped = permissions.scope_on(Surface::Cola).unwrap();
    let everything = unrestricted.scope_on(Surface::Cola).unwrap();

    let mut group = c.benchmark_group("key_scope");
    group.bench_function("may_use_tool/allow_list_last_of_10", |b| {
        b.iter(|| scoped.may_use_tool(black_box("tool_9"), true));
    });
    group.bench_function("may_use_tool/allow_list_absent", |b| {
        b.iter(|| scoped.may_use_tool(black_box("whoami"), true));
    });
    group.bench_function("may_use_tool/no_list", |b| {
        b.iter(|| everything.may_use_tool(black_box("whoami"), true));
    });
    group.bench_function("may_read_resource/prefix_match_last_of_10", |b| {
        b.iter(|| scoped.may_read_resource(black_box("cola://project-9/docs/readme.md")));
    });
    group.bench_function("may_read_resource/allow_list_absent", |b| {
        b.iter(|| {
            scoped.may_read_resource(black_box(
                "cola://keys/0195f0c2-0000-7000-8000-ffffffffffff",
            ))
        });
    });
    group.finish();
}

criterion_group!(benches, key_parse, permissions);
criterion_main!(benches);

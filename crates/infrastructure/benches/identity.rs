//! Micro-benchmark of an identity assertion (`X-Cola-Identity`): what the
//! gateway adds to each upstream request of a server with
//! `forward_identity` — the claims serialised, base64url, and one signature,
//! with Ed25519 (the default and `--dev` key) and with ECDSA P-256.
//!
//! `cargo bench -p cola-infrastructure --bench identity`
#![allow(clippy::unwrap_used, missing_docs)]

use cola_infrastructure::{ASSERTION_LIFETIME_SECS, IdentityClaims, IdentityKey};
use criterion::{Criterion, criterion_group, criterion_main};

fn claims(now: i64) -> IdentityClaims<'static> {
    IdentityClaims {
        iss: "https://cola.example.com",
        aud: "https://cola.example.com/mcp/github",
        sub: uuid::Uuid::new_v4(),
        tenant_id: uuid::Uuid::new_v4(),
        server_id: uuid::Uuid::new_v4(),
        key_id: uuid::Uuid::new_v4(),
        key_prefix: "cola_abcdefghijkl",
        iat: now,
        exp: now + ASSERTION_LIFETIME_SECS,
        jti: uuid::Uuid::new_v4(),
    }
}

fn p256_key() -> IdentityKey {
    let secret = p256::SecretKey::from_slice(&[7u8; 32]).unwrap();
    let pem = {
        use p256::pkcs8::EncodePrivateKey as _;
        secret.to_pkcs8_pem(Default::default()).unwrap()
    };
    IdentityKey::from_pem(&pem).unwrap()
}

fn assertion(c: &mut Criterion) {
    let now = chrono::Utc::now().timestamp();
    let ed25519 = IdentityKey::generate().unwrap();
    let p256 = p256_key();
    let mut group = c.benchmark_group("identity assertion");
    group.bench_function("Ed25519 (EdDSA)", |b| {
        b.iter(|| ed25519.sign(&claims(now)).unwrap());
    });
    group.bench_function("P-256 (ES256)", |b| {
        b.iter(|| p256.sign(&claims(now)).unwrap());
    });
    group.finish();
}

criterion_group!(benches, assertion);
criterion_main!(benches);

//! A bare argon2id verification with the server's parameters (m = 19456 KiB,
//! t = 2, p = 1; the same `argon2` crate), timed sequentially on one thread:
//! the yardstick for the cold path of `benches/load.sh`.
//!
//! Not a workspace member: `benches/load.sh` builds it in a scratch crate.
//! Usage: argon2-verify [iterations]

use std::time::Instant;

use argon2::password_hash::{PasswordHash, PasswordHasher, PasswordVerifier, SaltString};
use argon2::{Algorithm, Argon2, Params, Version};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let iterations: usize = std::env::args()
        .nth(1)
        .map(|arg| arg.parse())
        .transpose()?
        .unwrap_or(50);
    let params = Params::new(19 * 1024, 2, 1, None).map_err(|e| e.to_string())?;
    let argon2 = Argon2::new(Algorithm::Argon2id, Version::V0x13, params);
    let secret = b"cola_0123456789ABCDEFGHIJKLMNOPQRST012345";
    let salt = SaltString::encode_b64(&[0x5a; 16]).map_err(|e| e.to_string())?;
    let phc = argon2
        .hash_password(secret, &salt)
        .map_err(|e| e.to_string())?
        .to_string();

    let mut samples = Vec::with_capacity(iterations);
    for _ in 0..iterations {
        let started = Instant::now();
        // As the server does: parse the stored PHC string, then verify.
        let parsed = PasswordHash::new(&phc).map_err(|e| e.to_string())?;
        let ok = argon2.verify_password(secret, &parsed).is_ok();
        samples.push(started.elapsed().as_secs_f64() * 1000.0);
        if !ok {
            return Err("verification failed".into());
        }
    }
    samples.sort_by(f64::total_cmp);
    let pick = |q: f64| samples[((samples.len() - 1) as f64 * q).round() as usize];
    let mean = samples.iter().sum::<f64>() / samples.len() as f64;
    println!(
        "ARGON2 n={} p50_ms={:.2} p90_ms={:.2} p99_ms={:.2} mean_ms={:.2} min_ms={:.2}",
        samples.len(),
        pick(0.5),
        pick(0.9),
        pick(0.99),
        mean,
        samples[0]
    );
    Ok(())
}

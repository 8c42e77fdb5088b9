//! Criterion benchmarks of the hand-out's building blocks: JWT verification through the JWKS
//! verifier with a warm key cache (RS256, ES256, EdDSA), the claim checks, sealing and opening a
//! credential with the AES-256-GCM key ring, and the keyed hash of an API key.
//!
//! `cargo bench -p custody-tests --bench primitives`.

#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

use criterion::{criterion_group, criterion_main, Criterion};
use custody_identity::jwt::{validate_claims, ClaimExpectations};
use custody_identity::ports::SecretHasher as _;
use custody_identity::{Issuer, UnixTime};
use custody_providers::{HmacHasher, HttpClient, HttpClientSettings, JwksSettings, JwksVerifier, KeyRing};
use custody_tests::fake_idp::{Alg, FakeIdp};
use custody_vault::grant::{Credential, GrantId, TokenKind};
use custody_vault::Cipher as _;
use std::hint::black_box;

fn jwt(c: &mut Criterion) {
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    let idp = rt.block_on(FakeIdp::start());
    let http =
        HttpClient::new(HttpClientSettings { allow_private_addresses: true, ..HttpClientSettings::default() }).unwrap();
    let verifier = JwksVerifier::new(http, JwksSettings::default());
    let jwks = idp.jwks_uri();
    let mut group = c.benchmark_group("jwt_verify_warm");
    for alg in Alg::ALL {
        let token = idp.sign(idp.claims_for("bench-user"), alg);
        // Warm the key cache once; the loop then measures verification only.
        rt.block_on(verifier.verify(&jwks, &token)).unwrap();
        group.bench_function(alg.as_str(), |b| {
            b.iter(|| rt.block_on(verifier.verify(&jwks, black_box(&token))).unwrap());
        });
    }
    group.finish();

    let token = idp.sign(idp.claims_for("bench-user"), Alg::Rs256);
    let claims = rt.block_on(verifier.verify(&jwks, &token)).unwrap();
    let issuer = Issuer::new(idp.issuer());
    let now = UnixTime(claims["iat"].as_i64().unwrap());
    c.bench_function("validate_claims", |b| {
        b.iter(|| {
            let expect = ClaimExpectations { issuer: &issuer, audience: Some(idp.audience()), leeway_secs: 60 };
            validate_claims(black_box(claims.clone()), &expect, now).unwrap()
        });
    });
}

fn sealing(c: &mut Criterion) {
    let ring = KeyRing::parse("k1:AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8=").unwrap();
    let grant = GrantId::parse("00000000-0000-4000-8000-000000000001").unwrap();
    let aad = Credential::aad(&grant, TokenKind::Access);
    let token = b"ya29.a0AfH6SMB-example-access-token-of-a-typical-length-0123456789abcdefghijklmnopqrstuvwxyz";
    let sealed = ring.seal(token, &aad).unwrap();
    c.bench_function("aes256gcm_seal", |b| b.iter(|| ring.seal(black_box(token), &aad).unwrap()));
    c.bench_function("aes256gcm_open", |b| b.iter(|| ring.open(black_box(&sealed), &aad).unwrap()));

    let hasher = HmacHasher::new(&[7u8; 32]).unwrap();
    let key = b"ck_0123456789abcdef_AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA";
    let expected = hasher.hash("api-key", key);
    c.bench_function("api_key_hmac_verify", |b| b.iter(|| hasher.verify("api-key", black_box(key), &expected)));
}

criterion_group!(benches, jwt, sealing);
criterion_main!(benches);

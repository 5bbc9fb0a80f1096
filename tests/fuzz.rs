//! Randomised hostile input (seeded, so a failure reproduces): the token parser and every JSON
//! endpoint must never panic or answer 5xx, whatever arrives.

mod common;

use common::{Auth, Backend, Harness};
use latchkey::token::{SessionToken, TOKEN_LEN};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use rocket::http::ContentType;
use serde_json::{json, Value};

const ALPHABET: &[u8] =
    b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_+/=.% \0\n";

fn random_text(rng: &mut StdRng, max: usize) -> String {
    let len = rng.random_range(0..=max);
    match rng.random_range(0..3) {
        0 => (0..len)
            .map(|_| ALPHABET[rng.random_range(0..ALPHABET.len())] as char)
            .collect(),
        1 => (0..len)
            .map(|_| char::from_u32(rng.random_range(0..0x11_0000)).unwrap_or('\u{fffd}'))
            .collect(),
        _ => String::from_utf8_lossy(&(0..len).map(|_| rng.random::<u8>()).collect::<Vec<_>>())
            .into_owned(),
    }
}

#[test]
fn token_parser_accepts_only_canonical_tokens() {
    let mut rng = StdRng::seed_from_u64(0x1a7c4);
    let mut accepted = 0;
    for i in 0..200_000 {
        let text = if i % 4 == 0 {
            // Mostly right-shaped: 43 characters of the right alphabet, sometimes off by one.
            let len = TOKEN_LEN + rng.random_range(0..3) - 1;
            (0..len)
                .map(|_| ALPHABET[rng.random_range(0..64)] as char)
                .collect()
        } else {
            random_text(&mut rng, 64)
        };
        if let Some(token) = SessionToken::parse(&text) {
            assert_eq!(text.len(), TOKEN_LEN);
            assert_eq!(token.expose(), text, "accepted a non-canonical encoding");
            accepted += 1;
        }
    }
    assert!(
        accepted > 1000,
        "the generator should hit valid tokens too ({accepted})"
    );
}

fn random_value(rng: &mut StdRng, depth: u32) -> Value {
    match rng.random_range(0..if depth > 2 { 5 } else { 7 }) {
        0 => Value::Null,
        1 => json!(rng.random::<bool>()),
        2 => json!(rng.random::<i64>()),
        3 => json!(rng.random::<f64>()),
        4 => json!(random_text(rng, 300)),
        5 => Value::Array(
            (0..rng.random_range(0..4))
                .map(|_| random_value(rng, depth + 1))
                .collect(),
        ),
        _ => {
            let keys = [
                "email",
                "name",
                "password",
                "current_password",
                "new_password",
                "x",
            ];
            let mut map = serde_json::Map::new();
            for _ in 0..rng.random_range(0..5) {
                map.insert(
                    keys[rng.random_range(0..keys.len())].into(),
                    random_value(rng, depth + 1),
                );
            }
            Value::Object(map)
        }
    }
}

fn random_body(rng: &mut StdRng) -> Vec<u8> {
    let mut valid = json!({
        "email": format!("{}@example.com", random_text(rng, 8)),
        "name": random_text(rng, 20),
        "password": random_text(rng, 40),
        "current_password": random_text(rng, 20),
        "new_password": random_text(rng, 20),
    });
    match rng.random_range(0..4) {
        0 => random_value(rng, 0).to_string().into_bytes(),
        1 => {
            let key = ["email", "name", "password", "new_password"][rng.random_range(0..4)];
            valid[key] = random_value(rng, 1);
            valid.to_string().into_bytes()
        }
        2 => {
            let mut bytes = valid.to_string().into_bytes();
            let cut = rng.random_range(0..bytes.len());
            bytes.truncate(cut);
            bytes
        }
        _ => {
            let mut bytes = valid.to_string().into_bytes();
            for _ in 0..rng.random_range(1..4) {
                let at = rng.random_range(0..bytes.len());
                bytes[at] = rng.random();
            }
            bytes
        }
    }
}

fn endpoints_never_5xx(backend: Backend) {
    let Some(h) = Harness::start(backend) else {
        return;
    };
    let (cookie, _) = h.register("fuzz@example.com", "fuzz password 1");
    let mut rng = StdRng::seed_from_u64(0xf022);
    let paths = [
        "/api/auth/register",
        "/api/auth/login",
        "/api/auth/token",
        "/api/auth/password",
    ];
    for i in 0..400 {
        let path = paths[i % paths.len()];
        let body = random_body(&mut rng);
        let auth = if path.ends_with("/password") {
            Auth::Cookie(cookie.clone())
        } else {
            Auth::None
        };
        let req = h
            .request(h.client.post(path), &auth)
            .header(ContentType::JSON)
            .body(body.clone());
        let reply = h.send(req);
        assert!(
            reply.status.code < 500,
            "{path} {:?}: {} {:?}",
            String::from_utf8_lossy(&body),
            reply.status,
            reply.body
        );
        if reply.status.code >= 400 {
            assert!(reply.body["error"]["code"].is_string(), "{:?}", reply.body);
        }
    }
    let account = h
        .request(
            h.client.delete("/api/auth/account"),
            &Auth::Cookie(cookie.clone()),
        )
        .header(ContentType::JSON)
        .body(random_body(&mut rng));
    assert!(h.send(account).status.code < 500);
}

on_both_backends!(endpoints_never_5xx);

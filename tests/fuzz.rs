//! Randomised hostile input (seeded, so a failure reproduces): the token parser accepts only
//! canonical tokens, and every JSON endpoint answers what the contract says, whatever arrives.

mod common;

use common::{Auth, Backend, Harness};
use latchkey::token::{Token, TOKEN_LEN};
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
        if let Some(token) = Token::parse(&text) {
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

/// The fields (all strings) a route's body must have; anything else is 400 `bad_request`.
fn fields_of(path: &str) -> &'static [&'static str] {
    match path {
        "/api/auth/register" => &["email", "name", "password"],
        "/api/auth/password" => &["current_password", "new_password"],
        _ => &["email", "password"],
    }
}

/// Whether `body` is JSON of the route's shape: an object with each field a string.
fn has_shape(body: &[u8], fields: &[&str]) -> bool {
    match serde_json::from_slice::<Value>(body) {
        Ok(Value::Object(map)) => fields
            .iter()
            .all(|field| map.get(*field).is_some_and(Value::is_string)),
        _ => false,
    }
}

/// The answers the contract allows a well-shaped body on each route (none of the random
/// credentials can be right, so nothing signs in): (status, error code, "" for success).
fn allowed(path: &str) -> &'static [(u16, &'static str)] {
    match path {
        "/api/auth/register" => &[(201, ""), (409, "email_taken"), (422, "validation_failed")],
        "/api/auth/password" => &[(403, "invalid_credentials"), (422, "validation_failed")],
        _ => &[(401, "invalid_credentials"), (422, "validation_failed")],
    }
}

/// Random bodies on every JSON endpoint get exactly what the contract says: 400 `bad_request`
/// for anything that is not JSON of the route's shape, and one of the route's own answers
/// (with the code that goes with its status) for the rest. Never a 5xx, never a panic.
fn endpoints_answer_by_contract(backend: Backend) {
    // 300 failed sign-ins from one address: the IP throttle would turn them into 429s; and
    // 100 wrong confirmations of the account's password would back its address off.
    let Some(h) = Harness::start_with(backend, |s| {
        s.ip_max_failures = 10_000;
        s.login_max_failures = 10_000;
    }) else {
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
    let (mut malformed, mut shaped) = (0, 0);
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
        let answer = (reply.status.code, reply.code());
        let what = format!(
            "{path} {:?}: {} {:?}",
            String::from_utf8_lossy(&body),
            reply.status,
            reply.body
        );
        if has_shape(&body, fields_of(path)) {
            shaped += 1;
            assert!(allowed(path).contains(&answer), "{what}");
        } else {
            malformed += 1;
            assert_eq!(answer, (400, "bad_request"), "{what}");
        }
    }
    // The generator reaches both kinds often enough for this to mean something.
    assert!(malformed > 100 && shaped > 50, "{malformed} / {shaped}");
    let account = h
        .request(
            h.client.delete("/api/auth/account"),
            &Auth::Cookie(cookie.clone()),
        )
        .header(ContentType::JSON)
        .body(random_body(&mut rng));
    let reply = h.send(account);
    assert!(
        [(400, "bad_request"), (403, "invalid_credentials")]
            .contains(&(reply.status.code, reply.code())),
        "{} {:?}",
        reply.status,
        reply.body
    );
    // The account is still there.
    assert_eq!(
        h.get("/api/auth/me", &Auth::Cookie(cookie)).status.code,
        200
    );
}

on_both_backends!(endpoints_answer_by_contract);

//! Two-factor sign-in (SPEC §9) through the server binary over real HTTP, on both backends:
//! enrollment that is not active until confirmed, codes one step either side and never twice,
//! recovery codes used once, `mfa_required` only after a right password, wrong codes counted
//! by the email's throttle, no session surviving the factor being turned on (nor a sign-in
//! racing it), turning it off, the admin's removal, and the secret sealed with `mfa_key`.
//!
//! Codes are computed here from the secret the enrollment returns (RFC 6238), as an
//! authenticator app would.

mod common;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use common::server::{fetch, Answer, Server};
use common::{Backend, TestDb};
use diesel::prelude::*;
use serde_json::{json, Value};

const PASSWORD: &str = "correct horse battery";
const KEY: &str = "AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8=";

struct Site {
    server: Server,
    db: TestDb,
}

fn start(backend: Backend, extra: &[(&str, &str)]) -> Option<Site> {
    let db = TestDb::new(backend)?;
    let server = Server::start(&db.url, extra);
    Some(Site { server, db })
}

/// How a request authenticates.
#[derive(Clone, Copy)]
enum As<'a> {
    Nobody,
    Cookie(&'a str),
    Bearer(&'a str),
}

impl Site {
    fn call(&self, method: &str, path: &str, body: Option<Value>, who: As<'_>) -> Answer {
        let mut req = ureq::request(method, &format!("{}{path}", self.server.base));
        req = match who {
            As::Nobody => req,
            As::Cookie(cookie) => req.set("Cookie", cookie),
            As::Bearer(token) => req.set("Authorization", &format!("Bearer {token}")),
        };
        fetch(req, body)
    }

    fn post(&self, path: &str, body: Value, who: As<'_>) -> Answer {
        self.call("POST", path, Some(body), who)
    }

    /// Registers and returns the `session=…` cookie pair.
    fn register(&self, email: &str) -> String {
        let answer = self.post(
            "/api/auth/register",
            json!({ "email": email, "name": "Ann", "password": PASSWORD }),
            As::Nobody,
        );
        assert_eq!(answer.status, 201, "{}", answer.body);
        assert_eq!(answer.json()["user"]["mfa_enabled"], false);
        cookie_of(&answer)
    }

    fn token(&self, email: &str, code: Option<&str>) -> Answer {
        let mut body = json!({ "email": email, "password": PASSWORD });
        if let Some(code) = code {
            body["code"] = json!(code);
        }
        self.post("/api/auth/token", body, As::Nobody)
    }

    fn me(&self, who: As<'_>) -> Answer {
        self.call("GET", "/api/auth/me", None, who)
    }

    /// Starts an enrollment and returns the secret's bytes.
    fn begin(&self, cookie: &str) -> Vec<u8> {
        let answer = self.post(
            "/api/auth/mfa/totp",
            json!({ "password": PASSWORD }),
            As::Cookie(cookie),
        );
        assert_eq!(answer.status, 200, "{}", answer.body);
        let body = answer.json();
        let secret = body["secret"].as_str().unwrap();
        base32::decode(base32::Alphabet::Rfc4648 { padding: false }, secret).unwrap()
    }

    /// Enrolls and confirms with the code of now; returns the secret and the recovery codes.
    fn enable(&self, cookie: &str) -> (Vec<u8>, Vec<String>) {
        let secret = self.begin(cookie);
        steady();
        let answer = self.post(
            "/api/auth/mfa/totp/confirm",
            json!({ "code": code_at(&secret, 0) }),
            As::Cookie(cookie),
        );
        assert_eq!(answer.status, 200, "{}", answer.body);
        let codes = answer.json()["recovery_codes"]
            .as_array()
            .unwrap()
            .iter()
            .map(|c| c.as_str().unwrap().to_string())
            .collect();
        (secret, codes)
    }

    fn events(&self, who: As<'_>) -> Vec<String> {
        let answer = self.call("GET", "/api/events", None, who);
        assert_eq!(answer.status, 200, "{}", answer.body);
        answer.json()["events"]
            .as_array()
            .unwrap()
            .iter()
            .map(|e| e["type"].as_str().unwrap().to_string())
            .collect()
    }

    /// A query straight against the server's database.
    fn query<T>(&self, f: impl FnOnce(&mut latchkey::db::DbConnection) -> QueryResult<T>) -> T {
        latchkey::db::Db::pool_only(&self.db.settings())
            .run_blocking(f)
            .expect("query")
    }
}

fn cookie_of(answer: &Answer) -> String {
    let set = answer
        .set_cookies()
        .into_iter()
        .find(|c| c.starts_with("session=") && !c.starts_with("session=;"))
        .expect("a session cookie");
    set.split(';').next().unwrap().to_string()
}

fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

/// The code for the step `offset` steps from now.
fn code_at(secret: &[u8], offset: i64) -> String {
    let totp = totp_rs::TOTP::new_unchecked(
        totp_rs::Algorithm::SHA1,
        6,
        1,
        30,
        secret.to_vec(),
        None,
        String::new(),
    );
    totp.generate((unix_now() as i64 + offset * 30) as u64)
}

/// Waits until the current 30-second step has at least 5 seconds left, so that a code
/// computed here is checked by the server in the same step.
fn steady() {
    while unix_now() % 30 > 25 {
        thread::sleep(Duration::from_millis(200));
    }
}

fn enrollment_is_active_only_once_confirmed(backend: Backend) {
    let Some(site) = start(backend, &[]) else {
        return;
    };
    let email = "ann@example.com";
    let cookie = site.register(email);
    let other = site.token(email, None).json()["token"]
        .as_str()
        .unwrap()
        .to_string();

    // The current password is asked for first.
    let wrong = site.post(
        "/api/auth/mfa/totp",
        json!({ "password": "not the password" }),
        As::Cookie(&cookie),
    );
    assert_eq!(
        (wrong.status, wrong.code().as_str()),
        (403, "invalid_credentials")
    );
    let begun = site.post(
        "/api/auth/mfa/totp",
        json!({ "password": PASSWORD }),
        As::Cookie(&cookie),
    );
    assert_eq!(begun.status, 200, "{}", begun.body);
    assert_eq!(begun.header("cache-control"), Some("no-store"));
    let body = begun.json();
    let secret_text = body["secret"].as_str().unwrap();
    let uri = body["otpauth_uri"].as_str().unwrap();
    assert!(
        uri.starts_with("otpauth://totp/latchkey:ann%40example.com?secret=")
            && uri.contains(secret_text),
        "{uri}"
    );
    assert!(
        body["qr_svg"].as_str().unwrap().contains("<svg"),
        "a QR code"
    );
    let secret =
        base32::decode(base32::Alphabet::Rfc4648 { padding: false }, secret_text).expect("base32");
    assert_eq!(secret.len(), 20);

    // Not active yet: sign-in needs only the password, and nobody was signed out.
    assert_eq!(site.token(email, None).status, 200);
    assert_eq!(site.me(As::Bearer(&other)).status, 200);
    assert_eq!(
        site.me(As::Cookie(&cookie)).json()["user"]["mfa_enabled"],
        false
    );

    steady();
    let wrong = site.post(
        "/api/auth/mfa/totp/confirm",
        json!({ "code": code_at(&secret, 3) }),
        As::Cookie(&cookie),
    );
    assert_eq!(
        (wrong.status, wrong.code().as_str()),
        (403, "invalid_credentials")
    );
    // One step behind now is accepted.
    let confirmed = site.post(
        "/api/auth/mfa/totp/confirm",
        json!({ "code": code_at(&secret, -1) }),
        As::Cookie(&cookie),
    );
    assert_eq!(confirmed.status, 200, "{}", confirmed.body);
    assert_eq!(confirmed.header("cache-control"), Some("no-store"));
    let codes = confirmed.json()["recovery_codes"]
        .as_array()
        .unwrap()
        .clone();
    assert_eq!(codes.len(), 10);

    // On: the user's other sessions are gone, this one goes on.
    let other_session = site.me(As::Bearer(&other));
    assert_eq!(
        (other_session.status, other_session.code().as_str()),
        (401, "unauthenticated")
    );
    let me = site.me(As::Cookie(&cookie));
    assert_eq!(me.status, 200);
    assert_eq!(me.json()["user"]["mfa_enabled"], true);
    assert!(site
        .events(As::Cookie(&cookie))
        .contains(&"mfa_enabled".to_string()));

    // Once on, it cannot be enrolled or confirmed again without turning it off.
    let again = site.post(
        "/api/auth/mfa/totp",
        json!({ "password": PASSWORD }),
        As::Cookie(&cookie),
    );
    assert_eq!(
        (again.status, again.code().as_str()),
        (409, "mfa_already_enabled")
    );
    let again = site.post(
        "/api/auth/mfa/totp/confirm",
        json!({ "code": code_at(&secret, 0) }),
        As::Cookie(&cookie),
    );
    assert_eq!(
        (again.status, again.code().as_str()),
        (409, "mfa_already_enabled")
    );

    // Confirming with no enrollment started.
    let fresh = site.register("bob@example.com");
    let none = site.post(
        "/api/auth/mfa/totp/confirm",
        json!({ "code": "123456" }),
        As::Cookie(&fresh),
    );
    assert_eq!(
        (none.status, none.code().as_str()),
        (409, "mfa_not_enabled")
    );
}

fn sign_in_asks_for_a_code_and_takes_each_once(backend: Backend) {
    let Some(site) = start(backend, &[]) else {
        return;
    };
    let email = "ann@example.com";
    let cookie = site.register(email);
    let (secret, recovery) = site.enable(&cookie);

    // The right password alone: 401 mfa_required. A wrong password: the usual answer, with
    // nothing said about a second factor.
    let needed = site.token(email, None);
    assert_eq!(
        (needed.status, needed.code().as_str()),
        (401, "mfa_required")
    );
    let wrong_password = site.post(
        "/api/auth/token",
        json!({ "email": email, "password": "wrong password", "code": code_at(&secret, 1) }),
        As::Nobody,
    );
    assert_eq!(
        (wrong_password.status, wrong_password.code().as_str()),
        (401, "invalid_credentials")
    );
    let empty = site.token(email, Some(""));
    assert_eq!(empty.code(), "mfa_required");

    steady();
    // The step the confirmation used is spent; the next one is accepted, once.
    let spent = site.token(email, Some(&code_at(&secret, 0)));
    assert_eq!(
        (spent.status, spent.code().as_str()),
        (401, "invalid_credentials")
    );
    // It says the code is wrong, not the password.
    let said = spent.json()["error"]["message"]
        .as_str()
        .unwrap_or("")
        .to_string();
    assert!(
        said.contains("code") && !said.contains("password"),
        "{said}"
    );
    assert!(
        wrong_password.body.contains("password"),
        "{}",
        wrong_password.body
    );
    let ahead = code_at(&secret, 1);
    let signed_in = site.token(email, Some(&ahead));
    assert_eq!(signed_in.status, 200, "{}", signed_in.body);
    assert_eq!(signed_in.json()["user"]["mfa_enabled"], true);
    let replay = site.token(email, Some(&ahead));
    assert_eq!(
        (replay.status, replay.code().as_str()),
        (401, "invalid_credentials")
    );
    // Two steps ahead is outside the window.
    let far = site.token(email, Some(&code_at(&secret, 2)));
    assert_eq!(
        (far.status, far.code().as_str()),
        (401, "invalid_credentials")
    );
    // Not a code at all, and a long one.
    let short = site.token(email, Some("12345"));
    assert_eq!(
        (short.status, short.code().as_str()),
        (401, "invalid_credentials")
    );
    let long = site.token(email, Some(&"7".repeat(10_000)));
    assert_eq!(
        (long.status, long.code().as_str()),
        (401, "invalid_credentials")
    );
    let typed = site.post(
        "/api/auth/token",
        json!({ "email": email, "password": PASSWORD, "code": 123456 }),
        As::Nobody,
    );
    assert_eq!((typed.status, typed.code().as_str()), (400, "bad_request"));

    // A recovery code works once, however it is typed; login (cookie) takes codes too.
    let typed = recovery[0].to_uppercase().replace('-', " ");
    let login = site.post(
        "/api/auth/login",
        json!({ "email": email, "password": PASSWORD, "code": typed }),
        As::Nobody,
    );
    assert_eq!(login.status, 200, "{}", login.body);
    let new_cookie = cookie_of(&login);
    // Both at the same instant: in either order.
    let mut events = site.events(As::Cookie(&new_cookie));
    events[..2].sort();
    assert_eq!(&events[..2], ["login", "recovery_code_used"], "{events:?}");
    let again = site.token(email, Some(&recovery[0]));
    assert_eq!(
        (again.status, again.code().as_str()),
        (401, "invalid_credentials")
    );
    // Another user's codes are not this user's.
    let bob = site.register("bob@example.com");
    let (_, bob_codes) = site.enable(&bob);
    let theirs = site.token(email, Some(&bob_codes[0]));
    assert_eq!(
        (theirs.status, theirs.code().as_str()),
        (401, "invalid_credentials")
    );
    assert_eq!(site.token(email, Some(&recovery[1])).status, 200);
    let failed = site
        .events(As::Cookie(&new_cookie))
        .iter()
        .filter(|kind| *kind == "login_failed")
        .count();
    assert!(failed >= 5, "wrong codes are failed sign-ins: {failed}");
}

fn wrong_codes_count_toward_the_throttle(backend: Backend) {
    let Some(site) = start(backend, &[("ROCKET_LOGIN_MAX_FAILURES", "3")]) else {
        return;
    };
    let email = "ann@example.com";
    let cookie = site.register(email);
    let (secret, _) = site.enable(&cookie);
    for _ in 0..3 {
        let wrong = site.token(email, Some("000000"));
        assert_eq!(
            (wrong.status, wrong.code().as_str()),
            (401, "invalid_credentials")
        );
    }
    steady();
    let right = site.token(email, Some(&code_at(&secret, 1)));
    assert_eq!(
        (right.status, right.code().as_str()),
        (429, "too_many_attempts")
    );
    assert!(right.header("retry-after").is_some());
}

fn turning_it_off_and_the_admins_removal(backend: Backend) {
    let Some(site) = start(backend, &[]) else {
        return;
    };
    let email = "ann@example.com";
    let cookie = site.register(email);
    let (secret, recovery) = site.enable(&cookie);
    steady();
    let other = site.token(email, Some(&code_at(&secret, 1))).json()["token"]
        .as_str()
        .unwrap()
        .to_string();

    let off = |code: &str| {
        site.call(
            "DELETE",
            "/api/auth/mfa/totp",
            Some(json!({ "code": code })),
            As::Cookie(&cookie),
        )
    };
    let wrong = off("000000");
    assert_eq!(
        (wrong.status, wrong.code().as_str()),
        (403, "invalid_credentials")
    );
    assert_eq!(off(&recovery[0]).status, 204);
    let mut events = site.events(As::Cookie(&cookie));
    events[..2].sort();
    assert_eq!(
        &events[..2],
        ["mfa_disabled", "recovery_code_used"],
        "{events:?}"
    );
    let other_session = site.me(As::Bearer(&other));
    assert_eq!(
        (other_session.status, other_session.code().as_str()),
        (401, "unauthenticated"),
        "other sessions revoked"
    );
    assert_eq!(
        site.me(As::Cookie(&cookie)).json()["user"]["mfa_enabled"],
        false
    );
    assert_eq!(
        site.token(email, None).status,
        200,
        "the password is enough again"
    );
    let again = off(&recovery[1]);
    assert_eq!(
        (again.status, again.code().as_str()),
        (409, "mfa_not_enabled")
    );

    // An admin removes it for a user who lost their device; every session of theirs ends.
    let (_, _) = site.enable(&cookie);
    let admin = site.register("root@example.com");
    let user_id = site.me(As::Cookie(&cookie)).json()["user"]["id"]
        .as_str()
        .unwrap()
        .to_string();
    let path = format!("/api/admin/users/{user_id}/mfa");
    let refused = site.call("DELETE", &path, None, As::Cookie(&admin));
    assert_eq!(
        (refused.status, refused.code().as_str()),
        (403, "forbidden")
    );
    site.query(|conn| {
        latchkey::db::models::User::set_role(
            conn,
            "root@example.com",
            latchkey::domain::Role::Admin,
            latchkey::clock::system_now(),
        )
    });
    assert_eq!(
        site.call("DELETE", &path, None, As::Cookie(&admin)).status,
        204
    );
    let removed = site.me(As::Cookie(&cookie));
    assert_eq!(
        (removed.status, removed.code().as_str()),
        (401, "unauthenticated")
    );
    let back = site.token(email, None);
    assert_eq!(back.status, 200, "{}", back.body);
    assert_eq!(back.json()["user"]["mfa_enabled"], false);
    let token = back.json()["token"].as_str().unwrap().to_string();
    assert_eq!(site.events(As::Bearer(&token))[1], "mfa_disabled");
    let unknown = site.call(
        "DELETE",
        "/api/admin/users/00000000-0000-4000-8000-000000000000/mfa",
        None,
        As::Cookie(&admin),
    );
    assert_eq!(
        (unknown.status, unknown.code().as_str()),
        (404, "not_found")
    );
    // Nothing left behind.
    let left: i64 = site.query(|conn| {
        latchkey::db::schema::recovery_codes::table
            .count()
            .get_result(conn)
    });
    assert_eq!(left, 0);
}

/// A stolen session cannot guess the password through the routes that confirm it (they
/// count as sign-in attempts: 429 after `login_max_failures`), and for an account with a
/// second factor the password alone neither deletes it nor changes its password.
fn confirmations_count_and_need_the_second_factor(backend: Backend) {
    let Some(site) = start(backend, &[]) else {
        return;
    };
    // Guessing: five wrong passwords, then 429 with Retry-After, the right one included.
    let guessed = site.register("guess@example.com");
    for i in 0..5 {
        let wrong = site.post(
            "/api/auth/password",
            json!({ "current_password": format!("wrong guess {i}"), "new_password": "x-new-password" }),
            As::Cookie(&guessed),
        );
        assert_eq!(
            (wrong.status, wrong.code()),
            (403, "invalid_credentials".into()),
            "{}",
            wrong.body
        );
    }
    for body in [
        json!({ "password": "wrong guess 6" }),
        json!({ "password": PASSWORD }),
    ] {
        let refused = site.call(
            "DELETE",
            "/api/auth/account",
            Some(body),
            As::Cookie(&guessed),
        );
        assert_eq!(
            (refused.status, refused.code()),
            (429, "too_many_attempts".into()),
            "{}",
            refused.body
        );
        assert!(refused.header("retry-after").is_some());
    }
    // The password sign-in of that address is backed off too: the same budget.
    let backed_off = site.token("guess@example.com", None);
    assert_eq!(
        (backed_off.status, backed_off.code().as_str()),
        (429, "too_many_attempts")
    );

    // A second factor: the password alone is not enough; with a code it is.
    let email = "two@example.com";
    let cookie = site.register(email);
    let (secret, recovery) = site.enable(&cookie);
    let alone = site.call(
        "DELETE",
        "/api/auth/account",
        Some(json!({ "password": PASSWORD })),
        As::Cookie(&cookie),
    );
    assert_eq!(
        (alone.status, alone.code()),
        (403, "mfa_required".into()),
        "{}",
        alone.body
    );
    let wrong = site.post(
        "/api/auth/password",
        json!({ "current_password": PASSWORD, "code": "000000", "new_password": "x-new-password" }),
        As::Cookie(&cookie),
    );
    assert_eq!(
        (wrong.status, wrong.code()),
        (403, "invalid_credentials".into())
    );
    // (The code of now was used to turn the factor on; the next step's is accepted too.)
    steady();
    let changed = site.post(
        "/api/auth/password",
        json!({ "current_password": PASSWORD, "code": code_at(&secret, 1), "new_password": "x-new-password" }),
        As::Cookie(&cookie),
    );
    assert_eq!(changed.status, 204, "{}", changed.body);
    let cookie = cookie_of(&changed);
    let deleted = site.call(
        "DELETE",
        "/api/auth/account",
        Some(json!({ "password": "x-new-password", "code": recovery[0] })),
        As::Cookie(&cookie),
    );
    assert_eq!(deleted.status, 204, "{}", deleted.body);
    let gone = site.token(email, None);
    assert_eq!(
        (gone.status, gone.code().as_str()),
        (401, "invalid_credentials")
    );
}

/// Sign-ins with the password alone, racing the confirmation: whichever committed first, no
/// session made without a code is alive afterwards.
fn no_sign_in_survives_turning_it_on(backend: Backend) {
    let Some(site) = start(backend, &[("ROCKET_IP_MAX_FAILURES", "100000")]) else {
        return;
    };
    let site = Arc::new(site);
    let email = "ann@example.com";
    let cookie = site.register(email);
    let secret = site.begin(&cookie);
    let stop = Arc::new(AtomicBool::new(false));
    let racers: Vec<_> = (0..4)
        .map(|_| {
            let (site, stop) = (site.clone(), stop.clone());
            thread::spawn(move || {
                let mut tokens = Vec::new();
                while !stop.load(Ordering::SeqCst) {
                    let answer = site.token(email, None);
                    match answer.status {
                        200 => tokens.push(answer.json()["token"].as_str().unwrap().to_string()),
                        401 => break,
                        other => panic!("unexpected {other}: {}", answer.body),
                    }
                }
                tokens
            })
        })
        .collect();
    thread::sleep(Duration::from_millis(400));
    steady();
    let confirmed = site.post(
        "/api/auth/mfa/totp/confirm",
        json!({ "code": code_at(&secret, 0) }),
        As::Cookie(&cookie),
    );
    assert_eq!(confirmed.status, 200, "{}", confirmed.body);
    thread::sleep(Duration::from_millis(300));
    stop.store(true, Ordering::SeqCst);
    let tokens: Vec<String> = racers.into_iter().flat_map(|r| r.join().unwrap()).collect();
    assert!(tokens.len() >= 4, "the racers signed in: {}", tokens.len());
    for token in &tokens {
        let survivor = site.me(As::Bearer(token));
        assert_eq!(
            (survivor.status, survivor.code().as_str()),
            (401, "unauthenticated"),
            "a session survived"
        );
    }
    assert_eq!(site.me(As::Cookie(&cookie)).status, 200);
}

/// With `mfa_key`, the stored secret is sealed: the database alone does not hold it, and a
/// server with another key cannot use it (the recovery codes still work).
fn the_secret_is_sealed_with_mfa_key(backend: Backend) {
    let Some(mut site) = start(backend, &[("ROCKET_MFA_KEY", KEY)]) else {
        return;
    };
    let email = "ann@example.com";
    let cookie = site.register(email);
    let (secret, recovery) = site.enable(&cookie);
    let stored: String = site.query(|conn| {
        latchkey::db::schema::totp_factors::table
            .select(latchkey::db::schema::totp_factors::secret)
            .first(conn)
    });
    assert!(stored.starts_with("v1:"), "{stored}");
    let plain = base32::encode(base32::Alphabet::Rfc4648 { padding: false }, &secret);
    assert!(!stored.contains(&plain));
    steady();
    assert_eq!(site.token(email, Some(&code_at(&secret, 1))).status, 200);

    // Another key: the secret does not open, so no code works; a recovery code does.
    site.server = Server::start(
        &site.db.url,
        &[(
            "ROCKET_MFA_KEY",
            "ZmZmZmZmZmZmZmZmZmZmZmZmZmZmZmZmZmZmZmZmZmY=",
        )],
    );
    steady();
    let code = site.token(email, Some(&code_at(&secret, 1)));
    assert_eq!(
        (code.status, code.code().as_str()),
        (401, "invalid_credentials")
    );
    assert_eq!(site.token(email, Some(&recovery[0])).status, 200);
    let (_, log) = site.server.output();
    assert!(log.contains("cannot be opened"), "{log}");
    assert!(!log.contains(&plain), "no secret in the log");

    // Without a key the secret is stored as it is.
    site.server = Server::start(&site.db.url, &[]);
    let bob = site.register("bob@example.com");
    site.enable(&bob);
    let kinds: Vec<String> = site.query(|conn| {
        latchkey::db::schema::totp_factors::table
            .select(latchkey::db::schema::totp_factors::secret)
            .load(conn)
    });
    assert!(kinds.iter().any(|s| s.starts_with("plain:")), "{kinds:?}");
}

on_both_backends!(
    confirmations_count_and_need_the_second_factor,
    enrollment_is_active_only_once_confirmed,
    sign_in_asks_for_a_code_and_takes_each_once,
    wrong_codes_count_toward_the_throttle,
    turning_it_off_and_the_admins_removal,
    no_sign_in_survives_turning_it_on,
    the_secret_is_sealed_with_mfa_key,
);

/// A key that is not 32 bytes of base64 stops the boot with the key named.
#[test]
fn a_bad_mfa_key_is_a_configuration_error() {
    let dir = std::env::temp_dir().join(format!("latchkey-mfa-{}", uuid::Uuid::new_v4()));
    std::fs::create_dir_all(&dir).unwrap();
    let output = std::process::Command::new(env!("CARGO_BIN_EXE_latchkey"))
        .arg("migrate")
        .current_dir(&dir)
        .env(
            "DATABASE_URL",
            format!("sqlite://{}", dir.join("x.db").display()),
        )
        .env("ROCKET_MFA_KEY", "too-short")
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(2), "{stderr}");
    assert!(
        stderr.contains("`mfa_key`") && stderr.contains("base64"),
        "{stderr}"
    );
    assert!(
        !stderr.contains("too-short"),
        "the value is not echoed: {stderr}"
    );
    let _ = std::fs::remove_dir_all(dir);
}

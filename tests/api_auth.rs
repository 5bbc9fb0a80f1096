//! The auth API over Rocket's local client, on both backends: every endpoint's happy path and
//! the errors the contract lists, cookies, fixation, CSRF, throttling and hostile input.

mod common;

use common::{Auth, Backend, Harness};
use rocket::http::{ContentType, Header, Status};
use serde_json::{json, Value};

const PASSWORD: &str = "correct horse battery";

fn register_sets_cookie_and_returns_user(backend: Backend) {
    let Some(h) = Harness::start(backend) else {
        return;
    };
    let reply = h.post(
        "/api/auth/register",
        json!({ "email": "  Ann@Example.COM ", "name": " Ann ", "password": PASSWORD }),
        &Auth::None,
    );
    assert_eq!(reply.status, Status::Created);
    assert_eq!(reply.body["user"]["email"], "ann@example.com");
    assert_eq!(reply.body["user"]["name"], "Ann");
    assert_eq!(reply.body["user"]["role"], "user");
    assert_eq!(reply.body["session"]["current"], true);
    assert!(reply.body["user"].get("password_hash").is_none());
    assert!(reply.body.to_string().len() < 1000);
    assert_eq!(reply.header("Cache-Control"), Some("no-store"));
    let cookie = reply.set_cookie_header("session").expect("cookie set");
    let attrs: Vec<&str> = cookie.split(';').map(str::trim).collect();
    assert_eq!(attrs[0].len(), "session=".len() + 43);
    assert!(attrs.contains(&"HttpOnly"), "{cookie}");
    assert!(attrs.contains(&"Path=/"), "{cookie}");
    assert!(attrs.contains(&"SameSite=Lax"), "{cookie}");
    assert!(attrs.contains(&"Max-Age=604800"), "{cookie}");
    assert!(
        !attrs.contains(&"Secure"),
        "debug profile: no Secure: {cookie}"
    );
    let token = reply.session_cookie("session").unwrap();
    assert!(
        !reply.body.to_string().contains(&token),
        "the token is never in a body for cookie clients"
    );

    let me = h.get("/api/auth/me", &Auth::Cookie(token));
    assert_eq!(me.status, Status::Ok);
    assert_eq!(me.body["user"]["email"], "ann@example.com");
    assert_eq!(me.body["session"]["id"], reply.body["session"]["id"]);
    assert_eq!(me.body["session"]["user_agent"], serde_json::Value::Null);
    assert_eq!(me.body["session"]["ip"], "127.0.0.1");
    assert!(me.body["session"]["expires_at"]
        .as_str()
        .unwrap()
        .ends_with('Z'));
}

fn secure_cookie_and_hsts_when_configured(backend: Backend) {
    let Some(h) = Harness::start_with(backend, |s| {
        s.cookie_secure = true;
        s.cookie_name = "__Host-session".into();
        s.cookie_same_site = latchkey::config::SameSite::Strict;
    }) else {
        return;
    };
    let reply = h.post(
        "/api/auth/register",
        json!({ "email": "a@example.com", "name": "A", "password": PASSWORD }),
        &Auth::None,
    );
    let cookie = reply.set_cookie_header("__Host-session").expect("cookie");
    assert!(
        cookie.contains("Secure") && cookie.contains("SameSite=Strict"),
        "{cookie}"
    );
    assert_eq!(
        reply.header("Strict-Transport-Security"),
        Some("max-age=31536000")
    );
}

fn register_validation_and_taken_email(backend: Backend) {
    let Some(h) = Harness::start(backend) else {
        return;
    };
    let reply = h.post(
        "/api/auth/register",
        json!({ "email": "not-an-email", "name": "", "password": "short" }),
        &Auth::None,
    );
    assert_eq!(reply.status, Status::UnprocessableEntity);
    assert_eq!(reply.code(), "validation_failed");
    for field in ["email", "name", "password"] {
        assert!(
            reply.body["error"]["fields"][field].is_string(),
            "{field}: {:?}",
            reply.body
        );
    }
    let long_name = "x".repeat(101);
    let reply = h.post(
        "/api/auth/register",
        json!({ "email": "a@example.com", "name": long_name, "password": "p".repeat(1025) }),
        &Auth::None,
    );
    assert_eq!(
        (reply.status, reply.code()),
        (Status::UnprocessableEntity, "validation_failed")
    );
    assert!(reply.body["error"]["fields"]["name"].is_string());
    assert!(reply.body["error"]["fields"]["password"].is_string());

    // Addresses that mail would deliver elsewhere, or that look like another; names that
    // hide or reorder what they show.
    for (email, name, field) in [
        ("x<victim@mail.example>", "X", "email"),
        ("Victim <victim@mail.example>", "X", "email"),
        ("victim@mail.example.", "X", "email"),
        ("vic\u{200B}tim@mail.example", "X", "email"),
        ("\u{FF56}ictim@mail.example", "X", "email"),
        ("ok@mail.example", "Ad\u{200B}min", "name"),
        ("ok@mail.example", "Ann\u{202E}txt.exe", "name"),
    ] {
        let reply = h.post(
            "/api/auth/register",
            json!({ "email": email, "name": name, "password": PASSWORD }),
            &Auth::None,
        );
        assert_eq!(
            reply.status,
            Status::UnprocessableEntity,
            "{email:?} {name:?}"
        );
        assert_eq!(reply.code(), "validation_failed");
        assert!(
            reply.body["error"]["fields"][field].is_string(),
            "{email:?} {name:?}: {:?}",
            reply.body
        );
    }
    // An account stored under the looser rules of earlier versions still signs in.
    h.register("legacy@example.com", PASSWORD);
    h.db.run_blocking(|conn| {
        use diesel::prelude::*;
        use latchkey::db::schema::users;
        diesel::update(users::table.filter(users::email.eq("legacy@example.com")))
            .set(users::email.eq("jörg..x@my_host.example"))
            .execute(conn)
    })
    .unwrap();
    let reply = h.post(
        "/api/auth/login",
        json!({ "email": "JÖRG..x@my_host.example", "password": PASSWORD }),
        &Auth::None,
    );
    assert_eq!(reply.status, Status::Ok, "{:?}", reply.body);

    // A fullwidth domain is the same domain: one account.
    h.register("fw@example.com", PASSWORD);
    let reply = h.post(
        "/api/auth/register",
        json!({ "email": "fw@\u{FF45}xample.com", "name": "B", "password": PASSWORD }),
        &Auth::None,
    );
    assert_eq!(
        (reply.status, reply.code()),
        (Status::Conflict, "email_taken")
    );

    h.register("taken@example.com", PASSWORD);
    let reply = h.post(
        "/api/auth/register",
        json!({ "email": "TAKEN@example.com", "name": "B", "password": PASSWORD }),
        &Auth::None,
    );
    assert_eq!(reply.status, Status::Conflict);
    assert_eq!(reply.code(), "email_taken");
}

fn login_success_and_uniform_failures(backend: Backend) {
    let Some(h) = Harness::start(backend) else {
        return;
    };
    h.register("a@example.com", PASSWORD);
    let ok = h.post(
        "/api/auth/login",
        json!({ "email": "A@example.com", "password": PASSWORD }),
        &Auth::None,
    );
    assert_eq!(ok.status, Status::Ok);
    assert!(ok.session_cookie("session").is_some());
    assert_eq!(ok.body["user"]["email"], "a@example.com");

    let wrong = h.post(
        "/api/auth/login",
        json!({ "email": "a@example.com", "password": "wrong password" }),
        &Auth::None,
    );
    let unknown = h.post(
        "/api/auth/login",
        json!({ "email": "nobody@example.com", "password": "wrong password" }),
        &Auth::None,
    );
    assert_eq!(wrong.status, Status::Unauthorized);
    assert_eq!(wrong.code(), "invalid_credentials");
    assert_eq!(wrong.body, unknown.body, "no user enumeration");
    assert_eq!(wrong.status, unknown.status);
    assert!(wrong.session_cookie("session").is_none());
}

fn login_revokes_presented_session(backend: Backend) {
    let Some(h) = Harness::start(backend) else {
        return;
    };
    let (first, _) = h.register("a@example.com", PASSWORD);
    let reply = h.post(
        "/api/auth/login",
        json!({ "email": "a@example.com", "password": PASSWORD }),
        &Auth::Cookie(first.clone()),
    );
    assert_eq!(reply.status, Status::Ok);
    let second = reply.session_cookie("session").unwrap();
    assert_ne!(first, second, "always a new token");
    let ended = h.get("/api/auth/me", &Auth::Cookie(first));
    assert_eq!(
        (ended.status, ended.code()),
        (Status::Unauthorized, "unauthenticated")
    );
    assert_eq!(
        h.get("/api/auth/me", &Auth::Cookie(second.clone())).status,
        Status::Ok
    );
    // Registering a new account from the same browser replaces its session too.
    let reply = h.post(
        "/api/auth/register",
        json!({ "email": "b@example.com", "name": "B", "password": PASSWORD }),
        &Auth::Cookie(second.clone()),
    );
    assert_eq!(reply.status, Status::Created);
    let ended = h.get("/api/auth/me", &Auth::Cookie(second));
    assert_eq!(
        (ended.status, ended.code()),
        (Status::Unauthorized, "unauthenticated")
    );
}

fn bearer_token_flow(backend: Backend) {
    let Some(h) = Harness::start(backend) else {
        return;
    };
    h.register("a@example.com", PASSWORD);
    let reply = h.post(
        "/api/auth/token",
        json!({ "email": "a@example.com", "password": PASSWORD }),
        &Auth::None,
    );
    assert_eq!(reply.status, Status::Ok);
    assert!(reply.set_cookies.is_empty(), "no cookie for API clients");
    let token = reply.body["token"].as_str().unwrap().to_string();
    assert_eq!(token.len(), 43);
    let me = h.get("/api/auth/me", &Auth::Bearer(token.clone()));
    assert_eq!(me.status, Status::Ok);
    assert!(me.set_cookies.is_empty());
    // Refresh for bearer clients returns the new token in the body.
    let refreshed = h.post_empty("/api/auth/refresh", &Auth::Bearer(token.clone()));
    assert_eq!(refreshed.status, Status::Ok);
    let new_token = refreshed.body["token"].as_str().unwrap().to_string();
    assert_ne!(new_token, token);
    let ended = h.get("/api/auth/me", &Auth::Bearer(token));
    assert_eq!(
        (ended.status, ended.code()),
        (Status::Unauthorized, "unauthenticated")
    );
    assert_eq!(
        h.get("/api/auth/me", &Auth::Bearer(new_token.clone()))
            .status,
        Status::Ok
    );
    // Other schemes and malformed bearer values are 401.
    let basic = h.send(
        h.client
            .get("/api/auth/me")
            .header(Header::new("Authorization", "Basic YTpi")),
    );
    assert_eq!(
        (basic.status, basic.code()),
        (Status::Unauthorized, "unauthenticated")
    );
    let short = h.get("/api/auth/me", &Auth::Bearer("short".into()));
    assert_eq!(
        (short.status, short.code()),
        (Status::Unauthorized, "unauthenticated")
    );
    let logout = h.post_empty("/api/auth/logout", &Auth::Bearer(new_token.clone()));
    assert_eq!(logout.status, Status::NoContent);
    let ended = h.get("/api/auth/me", &Auth::Bearer(new_token));
    assert_eq!(
        (ended.status, ended.code()),
        (Status::Unauthorized, "unauthenticated")
    );
}

fn logout_is_idempotent_and_clears(backend: Backend) {
    let Some(h) = Harness::start(backend) else {
        return;
    };
    let (cookie, _) = h.register("a@example.com", PASSWORD);
    let reply = h.post_empty("/api/auth/logout", &Auth::Cookie(cookie.clone()));
    assert_eq!(reply.status, Status::NoContent);
    assert_eq!(reply.header("Clear-Site-Data"), Some("\"cookies\""));
    let cleared = reply.set_cookie_header("session").expect("cookie cleared");
    assert!(cleared.contains("Max-Age=0"), "{cleared}");
    let ended = h.get("/api/auth/me", &Auth::Cookie(cookie.clone()));
    assert_eq!(
        (ended.status, ended.code()),
        (Status::Unauthorized, "unauthenticated")
    );
    assert_eq!(
        h.post_empty("/api/auth/logout", &Auth::Cookie(cookie))
            .status,
        Status::NoContent
    );
    assert_eq!(
        h.post_empty("/api/auth/logout", &Auth::None).status,
        Status::NoContent
    );
}

fn me_requires_a_valid_session(backend: Backend) {
    let Some(h) = Harness::start(backend) else {
        return;
    };
    let none = h.get("/api/auth/me", &Auth::None);
    assert_eq!(none.status, Status::Unauthorized);
    assert_eq!(none.code(), "unauthenticated");
    assert!(none.set_cookies.is_empty());
    // Malformed and unknown cookies are 401 and cleared.
    for bad in ["garbage", &"A".repeat(43), &"x".repeat(5000)] {
        let reply = h.get("/api/auth/me", &Auth::Cookie(bad.to_string()));
        assert_eq!(
            (reply.status, reply.code()),
            (Status::Unauthorized, "unauthenticated"),
            "{bad}"
        );
        let cleared = reply
            .set_cookie_header("session")
            .expect("stale cookie cleared");
        assert!(cleared.contains("Max-Age=0"));
    }
}

/// Activity past the touch interval extends the session: the answer carries the new times and
/// a refreshed cookie at once, and the row follows (written in the background).
fn activity_extends_the_session(backend: Backend) {
    use diesel::prelude::*;
    use latchkey::db::schema::sessions;

    let Some(h) = Harness::start_with(backend, |s| {
        s.session_touch_interval = chrono::Duration::seconds(1)
    }) else {
        return;
    };
    let (cookie, registered) = h.register("a@example.com", PASSWORD);
    let id = registered["session"]["id"].as_str().unwrap().to_string();
    let first_seen = registered["session"]["last_seen_at"]
        .as_str()
        .unwrap()
        .to_string();
    let early = h.get("/api/auth/me", &Auth::Cookie(cookie.clone()));
    assert_eq!(early.status, Status::Ok);
    assert!(early.session_cookie("session").is_none(), "not due yet");

    h.advance(chrono::Duration::milliseconds(1001));
    let later = h.get("/api/auth/me", &Auth::Cookie(cookie.clone()));
    assert_eq!(later.status, Status::Ok);
    let seen = later.body["session"]["last_seen_at"].as_str().unwrap();
    assert!(seen > first_seen.as_str(), "{seen} vs {first_seen}");
    assert!(
        later.body["session"]["expires_at"].as_str().unwrap()
            > registered["session"]["expires_at"].as_str().unwrap()
    );
    assert_eq!(
        later.session_cookie("session").as_deref(),
        Some(cookie.as_str()),
        "same token, refreshed cookie"
    );

    let stored_seen = || {
        h.db.run_blocking(|conn| {
            sessions::table
                .find(&id)
                .select(sessions::last_seen_at)
                .first::<chrono::NaiveDateTime>(conn)
        })
        .unwrap()
    };
    let before = stored_seen();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
    while latchkey::clock::rfc3339(stored_seen()).as_str() < seen {
        assert!(
            std::time::Instant::now() < deadline,
            "touch not written: {before}"
        );
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
}

fn refresh_rotates_cookie(backend: Backend) {
    let Some(h) = Harness::start(backend) else {
        return;
    };
    let (old, registered) = h.register("a@example.com", PASSWORD);
    let reply = h.post_empty("/api/auth/refresh", &Auth::Cookie(old.clone()));
    assert_eq!(reply.status, Status::Ok);
    assert_eq!(reply.body["session"]["id"], registered["session"]["id"]);
    assert!(reply.body.get("token").is_none());
    let new = reply.session_cookie("session").expect("new cookie");
    assert_ne!(new, old);
    let ended = h.get("/api/auth/me", &Auth::Cookie(old));
    assert_eq!(
        (ended.status, ended.code()),
        (Status::Unauthorized, "unauthenticated")
    );
    assert_eq!(h.get("/api/auth/me", &Auth::Cookie(new)).status, Status::Ok);
}

fn password_change_revokes_others(backend: Backend) {
    let Some(h) = Harness::start(backend) else {
        return;
    };
    let (current, _) = h.register("a@example.com", PASSWORD);
    let other = h.token("a@example.com", PASSWORD);
    let wrong = h.post(
        "/api/auth/password",
        json!({ "current_password": "not it at all", "new_password": "new password 1" }),
        &Auth::Cookie(current.clone()),
    );
    assert_eq!(wrong.status, Status::Forbidden);
    assert_eq!(wrong.code(), "invalid_credentials");
    let short = h.post(
        "/api/auth/password",
        json!({ "current_password": PASSWORD, "new_password": "short" }),
        &Auth::Cookie(current.clone()),
    );
    assert_eq!(
        (short.status, short.code()),
        (Status::UnprocessableEntity, "validation_failed")
    );
    assert!(short.body["error"]["fields"]["new_password"].is_string());

    let reply = h.post(
        "/api/auth/password",
        json!({ "current_password": PASSWORD, "new_password": "new password 1" }),
        &Auth::Cookie(current.clone()),
    );
    assert_eq!(reply.status, Status::NoContent);
    let renewed = reply.session_cookie("session").expect("new cookie");
    let ended = h.get("/api/auth/me", &Auth::Cookie(current));
    assert_eq!(
        (ended.status, ended.code()),
        (Status::Unauthorized, "unauthenticated")
    );
    let ended = h.get("/api/auth/me", &Auth::Bearer(other));
    assert_eq!(
        (ended.status, ended.code()),
        (Status::Unauthorized, "unauthenticated")
    );
    assert_eq!(
        h.get("/api/auth/me", &Auth::Cookie(renewed)).status,
        Status::Ok
    );
    let old_login = h.post(
        "/api/auth/login",
        json!({ "email": "a@example.com", "password": PASSWORD }),
        &Auth::None,
    );
    assert_eq!(
        (old_login.status, old_login.code()),
        (Status::Unauthorized, "invalid_credentials")
    );
    let token = h.token("a@example.com", "new password 1");
    // Bearer clients get their new token in a 200 body.
    let reply = h.post(
        "/api/auth/password",
        json!({ "current_password": "new password 1", "new_password": "newer password 2" }),
        &Auth::Bearer(token.clone()),
    );
    assert_eq!(reply.status, Status::Ok);
    let next = reply.body["token"].as_str().unwrap().to_string();
    let ended = h.get("/api/auth/me", &Auth::Bearer(token));
    assert_eq!(
        (ended.status, ended.code()),
        (Status::Unauthorized, "unauthenticated")
    );
    assert_eq!(
        h.get("/api/auth/me", &Auth::Bearer(next)).status,
        Status::Ok
    );
}

fn account_deletion_cascades(backend: Backend) {
    let Some(h) = Harness::start(backend) else {
        return;
    };
    let (cookie, _) = h.register("a@example.com", PASSWORD);
    let other = h.token("a@example.com", PASSWORD);
    let wrong = h.delete_json(
        "/api/auth/account",
        json!({ "password": "wrong wrong" }),
        &Auth::Cookie(cookie.clone()),
    );
    assert_eq!(wrong.status, Status::Forbidden);
    assert_eq!(wrong.code(), "invalid_credentials");
    let reply = h.delete_json(
        "/api/auth/account",
        json!({ "password": PASSWORD }),
        &Auth::Cookie(cookie.clone()),
    );
    assert_eq!(reply.status, Status::NoContent);
    let ended = h.get("/api/auth/me", &Auth::Cookie(cookie));
    assert_eq!(
        (ended.status, ended.code()),
        (Status::Unauthorized, "unauthenticated")
    );
    let ended = h.get("/api/auth/me", &Auth::Bearer(other));
    assert_eq!(
        (ended.status, ended.code()),
        (Status::Unauthorized, "unauthenticated")
    );
    let login = h.post(
        "/api/auth/login",
        json!({ "email": "a@example.com", "password": PASSWORD }),
        &Auth::None,
    );
    assert_eq!(
        (login.status, login.code()),
        (Status::Unauthorized, "invalid_credentials")
    );
    // The email is free again.
    h.register("a@example.com", PASSWORD);
}

fn csrf_rules(backend: Backend) {
    let Some(h) = Harness::start_with(backend, |s| {
        s.allowed_origins = vec!["https://app.example".into()]
    }) else {
        return;
    };
    let (cookie, _) = h.register("a@example.com", PASSWORD);
    let auth = Auth::Cookie(cookie.clone());
    let with = |origin: Option<&str>, fetch_site: Option<&str>| {
        let mut req = h
            .request(h.client.post("/api/auth/refresh"), &auth)
            .header(Header::new("Host", "localhost:8000"));
        if let Some(origin) = origin {
            req = req.header(Header::new("Origin", origin.to_string()));
        }
        if let Some(site) = fetch_site {
            req = req.header(Header::new("Sec-Fetch-Site", site.to_string()));
        }
        h.send(req)
    };
    let refused = with(Some("https://evil.example"), None);
    assert_eq!(refused.status, Status::Forbidden);
    assert_eq!(refused.code(), "csrf_rejected");
    assert!(
        refused.set_cookies.is_empty(),
        "a refused request changes nothing"
    );
    for refused in [with(Some("null"), None), with(None, Some("cross-site"))] {
        assert_eq!(
            (refused.status, refused.code()),
            (Status::Forbidden, "csrf_rejected")
        );
    }
    let other_port = with(Some("http://localhost:8001"), None);
    assert_eq!(
        (other_port.status, other_port.code()),
        (Status::Forbidden, "csrf_rejected")
    );
    // Unauthenticated endpoints are covered too (login CSRF).
    let login = h.send(
        h.client
            .post("/api/auth/login")
            .header(ContentType::JSON)
            .header(Header::new("Host", "localhost:8000"))
            .header(Header::new("Origin", "https://evil.example"))
            .body(json!({ "email": "a@example.com", "password": PASSWORD }).to_string()),
    );
    assert_eq!(login.code(), "csrf_rejected");
    // The cookie still works: nothing above was applied.
    let same = with(Some("http://localhost:8000"), Some("same-origin"));
    assert_eq!(same.status, Status::Ok, "{:?}", same.body);
    let cookie = same.session_cookie("session").unwrap();
    let auth = Auth::Cookie(cookie);
    let allowed = h.send(
        h.request(h.client.post("/api/auth/refresh"), &auth)
            .header(Header::new("Host", "localhost:8000"))
            .header(Header::new("Origin", "https://app.example")),
    );
    assert_eq!(allowed.status, Status::Ok);
    let cookie = allowed.session_cookie("session").unwrap();
    // No Origin and no Sec-Fetch-Site: a non-browser client; passes.
    assert_eq!(
        h.post_empty("/api/auth/refresh", &Auth::Cookie(cookie))
            .status,
        Status::Ok
    );
    // Bearer-authenticated requests are exempt.
    let token = h.token("a@example.com", PASSWORD);
    let bearer = h.send(
        h.request(h.client.post("/api/auth/refresh"), &Auth::Bearer(token))
            .header(Header::new("Host", "localhost:8000"))
            .header(Header::new("Origin", "https://evil.example"))
            .header(Header::new("Sec-Fetch-Site", "cross-site")),
    );
    assert_eq!(bearer.status, Status::Ok);
}

fn login_throttled_per_email(backend: Backend) {
    let Some(h) = Harness::start_with(backend, |s| {
        s.login_max_failures = 3;
        s.login_backoff_base = chrono::Duration::seconds(2);
    }) else {
        return;
    };
    h.register("a@example.com", PASSWORD);
    let attempt = |email: &str, password: &str| {
        h.post(
            "/api/auth/login",
            json!({ "email": email, "password": password }),
            &Auth::None,
        )
    };
    for email in ["a@example.com", "ghost@example.com"] {
        for _ in 0..3 {
            let wrong = attempt(email, "wrong password");
            assert_eq!(
                (wrong.status, wrong.code()),
                (Status::Unauthorized, "invalid_credentials")
            );
        }
        // Locked: even the right password is refused, with Retry-After.
        let locked = attempt(email, PASSWORD);
        assert_eq!(locked.status, Status::TooManyRequests, "{email}");
        assert_eq!(locked.code(), "too_many_attempts");
        let retry: i64 = locked.header("Retry-After").unwrap().parse().unwrap();
        assert!((1..=2).contains(&retry), "{retry}");
    }
    // A refused attempt is neither checked nor counted: after the back-off, the right
    // password works at once (a counted failure would have doubled the lock).
    h.advance(chrono::Duration::seconds(2));
    assert_eq!(attempt("a@example.com", PASSWORD).status, Status::Ok);
    // Success reset the streak: three more failures are needed to lock again.
    for _ in 0..2 {
        let wrong = attempt("a@example.com", "wrong password");
        assert_eq!(
            (wrong.status, wrong.code()),
            (Status::Unauthorized, "invalid_credentials")
        );
    }
    assert_eq!(attempt("a@example.com", PASSWORD).status, Status::Ok);
}

fn login_throttled_per_ip(backend: Backend) {
    let Some(h) = Harness::start_with(backend, |s| s.ip_max_failures = 4) else {
        return;
    };
    h.register("a@example.com", PASSWORD);
    for i in 0..4 {
        let reply = h.post(
            "/api/auth/login",
            json!({ "email": format!("u{i}@example.com"), "password": "x" }),
            &Auth::None,
        );
        assert_eq!(
            (reply.status, reply.code()),
            (Status::Unauthorized, "invalid_credentials")
        );
    }
    let reply = h.post(
        "/api/auth/login",
        json!({ "email": "a@example.com", "password": PASSWORD }),
        &Auth::None,
    );
    assert_eq!(
        (reply.status, reply.code()),
        (Status::TooManyRequests, "too_many_attempts")
    );
    let retry: i64 = reply.header("Retry-After").unwrap().parse().unwrap();
    assert!(retry > 500 && retry <= 600, "{retry}");
    // Another address is not affected.
    let other = h.send(
        h.client
            .post("/api/auth/login")
            .remote("198.51.100.7:5000".parse().unwrap())
            .header(ContentType::JSON)
            .body(json!({ "email": "a@example.com", "password": PASSWORD }).to_string()),
    );
    assert_eq!(other.status, Status::Ok);
}

/// A forged X-Real-IP / X-Forwarded-For does not change the client IP the server sees.
fn client_ip_cannot_be_forged(backend: Backend) {
    let Some(h) = Harness::start(backend) else {
        return;
    };
    let reply = h.send(
        h.client
            .post("/api/auth/register")
            .remote("127.0.0.1:40000".parse().unwrap())
            .header(ContentType::JSON)
            .header(Header::new("X-Real-IP", "203.0.113.9"))
            .header(Header::new("X-Forwarded-For", "203.0.113.9"))
            .body(
                json!({ "email": "a@example.com", "name": "A", "password": PASSWORD }).to_string(),
            ),
    );
    assert_eq!(reply.status, Status::Created);
    assert_eq!(reply.body["session"]["ip"], "127.0.0.1");
}

fn request_shape_errors(backend: Backend) {
    let Some(h) = Harness::start(backend) else {
        return;
    };
    let send = |content_type: Option<ContentType>, body: Vec<u8>| {
        let mut req = h
            .client
            .post("/api/auth/login")
            .remote("127.0.0.1:1".parse().unwrap());
        if let Some(ct) = content_type {
            req = req.header(ct);
        }
        h.send(req.body(body))
    };
    let malformed = send(Some(ContentType::JSON), b"{not json".to_vec());
    assert_eq!(
        (malformed.status, malformed.code()),
        (Status::BadRequest, "bad_request")
    );
    let shape = send(Some(ContentType::JSON), b"[1,2]".to_vec());
    assert_eq!(
        (shape.status, shape.code()),
        (Status::BadRequest, "bad_request")
    );
    let missing = send(Some(ContentType::JSON), b"{\"email\":\"a@b.co\"}".to_vec());
    assert_eq!(
        (missing.status, missing.code()),
        (Status::BadRequest, "bad_request")
    );
    let text = send(Some(ContentType::Plain), b"{}".to_vec());
    assert_eq!(
        (text.status, text.code()),
        (Status::UnsupportedMediaType, "unsupported_media_type")
    );
    let none = send(None, b"{}".to_vec());
    assert_eq!(
        (none.status, none.code()),
        (Status::UnsupportedMediaType, "unsupported_media_type")
    );
    let mut big = b"{\"email\":\"".to_vec();
    big.extend(std::iter::repeat_n(b'a', 17 * 1024));
    big.extend(b"\",\"password\":\"x\"}");
    let too_big = send(Some(ContentType::JSON), big);
    assert_eq!(
        (too_big.status, too_big.code()),
        (Status::PayloadTooLarge, "payload_too_large")
    );
    let unknown = h.get("/api/does-not-exist", &Auth::None);
    assert_eq!(
        (unknown.status, unknown.code()),
        (Status::NotFound, "not_found")
    );
    assert!(unknown.body["error"]["message"].is_string());
}

/// What the contract says of one hostile body: 413 over 16 KiB, 400 for the wrong shape (a
/// field that is not a string), then each route's own rules.
fn expected_answer(path: &str, body: &Value, registered: bool) -> (u16, &'static str) {
    if body.to_string().len() > 16 * 1024 {
        return (413, "payload_too_large");
    }
    let field = |name: &str| body[name].as_str();
    let fields: &[&str] = match path {
        "/api/auth/register" => &["email", "name", "password"],
        "/api/auth/password" => &["current_password", "new_password"],
        _ => &["email", "password"],
    };
    if fields.iter().any(|name| field(name).is_none()) {
        return (400, "bad_request");
    }
    let text = |name: &str| field(name).unwrap_or_default();
    let bad_name = |name: &str| {
        name.is_empty()
            || name.chars().count() > 100
            || name
                .chars()
                .any(|c| c.is_control() || matches!(c, '\u{202a}'..='\u{202e}'))
    };
    let bad_password = |p: &str| p.len() < 8 || p.len() > 1024;
    match path {
        "/api/auth/register" => {
            // None of the hostile values is a well-formed address; x@example.com is.
            if text("email") != "x@example.com"
                || bad_name(text("name"))
                || bad_password(text("password"))
            {
                (422, "validation_failed")
            } else if registered {
                (409, "email_taken")
            } else {
                (201, "")
            }
        }
        "/api/auth/password" if bad_password(text("new_password")) => (422, "validation_failed"),
        "/api/auth/password" => (403, "invalid_credentials"),
        _ if text("email").trim().is_empty() || text("password").is_empty() => {
            (422, "validation_failed")
        }
        _ => (401, "invalid_credentials"),
    }
}

/// Hostile inputs get exactly the contract's answers (never a 5xx, never a panic), and the
/// account they are thrown at stays intact.
fn hostile_inputs_answer_by_contract(backend: Backend) {
    let Some(h) = Harness::start_with(backend, |s| s.ip_max_failures = 10_000) else {
        return;
    };
    let (cookie, _) = h.register("victim@example.com", PASSWORD);
    let huge = "x".repeat(15_000);
    let values = [
        json!("a\u{0}b@example.com"),
        json!("'; DROP TABLE users; --"),
        json!("\" OR 1=1 --@example.com"),
        json!(huge),
        json!("\u{202e}\u{fffd}\u{1F600}@example.com"),
        json!(null),
        json!(12),
        json!({ "nested": [1, 2] }),
        json!(""),
        json!("pass\u{0}word123"),
    ];
    let mut checked = 0;
    let mut registered = false;
    for value in &values {
        for (path, body) in [
            (
                "/api/auth/register",
                json!({ "email": value, "name": value, "password": value }),
            ),
            (
                "/api/auth/register",
                json!({ "email": "x@example.com", "name": value, "password": "password123" }),
            ),
            (
                "/api/auth/login",
                json!({ "email": value, "password": value }),
            ),
            (
                "/api/auth/token",
                json!({ "email": value, "password": "password123" }),
            ),
            (
                "/api/auth/password",
                json!({ "current_password": value, "new_password": value }),
            ),
        ] {
            // Only the password change runs as the victim: a hostile value that happens to be a
            // valid registration would make the login replace the victim's session (fixation
            // defence), which is correct but not what this test is about.
            let auth = if path.ends_with("/password") {
                Auth::Cookie(cookie.clone())
            } else {
                Auth::None
            };
            let expected = expected_answer(path, &body, registered);
            let reply = h.post(path, body, &auth);
            assert_eq!(
                (reply.status.code, reply.code()),
                expected,
                "{path} {value}: {:?}",
                reply.body
            );
            registered |= reply.status.code == 201;
            checked += 1;
        }
    }
    assert!(registered, "one hostile name is a valid one");
    for token in [
        "",
        "%00",
        "A",
        &"A".repeat(42),
        &"=".repeat(43),
        &"é".repeat(30),
        "../../etc/passwd",
        &"A".repeat(10_000),
    ] {
        let reply = h.get("/api/auth/me", &Auth::Bearer(token.to_string()));
        assert_eq!(
            (reply.status, reply.code()),
            (Status::Unauthorized, "unauthenticated"),
            "{token:?}"
        );
        checked += 1;
    }
    let as_victim = Auth::Cookie(cookie.clone());
    for (path, get, delete) in [
        ("/api/auth/sessions/%00", 404, 404),
        ("/api/auth/sessions/'%20OR%201=1", 404, 404),
        ("/api/events?limit=-1", 422, 404),
        ("/api/events?limit=abc", 422, 404),
        ("/api/events?limit=99999999999999999999", 422, 404),
    ] {
        let reply = h.send(h.request(h.client.get(path), &as_victim));
        assert_eq!(reply.status.code, get, "GET {path}: {:?}", reply.body);
        let reply2 = h.send(h.request(h.client.delete(path), &as_victim));
        assert_eq!(
            reply2.status.code, delete,
            "DELETE {path}: {:?}",
            reply2.body
        );
        for reply in [reply, reply2] {
            let code = if reply.status.code == 404 {
                "not_found"
            } else {
                "validation_failed"
            };
            assert_eq!(reply.code(), code, "{path}");
        }
        checked += 2;
    }
    assert!(checked > 60);
    // The victim's account is intact.
    assert_eq!(
        h.get("/api/auth/me", &Auth::Cookie(cookie)).status,
        Status::Ok
    );
}

/// A session ends exactly when its timeouts say: the idle timeout counts from the last use
/// (a use extends it), the absolute timeout from the sign-in (nothing extends it). Tested on
/// the server's clock, moved forward to a microsecond either side of each end.
fn sessions_end_exactly_on_time(backend: Backend) {
    let Some(h) = Harness::start_with(backend, |s| {
        s.session_idle_timeout = chrono::Duration::seconds(100);
        s.session_absolute_timeout = chrono::Duration::seconds(150);
        s.session_touch_interval = chrono::Duration::seconds(1);
        s.clock = latchkey::clock::Clock::stopped();
    }) else {
        return;
    };
    let (cookie, _) = h.register("a@example.com", PASSWORD);
    let me = || h.get("/api/auth/me", &Auth::Cookie(cookie.clone()));
    let tick = chrono::Duration::microseconds(1);
    // Idle: one microsecond before the end it answers (and the use moves the end on).
    h.advance(chrono::Duration::seconds(100) - tick);
    assert_eq!(me().status, Status::Ok);
    // The use is written in the background: wait until it is stored.
    use diesel::prelude::*;
    use latchkey::db::schema::sessions;
    let used_at = h.now();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    while h
        .db
        .run_blocking(|conn| {
            sessions::table
                .select(sessions::last_seen_at)
                .first::<chrono::NaiveDateTime>(conn)
        })
        .unwrap()
        < used_at
    {
        assert!(
            std::time::Instant::now() < deadline,
            "the use was never stored"
        );
        std::thread::sleep(std::time::Duration::from_millis(5));
    }
    // Absolute: 150 s after the sign-in, however recent the last use.
    h.advance(chrono::Duration::seconds(50));
    assert_eq!(
        me().status,
        Status::Ok,
        "a microsecond before the absolute end"
    );
    h.advance(tick);
    let ended = me();
    assert_eq!(ended.status, Status::Unauthorized);
    assert_eq!(ended.code(), "unauthenticated");
    let Some(h) = Harness::start_with(backend, |s| {
        s.session_idle_timeout = chrono::Duration::seconds(100);
        s.clock = latchkey::clock::Clock::stopped();
    }) else {
        return;
    };
    let (cookie, _) = h.register("b@example.com", PASSWORD);
    h.advance(chrono::Duration::seconds(100));
    let idle = h.get("/api/auth/me", &Auth::Cookie(cookie));
    assert_eq!(
        idle.status,
        Status::Unauthorized,
        "idle for exactly the timeout"
    );
    assert_eq!(idle.code(), "unauthenticated");
}

#[rocket::get("/")]
fn application_home() -> &'static str {
    "the application's own page"
}

/// latchkey attached to an application built on Rocket's own default configuration, which
/// trusts `X-Real-IP`: the fairing takes the client's address from the socket unless the
/// application set `ip_header` itself. And with secure cookies, latchkey's answers carry HSTS
/// while the application's own routes are left alone.
fn embedded_in_rocket_defaults(backend: Backend) {
    let defaults = || rocket::figment::Figment::from(rocket::Config::debug_default());
    for (figment, expected_ip, why) in [
        (
            defaults(),
            "127.0.0.1",
            "Rocket's default ip_header is not trusted",
        ),
        (
            defaults().merge(("ip_header", "X-Real-IP")),
            "203.0.113.9",
            "the application's own ip_header is",
        ),
    ] {
        let Some(test_db) = common::TestDb::new(backend) else {
            return;
        };
        let mut settings = test_db.settings();
        settings.cookie_secure = true;
        settings.cookie_name = "__Host-session".into();
        let rocket = rocket::custom(figment.merge(("log_level", "off")))
            .attach(latchkey::Latchkey::with_settings(settings))
            .mount("/", rocket::routes![application_home]);
        let client = rocket::local::blocking::Client::untracked(rocket).expect("valid rocket");
        let reply = client
            .post("/api/auth/register")
            .remote("127.0.0.1:40000".parse().unwrap())
            .header(ContentType::JSON)
            .header(Header::new("X-Real-IP", "203.0.113.9"))
            .body(
                json!({ "email": "a@example.com", "name": "A", "password": PASSWORD }).to_string(),
            )
            .dispatch();
        assert_eq!(reply.status(), Status::Created, "{why}");
        let hsts = reply
            .headers()
            .get_one("Strict-Transport-Security")
            .map(str::to_owned);
        let body: Value = serde_json::from_str(&reply.into_string().unwrap()).unwrap();
        assert_eq!(body["session"]["ip"], expected_ip, "{why}");
        assert_eq!(
            hsts.as_deref(),
            Some("max-age=31536000"),
            "latchkey's answer"
        );
        let home = client.get("/").dispatch();
        assert_eq!(home.status(), Status::Ok);
        assert_eq!(
            home.headers().get_one("Strict-Transport-Security"),
            None,
            "the application's own route"
        );
    }
}

on_both_backends!(
    sessions_end_exactly_on_time,
    embedded_in_rocket_defaults,
    register_sets_cookie_and_returns_user,
    secure_cookie_and_hsts_when_configured,
    register_validation_and_taken_email,
    login_success_and_uniform_failures,
    login_revokes_presented_session,
    bearer_token_flow,
    logout_is_idempotent_and_clears,
    me_requires_a_valid_session,
    activity_extends_the_session,
    refresh_rotates_cookie,
    password_change_revokes_others,
    account_deletion_cascades,
    csrf_rules,
    login_throttled_per_email,
    login_throttled_per_ip,
    client_ip_cannot_be_forged,
    request_shape_errors,
    hostile_inputs_answer_by_contract,
);

//! "Where you're signed in", security events, the admin API and metrics, on both backends.

mod common;

use common::{Auth, Backend, Harness};
use rocket::http::{Header, Status};
use serde_json::{json, Value};

const PASSWORD: &str = "correct horse battery";

fn ids(body: &Value) -> Vec<String> {
    body["sessions"]
        .as_array()
        .expect("sessions array")
        .iter()
        .map(|s| s["id"].as_str().unwrap().to_string())
        .collect()
}

fn list_and_revoke_own_sessions(backend: Backend) {
    let Some(h) = Harness::start(backend) else {
        return;
    };
    let (phone, registered) = h.register("a@example.com", PASSWORD);
    let phone_id = registered["session"]["id"].as_str().unwrap().to_string();
    let laptop = h.token("a@example.com", PASSWORD);
    let tablet = h.token("a@example.com", PASSWORD);
    let (mallory, _) = h.register("m@example.com", PASSWORD);

    let listed = h.get("/api/auth/sessions", &Auth::Bearer(laptop.clone()));
    assert_eq!(listed.status, Status::Ok);
    let sessions = listed.body["sessions"].as_array().unwrap();
    assert_eq!(sessions.len(), 3);
    let current: Vec<_> = sessions.iter().filter(|s| s["current"] == true).collect();
    assert_eq!(current.len(), 1);
    assert!(sessions
        .iter()
        .all(|s| s.get("token").is_none() && s.get("token_hash").is_none()));
    assert!(sessions.iter().all(|s| s["ip"] == "127.0.0.1"));
    let seen: Vec<&str> = sessions
        .iter()
        .map(|s| s["last_seen_at"].as_str().unwrap())
        .collect();
    let mut sorted = seen.clone();
    sorted.sort_by(|a, b| b.cmp(a));
    assert_eq!(seen, sorted, "newest activity first");

    // Mallory can neither see nor revoke Alice's sessions.
    let theirs = h.get("/api/auth/sessions", &Auth::Cookie(mallory.clone()));
    assert_eq!(ids(&theirs.body).len(), 1);
    assert!(!ids(&theirs.body).contains(&phone_id));
    let attempt = h.delete(
        &format!("/api/auth/sessions/{phone_id}"),
        &Auth::Cookie(mallory.clone()),
    );
    assert_eq!(
        (attempt.status, attempt.code()),
        (Status::NotFound, "not_found")
    );
    assert_eq!(
        h.get("/api/auth/me", &Auth::Cookie(phone.clone())).status,
        Status::Ok
    );
    let unknown = h.delete(
        &format!("/api/auth/sessions/{}", uuid::Uuid::new_v4()),
        &Auth::Cookie(phone.clone()),
    );
    assert_eq!(
        (unknown.status, unknown.code()),
        (Status::NotFound, "not_found")
    );

    // Alice signs the phone out from the laptop.
    let revoked = h.delete(
        &format!("/api/auth/sessions/{phone_id}"),
        &Auth::Bearer(laptop.clone()),
    );
    assert_eq!(revoked.status, Status::NoContent);
    let ended = h.get("/api/auth/me", &Auth::Cookie(phone));
    assert_eq!(
        (ended.status, ended.code()),
        (Status::Unauthorized, "unauthenticated")
    );

    // Sign out all other devices: the tablet goes, the laptop stays.
    let others = h.delete("/api/auth/sessions", &Auth::Bearer(laptop.clone()));
    assert_eq!(others.status, Status::Ok);
    assert_eq!(others.body["revoked"], 1);
    let ended = h.get("/api/auth/me", &Auth::Bearer(tablet));
    assert_eq!(
        (ended.status, ended.code()),
        (Status::Unauthorized, "unauthenticated")
    );
    assert_eq!(
        h.get("/api/auth/me", &Auth::Bearer(laptop.clone())).status,
        Status::Ok
    );
    assert_eq!(
        h.get("/api/auth/me", &Auth::Cookie(mallory)).status,
        Status::Ok,
        "other users untouched"
    );
    assert_eq!(
        h.delete("/api/auth/sessions", &Auth::Bearer(laptop)).body["revoked"],
        0
    );
}

fn logout_all_signs_out_everywhere(backend: Backend) {
    let Some(h) = Harness::start(backend) else {
        return;
    };
    let (cookie, _) = h.register("a@example.com", PASSWORD);
    let other = h.token("a@example.com", PASSWORD);
    let reply = h.post_empty("/api/auth/logout-all", &Auth::Cookie(cookie.clone()));
    assert_eq!(reply.status, Status::NoContent);
    assert!(reply
        .set_cookie_header("session")
        .unwrap()
        .contains("Max-Age=0"));
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
    let anonymous = h.post_empty("/api/auth/logout-all", &Auth::None);
    assert_eq!(
        (anonymous.status, anonymous.code()),
        (Status::Unauthorized, "unauthenticated")
    );
}

fn security_events_are_private_and_ordered(backend: Backend) {
    let Some(h) = Harness::start(backend) else {
        return;
    };
    let (cookie, _) = h.register("a@example.com", PASSWORD);
    let failed = h.post(
        "/api/auth/login",
        json!({ "email": "a@example.com", "password": "wrong one" }),
        &Auth::None,
    );
    assert_eq!(
        (failed.status, failed.code()),
        (Status::Unauthorized, "invalid_credentials")
    );
    let token = h.token("a@example.com", PASSWORD);
    assert_eq!(
        h.post_empty("/api/auth/logout", &Auth::Bearer(token))
            .status,
        Status::NoContent
    );
    let (bob, _) = h.register("b@example.com", PASSWORD);

    let events = h.get("/api/events", &Auth::Cookie(cookie.clone()));
    assert_eq!(events.status, Status::Ok);
    let kinds: Vec<&str> = events.body["events"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["type"].as_str().unwrap())
        .collect();
    assert_eq!(kinds, ["logout", "login", "login_failed", "registered"]);
    let first = &events.body["events"][0];
    for key in ["id", "type", "at", "session_id", "ip", "user_agent"] {
        assert!(first.get(key).is_some(), "{key}");
    }
    let limited = h.get("/api/events?limit=2", &Auth::Cookie(cookie.clone()));
    assert_eq!(limited.body["events"].as_array().unwrap().len(), 2);
    let bad = h.get("/api/events?limit=zero", &Auth::Cookie(cookie.clone()));
    assert_eq!(
        (bad.status, bad.code()),
        (Status::UnprocessableEntity, "validation_failed")
    );
    let bobs = h.get("/api/events", &Auth::Cookie(bob));
    assert_eq!(
        bobs.body["events"].as_array().unwrap().len(),
        1,
        "only Bob's own events"
    );
    let anonymous = h.get("/api/events", &Auth::None);
    assert_eq!(
        (anonymous.status, anonymous.code()),
        (Status::Unauthorized, "unauthenticated")
    );
    // Password change and revocation are recorded too.
    let changed = h.post(
        "/api/auth/password",
        json!({ "current_password": PASSWORD, "new_password": "another password" }),
        &Auth::Cookie(cookie.clone()),
    );
    let cookie = changed.session_cookie("session").unwrap();
    let events = h.get("/api/events?limit=1", &Auth::Cookie(cookie));
    assert_eq!(events.body["events"][0]["type"], "password_changed");
}

fn admin_access_matrix(backend: Backend) {
    let Some(h) = Harness::start(backend) else {
        return;
    };
    let (admin, _) = h.register("root@example.com", PASSWORD);
    h.promote("root@example.com");
    let (user, registered) = h.register("u@example.com", PASSWORD);
    let user_id = registered["user"]["id"].as_str().unwrap().to_string();
    let paths = [
        ("GET", "/api/admin/session-stats".to_string()),
        ("POST", "/api/admin/cleanup-sessions".to_string()),
        ("GET", format!("/api/admin/users/{user_id}/sessions")),
        ("DELETE", format!("/api/admin/users/{user_id}/sessions")),
    ];
    for (method, path) in &paths {
        let call = |auth: &Auth| {
            let req = match *method {
                "GET" => h.client.get(path.clone()),
                "POST" => h.client.post(path.clone()),
                _ => h.client.delete(path.clone()),
            };
            h.send(h.request(req, auth))
        };
        let anonymous = call(&Auth::None);
        assert_eq!(
            (anonymous.status, anonymous.code()),
            (Status::Unauthorized, "unauthenticated"),
            "{path}"
        );
        let plain = call(&Auth::Cookie(user.clone()));
        assert_eq!(
            (plain.status, plain.code()),
            (Status::Forbidden, "forbidden"),
            "{path}"
        );
    }
    let stats = h.get("/api/admin/session-stats", &Auth::Cookie(admin.clone()));
    assert_eq!(stats.status, Status::Ok);
    assert_eq!(stats.body["total"], 2);
    assert_eq!(stats.body["active"], 2);
    assert_eq!(stats.body["expired"], 0);
    assert_eq!(stats.body["users_with_active_sessions"], 2);
    assert_eq!(
        stats.body["backend"],
        if backend == Backend::Sqlite {
            "sqlite"
        } else {
            "postgres"
        }
    );
    assert_eq!(stats.body["idle_timeout_secs"], 604_800);
    assert_eq!(stats.body["absolute_timeout_secs"], 2_592_000);
    assert_eq!(stats.body["last_cleanup"], Value::Null);

    let theirs = h.get(
        &format!("/api/admin/users/{user_id}/sessions"),
        &Auth::Cookie(admin.clone()),
    );
    assert_eq!(theirs.status, Status::Ok);
    assert_eq!(ids(&theirs.body).len(), 1);
    let missing = h.get(
        &format!("/api/admin/users/{}/sessions", uuid::Uuid::new_v4()),
        &Auth::Cookie(admin.clone()),
    );
    assert_eq!(
        (missing.status, missing.code()),
        (Status::NotFound, "not_found")
    );
    let revoked = h.delete(
        &format!("/api/admin/users/{user_id}/sessions"),
        &Auth::Cookie(admin.clone()),
    );
    assert_eq!(revoked.body["revoked"], 1);
    let ended = h.get("/api/auth/me", &Auth::Cookie(user));
    assert_eq!(
        (ended.status, ended.code()),
        (Status::Unauthorized, "unauthenticated")
    );

    let cleanup = h.post_empty("/api/admin/cleanup-sessions", &Auth::Cookie(admin.clone()));
    assert_eq!(cleanup.status, Status::Ok);
    assert_eq!(cleanup.body["deleted_count"], 0);
    let stats = h.get("/api/admin/session-stats", &Auth::Cookie(admin));
    assert_eq!(stats.body["last_cleanup"]["deleted"], 0);
    assert!(stats.body["last_cleanup"]["at"]
        .as_str()
        .unwrap()
        .ends_with('Z'));
}

fn cron_secret_cleanup(backend: Backend) {
    const SECRET: &str = "a-long-cron-secret-for-tests";
    let Some(h) = Harness::start_with(backend, |s| s.cron_secret = Some(SECRET.into())) else {
        return;
    };
    let right = h.post_empty("/api/admin/cleanup-sessions", &Auth::Bearer(SECRET.into()));
    assert_eq!(right.status, Status::Ok);
    assert_eq!(right.body["deleted_count"], 0);
    let wrong = h.post_empty(
        "/api/admin/cleanup-sessions",
        &Auth::Bearer("a-long-cron-secret-for-tesTS".into()),
    );
    assert_eq!(
        (wrong.status, wrong.code()),
        (Status::Unauthorized, "unauthenticated")
    );
    let prefix = h.post_empty(
        "/api/admin/cleanup-sessions",
        &Auth::Bearer("a-long".into()),
    );
    assert_eq!(
        (prefix.status, prefix.code()),
        (Status::Unauthorized, "unauthenticated")
    );
    // The secret grants nothing else.
    let stats = h.get("/api/admin/session-stats", &Auth::Bearer(SECRET.into()));
    assert_eq!(
        (stats.status, stats.code()),
        (Status::Unauthorized, "unauthenticated")
    );
    // Cross-site headers do not matter with an Authorization header.
    let cross = h.send(
        h.client
            .post("/api/admin/cleanup-sessions")
            .header(Header::new("Authorization", format!("Bearer {SECRET}")))
            .header(Header::new("Origin", "https://elsewhere.example")),
    );
    assert_eq!(cross.status, Status::Ok);

    // Unset: the path is closed.
    let Some(h) = Harness::start(backend) else {
        return;
    };
    let unset = h.post_empty("/api/admin/cleanup-sessions", &Auth::Bearer(SECRET.into()));
    assert_eq!(
        (unset.status, unset.code()),
        (Status::Unauthorized, "unauthenticated")
    );
}

fn metric_value(text: &str, name: &str, label: &str) -> f64 {
    text.lines()
        .filter(|l| !l.starts_with('#'))
        .filter(|l| l.starts_with(name) && l.contains(label))
        .map(|l| {
            l.rsplit(' ')
                .next()
                .unwrap()
                .parse::<f64>()
                .expect("numeric sample")
        })
        .sum()
}

fn metrics_move(backend: Backend) {
    let Some(h) = Harness::start(backend) else {
        return;
    };
    let before = h.get("/metrics", &Auth::None);
    assert_eq!(before.status, Status::Ok);
    let before = before.body.as_str().unwrap().to_string();
    // Every sample line parses as `name{labels} value`.
    for line in before
        .lines()
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
    {
        let value = line.rsplit(' ').next().unwrap();
        assert!(value.parse::<f64>().is_ok(), "{line}");
    }
    h.register("a@example.com", PASSWORD);
    h.token("a@example.com", PASSWORD);
    h.post(
        "/api/auth/login",
        json!({ "email": "a@example.com", "password": "nope nope" }),
        &Auth::None,
    );
    let after = h
        .get("/metrics", &Auth::None)
        .body
        .as_str()
        .unwrap()
        .to_string();
    assert_eq!(
        metric_value(&after, "latchkey_logins_total", "outcome=\"success\""),
        1.0
    );
    assert_eq!(
        metric_value(&after, "latchkey_logins_total", "outcome=\"failure\""),
        1.0
    );
    assert_eq!(
        metric_value(&after, "latchkey_sessions_created_total", ""),
        2.0
    );
    assert!(metric_value(&after, "latchkey_http_requests_total", "route=\"register\"") >= 1.0);
    assert!(
        metric_value(
            &after,
            "latchkey_http_request_duration_seconds_count",
            "route=\"token\""
        ) >= 1.0
    );
    assert!(after.contains("latchkey_db_pool_connections{state=\"idle\"}"));
    assert!(after.contains("latchkey_cleanup_runs_total"));
}

fn health_reports_backend(backend: Backend) {
    let Some(h) = Harness::start(backend) else {
        return;
    };
    let reply = h.get("/api/health", &Auth::None);
    assert_eq!(reply.status, Status::Ok);
    assert_eq!(reply.body["status"], "ok");
    assert_eq!(reply.body["database"]["status"], "connected");
    assert!(reply.body["database"]["latency_ms"].as_f64().unwrap() >= 0.0);
    assert_eq!(reply.body["version"], env!("CARGO_PKG_VERSION"));
}

on_both_backends!(
    list_and_revoke_own_sessions,
    logout_all_signs_out_everywhere,
    security_events_are_private_and_ordered,
    admin_access_matrix,
    cron_secret_cleanup,
    metrics_move,
    health_reports_backend,
);

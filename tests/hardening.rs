//! What a hostile client tried, with the real server over real HTTP on both backends: the
//! cross-site check and `no-store` whatever the path's spelling and whatever `_method` says,
//! the login budget under concurrent attempts on two instances, and credential changes and
//! logouts racing sign-ins and refreshes.

mod common;

use std::collections::HashSet;
use std::sync::{Arc, Barrier};
use std::thread;

use common::server::{agent, fetch, Answer, Server};
use common::{Backend, TestDb};
use diesel::prelude::*;
use latchkey::db::schema::sessions;
use latchkey::db::Db;
use serde_json::{json, Value};

const PASSWORD: &str = "correct horse battery";

/// For the races: a budget large enough that concurrent sign-ins (each of which is counted
/// until its password checks out) are never refused.
const ROOMY_BUDGET: [(&str, &str); 2] = [
    ("ROCKET_LOGIN_MAX_FAILURES", "1000"),
    ("ROCKET_IP_MAX_FAILURES", "1000"),
];

fn post(base: &str, path: &str, body: Value) -> Answer {
    fetch(agent().post(&format!("{base}{path}")), Some(body))
}

fn bearer(req: ureq::Request, token: &str) -> ureq::Request {
    req.set("Authorization", &format!("Bearer {token}"))
}

/// Registers; returns (user id, the registration's cookie pair `session=…`).
fn register(base: &str, email: &str) -> (String, String) {
    let answer = post(
        base,
        "/api/auth/register",
        json!({"email": email, "name": "H", "password": PASSWORD}),
    );
    assert_eq!(answer.status, 201, "{}", answer.body);
    let cookie = answer
        .set_cookies()
        .into_iter()
        .find(|c| c.starts_with("session="))
        .expect("cookie")
        .split(';')
        .next()
        .unwrap()
        .to_string();
    (answer.json()["user"]["id"].as_str().unwrap().into(), cookie)
}

fn token(base: &str, email: &str, password: &str) -> Answer {
    post(
        base,
        "/api/auth/token",
        json!({"email": email, "password": password}),
    )
}

/// `/api/auth/me` with a bearer token: (status, error code; empty when it answered 200).
fn me(base: &str, token: &str) -> (u16, String) {
    let answer = fetch(
        bearer(agent().get(&format!("{base}/api/auth/me")), token),
        None,
    );
    (answer.status, answer.code())
}

fn me_by_cookie(base: &str, path: &str, cookie: &str) -> Answer {
    fetch(
        agent().get(&format!("{base}{path}")).set("Cookie", cookie),
        None,
    )
}

/// Runs `n` copies of `work` at once (released together by a barrier) and collects them.
fn together<T: Send + 'static>(
    n: usize,
    work: impl Fn(usize) -> T + Send + Sync + 'static,
) -> Vec<T> {
    let start = Arc::new(Barrier::new(n));
    let work = Arc::new(work);
    let threads: Vec<_> = (0..n)
        .map(|i| {
            let (start, work) = (start.clone(), work.clone());
            thread::spawn(move || {
                start.wait();
                work(i)
            })
        })
        .collect();
    threads.into_iter().map(|t| t.join().unwrap()).collect()
}

/// A fresh account's credential change (`change`, given the base URL and a bearer token of
/// the account) at the same moment as 11 sign-ins with its current password. Returns the
/// change's answer and the sign-ins' answers.
fn change_racing_sign_ins(
    base: &str,
    email: &str,
    change: impl Fn(&str, &str) -> Answer + Send + Sync + 'static,
) -> (Answer, Vec<Answer>) {
    let owner = token(base, email, PASSWORD).json()["token"]
        .as_str()
        .unwrap()
        .to_string();
    let (base, email) = (base.to_string(), email.to_string());
    let mut answers = together(12, move |i| {
        if i == 0 {
            change(&base, &owner)
        } else {
            // Staggered, so that some sign-ins read the account before the change commits
            // and check its password (on the hashing queue, behind the change's) after.
            thread::sleep(std::time::Duration::from_millis(25 * i as u64));
            token(&base, &email, PASSWORD)
        }
    });
    let first = answers.remove(0);
    (first, answers)
}

fn sessions_of(db: &TestDb, user_id: &str) -> i64 {
    let pool = Db::pool_only(&db.settings());
    let user_id = user_id.to_string();
    pool.run_blocking(move |conn| {
        sessions::table
            .filter(sessions::user_id.eq(user_id))
            .count()
            .get_result(conn)
    })
    .unwrap()
}

/// Defect 1: the check and `no-store` do not depend on how the path is spelled, and a form's
/// `_method` never turns a POST into a DELETE.
fn cross_site_check_whatever_the_spelling(backend: Backend) {
    let Some(db) = TestDb::new(backend) else {
        return;
    };
    let server = Server::start(&db.url, &[]);
    let base = server.base.clone();
    let (_, cookie) = register(&base, "spell@example.com");
    let other = token(&base, "spell@example.com", PASSWORD);
    let other = other.json()["token"].as_str().unwrap().to_string();

    for path in [
        "/api/auth/logout",
        "//api/auth/logout",
        "/api//auth/logout",
        "/api/auth//logout",
        "///api/auth/logout",
    ] {
        let answer = fetch(
            agent()
                .post(&format!("{base}{path}"))
                .set("Cookie", &cookie)
                .set("Origin", "https://evil.example"),
            None,
        );
        assert_eq!(answer.status, 403, "{path}: {}", answer.body);
        assert_eq!(answer.code(), "csrf_rejected", "{path}");
        assert_eq!(answer.header("cache-control"), Some("no-store"), "{path}");
    }
    for path in ["/api/auth/me", "//api/auth/me", "/api//auth/me"] {
        let answer = me_by_cookie(&base, path, &cookie);
        assert_eq!(answer.status, 200, "{path}: {}", answer.body);
        assert_eq!(answer.header("cache-control"), Some("no-store"), "{path}");
    }

    // A same-site HTML form cannot reach DELETE routes either: `_method` is refused.
    for path in ["/api/auth/sessions", "//api/auth/sessions"] {
        let answer = {
            let req = agent()
                .post(&format!("{base}{path}"))
                .set("Cookie", &cookie)
                .set("Content-Type", "application/x-www-form-urlencoded");
            match req.send_string("_method=delete") {
                Ok(r) | Err(ureq::Error::Status(_, r)) => {
                    let status = r.status();
                    let body: Value = serde_json::from_str(&r.into_string().unwrap_or_default())
                        .unwrap_or(Value::Null);
                    let code = body["error"]["code"].as_str().unwrap_or("").to_string();
                    (status, code)
                }
                Err(e) => panic!("{e}"),
            }
        };
        assert_eq!(answer, (405, "method_not_allowed".into()), "{path}");
    }
    // The other device is still signed in, and so is this one.
    assert_eq!(me(&base, &other), (200, String::new()));
    assert_eq!(me_by_cookie(&base, "/api/auth/me", &cookie).status, 200);
}

/// Defect 2: many wrong passwords for one email at the same moment, split over two instances,
/// are checked exactly `login_max_failures` times; the rest are 429 at once. The IP budget holds
/// the same way.
fn login_budget_holds_under_concurrency(backend: Backend) {
    let Some(db) = TestDb::new(backend) else {
        return;
    };
    let env = [
        ("ROCKET_LOGIN_MAX_FAILURES", "5"),
        ("ROCKET_IP_MAX_FAILURES", "12"),
    ];
    let servers = [Server::start(&db.url, &env), Server::start(&db.url, &env)];
    let bases: Vec<String> = servers.iter().map(|s| s.base.clone()).collect();
    register(&bases[0], "victim@example.com");

    let answers = {
        let bases = bases.clone();
        together(24, move |i| {
            let answer = token(&bases[i % 2], "victim@example.com", "wrong password");
            (answer.status, answer.code())
        })
    };
    assert_eq!(checked_and_refused(&answers), (5, 19), "{answers:?}");

    // The IP budget (12) is shared by every email from this address: 5 were spent above.
    let answers = {
        let bases = bases.clone();
        together(20, move |i| {
            let answer = token(&bases[i % 2], &format!("nobody{i}@example.com"), "wrong");
            (answer.status, answer.code())
        })
    };
    assert_eq!(checked_and_refused(&answers), (7, 13), "{answers:?}");
}

/// Of sign-in answers, how many were checked (401 `invalid_credentials`) and how many refused
/// by the throttle (429 `too_many_attempts`).
fn checked_and_refused(answers: &[(u16, String)]) -> (usize, usize) {
    let count = |status: u16, code: &str| {
        answers
            .iter()
            .filter(|(s, c)| *s == status && c == code)
            .count()
    };
    (
        count(401, "invalid_credentials"),
        count(429, "too_many_attempts"),
    )
}

/// Defect 3: deleting an account while sign-ins to it run answers those sign-ins 200 or 401
/// (never 500), and no session of the deleted account is left.
fn account_deletion_racing_sign_ins(backend: Backend) {
    let Some(db) = TestDb::new(backend) else {
        return;
    };
    let server = Server::start(&db.url, &ROOMY_BUDGET);
    let base = server.base.clone();
    for round in 0..4 {
        let email = format!("gone{round}@example.com");
        let (user_id, _) = register(&base, &email);
        let (deleted, sign_ins) = change_racing_sign_ins(&base, &email, |base, owner| {
            let req = bearer(agent().delete(&format!("{base}/api/auth/account")), owner);
            fetch(req, Some(json!({"password": PASSWORD})))
        });
        assert_eq!(deleted.status, 204, "delete: {}", deleted.body);
        for answer in &sign_ins {
            assert!(
                answer.status == 200
                    || (answer.status == 401 && answer.code() == "invalid_credentials"),
                "sign-in: {} {}",
                answer.status,
                answer.body
            );
        }
        assert_eq!(sessions_of(&db, &user_id), 0, "round {round}");
        for answer in sign_ins.iter().filter(|a| a.status == 200) {
            assert_eq!(
                me(&base, answer.json()["token"].as_str().unwrap()),
                (401, "unauthenticated".into())
            );
        }
    }
}

/// Defect 4: once a password change has answered, no session signed in with the old password
/// works, including those whose sign-in raced the change.
fn password_change_racing_sign_ins(backend: Backend) {
    let Some(db) = TestDb::new(backend) else {
        return;
    };
    let server = Server::start(&db.url, &ROOMY_BUDGET);
    let base = server.base.clone();
    for round in 0..4 {
        let email = format!("change{round}@example.com");
        register(&base, &email);
        let (changed, sign_ins) = change_racing_sign_ins(&base, &email, |base, owner| {
            let req = bearer(agent().post(&format!("{base}/api/auth/password")), owner);
            let body = json!({"current_password": PASSWORD, "new_password": "new password 2"});
            fetch(req, Some(body))
        });
        assert_eq!(changed.status, 200, "change: {}", changed.body);
        let kept = changed.json()["token"].as_str().unwrap().to_string();
        for answer in &sign_ins {
            assert!(
                answer.status == 200
                    || (answer.status == 401 && answer.code() == "invalid_credentials"),
                "sign-in: {} {}",
                answer.status,
                answer.body
            );
        }
        let old_password_sessions: HashSet<String> = sign_ins
            .iter()
            .filter(|a| a.status == 200)
            .map(|a| a.json()["token"].as_str().unwrap().to_string())
            .collect();
        for t in &old_password_sessions {
            assert_eq!(
                me(&base, t),
                (401, "unauthenticated".into()),
                "round {round}: an old-password session survived"
            );
        }
        assert_eq!(me(&base, &kept), (200, String::new()));
        let old = token(&base, &email, PASSWORD);
        assert_eq!(
            (old.status, old.code()),
            (401, "invalid_credentials".into())
        );
    }
}

/// Defect 5: a logout racing a refresh of the same session ends the session, whichever of its
/// tokens the refresh left it with.
fn logout_racing_refresh(backend: Backend) {
    let Some(db) = TestDb::new(backend) else {
        return;
    };
    let server = Server::start(&db.url, &[]);
    let base = server.base.clone();
    register(&base, "race@example.com");
    for round in 0..20 {
        let original = token(&base, "race@example.com", PASSWORD).json()["token"]
            .as_str()
            .unwrap()
            .to_string();
        let answers = {
            let (base, original) = (base.clone(), original.clone());
            together(2, move |i| {
                let path = if i == 0 { "logout" } else { "refresh" };
                let req = bearer(agent().post(&format!("{base}/api/auth/{path}")), &original);
                fetch(req, None)
            })
        };
        assert_eq!(answers[0].status, 204, "logout: {}", answers[0].body);
        assert!(
            answers[1].status == 200
                || (answers[1].status == 401 && answers[1].code() == "unauthenticated"),
            "refresh: {}",
            answers[1].body
        );
        assert_eq!(me(&base, &original), (401, "unauthenticated".into()));
        if let Some(fresh) = answers[1].json()["token"].as_str() {
            assert_eq!(
                me(&base, fresh),
                (401, "unauthenticated".into()),
                "round {round}: the refreshed token survived logout"
            );
        }
    }
}

/// A token that a refresh replaced, used again, was copied: the session it was rotated into
/// ends (OAuth's refresh token reuse detection), with a `session_revoked` event. Used again
/// right after the refresh (a request that was under way), it is only refused.
fn a_replaced_token_used_again_ends_the_session(backend: Backend) {
    let Some(db) = TestDb::new(backend) else {
        return;
    };
    let server = Server::start(&db.url, &[]);
    let base = server.base.clone();
    register(&base, "reuse@example.com");
    let refresh = |token: &str| {
        let answer = fetch(
            bearer(agent().post(&format!("{base}/api/auth/refresh")), token),
            None,
        );
        assert_eq!(answer.status, 200, "{}", answer.body);
        answer.json()["token"].as_str().unwrap().to_string()
    };
    let first = token(&base, "reuse@example.com", PASSWORD).json()["token"]
        .as_str()
        .unwrap()
        .to_string();
    // Within the grace: the old token is refused, the session goes on.
    let second = refresh(&first);
    assert_eq!(me(&base, &first), (401, "unauthenticated".into()));
    thread::sleep(std::time::Duration::from_millis(500));
    assert_eq!(me(&base, &second), (200, String::new()));
    // Later (the session's last use a minute ago): the old token ends the session.
    let third = refresh(&second);
    let earlier = latchkey::clock::system_now() - chrono::Duration::minutes(1);
    Db::pool_only(&db.settings())
        .run_blocking(move |conn| {
            diesel::update(sessions::table)
                .set(sessions::last_seen_at.eq(earlier))
                .execute(conn)
        })
        .unwrap();
    assert_eq!(me(&base, &second), (401, "unauthenticated".into()));
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
    while me(&base, &third).0 == 200 {
        assert!(
            std::time::Instant::now() < deadline,
            "the session of a reused token is still alive"
        );
        thread::sleep(std::time::Duration::from_millis(50));
    }
    let owner = token(&base, "reuse@example.com", PASSWORD).json()["token"]
        .as_str()
        .unwrap()
        .to_string();
    let events = fetch(
        bearer(agent().get(&format!("{base}/api/events")), &owner),
        None,
    );
    let events = events.json();
    let kinds: Vec<&str> = events["events"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["type"].as_str().unwrap())
        .collect();
    assert!(kinds.contains(&"session_revoked"), "{kinds:?}");
}

/// `CRON_SECRET` cannot be guessed at request speed: wrong bearer values count against the
/// client's budget (10 per 10 minutes); once it is spent every value is refused before it is
/// compared, the right one included. The right secret itself uses nothing.
fn cron_secret_guesses_are_budgeted(backend: Backend) {
    let Some(db) = TestDb::new(backend) else {
        return;
    };
    let secret = "a-cron-secret-of-some-length";
    let server = Server::start(&db.url, &[("CRON_SECRET", secret)]);
    let cleanup = |given: &str| {
        fetch(
            bearer(
                agent().post(&format!("{}/api/admin/cleanup-sessions", server.base)),
                given,
            ),
            None,
        )
    };
    for _ in 0..12 {
        assert_eq!(cleanup(secret).status, 200);
    }
    for i in 0..10 {
        let wrong = cleanup(&format!("guess-number-{i}-of-many"));
        assert_eq!(
            (wrong.status, wrong.code()),
            (401, "unauthenticated".into())
        );
    }
    let spent = cleanup(secret);
    assert_eq!(
        (spent.status, spent.code()),
        (429, "too_many_attempts".into())
    );
    assert!(spent.header("retry-after").is_some());
}

/// Registrations have a per-client budget (`ip_max_registrations` per `ip_failure_window`):
/// past it 429 with `Retry-After`; a taken address (409) counts too, so addresses cannot be
/// tried at full speed; an IPv6 client is counted by its /64 (here through a trusted
/// `X-Real-IP`, as behind a proxy), another /64 or IPv4 address has its own budget.
fn registrations_have_a_budget_per_client(backend: Backend) {
    let Some(db) = TestDb::new(backend) else {
        return;
    };
    let server = Server::start(
        &db.url,
        &[
            ("ROCKET_IP_MAX_REGISTRATIONS", "3"),
            ("ROCKET_IP_HEADER", "X-Real-IP"),
        ],
    );
    let attempt = |ip: &str, email: &str| {
        fetch(
            agent()
                .post(&format!("{}/api/auth/register", server.base))
                .set("X-Real-IP", ip),
            Some(json!({"email": email, "name": "R", "password": PASSWORD})),
        )
    };
    assert_eq!(attempt("2001:db8:7:1::1", "r1@example.com").status, 201);
    let taken = attempt("2001:db8:7:1::2", "r1@example.com");
    assert_eq!((taken.status, taken.code()), (409, "email_taken".into()));
    assert_eq!(
        attempt("2001:db8:7:1:ffff::9", "r2@example.com").status,
        201
    );
    let refused = attempt("2001:db8:7:1:abcd::3", "r3@example.com");
    assert_eq!(
        (refused.status, refused.code()),
        (429, "too_many_attempts".into())
    );
    let retry: i64 = refused.header("retry-after").unwrap().parse().unwrap();
    assert!(retry > 0 && retry <= 600, "{retry}");
    // A taken address answers 429 too now: nothing tells whether it is taken.
    let taken = attempt("2001:db8:7:1::5", "r1@example.com");
    assert_eq!(
        (taken.status, taken.code()),
        (429, "too_many_attempts".into())
    );
    // Another /64, and an IPv4 client, have their own budgets.
    assert_eq!(attempt("2001:db8:7:2::1", "r3@example.com").status, 201);
    assert_eq!(attempt("192.0.2.1", "r4@example.com").status, 201);
}

/// Every write that can meet an account's deletion, at the same moment as two deletions of
/// it (issue 28: the second deletion answered 500 every time, a resend sometimes): exactly one
/// deletion succeeds, everything else answers as for a signed-out caller or succeeds first,
/// and nothing answers 5xx.
fn writes_racing_a_deletion(backend: Backend) {
    let Some(db) = TestDb::new(backend) else {
        return;
    };
    let sink = common::smtp::SmtpSink::start(std::time::Duration::ZERO);
    let smtp = sink.url();
    let mut env = ROOMY_BUDGET.to_vec();
    env.extend([
        ("ROCKET_SMTP_URL", smtp.as_str()),
        ("ROCKET_MAIL_FROM", "latchkey <auth@example.test>"),
        ("ROCKET_PUBLIC_URL", "https://auth.example.test"),
    ]);
    let server = Server::start(&db.url, &env);
    let mut deletions = 0;
    for round in 0..6 {
        let base = server.base.clone();
        let email = format!("gone{round}@example.com");
        register(&base, &email);
        // Verified, so that a second factor may be set up (with mail on, an unverified
        // account may add no way in).
        let verified = email.clone();
        Db::pool_only(&db.settings())
            .run_blocking(move |conn| {
                use latchkey::db::schema::users;
                diesel::update(users::table.filter(users::email.eq(verified)))
                    .set(users::email_verified_at.eq(Some(latchkey::clock::system_now())))
                    .execute(conn)
            })
            .unwrap();
        let tokens: Vec<String> = (0..2)
            .map(|_| {
                token(&base, &email, PASSWORD).json()["token"]
                    .as_str()
                    .unwrap()
                    .into()
            })
            .collect();
        // A reset link of the account, used at the same moment as the deletions.
        let seen = sink.received().len();
        let asked = post(&base, "/api/auth/password-reset", json!({"email": email}));
        assert_eq!(asked.status, 202);
        // (The registration's verification mail may arrive after `seen` was taken.)
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
        let link = loop {
            let found = sink.received()[seen..]
                .iter()
                .find_map(|mail| mail.token("reset"));
            if let Some(link) = found {
                break link;
            }
            assert!(std::time::Instant::now() < deadline, "no reset mail");
            thread::sleep(std::time::Duration::from_millis(20));
        };
        let answers = together(11, move |i| {
            let who = &tokens[i % 2];
            let call = |method: &str, path: &str, body: Option<Value>| {
                let req = ureq::request(method, &format!("{base}{path}"));
                (path.to_string(), fetch(bearer(req, who), body))
            };
            match i {
                0 | 1 => call(
                    "DELETE",
                    "/api/auth/account",
                    Some(json!({"password": PASSWORD})),
                ),
                2 => call("POST", "/api/auth/verify-email/resend", None),
                3 => call(
                    "POST",
                    "/api/auth/password",
                    Some(json!({"current_password": PASSWORD, "new_password": "another secret"})),
                ),
                4 => call(
                    "POST",
                    "/api/auth/mfa/totp",
                    Some(json!({"password": PASSWORD})),
                ),
                5 => call("DELETE", "/api/auth/sessions", None),
                6 => call("POST", "/api/auth/refresh", None),
                7 => call("POST", "/api/auth/logout", None),
                8 => call("POST", "/api/auth/logout-all", None),
                9 => call(
                    "POST",
                    "/api/auth/password-reset/confirm",
                    Some(json!({"token": link, "new_password": "a reset secret"})),
                ),
                _ => call("GET", "/api/events", None),
            }
        });
        let mut deleted = 0;
        for (i, (path, answer)) in answers.iter().enumerate() {
            assert!(
                answer.status < 500,
                "round {round}: {path} answered {}: {}",
                answer.status,
                answer.body
            );
            if answer.status >= 400 {
                // A caller whose account (or session) went first is simply not signed in; a
                // password checked against a hash that changed first is a wrong password.
                assert!(
                    [
                        "unauthenticated",
                        "invalid_credentials",
                        "too_many_attempts",
                        "invalid_token"
                    ]
                    .contains(&answer.code().as_str()),
                    "round {round}: {path}: {}",
                    answer.body
                );
            }
            if i < 2 && answer.status == 204 {
                deleted += 1;
            }
        }
        assert!(deleted <= 1, "round {round}: both deletions succeeded");
        if deleted == 1 {
            for password in [PASSWORD, "another secret", "a reset secret"] {
                let gone = token(&server.base, &email, password);
                assert_eq!(
                    (gone.status, gone.code()),
                    (401, "invalid_credentials".into())
                );
            }
        }
        deletions += deleted;
    }
    assert!(deletions > 0, "no round deleted its account");
}

/// A new SQLite database file is readable by its owner only.
#[test]
fn sqlite_file_is_private() {
    use std::os::unix::fs::PermissionsExt;
    let dir = std::env::temp_dir().join(format!("latchkey-mode-{}", uuid::Uuid::new_v4().simple()));
    std::fs::create_dir_all(&dir).unwrap();
    let file = dir.join("private.db");
    let server = Server::start(&format!("sqlite://{}", file.display()), &[]);
    register(&server.base, "mode@example.com");
    for suffix in ["", "-wal", "-shm"] {
        let path = dir.join(format!("private.db{suffix}"));
        let mode = std::fs::metadata(&path).unwrap().permissions().mode();
        assert_eq!(mode & 0o077, 0, "{} is {mode:o}", path.display());
    }
    drop(server);
    let _ = std::fs::remove_dir_all(&dir);
}

on_both_backends!(
    a_replaced_token_used_again_ends_the_session,
    cron_secret_guesses_are_budgeted,
    registrations_have_a_budget_per_client,
    writes_racing_a_deletion,
    cross_site_check_whatever_the_spelling,
    login_budget_holds_under_concurrency,
    account_deletion_racing_sign_ins,
    password_change_racing_sign_ins,
    logout_racing_refresh,
);

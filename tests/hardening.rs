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

fn me(base: &str, token: &str) -> u16 {
    fetch(
        bearer(agent().get(&format!("{base}/api/auth/me")), token),
        None,
    )
    .status
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
                Ok(r) | Err(ureq::Error::Status(_, r)) => r.status(),
                Err(e) => panic!("{e}"),
            }
        };
        assert_eq!(answer, 405, "{path}");
    }
    // The other device is still signed in, and so is this one.
    assert_eq!(me(&base, &other), 200);
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
            token(&bases[i % 2], "victim@example.com", "wrong password").status
        })
    };
    let checked = answers.iter().filter(|&&s| s == 401).count();
    let refused = answers.iter().filter(|&&s| s == 429).count();
    assert_eq!((checked, refused), (5, 19), "{answers:?}");

    // The IP budget (12) is shared by every email from this address: 5 were spent above.
    let answers = {
        let bases = bases.clone();
        together(20, move |i| {
            token(&bases[i % 2], &format!("nobody{i}@example.com"), "wrong").status
        })
    };
    let checked = answers.iter().filter(|&&s| s == 401).count();
    let refused = answers.iter().filter(|&&s| s == 429).count();
    assert_eq!((checked, refused), (7, 13), "{answers:?}");
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
            assert_eq!(me(&base, answer.json()["token"].as_str().unwrap()), 401);
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
                answer.status == 200 || answer.status == 401,
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
                401,
                "round {round}: an old-password session survived"
            );
        }
        assert_eq!(me(&base, &kept), 200);
        assert_eq!(token(&base, &email, PASSWORD).status, 401);
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
            answers[1].status == 200 || answers[1].status == 401,
            "refresh: {}",
            answers[1].body
        );
        assert_eq!(me(&base, &original), 401);
        if let Some(fresh) = answers[1].json()["token"].as_str() {
            assert_eq!(
                me(&base, fresh),
                401,
                "round {round}: the refreshed token survived logout"
            );
        }
    }
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
    cross_site_check_whatever_the_spelling,
    login_budget_holds_under_concurrency,
    account_deletion_racing_sign_ins,
    password_change_racing_sign_ins,
    logout_racing_refresh,
);

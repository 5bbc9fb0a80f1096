//! latchkey inside someone else's Rocket application: the examples (`examples/dashboard.rs`,
//! the contract's application as written, and `examples/notes.rs`), built by `cargo test`,
//! run as real processes over real HTTP on both backends.

mod common;

use std::path::PathBuf;

use common::server::{fetch, Answer, Server};
use common::{Backend, TestDb};
use serde_json::{json, Value};

/// `cargo test` builds the examples next to the test binaries' directory.
fn example(name: &str) -> PathBuf {
    let deps = std::env::current_exe().expect("test binary path");
    let path = deps
        .parent()
        .and_then(|d| d.parent())
        .expect("target dir")
        .join("examples")
        .join(name);
    assert!(
        path.exists(),
        "{} is missing: `cargo test` builds the examples",
        path.display()
    );
    path
}

/// Starts an example in a scratch directory (no Rocket.toml) and waits for latchkey's health
/// route, which the fairing mounted.
fn start(name: &str, database_url: &str) -> Server {
    Server::start_binary(&example(name), database_url, &[])
}

fn send(req: ureq::Request, body: Option<Value>) -> Answer {
    fetch(req, body)
}

/// Registers and returns the `session=…` cookie pair.
fn register(app: &Server, email: &str) -> String {
    let answer = send(
        ureq::post(&format!("{}/api/auth/register", app.base)),
        Some(json!({"email": email, "name": "Host User", "password": "correct horse"})),
    );
    assert_eq!(answer.status, 201, "{}", answer.body);
    let cookie = answer
        .set_cookies()
        .into_iter()
        .find(|c| c.starts_with("session="))
        .expect("a session cookie");
    cookie.split(';').next().unwrap().to_string()
}

fn with_cookie(req: ureq::Request, cookie: &str) -> ureq::Request {
    req.set("Cookie", cookie)
}

fn contract_application(backend: Backend) {
    let Some(test_db) = TestDb::new(backend) else {
        return;
    };
    let app = start("dashboard", &test_db.url);
    let dashboard = format!("{}/dashboard", app.base);

    let anonymous = send(ureq::get(&dashboard), None);
    assert_eq!(anonymous.status, 401);

    let cookie = register(&app, "host@example.com");
    let signed_in = send(with_cookie(ureq::get(&dashboard), &cookie), None);
    assert_eq!(signed_in.status, 200, "{}", signed_in.body);
    assert!(
        signed_in.body.ends_with(" host@example.com"),
        "{}",
        signed_in.body
    );
    let me = send(
        with_cookie(ureq::get(&format!("{}/api/auth/me", app.base)), &cookie),
        None,
    );
    let id = me.json()["user"]["id"].as_str().unwrap().to_string();
    assert_eq!(signed_in.body, format!("{id} host@example.com"));

    // A cross-site unsafe request by cookie is refused, here on latchkey's own logout.
    let forged = send(
        with_cookie(
            ureq::post(&format!("{}/api/auth/logout", app.base)),
            &cookie,
        )
        .set("Origin", "https://evil.example"),
        None,
    );
    assert_eq!(forged.status, 403);
    assert_eq!(forged.code(), "csrf_rejected");
    let still = send(with_cookie(ureq::get(&dashboard), &cookie), None);
    assert_eq!(still.status, 200);

    let logout = send(
        with_cookie(
            ureq::post(&format!("{}/api/auth/logout", app.base)),
            &cookie,
        ),
        None,
    );
    assert_eq!(logout.status, 204);
    let after = send(with_cookie(ureq::get(&dashboard), &cookie), None);
    assert_eq!(after.status, 401);

    // The application keeps its own `/` and its own catchers: latchkey's page is not there,
    // and a 404 outside `/api` is Rocket's (HTML), while one inside is latchkey's JSON.
    let root = send(ureq::get(&format!("{}/", app.base)), None);
    assert_eq!(root.status, 404);
    let content_type = root.header("content-type").unwrap_or("");
    assert!(content_type.contains("html"), "{content_type}");
    let api_404 = send(ureq::get(&format!("{}/api/nothing", app.base)), None);
    assert_eq!(api_404.status, 404);
    assert_eq!(api_404.code(), "not_found");
    // Not latchkey's business either: /metrics is opt-in.
    let metrics = send(ureq::get(&format!("{}/metrics", app.base)), None);
    assert_eq!(metrics.status, 404);
}

fn notes_application(backend: Backend) {
    let Some(test_db) = TestDb::new(backend) else {
        return;
    };
    let app = start("notes", &test_db.url);
    let notes = format!("{}/notes", app.base);

    let home = send(ureq::get(&format!("{}/", app.base)), None);
    assert_eq!(home.status, 200);
    assert!(home.body.starts_with("notes:"), "{}", home.body);
    let nobody = send(ureq::get(&format!("{}/whoami", app.base)), None);
    assert_eq!(nobody.body, "nobody: not signed in\n");
    assert_eq!(send(ureq::get(&notes), None).status, 401);

    let ann = register(&app, "ann@example.com");
    let bob = register(&app, "bob@example.com");
    let whoami = send(
        with_cookie(ureq::get(&format!("{}/whoami", app.base)), &ann),
        None,
    );
    assert_eq!(whoami.body, "ann@example.com (user)\n");

    let created = send(
        with_cookie(ureq::post(&notes), &ann),
        Some(json!({"text": "buy milk"})),
    );
    assert_eq!(created.status, 201, "{}", created.body);
    assert_eq!(created.json()["text"], "buy milk");
    // Another site's page cannot post as Ann: the guard applies the cross-site check on the
    // application's own route.
    let forged = send(
        with_cookie(ureq::post(&notes), &ann).set("Origin", "https://evil.example"),
        Some(json!({"text": "forged"})),
    );
    assert_eq!(forged.status, 403);
    let fetch_site = send(
        with_cookie(ureq::post(&notes), &ann).set("Sec-Fetch-Site", "cross-site"),
        Some(json!({"text": "forged"})),
    );
    assert_eq!(fetch_site.status, 403);
    // The same spelled differently reaches the same route and gets the same check.
    let respelled = send(
        with_cookie(ureq::post(&format!("{}//notes", app.base)), &ann)
            .set("Origin", "https://evil.example"),
        Some(json!({"text": "forged"})),
    );
    assert_eq!(respelled.status, 403);

    let listed = send(with_cookie(ureq::get(&notes), &ann), None);
    assert_eq!(listed.status, 200);
    let texts: Vec<Value> = listed.json().as_array().unwrap().to_vec();
    assert_eq!(texts.len(), 1, "{}", listed.body);
    assert_eq!(texts[0]["text"], "buy milk");
    assert_eq!(forged.code(), "", "the application's own catcher answers");
    // Session data is never cached, on the application's routes too.
    assert_eq!(listed.header("cache-control"), Some("no-store"));
    assert_eq!(
        home.header("cache-control"),
        None,
        "not latchkey's business"
    );
    let bobs = send(with_cookie(ureq::get(&notes), &bob), None);
    assert_eq!(bobs.json(), json!([]));

    // A revoked session is refused at once on the application's routes, and its stale cookie
    // is cleared even though the application's own catcher answers.
    let logout_all = send(
        with_cookie(
            ureq::post(&format!("{}/api/auth/logout-all", app.base)),
            &ann,
        ),
        None,
    );
    assert_eq!(logout_all.status, 204);
    let revoked = send(with_cookie(ureq::get(&notes), &ann), None);
    assert_eq!(revoked.status, 401);
    assert!(
        revoked
            .set_cookies()
            .iter()
            .any(|c| c.starts_with("session=;") && c.contains("Max-Age=0")),
        "{:?}",
        revoked.set_cookies()
    );
}

on_both_backends!(contract_application, notes_application);

/// A route that uses latchkey's guards in an application that did not attach the fairing is
/// a launch-time error (Rocket sentinels), not a panic at its first request.
#[test]
fn guards_without_the_fairing_stop_the_launch() {
    #[rocket::get("/private")]
    fn private(me: latchkey::CurrentSession) -> String {
        me.user.email.clone()
    }
    #[rocket::get("/admin")]
    fn admin(_admin: Option<latchkey::AdminUser>) -> &'static str {
        "admin"
    }
    for routes in [rocket::routes![private], rocket::routes![admin]] {
        let rocket = rocket::custom(common::rocket_figment()).mount("/", routes);
        let error = match rocket::local::blocking::Client::untracked(rocket) {
            Ok(_) => panic!("launched without latchkey's state"),
            Err(error) => error,
        };
        assert!(
            matches!(error.kind(), rocket::error::ErrorKind::SentinelAborts(_)),
            "{error}"
        );
    }
}

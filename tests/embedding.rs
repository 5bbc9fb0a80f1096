//! latchkey inside someone else's Rocket application: the examples (`examples/dashboard.rs`,
//! the contract's application as written, and `examples/notes.rs`), built by `cargo test`,
//! run as real processes over real HTTP on both backends.

mod common;

use std::io::Read;
use std::net::TcpListener;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

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

struct App {
    child: Child,
    base: String,
    _dir: tempdir::Dir,
}

mod tempdir {
    pub struct Dir(pub std::path::PathBuf);
    impl Drop for Dir {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }
}

impl Drop for App {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn output(child: &mut Child) -> String {
    let mut text = String::new();
    if let Some(mut err) = child.stderr.take() {
        let _ = err.read_to_string(&mut text);
    }
    text
}

/// Starts an example on a free port in a scratch directory (no Rocket.toml) and waits for
/// latchkey's health route, which the fairing mounted.
fn start(name: &str, database_url: &str) -> App {
    let port = TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let dir = std::env::temp_dir().join(format!("latchkey-ex-{}", uuid::Uuid::new_v4().simple()));
    std::fs::create_dir_all(&dir).unwrap();
    let mut child = Command::new(example(name))
        .current_dir(&dir)
        .env("DATABASE_URL", database_url)
        .env("ROCKET_PORT", port.to_string())
        .env("ROCKET_ADDRESS", "127.0.0.1")
        .env("ROCKET_LOG_LEVEL", "critical")
        .env_remove("CRON_SECRET")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let base = format!("http://127.0.0.1:{port}");
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        if ureq::get(&format!("{base}/api/health")).call().is_ok() {
            return App {
                child,
                base,
                _dir: tempdir::Dir(dir),
            };
        }
        if let Some(status) = child.try_wait().unwrap() {
            panic!("{name} exited early ({status}): {}", output(&mut child));
        }
        assert!(Instant::now() < deadline, "{name} did not come up");
        std::thread::sleep(Duration::from_millis(100));
    }
}

struct Answer {
    status: u16,
    body: String,
    content_type: String,
    set_cookie: Vec<String>,
}

impl Answer {
    fn json(&self) -> Value {
        serde_json::from_str(&self.body).unwrap_or(Value::Null)
    }
}

fn send(req: ureq::Request, body: Option<Value>) -> Answer {
    let result = match body {
        Some(body) => req.send_json(body),
        None => req.call(),
    };
    let response = match result {
        Ok(r) => r,
        Err(ureq::Error::Status(_, r)) => r,
        Err(e) => panic!("transport error: {e}"),
    };
    let status = response.status();
    let content_type = response.content_type().to_string();
    let set_cookie = response
        .all("set-cookie")
        .into_iter()
        .map(String::from)
        .collect();
    let body = response.into_string().unwrap_or_default();
    Answer {
        status,
        body,
        content_type,
        set_cookie,
    }
}

/// Registers and returns the `session=…` cookie pair.
fn register(app: &App, email: &str) -> String {
    let answer = send(
        ureq::post(&format!("{}/api/auth/register", app.base)),
        Some(json!({"email": email, "name": "Host User", "password": "correct horse"})),
    );
    assert_eq!(answer.status, 201, "{}", answer.body);
    let cookie = answer
        .set_cookie
        .iter()
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
    assert_eq!(forged.json()["error"]["code"], "csrf_rejected");
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
    assert!(root.content_type.contains("html"), "{}", root.content_type);
    let api_404 = send(ureq::get(&format!("{}/api/nothing", app.base)), None);
    assert_eq!(api_404.status, 404);
    assert_eq!(api_404.json()["error"]["code"], "not_found");
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
    // Session data is never cached, on the application's routes too.
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
            .set_cookie
            .iter()
            .any(|c| c.starts_with("session=;") && c.contains("Max-Age=0")),
        "{:?}",
        revoked.set_cookie
    );
}

on_both_backends!(contract_application, notes_application);

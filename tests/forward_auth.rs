//! Forward auth (`/api/auth/verify`): in-process on both backends, then behind the real nginx
//! (`auth_request`) and Caddy (`forward_auth`) on 127.0.0.1, with a small upstream application
//! that reports the identity headers it was given, and a client that forges its own.

mod common;

use std::io::{BufRead, BufReader, Write};
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::server::{agent, fetch, free_port, installed, Server};
use common::{Auth, Backend, Harness, TestDb};
use rocket::http::{Header, Status};
use serde_json::json;

fn verify(h: &Harness, auth: &Auth, headers: &[(&'static str, &'static str)]) -> common::Reply {
    let mut req = h.request(h.client.get("/api/auth/verify"), auth);
    for (name, value) in headers {
        req = req.header(Header::new(*name, *value));
    }
    h.send(req)
}

fn answers_who_is_asking(backend: Backend) {
    let Some(h) = Harness::start_with(backend, |s| {
        s.login_url = Some("https://auth.example/login".into());
    }) else {
        return;
    };
    let (cookie, body) = h.register("fwd@example.com", "correct horse");
    let user_id = body["user"]["id"].as_str().unwrap().to_string();
    let session_id = body["session"]["id"].as_str().unwrap().to_string();

    let anonymous = verify(&h, &Auth::None, &[]);
    assert_eq!(anonymous.status, Status::Unauthorized);
    assert_eq!(anonymous.code(), "unauthenticated");

    let signed_in = verify(&h, &Auth::Cookie(cookie.clone()), &[]);
    assert_eq!(signed_in.status, Status::Ok);
    assert_eq!(
        signed_in.header("X-Latchkey-User-Id"),
        Some(user_id.as_str())
    );
    assert_eq!(
        signed_in.header("X-Latchkey-User-Email"),
        Some("fwd@example.com")
    );
    assert_eq!(signed_in.header("X-Latchkey-User-Role"), Some("user"));
    assert_eq!(
        signed_in.header("X-Latchkey-Session-Id"),
        Some(session_id.as_str())
    );
    assert_eq!(
        signed_in.body,
        serde_json::Value::Null,
        "no body unless asked"
    );
    assert_eq!(signed_in.header("Cache-Control"), Some("no-store"));
    // Inside the touch interval nothing is written and no cookie is sent.
    assert!(
        signed_in.set_cookies.is_empty(),
        "{:?}",
        signed_in.set_cookies
    );

    let as_json = verify(
        &h,
        &Auth::Cookie(cookie.clone()),
        &[("Accept", "application/json")],
    );
    assert_eq!(as_json.body["user"]["id"], user_id.as_str());

    // Every method answers the same.
    for req in [
        h.client.post("/api/auth/verify"),
        h.client.put("/api/auth/verify"),
        h.client.patch("/api/auth/verify"),
        h.client.delete("/api/auth/verify"),
    ] {
        let reply = h.send(h.request(req, &Auth::Cookie(cookie.clone())));
        assert_eq!(reply.status, Status::Ok);
        assert_eq!(reply.header("X-Latchkey-User-Id"), Some(user_id.as_str()));
    }

    // The cross-site check applies to the original request.
    let forged = verify(
        &h,
        &Auth::Cookie(cookie.clone()),
        &[
            ("X-Forwarded-Method", "POST"),
            ("X-Forwarded-Host", "app.example"),
            ("Origin", "https://evil.example"),
        ],
    );
    assert_eq!(forged.status, Status::Forbidden);
    assert_eq!(forged.code(), "csrf_rejected");
    let same_site = verify(
        &h,
        &Auth::Cookie(cookie.clone()),
        &[
            ("X-Forwarded-Method", "DELETE"),
            ("X-Forwarded-Host", "app.example"),
            ("Origin", "https://app.example"),
        ],
    );
    assert_eq!(same_site.status, Status::Ok);
    let safe = verify(
        &h,
        &Auth::Cookie(cookie.clone()),
        &[
            ("X-Forwarded-Method", "GET"),
            ("Origin", "https://evil.example"),
        ],
    );
    assert_eq!(safe.status, Status::Ok);

    // A browser that is not signed in goes to login_url, with the URL it wanted.
    let browser = verify(
        &h,
        &Auth::None,
        &[
            ("Accept", "text/html,application/xhtml+xml"),
            ("X-Forwarded-Proto", "https"),
            ("X-Forwarded-Host", "app.example"),
            ("X-Forwarded-Uri", "/notes?x=1"),
        ],
    );
    assert_eq!(browser.status, Status::Found);
    assert_eq!(
        browser.header("Location"),
        Some("https://auth.example/login?return_to=https%3A%2F%2Fapp.example%2Fnotes%3Fx%3D1")
    );

    // After logout the same cookie is refused (and cleared).
    let logout = h.post_empty("/api/auth/logout", &Auth::Cookie(cookie.clone()));
    assert_eq!(logout.status, Status::NoContent);
    let after = verify(&h, &Auth::Cookie(cookie), &[]);
    assert_eq!(
        (after.status, after.code()),
        (Status::Unauthorized, "unauthenticated")
    );
    assert!(after
        .session_cookie(h.cookie_name())
        .is_some_and(|v| v.is_empty()));
}

fn extends_the_session_like_any_request(backend: Backend) {
    let Some(h) = Harness::start_with(backend, |s| {
        s.session_touch_interval = chrono::Duration::seconds(1);
    }) else {
        return;
    };
    let (cookie, _) = h.register("touch@example.com", "correct horse");
    h.advance(chrono::Duration::milliseconds(1001));
    let touched = verify(&h, &Auth::Cookie(cookie.clone()), &[]);
    assert_eq!(touched.status, Status::Ok);
    let sent = touched
        .set_cookie_header(h.cookie_name())
        .expect("the extended session's cookie");
    assert!(sent.contains("Max-Age="), "{sent}");
    assert_eq!(touched.session_cookie(h.cookie_name()), Some(cookie));
}

/// A tiny upstream application: answers every request with the identity headers it got (any
/// header a CGI-style server could read as one of latchkey's: `-` and `_` alike, any case,
/// under the name as it arrived, lowercased) and its `Cookie` header.
fn start_app() -> u16 {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    std::thread::spawn(move || {
        for stream in listener.incoming().flatten() {
            std::thread::spawn(move || {
                let mut reader = BufReader::new(stream.try_clone().unwrap());
                let mut seen = serde_json::Map::new();
                loop {
                    let mut line = String::new();
                    if reader.read_line(&mut line).unwrap_or(0) == 0 || line == "\r\n" {
                        break;
                    }
                    if let Some((name, value)) = line.split_once(':') {
                        let name = name.trim().to_ascii_lowercase();
                        if name.replace('_', "-").starts_with("x-latchkey") || name == "cookie" {
                            seen.insert(name, json!(value.trim()));
                        }
                    }
                }
                let body = serde_json::Value::Object(seen).to_string();
                let mut stream = stream;
                let _ = write!(
                    stream,
                    "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                    body.len()
                );
            });
        }
    });
    port
}

struct Proxy {
    child: Child,
    dir: PathBuf,
}

impl Drop for Proxy {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// The configuration in `docs/proxies/`, with its placeholders filled in.
fn config(name: &str, dir: &Path, port: u16, latchkey: u16, app: u16) -> String {
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("docs/proxies")
        .join(name);
    std::fs::read_to_string(path)
        .unwrap()
        .replace("{dir}", dir.to_str().unwrap())
        .replace("127.0.0.1:8080", &format!("127.0.0.1:{port}"))
        .replace("127.0.0.1:8000", &format!("127.0.0.1:{latchkey}"))
        .replace("127.0.0.1:3000", &format!("127.0.0.1:{app}"))
}

fn start_proxy(kind: &str, latchkey: u16, app: u16) -> Option<(Proxy, u16)> {
    let binary = if kind == "nginx" { "nginx" } else { "caddy" };
    let package = if kind == "nginx" {
        "nginx-light"
    } else {
        "caddy"
    };
    if !installed(binary, package) {
        return None;
    }
    let dir =
        std::env::temp_dir().join(format!("latchkey-{kind}-{}", uuid::Uuid::new_v4().simple()));
    std::fs::create_dir_all(&dir).unwrap();
    let port = free_port();
    let mut cmd = if kind == "nginx" {
        let conf = dir.join("nginx.conf");
        std::fs::write(&conf, config("nginx.conf", &dir, port, latchkey, app)).unwrap();
        let mut cmd = Command::new("nginx");
        cmd.args([
            "-p",
            dir.to_str().unwrap(),
            "-c",
            conf.to_str().unwrap(),
            "-e",
            "stderr",
        ]);
        cmd
    } else {
        let conf = dir.join("Caddyfile");
        std::fs::write(&conf, config("Caddyfile", &dir, port, latchkey, app)).unwrap();
        let mut cmd = Command::new("caddy");
        cmd.args([
            "run",
            "--config",
            conf.to_str().unwrap(),
            "--adapter",
            "caddyfile",
        ])
        .env("HOME", &dir)
        .env("XDG_DATA_HOME", &dir)
        .env("XDG_CONFIG_HOME", &dir);
        cmd
    };
    let child = cmd
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let proxy = Proxy { child, dir };
    let deadline = Instant::now() + Duration::from_secs(20);
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(Instant::now() < deadline, "{kind} did not come up");
        std::thread::sleep(Duration::from_millis(50));
    }
    Some((proxy, port))
}

fn behind(kind: &str, backend: Backend) {
    let Some(db) = TestDb::new(backend) else {
        return;
    };
    // Secure cookies, as in production: the cookie is `__Host-session`, the name the shipped
    // configurations keep from the application.
    let server = Server::start(
        &db.url,
        &[
            ("ROCKET_LOGIN_URL", "/login"),
            ("ROCKET_COOKIE_SECURE", "true"),
        ],
    );
    let latchkey: u16 = server.base.rsplit(':').next().unwrap().parse().unwrap();
    let app = start_app();
    let Some((_proxy, port)) = start_proxy(kind, latchkey, app) else {
        return;
    };
    let base = format!("http://127.0.0.1:{port}");

    // Registration goes through the proxy to latchkey; its cookie is for this host.
    let registered = fetch(
        agent().post(&format!("{base}/api/auth/register")),
        Some(json!({"email": "proxied@example.com", "name": "P", "password": "correct horse"})),
    );
    assert_eq!(registered.status, 201, "{}", registered.body);
    let user_id = registered.json()["user"]["id"]
        .as_str()
        .unwrap()
        .to_string();
    let cookie = registered.set_cookies()[0]
        .split(';')
        .next()
        .unwrap()
        .to_string();

    // Signed in: the application sees latchkey's identity, never the client's forgery in any
    // spelling, and never latchkey's session cookie (the application's own cookies pass).
    let seen = fetch(
        agent()
            .get(&format!("{base}/notes"))
            .set("Cookie", &format!("app_pref=dark; {cookie}; app_cart=3"))
            .set("X-Latchkey-User-Id", "forged-admin")
            .set("X-Latchkey-User-Role", "admin")
            .set("x-latchkey-user-role", "admin")
            .set("X_Latchkey_User_Role", "admin")
            .set("X_Latchkey_User_Id", "forged-admin")
            .set("x_latchkey_user_email", "boss@example.com")
            .set("X-Latchkey_User-Role", "admin")
            .set("X_LATCHKEY_SESSION_ID", "forged")
            .set("X_Latchkey_User_Email_Verified", "true"),
        None,
    );
    assert_eq!(seen.status, 200, "{kind}: {}", seen.body);
    let mut expected = serde_json::Map::new();
    expected.insert("x-latchkey-user-id".into(), json!(user_id));
    expected.insert("x-latchkey-user-role".into(), json!("user"));
    expected.insert("x-latchkey-user-email".into(), json!("proxied@example.com"));
    let session_id = seen.json()["x-latchkey-session-id"].clone();
    assert!(
        session_id.as_str().is_some_and(|id| id.len() == 36),
        "{kind}: {}",
        seen.body
    );
    expected.insert("x-latchkey-session-id".into(), session_id);
    expected.insert("x-latchkey-user-email-verified".into(), json!("false"));
    expected.insert("cookie".into(), json!("app_pref=dark; app_cart=3"));
    assert_eq!(seen.json(), serde_json::Value::Object(expected), "{kind}");
    // The session cookie first, last, alone; after an application cookie named `session`
    // (which stays); beside a cookie whose name only ends like it.
    assert!(cookie.starts_with("__Host-session="), "{cookie}");
    for (sent, kept) in [
        (format!("{cookie}; app_cart=3"), "app_cart=3"),
        (format!("app_cart=3; {cookie}"), "app_cart=3"),
        (cookie.clone(), ""),
        (format!("session=APPCOOKIE; {cookie}"), "session=APPCOOKIE"),
        (format!("x__Host-session=1; {cookie}"), "x__Host-session=1"),
    ] {
        let seen = fetch(
            agent().get(&format!("{base}/notes")).set("Cookie", &sent),
            None,
        );
        assert_eq!(seen.status, 200, "{kind}: {}", seen.body);
        let got = seen.json()["cookie"].as_str().unwrap_or("").to_string();
        assert_eq!(got, kept, "{kind}: {sent}");
    }

    // Not signed in: the forged headers get nowhere; an API client gets 401, a browser the
    // login page with the URL it wanted.
    let forged = fetch(
        agent()
            .get(&format!("{base}/notes"))
            .set("X-Latchkey-User-Id", "forged-admin"),
        None,
    );
    // nginx asks latchkey again for the denied request (`@latchkey_denied`) and Caddy copies
    // latchkey's answer back: either way the body is latchkey's JSON.
    assert_eq!(
        (forged.status, forged.code().as_str()),
        (401, "unauthenticated"),
        "{kind}: {}",
        forged.body
    );
    let browser = fetch(
        ureq::builder()
            .redirects(0)
            .build()
            .get(&format!("{base}/notes?x=1"))
            .set("Accept", "text/html"),
        None,
    );
    assert_eq!(browser.status, 302, "{kind}");
    let location = browser.header("location").unwrap_or("");
    assert!(
        location.starts_with("/login?return_to="),
        "{kind}: {location}"
    );
    assert!(location.contains("%2Fnotes%3Fx%3D1"), "{kind}: {location}");

    // A cross-site POST to the application with the cookie is refused by latchkey.
    let cross_site = fetch(
        agent()
            .post(&format!("{base}/notes"))
            .set("Cookie", &cookie)
            .set("Origin", "https://evil.example"),
        Some(json!({})),
    );
    assert_eq!(cross_site.status, 403, "{kind}");
    // Caddy copies latchkey's answer back; nginx's `auth_request` answers a 403 with its own
    // page.
    if kind == "caddy" {
        assert_eq!(cross_site.code(), "csrf_rejected", "{}", cross_site.body);
    }
    let same_site = fetch(
        agent()
            .post(&format!("{base}/notes"))
            .set("Cookie", &cookie)
            .set("Origin", &base),
        Some(json!({})),
    );
    assert_eq!(same_site.status, 200, "{kind}: {}", same_site.body);

    // Logout through the proxy: the application refuses the cookie at once.
    let logout = fetch(
        agent()
            .post(&format!("{base}/api/auth/logout"))
            .set("Cookie", &cookie),
        None,
    );
    assert_eq!(logout.status, 204);
    let after = fetch(
        agent().get(&format!("{base}/notes")).set("Cookie", &cookie),
        None,
    );
    assert_eq!(
        (after.status, after.code().as_str()),
        (401, "unauthenticated"),
        "{kind}: {}",
        after.body
    );
}

fn behind_nginx(backend: Backend) {
    behind("nginx", backend);
}

fn behind_caddy(backend: Backend) {
    behind("caddy", backend);
}

on_both_backends!(
    answers_who_is_asking,
    extends_the_session_like_any_request,
    behind_nginx,
    behind_caddy,
);

/// CORS (an origin in `allowed_origins` may call the API with credentials; no other gets CORS
/// headers), in-process on both backends. The browser test does the same from a real page on
/// a second origin.
fn cors_for_listed_origins_only(backend: Backend) {
    let Some(h) = Harness::start_with(backend, |s| {
        s.allowed_origins = vec!["https://app.example".into()];
    }) else {
        return;
    };
    let (cookie, _) = h.register("cors@example.com", "correct horse");
    let preflight = |origin: &'static str| {
        h.send(
            h.client
                .options("/api/auth/logout")
                .header(Header::new("Origin", origin))
                .header(Header::new("Access-Control-Request-Method", "POST")),
        )
    };
    let listed = preflight("https://app.example");
    assert_eq!(listed.status, Status::NoContent);
    assert_eq!(
        listed.header("Access-Control-Allow-Origin"),
        Some("https://app.example")
    );
    assert_eq!(
        listed.header("Access-Control-Allow-Credentials"),
        Some("true")
    );
    assert!(listed
        .header("Access-Control-Allow-Methods")
        .is_some_and(|m| m.contains("DELETE")));
    assert!(listed.header("Access-Control-Max-Age").is_some());
    assert_eq!(listed.header("Vary"), Some("Origin"));
    let other = preflight("https://evil.example");
    assert_eq!(
        (other.status, other.code()),
        (Status::NotFound, "not_found")
    );
    assert_eq!(other.header("Access-Control-Allow-Origin"), None);

    let me = |origin: &'static str| {
        h.send(
            h.request(h.client.get("/api/auth/me"), &Auth::Cookie(cookie.clone()))
                .header(Header::new("Origin", origin)),
        )
    };
    let from_app = me("https://app.example");
    assert_eq!(from_app.status, Status::Ok);
    assert_eq!(
        from_app.header("Access-Control-Allow-Origin"),
        Some("https://app.example")
    );
    let from_elsewhere = me("https://evil.example");
    assert_eq!(from_elsewhere.header("Access-Control-Allow-Origin"), None);
    assert_eq!(
        from_elsewhere.header("Access-Control-Allow-Credentials"),
        None
    );

    // The cross-site check treats the listed origin as allowed, and only it.
    let logout = |origin: &'static str| {
        h.send(
            h.request(
                h.client.post("/api/auth/logout"),
                &Auth::Cookie(cookie.clone()),
            )
            .header(Header::new("Origin", origin)),
        )
    };
    let refused = logout("https://evil.example");
    assert_eq!(
        (refused.status, refused.code()),
        (Status::Forbidden, "csrf_rejected")
    );
    assert_eq!(logout("https://app.example").status, Status::NoContent);
}

mod cors {
    use super::*;
    on_both_backends!(cors_for_listed_origins_only);
}

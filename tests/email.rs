//! Email (SPEC §7) against a real SMTP server on 127.0.0.1 (`common::smtp`), receiving real
//! SMTP sessions from the server binary: the mails, their links and every rule of the reset
//! and verification flows, a mail server that refuses connections and one that is slow.

mod common;

use std::time::{Duration, Instant};

use common::server::{fetch, free_port, Answer, Server};
use common::smtp::{Received, SmtpSink};
use common::{Backend, TestDb};
use serde_json::{json, Value};

const PASSWORD: &str = "correct horse battery";
const PUBLIC_URL: &str = "https://auth.example.test";

struct Site {
    server: Server,
    _db: TestDb,
}

fn start(backend: Backend, smtp_url: Option<&str>, extra: &[(&str, &str)]) -> Option<Site> {
    let db = TestDb::new(backend)?;
    let mut env = vec![
        ("ROCKET_MAIL_FROM", "latchkey <auth@example.test>"),
        ("ROCKET_PUBLIC_URL", PUBLIC_URL),
        ("RUST_LOG", "info"),
    ];
    if let Some(url) = smtp_url {
        env.push(("ROCKET_SMTP_URL", url));
    }
    env.extend_from_slice(extra);
    let server = Server::start(&db.url, &env);
    Some(Site { server, _db: db })
}

const RESETS_HANDLED: &str = "latchkey_password_reset_requests_handled_total";
const RESETS_QUEUED: &str = "latchkey_mail_queued_total{kind=\"password_reset\"}";
const VERIFY_QUEUED: &str = "latchkey_mail_queued_total{kind=\"verify_email\"}";

impl Site {
    /// A value of the server's /metrics (0 when the series has not appeared yet).
    fn metric(&self, series: &str) -> f64 {
        let text = fetch(ureq::get(&format!("{}/metrics", self.server.base)), None).body;
        text.lines()
            .find_map(|line| line.strip_prefix(series)?.strip_prefix(' '))
            .map_or(0.0, |value| value.trim().parse().unwrap())
    }

    /// Waits (at most 10 s) until `series` reaches `value`.
    fn wait_for_metric(&self, series: &str, value: f64) {
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        while self.metric(series) < value {
            assert!(
                std::time::Instant::now() < deadline,
                "{series} never reached {value}"
            );
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    fn post(&self, path: &str, body: Value, cookie: Option<&str>) -> Answer {
        let mut req = ureq::post(&format!("{}{path}", self.server.base));
        if let Some(cookie) = cookie {
            req = req.set("Cookie", cookie);
        }
        fetch(req, Some(body))
    }

    fn get(&self, path: &str, cookie: &str) -> Answer {
        fetch(
            ureq::get(&format!("{}{path}", self.server.base)).set("Cookie", cookie),
            None,
        )
    }

    fn register(&self, email: &str) -> String {
        let answer = self.post(
            "/api/auth/register",
            json!({ "email": email, "name": "Ann <Admin>", "password": PASSWORD }),
            None,
        );
        assert_eq!(answer.status, 201, "{}", answer.body);
        assert_eq!(answer.json()["user"]["email_verified"], false);
        cookie(&answer)
    }

    fn login(&self, email: &str, password: &str) -> Answer {
        self.post(
            "/api/auth/login",
            json!({ "email": email, "password": password }),
            None,
        )
    }
}

fn cookie(answer: &Answer) -> String {
    answer
        .set_cookies()
        .into_iter()
        .find(|c| c.starts_with("session="))
        .expect("a session cookie")
        .split(';')
        .next()
        .unwrap()
        .to_string()
}

fn code(answer: &Answer) -> (u16, String) {
    (answer.status, answer.code())
}

/// The one new mail since `seen` (waiting up to 10 s), checked for the common shape.
fn next_mail(sink: &SmtpSink, seen: usize, to: &str, subject: &str) -> Received {
    let received = sink.wait_for(seen + 1, Duration::from_secs(10));
    assert_eq!(received.len(), seen + 1, "one new mail");
    let mail = received[seen].clone();
    assert_eq!(mail.rcpt, [format!("<{to}>")]);
    assert_eq!(mail.header("Subject").as_deref(), Some(subject));
    assert_eq!(
        mail.header("From").as_deref(),
        Some("latchkey <auth@example.test>")
    );
    let text = mail.parts("text/plain");
    let html = mail.parts("text/html");
    assert_eq!((text.len(), html.len()), (1, 1), "{}", mail.data);
    // The name is escaped in HTML and as written in text.
    assert!(text[0].contains("Hello Ann <Admin>,"), "{}", text[0]);
    assert!(html[0].contains("Hello Ann &lt;Admin&gt;,"), "{}", html[0]);
    mail
}

fn reset_flow(backend: Backend) {
    let sink = SmtpSink::start(Duration::ZERO);
    let Some(site) = start(backend, Some(&sink.url()), &[]) else {
        return;
    };
    let first_session = site.register("ann@example.com");
    let verify = next_mail(&sink, 0, "ann@example.com", "Confirm your email address");
    assert_eq!(verify.token("verify").map(|t| t.len()), Some(43));
    let second_session = cookie(&site.login("ann@example.com", PASSWORD));

    // Asking twice: two mails, and only the newer link works.
    let mut tokens = Vec::new();
    for seen in [1, 2] {
        let answer = site.post(
            "/api/auth/password-reset",
            json!({ "email": "  Ann@Example.com " }),
            None,
        );
        assert_eq!((answer.status, answer.json()), (202, json!({})));
        let mail = next_mail(&sink, seen, "ann@example.com", "Reset your password");
        tokens.push(mail.token("reset").unwrap());
    }
    let (older, newer) = (tokens[0].clone(), tokens[1].clone());
    assert_ne!(older, newer);
    let html = sink.received()[2].parts("text/html").join("");
    assert!(
        html.contains(&format!("href=\"{PUBLIC_URL}/#reset={newer}\"")),
        "{html}"
    );
    let confirm = |token: &str, password: &str| {
        site.post(
            "/api/auth/password-reset/confirm",
            json!({ "token": token, "new_password": password }),
            None,
        )
    };
    assert_eq!(
        code(&confirm(&older, "a new long password")),
        (400, "invalid_token".into())
    );
    assert_eq!(
        code(&confirm(&newer, "short")),
        (422, "validation_failed".into())
    );
    assert_eq!(
        code(&confirm("not-a-token", "a new long password")),
        (400, "invalid_token".into())
    );
    assert_eq!(confirm(&newer, "a new long password").status, 204);
    // Single use.
    assert_eq!(
        code(&confirm(&newer, "yet another password")),
        (400, "invalid_token".into())
    );
    // Every session is gone; only the new password signs in.
    for session in [&first_session, &second_session] {
        assert_eq!(
            code(&site.get("/api/auth/me", session)),
            (401, "unauthenticated".into())
        );
    }
    assert_eq!(
        code(&site.login("ann@example.com", PASSWORD)),
        (401, "invalid_credentials".into())
    );
    let signed_in = site.login("ann@example.com", "a new long password");
    assert_eq!(signed_in.status, 200, "{}", signed_in.body);
    // The link reached the address: it counts as verified, and the verification link sent
    // before the password changed is void.
    assert_eq!(signed_in.json()["user"]["email_verified"], true);
    let session = cookie(&signed_in);
    let events = site.get("/api/events", &session).json();
    assert!(
        events["events"]
            .as_array()
            .unwrap()
            .iter()
            .any(|e| e["type"] == "password_reset"),
        "{events}"
    );
    let stale = site.post(
        "/api/auth/verify-email",
        json!({ "token": verify.token("verify").unwrap() }),
        None,
    );
    assert_eq!(code(&stale), (400, "invalid_token".into()));

    // An unknown address gets the same answer and no mail: once the server says it has
    // handled the request, no letter was queued for it.
    let (handled, queued) = (site.metric(RESETS_HANDLED), site.metric(RESETS_QUEUED));
    let unknown = site.post(
        "/api/auth/password-reset",
        json!({ "email": "nobody@example.com" }),
        None,
    );
    assert_eq!((unknown.status, unknown.json()), (202, json!({})));
    site.wait_for_metric(RESETS_HANDLED, handled + 1.0);
    assert_eq!(site.metric(RESETS_QUEUED), queued);
    assert_eq!(sink.received().len(), 3);

    // Throttled per address: five an hour.
    let mut last = None;
    for _ in 0..6 {
        last = Some(site.post(
            "/api/auth/password-reset",
            json!({ "email": "bob@example.com" }),
            None,
        ));
    }
    let last = last.unwrap();
    assert_eq!(code(&last), (429, "too_many_attempts".into()));
    assert!(last.header("retry-after").is_some());
    // Nothing in the log carries a link.
    let (_, log) = site.server.output();
    assert!(!log.contains(&newer) && !log.contains("#reset="), "{log}");
    assert!(log.contains("mail sent"), "{log}");
}

fn verification_flow(backend: Backend) {
    let sink = SmtpSink::start(Duration::ZERO);
    let Some(site) = start(backend, Some(&sink.url()), &[]) else {
        return;
    };
    let session = site.register("vera@example.com");
    let first = next_mail(&sink, 0, "vera@example.com", "Confirm your email address");
    // A resend makes a new link and voids the first.
    let resent = site.post("/api/auth/verify-email/resend", json!({}), Some(&session));
    assert_eq!((resent.status, resent.json()), (202, json!({})));
    let second = next_mail(&sink, 1, "vera@example.com", "Confirm your email address");
    let verify = |token: &str| site.post("/api/auth/verify-email", json!({ "token": token }), None);
    assert_eq!(
        code(&verify(&first.token("verify").unwrap())),
        (400, "invalid_token".into())
    );
    assert_eq!(verify(&second.token("verify").unwrap()).status, 204);
    assert_eq!(
        code(&verify(&second.token("verify").unwrap())),
        (400, "invalid_token".into())
    );
    let me = site.get("/api/auth/me", &session).json();
    assert_eq!(me["user"]["email_verified"], true, "{me}");
    let events = site.get("/api/events", &session).json();
    assert!(events["events"]
        .as_array()
        .unwrap()
        .iter()
        .any(|e| e["type"] == "email_verified"));
    // Verified: a resend is accepted and sends nothing.
    let resent = site.post("/api/auth/verify-email/resend", json!({}), Some(&session));
    assert_eq!(resent.status, 202);
    // Resend needs a session.
    let anonymous = site.post("/api/auth/verify-email/resend", json!({}), None);
    assert_eq!(code(&anonymous), (401, "unauthenticated".into()));
    // A resend hands its letter over before it answers: none was.
    assert_eq!(site.metric(VERIFY_QUEUED), 2.0);
    assert_eq!(sink.received().len(), 2);
}

fn verified_email_required(backend: Backend) {
    let sink = SmtpSink::start(Duration::ZERO);
    let Some(site) = start(
        backend,
        Some(&sink.url()),
        &[("ROCKET_REQUIRE_VERIFIED_EMAIL", "true")],
    ) else {
        return;
    };
    // Registration makes the account and no session: nobody signs in before the address is
    // confirmed, the registrant included (a session would let them add ways in).
    let registered = site.post(
        "/api/auth/register",
        json!({ "email": "rita@example.com", "name": "Ann <Admin>", "password": PASSWORD }),
        None,
    );
    assert_eq!(registered.status, 201, "{}", registered.body);
    assert_eq!(registered.json()["user"]["email_verified"], false);
    assert!(
        registered.json()["session"].is_null(),
        "{}",
        registered.body
    );
    assert!(registered.set_cookies().is_empty());
    let mail = next_mail(&sink, 0, "rita@example.com", "Confirm your email address");
    // A wrong password is 401 first; the right one is 403 with no session.
    assert_eq!(
        code(&site.login("rita@example.com", "wrong password")),
        (401, "invalid_credentials".into())
    );
    let refused = site.login("rita@example.com", PASSWORD);
    assert_eq!(code(&refused), (403, "email_unverified".into()));
    assert!(refused.set_cookies().is_empty());
    let token = mail.token("verify").unwrap();
    assert_eq!(
        site.post("/api/auth/verify-email", json!({ "token": token }), None)
            .status,
        204
    );
    assert_eq!(site.login("rita@example.com", PASSWORD).status, 200);

    // A session made before the setting was turned on (here: by a second server on the same
    // database without it): forward auth does not let its unconfirmed user through either,
    // and says whether the address is confirmed when it does.
    let before = Server::start(
        &site._db.url,
        &[
            ("ROCKET_MAIL_FROM", "latchkey <auth@example.test>"),
            ("ROCKET_PUBLIC_URL", PUBLIC_URL),
            ("ROCKET_SMTP_URL", sink.url().as_str()),
        ],
    );
    let earlier = fetch(
        ureq::post(&format!("{}/api/auth/register", before.base)),
        Some(json!({ "email": "early@example.com", "name": "Early", "password": PASSWORD })),
    );
    assert_eq!(earlier.status, 201, "{}", earlier.body);
    let early = cookie(&earlier);
    let refused = site.get("/api/auth/verify", &early);
    assert_eq!(code(&refused), (403, "email_unverified".into()));
    let rita = cookie(&site.login("rita@example.com", PASSWORD));
    let allowed = site.get("/api/auth/verify", &rita);
    assert_eq!(allowed.status, 200);
    assert_eq!(
        allowed.header("X-Latchkey-User-Email-Verified"),
        Some("true")
    );
}

/// A mail server that refuses connections loses no request; the failure is retried, logged
/// (without the link) and counted.
fn mail_server_down(backend: Backend) {
    let closed = format!("smtp://127.0.0.1:{}", free_port());
    let Some(site) = start(backend, Some(&closed), &[]) else {
        return;
    };
    let started = Instant::now();
    site.register("dora@example.com");
    let answer = site.post(
        "/api/auth/password-reset",
        json!({ "email": "dora@example.com" }),
        None,
    );
    assert_eq!(answer.status, 202);
    assert!(started.elapsed() < Duration::from_secs(5));
    // Four attempts, 1 + 2 + 4 s apart, then it gives up and counts it.
    let deadline = Instant::now() + Duration::from_secs(20);
    let failed = loop {
        let metrics = fetch(ureq::get(&format!("{}/metrics", site.server.base)), None).body;
        let failed: f64 = metrics
            .lines()
            .filter(|l| l.starts_with("latchkey_mail_failed_total"))
            .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
            .sum();
        if failed >= 2.0 || Instant::now() > deadline {
            break failed;
        }
        std::thread::sleep(Duration::from_millis(200));
    };
    assert_eq!(failed, 2.0);
    let (_, log) = site.server.output();
    assert!(
        log.contains("will retry") && log.contains("giving up"),
        "{log}"
    );
    assert!(
        !log.contains("#reset=") && !log.contains("#verify="),
        "{log}"
    );
}

/// A slow mail server delays no answer: the answer comes before the mail is taken.
fn slow_mail_server(backend: Backend) {
    let sink = SmtpSink::start(Duration::from_secs(2));
    let Some(site) = start(backend, Some(&sink.url()), &[]) else {
        return;
    };
    let before = Instant::now();
    site.register("sam@example.com");
    let answered = Instant::now();
    let mail = next_mail(&sink, 0, "sam@example.com", "Confirm your email address");
    assert!(answered < mail.at, "the answer waited for the mail");
    assert!(mail.at.duration_since(before) >= Duration::from_secs(2));
}

fn without_mail_the_endpoints_say_so(backend: Backend) {
    let Some(site) = start(backend, None, &[]) else {
        return;
    };
    let session = site.register("nomail@example.com");
    for (path, body, cookie) in [
        (
            "/api/auth/password-reset",
            json!({ "email": "a@b.co" }),
            None,
        ),
        (
            "/api/auth/password-reset/confirm",
            json!({ "token": "A".repeat(43), "new_password": "long enough" }),
            None,
        ),
        (
            "/api/auth/verify-email",
            json!({ "token": "A".repeat(43) }),
            None,
        ),
        (
            "/api/auth/verify-email/resend",
            json!({}),
            Some(session.as_str()),
        ),
    ] {
        let answer = site.post(path, body, cookie);
        assert_eq!(code(&answer), (503, "service_unavailable".into()), "{path}");
        assert!(answer.json()["error"]["message"]
            .as_str()
            .unwrap()
            .contains("Email is not configured"));
    }
}

on_both_backends!(
    reset_flow,
    verification_flow,
    verified_email_required,
    mail_server_down,
    slow_mail_server,
    without_mail_the_endpoints_say_so
);

#[test]
fn mail_settings_are_checked_at_boot() {
    let server = env!("CARGO_BIN_EXE_latchkey");
    for (env, expected) in [
        (
            vec![("ROCKET_SMTP_URL", "smtp://127.0.0.1:25")],
            "`mail_from` is required with `smtp_url`",
        ),
        (
            vec![
                ("ROCKET_SMTP_URL", "smtp://127.0.0.1:25"),
                ("ROCKET_MAIL_FROM", "auth@example.com"),
            ],
            "`public_url` is required with `smtp_url`",
        ),
        (
            vec![
                ("ROCKET_SMTP_URL", "ftp://127.0.0.1"),
                ("ROCKET_MAIL_FROM", "auth@example.com"),
                ("ROCKET_PUBLIC_URL", "https://a.example"),
            ],
            "`smtp_url` is not a usable SMTP URL",
        ),
        (
            vec![
                ("ROCKET_SMTP_URL", "smtp://127.0.0.1:25"),
                ("ROCKET_MAIL_FROM", "not an address"),
                ("ROCKET_PUBLIC_URL", "https://a.example"),
            ],
            "`mail_from` must be an address",
        ),
        (
            vec![("ROCKET_PUBLIC_URL", "auth.example.com")],
            "`public_url` must be",
        ),
        (
            vec![("ROCKET_REQUIRE_VERIFIED_EMAIL", "true")],
            "`require_verified_email` needs `smtp_url`",
        ),
    ] {
        let dir = std::env::temp_dir().join(format!("latchkey-mailcfg-{}", uuid::Uuid::new_v4()));
        std::fs::create_dir_all(&dir).unwrap();
        let output = std::process::Command::new(server)
            .current_dir(&dir)
            .envs(env.iter().copied())
            .arg("migrate")
            .output()
            .unwrap();
        let _ = std::fs::remove_dir_all(&dir);
        let text = String::from_utf8_lossy(&output.stderr);
        assert_eq!(output.status.code(), Some(2), "{env:?}: {text}");
        assert!(text.contains(expected), "{env:?}: {text}");
    }
}

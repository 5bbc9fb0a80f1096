//! Sign in with OpenID Connect (SPEC §8) through the server binary and a real OpenID provider
//! (`oidc-provider` under Node.js, `tests/oidc/provider.mjs`), both on 127.0.0.1, on both
//! backends: the whole round trip (PKCE, state, nonce, the code exchange, the ID token), the
//! account rules (create, sign in, link only when both sides verified the address), linking
//! and unlinking, a second factor after the provider, accounts without a password, and the
//! failures (wrong state, a replayed callback, denial, a provider down at boot, rotated keys).

mod common;

use std::thread;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use common::oidc::{available, Account, Browser, Page, Provider};
use common::server::{fetch, free_port, Answer, Server};
use common::smtp::SmtpSink;
use common::{Backend, TestDb};
use diesel::prelude::*;
use serde_json::{json, Value};

const PASSWORD: &str = "correct horse battery";
const ID: &str = "test";

fn accounts() -> Vec<Account<'static>> {
    vec![
        Account {
            login: "alice",
            email: "alice@example.test",
            email_verified: true,
        },
        Account {
            login: "dave",
            email: "dave@example.test",
            email_verified: true,
        },
        Account {
            login: "erin",
            email: "erin@example.test",
            email_verified: false,
        },
        Account {
            login: "frank",
            email: "frank@example.test",
            email_verified: false,
        },
        // A provider's claim that registration would refuse: a display-name form that mail
        // would deliver to the address inside the brackets.
        Account {
            login: "mallory",
            email: "x<alice@example.test>",
            email_verified: true,
        },
    ]
}

struct Site {
    server: Server,
    provider: Provider,
    db: TestDb,
}

/// latchkey and the provider, each knowing the other's address. `provider_up: false` starts
/// latchkey with the provider's port closed (the provider is started later, on that port).
fn start(backend: Backend, provider_up: bool) -> Option<(Site, Option<u16>)> {
    start_with(backend, provider_up, &[])
}

/// As [`start`], with more of latchkey's environment.
fn start_with(
    backend: Backend,
    provider_up: bool,
    extra: &[(&str, &str)],
) -> Option<(Site, Option<u16>)> {
    if !available() {
        return None;
    }
    let db = TestDb::new(backend)?;
    let (latchkey_port, provider_port) = (free_port(), free_port());
    let base = format!("http://127.0.0.1:{latchkey_port}");
    // `bad` is the same client with a wrong secret: the provider refuses its code exchange.
    let redirects = [
        format!("{base}/api/auth/oidc/{ID}/callback"),
        format!("{base}/api/auth/oidc/bad/callback"),
    ];
    let launch = |key: &str| Provider::start(provider_port, &redirects, &accounts(), key);
    let issuer = format!("http://127.0.0.1:{provider_port}");
    let providers = format!(
        r#"[{{id="{ID}",name="Test Provider",issuer="{issuer}",client_id="{id}",client_secret="{}"}},
            {{id="bad",name="Wrong Secret",issuer="{issuer}",client_id="{id}",client_secret="not-it"}}]"#,
        common::oidc::CLIENT_SECRET,
        id = common::oidc::CLIENT_ID,
    );
    let provider = if provider_up {
        Some(launch("k1"))
    } else {
        None
    };
    let mut env = vec![
        ("ROCKET_PUBLIC_URL", base.as_str()),
        ("ROCKET_OIDC_PROVIDERS", providers.as_str()),
    ];
    env.extend_from_slice(extra);
    let server = Server::start_on(latchkey_port, &db.url, &env);
    let (provider, later) = match provider {
        Some(p) => (p, None),
        None => {
            // Proved down: the start fails first; then the provider comes up.
            let mut browser = Browser::new();
            let page = browser.get(&format!("{base}/api/auth/oidc/{ID}/start"));
            assert_eq!(page.status, 302);
            assert_eq!(
                page.location.as_deref(),
                Some(format!("{base}/?oidc_error=provider_unavailable").as_str()),
                "{page:?}"
            );
            (launch("k1"), Some(provider_port))
        }
    };
    Some((
        Site {
            server,
            provider,
            db,
        },
        later,
    ))
}

impl Site {
    fn base(&self) -> &str {
        &self.server.base
    }

    fn start_url(&self, query: &str) -> String {
        format!("{}/api/auth/oidc/{ID}/start{query}", self.base())
    }

    /// A new browser signed in at the provider as `login`; returns it and latchkey's answer.
    fn sign_in(&self, login: &str, return_to: &str) -> (Browser, Page) {
        let mut browser = Browser::new();
        let page = browser.sign_in(
            &self.start_url(&format!("?return_to={return_to}")),
            &self.provider,
            login,
        );
        (browser, page)
    }

    fn page(&self, error: &str) -> String {
        format!("{}/?oidc_error={error}", self.base())
    }

    fn call(&self, method: &str, path: &str, body: Option<Value>, cookie: Option<&str>) -> Answer {
        let mut req =
            ureq::request(method, &format!("{}{path}", self.base())).set("Origin", self.base());
        if let Some(cookie) = cookie {
            req = req.set("Cookie", cookie);
        }
        fetch(req, body)
    }

    fn me(&self, browser: &Browser) -> Answer {
        self.call("GET", "/api/auth/me", None, Some(&session_of(browser)))
    }

    fn register(&self, email: &str) -> (String, String) {
        let answer = self.call(
            "POST",
            "/api/auth/register",
            Some(json!({ "email": email, "name": "Reg", "password": PASSWORD })),
            None,
        );
        assert_eq!(answer.status, 201, "{}", answer.body);
        let cookie = answer
            .set_cookies()
            .into_iter()
            .find(|c| c.starts_with("session="))
            .unwrap()
            .split(';')
            .next()
            .unwrap()
            .to_string();
        (
            cookie,
            answer.json()["user"]["id"].as_str().unwrap().to_string(),
        )
    }

    fn query<T>(&self, f: impl FnOnce(&mut latchkey::db::DbConnection) -> QueryResult<T>) -> T {
        latchkey::db::Db::pool_only(&self.db.settings())
            .run_blocking(f)
            .expect("query")
    }

    fn verify_address(&self, email: &str) {
        use latchkey::db::schema::users;
        let email = email.to_string();
        self.query(move |c| {
            diesel::update(users::table.filter(users::email.eq(email)))
                .set(users::email_verified_at.eq(Some(latchkey::clock::system_now())))
                .execute(c)
        });
    }

    fn user_count(&self) -> i64 {
        use latchkey::db::schema::users;
        self.query(|c| users::table.count().get_result(c))
    }

    fn events(&self, cookie: &str) -> Vec<String> {
        let answer = self.call("GET", "/api/events", None, Some(cookie));
        assert_eq!(answer.status, 200, "{}", answer.body);
        answer.json()["events"]
            .as_array()
            .unwrap()
            .iter()
            .map(|e| e["type"].as_str().unwrap().to_string())
            .collect()
    }
}

/// What the browser got from one of latchkey's JSON routes: (status, error code).
fn status_code(page: &Page) -> (u16, String) {
    let body: Value = serde_json::from_str(&page.body).unwrap_or(Value::Null);
    let code = body["error"]["code"].as_str().unwrap_or("").to_string();
    (page.status, code)
}

/// The browser's latchkey session cookie as a `Cookie` header.
fn session_of(browser: &Browser) -> String {
    format!(
        "session={}",
        browser.cookies.get("session").expect("a session cookie")
    )
}

fn signs_in_creates_and_links_accounts(backend: Backend) {
    let Some((site, _)) = start(backend, true) else {
        return;
    };
    let base = site.base().to_string();

    // A new person: an account without a password, its address verified by the provider.
    let (alice, page) = site.sign_in("alice", "/dashboard?tab=2");
    assert_eq!(page.status, 302, "{page:?}");
    assert_eq!(
        page.location.as_deref(),
        Some(format!("{base}/dashboard?tab=2").as_str())
    );
    assert!(
        !alice.cookies.contains_key("session_oidc"),
        "the flow cookie is cleared"
    );
    let me = site.me(&alice);
    assert_eq!(me.status, 200, "{}", me.body);
    let user = me.json()["user"].clone();
    assert_eq!(user["email"], "alice@example.test");
    assert_eq!(user["name"], "alice Example");
    assert_eq!(user["email_verified"], true);
    assert_eq!(user["has_password"], false);
    let events = site.events(&session_of(&alice));
    for kind in ["registered", "identity_linked", "login"] {
        assert!(events.contains(&kind.to_string()), "{kind} in {events:?}");
    }
    let identities = site.call(
        "GET",
        "/api/auth/identities",
        None,
        Some(&session_of(&alice)),
    );
    assert_eq!(identities.status, 200);
    let list = identities.json()["identities"].as_array().unwrap().clone();
    assert_eq!(list.len(), 1);
    assert_eq!(list[0]["provider"], ID);

    // The same person again: the same account, a new session.
    let (again, page) = site.sign_in("alice", "/");
    assert_eq!(page.location.as_deref(), Some(format!("{base}/").as_str()));
    assert_eq!(site.me(&again).json()["user"]["id"], user["id"]);
    assert_ne!(again.cookies["session"], alice.cookies["session"]);

    // An account with the address exists but has not verified it: no link, no session.
    let (_, dave_id) = site.register("dave@example.test");
    site.register("erin@example.test");
    site.verify_address("erin@example.test");
    let users = site.user_count();
    let (dave, page) = site.sign_in("dave", "/");
    assert_eq!(page.location, Some(site.page("link_required")));
    assert!(!dave.cookies.contains_key("session"));
    // Verified on both sides: linked, and signed in to that account.
    site.verify_address("dave@example.test");
    let (dave, page) = site.sign_in("dave", "/");
    assert_eq!(page.status, 302);
    assert_eq!(site.me(&dave).json()["user"]["id"], dave_id.as_str());
    assert_eq!(site.me(&dave).json()["user"]["has_password"], true);

    // The provider has not verified the address: never linked to the existing account, even
    // one whose address is verified.
    let (_, page) = site.sign_in("erin", "/");
    assert_eq!(page.location, Some(site.page("link_required")));
    // Nobody has the address: an account, with the address not verified.
    let (frank, _) = site.sign_in("frank", "/");
    assert_eq!(site.me(&frank).json()["user"]["email_verified"], false);
    assert_eq!(
        site.user_count(),
        users + 1,
        "the refusals created no account"
    );

    // Fixation defence: the session the browser had before is revoked.
    let (old_cookie, _) = site.register("grace@example.test");
    let mut browser = Browser::new();
    let old = old_cookie.trim_start_matches("session=").to_string();
    browser.cookies.insert("session".into(), old.clone());
    browser.sign_in(&site.start_url(""), &site.provider, "alice");
    assert_ne!(browser.cookies["session"], old);
    let replaced = site.call("GET", "/api/auth/me", None, Some(&old_cookie));
    assert_eq!(
        (replaced.status, replaced.code()),
        (401, "unauthenticated".into())
    );
}

fn failures_go_back_to_the_page(backend: Backend) {
    let Some((site, _)) = start(backend, true) else {
        return;
    };
    let users = site.user_count();

    // A wrong state: the callback is refused, and nothing is signed in.
    let mut browser = Browser::new();
    let callback = browser.until_callback(&site.start_url(""), &site.provider, "alice");
    assert!(
        callback.contains("code=") && callback.contains("state="),
        "{callback}"
    );
    let state = callback
        .split("state=")
        .nth(1)
        .unwrap()
        .split('&')
        .next()
        .unwrap()
        .to_string();
    let forged = callback.replace(&state, &latchkey::token::Token::generate().expose());
    let refused = browser.get(&forged);
    assert_eq!(
        refused.location,
        Some(site.page("state_mismatch")),
        "{refused:?}"
    );
    assert!(!browser.cookies.contains_key("session"));
    // An address that registration would refuse is no address: no account is made.
    let before = site.user_count();
    let (mallory, page) = site.sign_in("mallory", "/");
    assert_eq!(page.location, Some(site.page("no_email")), "{page:?}");
    assert!(!mallory.cookies.contains_key("session"));
    assert_eq!(site.user_count(), before);
    // No `state` at all (the flow cookie alone would match itself): refused too.
    let mut stateless = Browser::new();
    let callback = stateless.until_callback(&site.start_url(""), &site.provider, "alice");
    let without: String = callback
        .split(['?', '&'])
        .filter(|part| !part.starts_with("state="))
        .enumerate()
        .map(|(i, part)| match i {
            0 => part.to_string(),
            1 => format!("?{part}"),
            _ => format!("&{part}"),
        })
        .collect();
    assert!(!without.contains("state="), "{without}");
    let refused = stateless.get(&without);
    assert_eq!(
        refused.location,
        Some(site.page("state_mismatch")),
        "{refused:?}"
    );
    assert!(!stateless.cookies.contains_key("session"));

    // The right callback, once: a session. Sent again with the same URL and flow cookie (a
    // replay): the sign-in is over.
    let mut alice = Browser::new();
    let callback = alice.until_callback(&site.start_url(""), &site.provider, "alice");
    let flow_cookie = alice.cookies["session_oidc"].clone();
    let first = alice.get(&callback);
    assert_eq!(
        first.location.as_deref(),
        Some(format!("{}/", site.base()).as_str())
    );
    assert_eq!(site.me(&alice).status, 200);
    let mut replay = Browser::new();
    replay.cookies.insert("session_oidc".into(), flow_cookie);
    let replayed = replay.get(&callback);
    assert_eq!(
        replayed.location,
        Some(site.page("expired")),
        "{replayed:?}"
    );
    assert!(!replay.cookies.contains_key("session"));
    // A callback without the flow cookie (another browser): refused.
    let mut other = Browser::new();
    assert_eq!(
        other.get(&callback).location,
        Some(site.page("state_mismatch"))
    );

    // The provider refuses the code exchange (a wrong client secret): no session.
    let mut browser = Browser::new();
    let start = format!("{}/api/auth/oidc/bad/start", site.base());
    let page = browser.sign_in(&start, &site.provider, "alice");
    assert_eq!(page.location, Some(site.page("token_rejected")), "{page:?}");
    assert!(!browser.cookies.contains_key("session"));

    // The person says no at the provider.
    let mut denied = Browser::new();
    let page = denied.deny(&site.start_url(""), &site.provider);
    assert_eq!(page.location, Some(site.page("denied")), "{page:?}");

    // An unknown provider; linking with nobody signed in.
    let mut browser = Browser::new();
    let page = browser.get(&format!("{}/api/auth/oidc/nope/start", site.base()));
    assert_eq!(page.location, Some(site.page("unknown_provider")));
    let page = browser.get(&site.start_url("?link=1"));
    assert_eq!(page.location, Some(site.page("signin_required")));

    // return_to elsewhere goes to this origin's root.
    let (_, page) = site.sign_in("alice", "https://evil.example/");
    assert_eq!(
        page.location.as_deref(),
        Some(format!("{}/", site.base()).as_str())
    );
    let (_, page) = site.sign_in("alice", "//evil.example/");
    assert_eq!(
        page.location.as_deref(),
        Some(format!("{}/", site.base()).as_str())
    );

    assert_eq!(
        site.user_count(),
        users + 1,
        "only alice's account was made"
    );
    let providers = site.call("GET", "/api/auth/oidc/providers", None, None);
    assert_eq!(
        providers.json(),
        json!({ "providers": [
            { "id": ID, "name": "Test Provider" },
            { "id": "bad", "name": "Wrong Secret" },
        ] })
    );
}

fn provider_down_at_boot_and_keys_rotated(backend: Backend) {
    let Some((mut site, port)) = start(backend, false) else {
        return;
    };
    // latchkey booted without the provider and serves password sign-in meanwhile.
    let (cookie, _) = site.register("hal@example.test");
    assert_eq!(
        site.call("GET", "/api/auth/me", None, Some(&cookie)).status,
        200
    );
    // The provider is up now: sign-in with it works (discovered on demand).
    let (alice, page) = site.sign_in("alice", "/");
    assert_eq!(page.status, 302, "{page:?}");
    assert_eq!(site.me(&alice).status, 200);
    // The provider restarts with a new signing key: latchkey's kept key set does not have
    // its id, so it fetches the keys again and the sign-in still works.
    site.provider.stop();
    let redirect = format!("{}/api/auth/oidc/{ID}/callback", site.base());
    site.provider = Provider::start(port.unwrap(), &[redirect], &accounts(), "k2");
    let (alice, page) = site.sign_in("alice", "/");
    assert_eq!(
        page.location.as_deref(),
        Some(format!("{}/", site.base()).as_str()),
        "{page:?}"
    );
    assert_eq!(site.me(&alice).status, 200);
}

fn linking_and_unlinking(backend: Backend) {
    let Some((site, _)) = start(backend, true) else {
        return;
    };
    // A password account links the provider from the page (start?link=1, signed in).
    let (cookie, user_id) = site.register("ivan@example.test");
    let mut browser = Browser::new();
    browser.cookies.insert(
        "session".into(),
        cookie.trim_start_matches("session=").into(),
    );
    let page = browser.sign_in(
        &site.start_url("?link=1&return_to=/settings"),
        &site.provider,
        "ivan",
    );
    assert_eq!(
        page.location.as_deref(),
        Some(format!("{}/settings", site.base()).as_str()),
        "{page:?}"
    );
    assert_eq!(
        browser.cookies["session"],
        cookie.trim_start_matches("session="),
        "same session"
    );
    assert!(site
        .events(&cookie)
        .contains(&"identity_linked".to_string()));
    // Now the provider signs in to that account.
    let (ivan, _) = site.sign_in("ivan", "/");
    assert_eq!(site.me(&ivan).json()["user"]["id"], user_id.as_str());

    // Another account cannot link an identity that is linked already.
    let (other, _) = site.register("judy@example.test");
    let mut judy = Browser::new();
    judy.cookies.insert(
        "session".into(),
        other.trim_start_matches("session=").into(),
    );
    let page = judy.sign_in(&site.start_url("?link=1"), &site.provider, "ivan");
    assert_eq!(page.location, Some(site.page("identity_taken")));

    // Unlinking: 204, the other sessions signed out (ivan's provider session among them).
    let list = site
        .call("GET", "/api/auth/identities", None, Some(&cookie))
        .json();
    let id = list["identities"][0]["id"].as_str().unwrap().to_string();
    let gone = site.call(
        "DELETE",
        &format!("/api/auth/identities/{id}"),
        None,
        Some(&cookie),
    );
    assert_eq!(gone.status, 204, "{}", gone.body);
    let unlinked = site.me(&ivan);
    assert_eq!(
        (unlinked.status, unlinked.code()),
        (401, "unauthenticated".into())
    );
    assert_eq!(
        site.call("GET", "/api/auth/me", None, Some(&cookie)).status,
        200
    );
    let again = site.call(
        "DELETE",
        &format!("/api/auth/identities/{id}"),
        None,
        Some(&cookie),
    );
    assert_eq!((again.status, again.code()), (404, "not_found".into()));
    // With the link gone, the provider no longer signs in to the account (its address is not
    // verified, so it does not link again either).
    let (_, page) = site.sign_in("ivan", "/");
    assert_eq!(page.location, Some(site.page("link_required")));

    // An account without a password keeps its last provider.
    let (alice, _) = site.sign_in("alice", "/");
    let session = session_of(&alice);
    let list = site
        .call("GET", "/api/auth/identities", None, Some(&session))
        .json();
    let id = list["identities"][0]["id"].as_str().unwrap().to_string();
    let refused = site.call(
        "DELETE",
        &format!("/api/auth/identities/{id}"),
        None,
        Some(&session),
    );
    assert_eq!(refused.status, 409);
    assert_eq!(refused.code(), "last_sign_in_method");
}

fn without_a_password(backend: Backend) {
    let Some((site, _)) = start(backend, true) else {
        return;
    };
    let (alice, _) = site.sign_in("alice", "/");
    let session = session_of(&alice);
    // No password to sign in with.
    let login = site.call(
        "POST",
        "/api/auth/login",
        Some(json!({ "email": "alice@example.test", "password": PASSWORD })),
        None,
    );
    assert_eq!(
        (login.status, login.code()),
        (401, "invalid_credentials".into())
    );
    // A fresh provider sign-in stands in for the current password: a password can be set.
    let set = site.call(
        "POST",
        "/api/auth/password",
        Some(json!({ "new_password": PASSWORD })),
        Some(&session),
    );
    assert_eq!(set.status, 204, "{}", set.body);
    let login = site.call(
        "POST",
        "/api/auth/login",
        Some(json!({ "email": "alice@example.test", "password": PASSWORD })),
        None,
    );
    assert_eq!(login.status, 200, "{}", login.body);
    assert_eq!(login.json()["user"]["has_password"], true);

    // Another account without a password, whose session is older than ten minutes: it must
    // sign in again first.
    let (frank, _) = site.sign_in("frank", "/");
    let session = session_of(&frank);
    {
        use latchkey::db::schema::sessions;
        let an_hour_ago = latchkey::clock::system_now() - chrono::Duration::hours(1);
        site.query(move |c| {
            diesel::update(sessions::table)
                .set(sessions::created_at.eq(an_hour_ago))
                .execute(c)
        });
    }
    let refused = site.call(
        "DELETE",
        "/api/auth/account",
        Some(json!({})),
        Some(&session),
    );
    assert_eq!(refused.status, 403, "{}", refused.body);
    assert_eq!(refused.code(), "reauthentication_required");
    let (frank, _) = site.sign_in("frank", "/");
    let deleted = site.call(
        "DELETE",
        "/api/auth/account",
        Some(json!({})),
        Some(&session_of(&frank)),
    );
    assert_eq!(deleted.status, 204, "{}", deleted.body);
}

fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

fn code_now(secret: &[u8]) -> String {
    while unix_now() % 30 > 25 {
        thread::sleep(Duration::from_millis(200));
    }
    totp_rs::TOTP::new_unchecked(
        totp_rs::Algorithm::SHA1,
        6,
        1,
        30,
        secret.to_vec(),
        None,
        String::new(),
    )
    .generate(unix_now())
}

fn second_factor_after_the_provider(backend: Backend) {
    let Some((site, _)) = start(backend, true) else {
        return;
    };
    // dave: a password account with a verified address and two-factor sign-in on.
    let (cookie, dave_id) = site.register("dave@example.test");
    site.verify_address("dave@example.test");
    let begun = site.call(
        "POST",
        "/api/auth/mfa/totp",
        Some(json!({ "password": PASSWORD })),
        Some(&cookie),
    );
    assert_eq!(begun.status, 200, "{}", begun.body);
    let secret = base32::decode(
        base32::Alphabet::Rfc4648 { padding: false },
        begun.json()["secret"].as_str().unwrap(),
    )
    .unwrap();
    let confirmed = site.call(
        "POST",
        "/api/auth/mfa/totp/confirm",
        Some(json!({ "code": code_now(&secret) })),
        Some(&cookie),
    );
    assert_eq!(confirmed.status, 200, "{}", confirmed.body);
    let recovery = confirmed.json()["recovery_codes"][0]
        .as_str()
        .unwrap()
        .to_string();

    // The provider signs in, and the page asks for the code: no session until it is given.
    let (mut dave, page) = site.sign_in("dave", "/after");
    assert_eq!(
        page.location.as_deref(),
        Some(format!("{}/?oidc=code", site.base()).as_str()),
        "{page:?}"
    );
    assert!(!dave.cookies.contains_key("session"));
    assert!(dave.cookies.contains_key("session_oidc"));
    let wrong = dave.post_json(
        site.base(),
        "/api/auth/oidc/code",
        json!({ "code": "000000" }),
    );
    assert_eq!(
        status_code(&wrong),
        (401, "invalid_credentials".into()),
        "{}",
        wrong.body
    );
    assert!(wrong.body.contains("code"), "{}", wrong.body);
    assert!(!dave.cookies.contains_key("session"));
    let right = dave.post_json(
        site.base(),
        "/api/auth/oidc/code",
        json!({ "code": recovery }),
    );
    assert_eq!(right.status, 200, "{}", right.body);
    let body: Value = serde_json::from_str(&right.body).unwrap();
    assert_eq!(body["return_to"], "/after");
    assert_eq!(body["user"]["id"], dave_id.as_str());
    assert_eq!(site.me(&dave).status, 200);
    assert!(!dave.cookies.contains_key("session_oidc"));
    let events = site.events(&session_of(&dave));
    assert!(
        events.contains(&"recovery_code_used".to_string()),
        "{events:?}"
    );
    // The flow is spent: the same code step again is refused.
    let mut stale = Browser::new();
    stale.cookies.insert("session_oidc".into(), "x".repeat(43));
    let again = stale.post_json(
        site.base(),
        "/api/auth/oidc/code",
        json!({ "code": "123456" }),
    );
    assert_eq!(
        status_code(&again),
        (401, "invalid_token".into()),
        "{}",
        again.body
    );
}

/// The pre-hijacked account class (issue 28): someone makes an account with another person's
/// address before they do. Whoever proves the mailbox must get an account with no way in that
/// they did not set up: with mail on, nothing can be attached to an unverified account, and a
/// reset of an unverified account removes every way in but the new password.
fn pre_hijacked_accounts_go_to_the_mailbox_owner(backend: Backend) {
    let sink = SmtpSink::start(Duration::ZERO);
    let smtp = sink.url();
    let mail = [
        ("ROCKET_SMTP_URL", smtp.as_str()),
        ("ROCKET_MAIL_FROM", "latchkey <auth@example.test>"),
    ];
    let Some((site, _)) = start_with(backend, true, &mail) else {
        return;
    };
    // The attacker registers the victim's address (dave@…) and tries to add their own ways in:
    // a provider account of theirs (erin) and a second factor. Both are refused.
    let (squatter, victim_id) = site.register("dave@example.test");
    let mut attacker = Browser::new();
    attacker.cookies.insert(
        "session".into(),
        squatter.trim_start_matches("session=").into(),
    );
    let page = attacker.get(&site.start_url("?link=1"));
    assert_eq!(page.location, Some(site.page("verify_first")), "{page:?}");
    let totp = site.call(
        "POST",
        "/api/auth/mfa/totp",
        Some(json!({ "password": PASSWORD })),
        Some(&squatter),
    );
    assert_eq!((totp.status, totp.code()), (403, "email_unverified".into()));
    // What could have been attached before mail was turned on: the attacker's provider
    // account linked, and a second factor on. The attacker signs in with that provider.
    let (issuer, victim) = (site.provider.issuer.clone(), victim_id.clone());
    site.query(move |c| {
        let id = latchkey::domain::UserId::from(victim);
        let now = latchkey::clock::system_now();
        latchkey::db::models::Identity::link(c, &id, ID, &issuer, "erin", now)
    });
    let (before, _) = site.sign_in("erin", "/");
    assert_eq!(site.me(&before).json()["user"]["id"], victim_id.as_str());
    site.query(|c| {
        use latchkey::db::schema::users;
        let now = latchkey::clock::system_now();
        diesel::update(users::table.filter(users::email.eq("dave@example.test")))
            .set(users::mfa_enabled_at.eq(Some(now)))
            .execute(c)
    });

    // The owner of the mailbox resets the password.
    let reset = |email: &str, seen: usize| {
        let asked = site.call(
            "POST",
            "/api/auth/password-reset",
            Some(json!({ "email": email })),
            None,
        );
        assert_eq!(asked.status, 202, "{}", asked.body);
        let received = sink.wait_for(seen + 1, Duration::from_secs(10));
        assert_eq!(received.len(), seen + 1, "the reset mail");
        let token = received[seen].token("reset").expect("a reset link");
        let confirmed = site.call(
            "POST",
            "/api/auth/password-reset/confirm",
            Some(json!({ "token": token, "new_password": "the owner's own pw" })),
            None,
        );
        assert_eq!(confirmed.status, 204, "{}", confirmed.body);
    };
    let seen = sink.received().len();
    reset("dave@example.test", seen);

    // Every session is gone, and so is every way in the owner did not set up.
    let providers = site.me(&before);
    assert_eq!(
        (providers.status, providers.code()),
        (401, "unauthenticated".into())
    );
    let squatters = site.call("GET", "/api/auth/me", None, Some(&squatter));
    assert_eq!(
        (squatters.status, squatters.code()),
        (401, "unauthenticated".into())
    );
    // The attacker's provider account now makes an account of its own (its own address),
    // neither the owner's account nor a second-factor step of it.
    let (after, page) = site.sign_in("erin", "/");
    assert!(after.cookies.contains_key("session"), "{page:?}");
    let erin = site.me(&after).json()["user"].clone();
    assert_ne!(erin["id"], victim_id.as_str());
    assert_eq!(erin["email"], "erin@example.test");
    let login = site.call(
        "POST",
        "/api/auth/login",
        Some(json!({ "email": "dave@example.test", "password": "the owner's own pw" })),
        None,
    );
    assert_eq!(login.status, 200, "no second factor asked: {}", login.body);
    let owner = login.session_pair();
    assert_eq!(login.json()["user"]["mfa_enabled"], false);
    assert_eq!(login.json()["user"]["email_verified"], true);
    let identities = site.call("GET", "/api/auth/identities", None, Some(&owner));
    assert_eq!(identities.json()["identities"], json!([]));
    let events = site.events(&owner);
    for kind in ["identity_unlinked", "mfa_disabled", "password_reset"] {
        assert!(events.contains(&kind.to_string()), "{kind} in {events:?}");
    }
    // Once the address is verified, the owner may add ways in.
    let totp = site.call(
        "POST",
        "/api/auth/mfa/totp",
        Some(json!({ "password": "the owner's own pw" })),
        Some(&owner),
    );
    assert_eq!(totp.status, 200, "{}", totp.body);

    // A provider account claiming an address it has not verified (frank) gets an account
    // with it; the address's owner cannot register, resets, and the squatter's provider no
    // longer signs in to it.
    let (frank, _) = site.sign_in("frank", "/");
    let squatted = site.me(&frank).json()["user"]["id"].clone();
    assert_eq!(site.me(&frank).json()["user"]["email_verified"], false);
    // Nor can the squatter give that account a password of its own.
    let first = site.call(
        "POST",
        "/api/auth/password",
        Some(json!({ "new_password": "the squatter's pw" })),
        Some(&session_of(&frank)),
    );
    assert_eq!(
        (first.status, first.code()),
        (403, "email_unverified".into()),
        "{}",
        first.body
    );
    let taken = site.call(
        "POST",
        "/api/auth/register",
        Some(json!({ "email": "frank@example.test", "name": "F", "password": PASSWORD })),
        None,
    );
    assert_eq!((taken.status, taken.code()), (409, "email_taken".into()));
    reset("frank@example.test", sink.received().len());
    let ended = site.me(&frank);
    assert_eq!(
        (ended.status, ended.code()),
        (401, "unauthenticated".into())
    );
    let (again, page) = site.sign_in("frank", "/");
    assert_eq!(page.location, Some(site.page("link_required")), "{page:?}");
    assert!(!again.cookies.contains_key("session"));
    let login = site.call(
        "POST",
        "/api/auth/login",
        Some(json!({ "email": "frank@example.test", "password": "the owner's own pw" })),
        None,
    );
    assert_eq!(login.status, 200, "{}", login.body);
    assert_eq!(login.json()["user"]["id"], squatted);
}

on_both_backends!(
    pre_hijacked_accounts_go_to_the_mailbox_owner,
    a_stalled_provider_stalls_nothing_else,
    signs_in_creates_and_links_accounts,
    failures_go_back_to_the_page,
    provider_down_at_boot_and_keys_rotated,
    linking_and_unlinking,
    without_a_password,
    second_factor_after_the_provider,
);

/// A provider that takes connections and never answers holds up nothing but its own
/// sign-ins: provider calls are bounded (8 at once, one discovery at a time per provider), so
/// a burst of starts goes back to the page quickly with `provider_unavailable` while password
/// sign-ins go on being answered.
fn a_stalled_provider_stalls_nothing_else(backend: Backend) {
    let Some(db) = TestDb::new(backend) else {
        return;
    };
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let stalled = listener.local_addr().unwrap().port();
    thread::spawn(move || {
        let mut held = Vec::new();
        for stream in listener.incoming().flatten() {
            held.push(stream);
        }
    });
    let providers = format!(
        r#"[{{id="{ID}",name="Stalled",issuer="http://127.0.0.1:{stalled}",client_id="c",client_secret="s"}}]"#
    );
    let port = free_port();
    let base = format!("http://127.0.0.1:{port}");
    let server = Server::start_on(
        port,
        &db.url,
        &[
            ("ROCKET_PUBLIC_URL", base.as_str()),
            ("ROCKET_OIDC_PROVIDERS", providers.as_str()),
            // A small blocking pool (the default is 512), shared by database calls and
            // provider calls: provider calls must not be able to take it all.
            ("ROCKET_MAX_BLOCKING", "16"),
        ],
    );
    let registered = fetch(
        ureq::post(&format!("{base}/api/auth/register")),
        Some(json!({ "email": "patient@example.test", "name": "P", "password": PASSWORD })),
    );
    assert_eq!(registered.status, 201, "{}", registered.body);
    let starts: Vec<_> = (0..24)
        .map(|_| {
            let url = format!("{base}/api/auth/oidc/{ID}/start");
            thread::spawn(move || Browser::new().get(&url))
        })
        .collect();
    // Meanwhile, password sign-ins are answered (a 503 would mean the database's threads or
    // connections were taken).
    for _ in 0..6 {
        let answer = fetch(
            ureq::post(&format!("{}/api/auth/token", server.base)),
            Some(json!({ "email": "patient@example.test", "password": PASSWORD })),
        );
        assert_eq!(answer.status, 200, "{}", answer.body);
    }
    let expected = format!("{base}/?oidc_error=provider_unavailable");
    for start in starts {
        let page = start.join().unwrap();
        assert_eq!(
            page.location.as_deref(),
            Some(expected.as_str()),
            "{page:?}"
        );
    }
}

/// Configuration mistakes stop the server at boot with one line (exit 2).
#[test]
fn providers_need_public_url_and_a_usable_issuer() {
    let dir = std::env::temp_dir().join(format!(
        "latchkey-oidc-cfg-{}",
        uuid::Uuid::new_v4().simple()
    ));
    std::fs::create_dir_all(&dir).unwrap();
    let run = |env: &[(&str, &str)]| {
        let mut cmd = std::process::Command::new(common::server::SERVER);
        cmd.current_dir(&dir).env("DATABASE_URL", "sqlite://cfg.db");
        for (k, v) in env {
            cmd.env(k, v);
        }
        cmd.output().unwrap()
    };
    let good = r#"[{id="corp",name="Corp",issuer="https://id.example.com",client_id="c",client_secret="s"}]"#;
    let out = run(&[("ROCKET_OIDC_PROVIDERS", good)]);
    assert_eq!(out.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("`public_url` is required with `oidc_providers`"),
        "{stderr}"
    );
    let plain = r#"[{id="corp",name="Corp",issuer="http://id.example.com",client_id="c"}]"#;
    let out = run(&[
        ("ROCKET_OIDC_PROVIDERS", plain),
        ("ROCKET_PUBLIC_URL", "https://auth.example.com"),
    ]);
    assert_eq!(out.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("oidc_providers[0].issuer"), "{stderr}");
    assert!(
        !stderr.contains("client_secret=") && !stderr.contains("\"s\""),
        "{stderr}"
    );
    let _ = std::fs::remove_dir_all(&dir);
}

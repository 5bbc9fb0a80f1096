//! A real OpenID provider for the sign-in tests (`tests/oidc/provider.mjs`: the npm package
//! `oidc-provider` under Node.js, on 127.0.0.1), and a small browser for the round trip: a
//! cookie jar, redirects followed by hand, the provider's sign-in form filled in.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::thread;
use std::time::{Duration, Instant};

use serde_json::Value;

use super::server::installed;

pub const CLIENT_ID: &str = "latchkey-test";
pub const CLIENT_SECRET: &str = "a-client-secret-for-tests";

fn provider_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/oidc")
}

/// Whether the provider can run: Node.js is there (else the test skips, or fails in CI), and
/// its package is installed (`npm ci` in `tests/oidc`, run here once when it is not).
pub fn available() -> bool {
    if !installed("node", "nodejs") || !installed("npm", "npm") {
        return false;
    }
    static INSTALL: std::sync::Once = std::sync::Once::new();
    INSTALL.call_once(|| {
        let dir = provider_dir();
        if dir.join("node_modules/oidc-provider").exists() {
            return;
        }
        // Several test threads may get here; a lock file keeps one `npm ci` at a time.
        let status = Command::new("sh")
            .current_dir(&dir)
            .args([
                "-c",
                "flock .npm-ci.lock sh -c '[ -d node_modules/oidc-provider ] || npm ci --no-audit --no-fund --loglevel=error'",
            ])
            .status()
            .expect("run npm ci");
        assert!(status.success(), "npm ci in tests/oidc failed");
    });
    true
}

/// One account at the provider: the login typed into its form is the subject.
pub struct Account<'a> {
    pub login: &'a str,
    pub email: &'a str,
    pub email_verified: bool,
}

pub struct Provider {
    child: Child,
    pub port: u16,
    pub issuer: String,
    log: PathBuf,
}

impl Provider {
    /// Starts the provider on `port` with a new signing key named `key_id`, and waits for its
    /// discovery document.
    pub fn start(
        port: u16,
        redirect_uris: &[String],
        accounts: &[Account<'_>],
        key_id: &str,
    ) -> Provider {
        let accounts: BTreeMap<&str, Value> = accounts
            .iter()
            .map(|a| {
                (
                    a.login,
                    serde_json::json!({
                        "email": a.email,
                        "email_verified": a.email_verified,
                        "name": format!("{} Example", a.login),
                    }),
                )
            })
            .collect();
        let log = std::env::temp_dir().join(format!(
            "latchkey-oidc-{}.log",
            uuid::Uuid::new_v4().simple()
        ));
        let child = Command::new("node")
            .arg(provider_dir().join("provider.mjs"))
            .env("PORT", port.to_string())
            .env("CLIENT_ID", CLIENT_ID)
            .env("CLIENT_SECRET", CLIENT_SECRET)
            .env("REDIRECT_URIS", redirect_uris.join(","))
            .env("KEY_ID", key_id)
            .env("ACCOUNTS", serde_json::to_string(&accounts).unwrap())
            .stdin(Stdio::null())
            .stdout(std::fs::File::create(&log).unwrap())
            .stderr(Stdio::null())
            .spawn()
            .expect("start node");
        let issuer = format!("http://127.0.0.1:{port}");
        let mut provider = Provider {
            child,
            port,
            issuer,
            log,
        };
        let deadline = Instant::now() + Duration::from_secs(30);
        let discovery = format!("{}/.well-known/openid-configuration", provider.issuer);
        while ureq::get(&discovery).call().is_err() {
            if let Some(status) = provider.child.try_wait().unwrap() {
                panic!(
                    "the OpenID provider exited ({status}): {}",
                    std::fs::read_to_string(&provider.log).unwrap_or_default()
                );
            }
            assert!(
                Instant::now() < deadline,
                "the OpenID provider did not come up"
            );
            thread::sleep(Duration::from_millis(50));
        }
        provider
    }

    pub fn stop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for Provider {
    fn drop(&mut self) {
        self.stop();
        let _ = std::fs::remove_file(&self.log);
    }
}

/// One answer, as the browser saw it.
#[derive(Debug)]
pub struct Page {
    pub url: String,
    pub status: u16,
    pub location: Option<String>,
    pub body: String,
}

/// A browser for one person: every cookie of 127.0.0.1 (all ports share them, as in a real
/// browser), and redirects followed one at a time.
pub struct Browser {
    agent: ureq::Agent,
    pub cookies: BTreeMap<String, String>,
}

impl Default for Browser {
    fn default() -> Self {
        Browser::new()
    }
}

impl Browser {
    pub fn new() -> Browser {
        Browser {
            agent: ureq::AgentBuilder::new()
                .redirects(0)
                .timeout(Duration::from_secs(20))
                .build(),
            cookies: BTreeMap::new(),
        }
    }

    fn cookie_header(&self) -> String {
        self.cookies
            .iter()
            .map(|(k, v)| format!("{k}={v}"))
            .collect::<Vec<_>>()
            .join("; ")
    }

    fn keep_cookies(&mut self, response: &ureq::Response) {
        for set in response.all("set-cookie") {
            let pair = set.split(';').next().unwrap_or("");
            let Some((name, value)) = pair.split_once('=') else {
                continue;
            };
            let lower = set.to_ascii_lowercase();
            let removed = value.is_empty()
                || lower.contains("max-age=0")
                || lower.contains("expires=thu, 01 jan 1970");
            if removed {
                self.cookies.remove(name.trim());
            } else {
                self.cookies
                    .insert(name.trim().to_string(), value.trim().to_string());
            }
        }
    }

    fn answer(&mut self, url: &str, result: Result<ureq::Response, ureq::Error>) -> Page {
        let response = match result {
            Ok(r) | Err(ureq::Error::Status(_, r)) => r,
            Err(e) => panic!("{url}: {e}"),
        };
        self.keep_cookies(&response);
        let status = response.status();
        let location = response.header("location").map(|l| absolute(url, l));
        let body = response.into_string().unwrap_or_default();
        Page {
            url: url.to_string(),
            status,
            location,
            body,
        }
    }

    pub fn get(&mut self, url: &str) -> Page {
        let mut req = self.agent.get(url);
        if !self.cookies.is_empty() {
            req = req.set("Cookie", &self.cookie_header());
        }
        let result = req.call();
        self.answer(url, result)
    }

    pub fn post_form(&mut self, url: &str, fields: &[(&str, &str)]) -> Page {
        let mut req = self.agent.post(url);
        if !self.cookies.is_empty() {
            req = req.set("Cookie", &self.cookie_header());
        }
        let result = req.send_form(fields);
        self.answer(url, result)
    }

    /// A JSON request to latchkey with this browser's cookies and an Origin of `base`.
    pub fn post_json(&mut self, base: &str, path: &str, body: Value) -> Page {
        let url = format!("{base}{path}");
        let mut req = self.agent.post(&url).set("Origin", base);
        if !self.cookies.is_empty() {
            req = req.set("Cookie", &self.cookie_header());
        }
        let result = req.send_json(body);
        self.answer(&url, result)
    }

    /// Goes to `url` and on through the redirects; at the provider's sign-in form, signs in
    /// as `login` (or, with `deny`, aborts there). Returns the first answer from outside the
    /// provider that is not a redirect into it: latchkey's answer to the callback.
    pub fn sign_in(&mut self, url: &str, provider: &Provider, login: &str) -> Page {
        self.through_provider(url, provider, Some(login), true)
    }

    /// As [`Browser::sign_in`], but says no at the provider's form.
    pub fn deny(&mut self, url: &str, provider: &Provider) -> Page {
        self.through_provider(url, provider, None, true)
    }

    /// As [`Browser::sign_in`], but stops before the callback: returns its URL.
    pub fn until_callback(&mut self, url: &str, provider: &Provider, login: &str) -> String {
        let page = self.through_provider(url, provider, Some(login), false);
        page.location
            .expect("the provider's redirect to the callback")
    }

    fn through_provider(
        &mut self,
        url: &str,
        provider: &Provider,
        login: Option<&str>,
        follow_back: bool,
    ) -> Page {
        let mut page = self.get(url);
        for _ in 0..20 {
            let at_provider = page.url.starts_with(&provider.issuer);
            if let Some(next) = page.location.clone() {
                let to_provider = next.starts_with(&provider.issuer);
                match (at_provider, to_provider) {
                    // The provider sends the browser back: latchkey's callback answers.
                    (true, false) if follow_back => return self.get(&next),
                    (true, false) => return page,
                    (_, true) => {
                        page = self.get(&next);
                        continue;
                    }
                    // latchkey sent it somewhere else (its page, with an error).
                    (false, false) => return page,
                }
            }
            if at_provider && page.status == 200 && page.body.contains("name=\"login\"") {
                let action = form_action(&page.body).expect("the form's action");
                let action = absolute(&page.url, &action);
                page = match login {
                    Some(login) => self.post_form(
                        &action,
                        &[("prompt", "login"), ("login", login), ("password", "any")],
                    ),
                    None => self.get(&format!("{action}/abort")),
                };
                continue;
            }
            return page;
        }
        panic!("too many redirects from {url}");
    }
}

/// The first form's `action` in an HTML page.
fn form_action(html: &str) -> Option<String> {
    let start = html.find("action=\"")? + "action=\"".len();
    let end = html[start..].find('"')? + start;
    Some(html[start..end].replace("&amp;", "&"))
}

/// A `Location` made absolute against the URL it came from.
fn absolute(from: &str, location: &str) -> String {
    if location.starts_with("http://") || location.starts_with("https://") {
        return location.to_string();
    }
    let origin_end = from
        .match_indices('/')
        .nth(2)
        .map_or(from.len(), |(i, _)| i);
    format!("{}{location}", &from[..origin_end])
}

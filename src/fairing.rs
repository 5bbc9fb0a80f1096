//! [`Latchkey`]: the fairing that puts latchkey inside a Rocket application. At ignite it reads
//! the configuration from the application's Figment, connects, applies migrations, manages the
//! state the guards and routes need, mounts the JSON API under `/api` and registers its
//! catchers there. On each response it marks what latchkey answered or authenticated as
//! `no-store`, and clears a stale session cookie. It takes nothing else.

use std::sync::{Arc, OnceLock};

use rocket::fairing::{self, Fairing, Info, Kind};
use rocket::figment::Figment;
use rocket::http::Header;
use rocket::{Build, Request, Response, Rocket};

use crate::api;
use crate::auth::guard::{self, Authenticator};
use crate::auth::lookup::SessionLookup;
use crate::auth::AuthError;
use crate::config::{self, ConfigError, Settings};
use crate::db::Db;
use crate::metrics::Metrics;
use crate::signin::SignIn;

/// Why the fairing refused to launch.
#[derive(Debug, Clone)]
pub enum BootError {
    /// A configuration key has a value latchkey cannot use.
    Config(ConfigError),
    /// The database cannot be reached or migrated.
    Database(String),
}

impl std::fmt::Display for BootError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            BootError::Config(e) => e.fmt(f),
            BootError::Database(e) => write!(f, "database (`database_url`): {e}"),
        }
    }
}

impl std::error::Error for BootError {}

/// Where latchkey mounts its JSON API and registers its catchers.
pub const API_BASE: &str = "/api";

/// The latchkey fairing. `rocket::build().attach(Latchkey::fairing())` is all an application
/// needs; then [`crate::CurrentSession`] and [`crate::AdminUser`] work as request guards in
/// its own routes and `&State<latchkey::Db>` runs its own queries on latchkey's pool.
pub struct Latchkey {
    settings: Option<Settings>,
    boot: Arc<OnceLock<BootError>>,
}

/// Reports why a launch failed in the fairing (for a binary that wants its own exit code).
#[derive(Clone)]
pub struct BootWatch(Arc<OnceLock<BootError>>);

impl BootWatch {
    /// The failure, if the fairing's ignite failed.
    pub fn failure(&self) -> Option<&BootError> {
        self.0.get()
    }
}

impl Latchkey {
    /// Configuration from the application's Figment (`Rocket.toml` and `ROCKET_*`, plus the
    /// plain variables `DATABASE_URL` and `CRON_SECRET`), with the keys of docs/configuration.md.
    pub fn fairing() -> Latchkey {
        Latchkey {
            settings: None,
            boot: Arc::default(),
        }
    }

    /// Configuration built in code instead (tests, or an application with its own source).
    pub fn with_settings(settings: Settings) -> Latchkey {
        Latchkey {
            settings: Some(settings),
            boot: Arc::default(),
        }
    }

    /// A handle that tells, after a failed launch, what the fairing refused.
    pub fn boot_watch(&self) -> BootWatch {
        BootWatch(self.boot.clone())
    }

    // Rocket's own fairing result type: the large `Err` is Rocket's choice.
    #[allow(clippy::result_large_err)]
    fn refuse(&self, rocket: Rocket<Build>, error: BootError) -> fairing::Result {
        // One line on stderr, whatever logger the application has (or none).
        eprintln!("latchkey: {error}");
        let _ = self.boot.set(error);
        Err(rocket)
    }
}

/// Rocket trusts `X-Real-IP` by default, which any client can forge: unless the application
/// configured `ip_header` itself, the client IP comes from the socket.
fn without_default_ip_header(figment: &Figment) -> Option<Figment> {
    let from_default = figment
        .find_metadata("ip_header")
        .is_none_or(|m| m.name.starts_with("rocket::Config"));
    from_default.then(|| figment.clone().merge(("ip_header", false)))
}

#[rocket::async_trait]
impl Fairing for Latchkey {
    fn info(&self) -> Info {
        Info {
            name: "latchkey",
            kind: Kind::Ignite | Kind::Response,
        }
    }

    async fn on_ignite(&self, mut rocket: Rocket<Build>) -> fairing::Result {
        if let Some(figment) = without_default_ip_header(rocket.figment()) {
            rocket = rocket.configure(figment);
        }
        let settings = match &self.settings {
            Some(settings) => Ok(settings.clone()),
            None => Settings::from_figment(&config::with_plain_variables(rocket.figment())),
        };
        let settings = match settings {
            Ok(settings) => settings,
            Err(e) => return self.refuse(rocket, BootError::Config(e)),
        };
        if !settings.cookie_secure {
            // Loud in every profile: only the debug profile has this as its default.
            let profile = rocket.figment().profile().to_string();
            if settings.debug_profile {
                tracing::warn!(
                    profile,
                    "session cookies are sent without Secure (the debug profile's default, for \
                     localhost); every other profile sends them Secure"
                );
            } else {
                tracing::warn!(
                    profile,
                    "cookie_secure is off: session cookies will be sent over plain HTTP"
                );
            }
        }
        if settings.mfa_key.is_none() && !settings.debug_profile {
            tracing::warn!(
                "mfa_key is not set: TOTP secrets are stored in the database as they are; set it \
                 (openssl rand -base64 32) so that a copy of the database alone gives no codes"
            );
        }
        let connect = settings.clone();
        let connected =
            rocket::tokio::task::spawn_blocking(move || Db::connect_and_migrate(&connect)).await;
        let db = match connected {
            Ok(Ok((db, applied))) => {
                if applied > 0 {
                    tracing::info!(
                        applied,
                        backend = db.backend().as_str(),
                        "migrations applied"
                    );
                }
                db
            }
            Ok(Err(e)) => return self.refuse(rocket, BootError::Database(e)),
            Err(join) => {
                let e = BootError::Database(format!("the connection task failed: {join}"));
                return self.refuse(rocket, e);
            }
        };
        let metrics = Metrics::new();
        let mailer =
            crate::mail::Mailer::start(&settings, crate::web::mail_link, metrics.mail.clone());
        let lookup = SessionLookup::new(db.clone(), metrics.lookup_batch.clone());
        let authenticator = Authenticator::new(lookup, db.clone(), &settings);
        let sign_in = SignIn::new(db.clone(), &settings, &metrics);
        // Providers send people back to the API's callback route, under this mount.
        let public_url = settings.public_url.clone().unwrap_or_default();
        let providers = crate::auth::oidc::OidcProviders::start(&settings, |id| {
            format!("{public_url}{API_BASE}{}", api::oidc::callback_path(id))
        });
        let rocket = rocket
            .manage(ApiHeaders {
                hsts: settings.cookie_secure,
            })
            .manage(authenticator)
            .manage(sign_in)
            .manage(mailer)
            .manage(providers)
            .manage(db)
            .manage(metrics)
            .manage(settings);
        Ok(api::mount(rocket, API_BASE))
    }

    async fn on_response<'r>(&self, req: &'r Request<'_>, res: &mut Response<'r>) {
        let ours = req
            .route()
            .is_some_and(|route| route.uri.base().starts_with(API_BASE));
        if ours || guard::resolved(req) {
            // Session data (or an answer about it) must never sit in a shared cache.
            res.set_header(Header::new("Cache-Control", "no-store"));
        }
        if ours {
            if let Some(headers) = req.rocket().state::<ApiHeaders>() {
                if headers.hsts {
                    res.set_header(Header::new("Strict-Transport-Security", "max-age=31536000"));
                }
            }
        }
        if ours || req.uri().path().starts_with(API_BASE) {
            allow_listed_origin(req, res);
        }
        if let Some(AuthError::Unauthenticated { stale_cookie: true }) = guard::failure(req) {
            clear_stale_cookie(req, res);
        }
    }
}

/// CORS: an answer to an origin in `allowed_origins` names it and allows credentials; other
/// origins get nothing (their browsers then keep the answer from the page).
fn allow_listed_origin(req: &Request<'_>, res: &mut Response<'_>) {
    let Some(origin) = req.headers().get_one("Origin") else {
        return;
    };
    let Some(auth) = req.rocket().state::<Authenticator>() else {
        return;
    };
    res.adjoin_header(Header::new("Vary", "Origin"));
    if auth.cross_site.allows_origin(origin) {
        res.set_header(Header::new(
            "Access-Control-Allow-Origin",
            origin.to_string(),
        ));
        res.set_header(Header::new("Access-Control-Allow-Credentials", "true"));
        res.set_header(Header::new("Access-Control-Expose-Headers", "Retry-After"));
    }
}

/// A guard found the request's cookie naming no live session: clear it, unless the answer
/// already sets the cookie (latchkey's own catcher does).
fn clear_stale_cookie(req: &Request<'_>, res: &mut Response<'_>) {
    let Some(auth) = req.rocket().state::<Authenticator>() else {
        return;
    };
    let prefix = format!("{}=", auth.cookie.name());
    if res
        .headers()
        .get("Set-Cookie")
        .any(|c| c.starts_with(&prefix))
    {
        return;
    }
    res.adjoin_header(auth.cookie.removal());
}

/// Headers latchkey's own answers carry, decided once from the configuration.
struct ApiHeaders {
    hsts: bool,
}

impl From<ConfigError> for BootError {
    fn from(e: ConfigError) -> BootError {
        BootError::Config(e)
    }
}

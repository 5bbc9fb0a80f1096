//! Prometheus metrics: one registry per server, counters bumped where things happen, pool
//! gauges read at scrape time (no table scans). Opt-in for an application: [`routes`] serves
//! `GET /metrics` and [`RequestMetrics`] counts every request; the counters themselves are
//! always kept (the fairing manages [`Metrics`]).

use std::time::Instant;

use prometheus::{
    Encoder, Histogram, HistogramOpts, HistogramVec, IntCounter, IntCounterVec, IntGauge,
    IntGaugeVec, Opts, Registry, TextEncoder,
};
use rocket::fairing::{Fairing, Info, Kind};
use rocket::http::ContentType;
use rocket::{Data, Request, Response, Route, State};

use crate::auth::lookup::SessionLookup;
use crate::auth::Authenticator;
use crate::db::Db;

/// The server's Prometheus registry and the counters latchkey keeps.
pub struct Metrics {
    registry: Registry,
    requests: IntCounterVec,
    latency: HistogramVec,
    /// Sign-in attempts by outcome ([`LoginOutcome`]).
    logins: IntCounterVec,
    /// Sessions created.
    pub sessions_created: IntCounter,
    /// Sessions revoked.
    pub sessions_revoked: IntCounter,
    /// Cleanups run through the HTTP endpoint.
    pub cleanup_runs: IntCounter,
    /// Sessions those cleanups deleted.
    pub cleanup_deleted: IntCounter,
    /// How many session lookups each lookup query carried (see `auth::lookup`).
    pub lookup_batch: Histogram,
    /// Mail sent and given up, by kind.
    pub mail: crate::mail::MailCounters,
    lookups_waiting: IntGauge,
    pool: IntGaugeVec,
}

impl Metrics {
    /// A fresh registry with every metric registered.
    pub fn new() -> Metrics {
        let registry = Registry::new();
        let requests = IntCounterVec::new(
            Opts::new(
                "latchkey_http_requests_total",
                "HTTP requests by route, method and status",
            ),
            &["route", "method", "status"],
        )
        .expect("valid metric");
        let latency = HistogramVec::new(
            HistogramOpts::new(
                "latchkey_http_request_duration_seconds",
                "HTTP request latency by route",
            )
            .buckets(vec![
                0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5,
            ]),
            &["route"],
        )
        .expect("valid metric");
        let logins = IntCounterVec::new(
            Opts::new(
                "latchkey_logins_total",
                "Login attempts by outcome (success, failure, throttled, unverified)",
            ),
            &["outcome"],
        )
        .expect("valid metric");
        let sessions_created =
            IntCounter::new("latchkey_sessions_created_total", "Sessions created")
                .expect("valid metric");
        let sessions_revoked = IntCounter::new(
            "latchkey_sessions_revoked_total",
            "Sessions revoked (logout, revoke, password change)",
        )
        .expect("valid metric");
        let cleanup_runs = IntCounter::new(
            "latchkey_cleanup_runs_total",
            "Cleanup runs started by this server",
        )
        .expect("valid metric");
        let cleanup_deleted = IntCounter::new(
            "latchkey_cleanup_deleted_sessions_total",
            "Expired sessions deleted by cleanups of this server",
        )
        .expect("valid metric");
        let lookup_batch = Histogram::with_opts(
            HistogramOpts::new(
                "latchkey_session_lookup_batch_size",
                "Session lookups answered by one database query",
            )
            .buckets(vec![1.0, 2.0, 4.0, 8.0, 16.0, 32.0]),
        )
        .expect("valid metric");
        let lookups_waiting = IntGauge::new(
            "latchkey_session_lookups_waiting",
            "Session lookups queued for the lookup lane right now",
        )
        .expect("valid metric");
        let pool = IntGaugeVec::new(
            Opts::new(
                "latchkey_db_pool_connections",
                "Database pool connections by state (in_use, idle)",
            ),
            &["state"],
        )
        .expect("valid metric");
        let mail = crate::mail::MailCounters {
            queued: IntCounterVec::new(
                Opts::new(
                    "latchkey_mail_queued_total",
                    "Mails handed to the outbox, by kind",
                ),
                &["kind"],
            )
            .expect("valid metric"),
            resets_handled: IntCounter::new(
                "latchkey_password_reset_requests_handled_total",
                "Password reset requests handled after their answer, whether or not the \
                 address has an account",
            )
            .expect("valid metric"),
            sent: IntCounterVec::new(
                Opts::new("latchkey_mail_sent_total", "Mails sent, by kind"),
                &["kind"],
            )
            .expect("valid metric"),
            failed: IntCounterVec::new(
                Opts::new(
                    "latchkey_mail_failed_total",
                    "Mails given up after every attempt failed, by kind",
                ),
                &["kind"],
            )
            .expect("valid metric"),
        };
        for collector in [
            Box::new(mail.sent.clone()) as Box<dyn prometheus::core::Collector>,
            Box::new(mail.queued.clone()),
            Box::new(mail.resets_handled.clone()),
            Box::new(mail.failed.clone()),
            Box::new(requests.clone()),
            Box::new(latency.clone()),
            Box::new(logins.clone()),
            Box::new(sessions_created.clone()),
            Box::new(sessions_revoked.clone()),
            Box::new(cleanup_runs.clone()),
            Box::new(cleanup_deleted.clone()),
            Box::new(lookup_batch.clone()),
            Box::new(lookups_waiting.clone()),
            Box::new(pool.clone()),
        ] {
            registry
                .register(collector)
                .expect("metric names are unique");
        }
        Metrics {
            registry,
            requests,
            latency,
            logins,
            sessions_created,
            sessions_revoked,
            cleanup_runs,
            cleanup_deleted,
            lookup_batch,
            mail,
            lookups_waiting,
            pool,
        }
    }

    /// The counters the sign-in service moves (shared with this registry).
    pub fn sign_in_counters(&self) -> SignInCounters {
        SignInCounters {
            logins: self.logins.clone(),
            sessions_created: self.sessions_created.clone(),
            sessions_revoked: self.sessions_revoked.clone(),
        }
    }

    /// The text exposition, with the pool and queue gauges read now.
    pub fn render(&self, db: &Db, lookup: &SessionLookup) -> String {
        self.lookups_waiting.set(lookup.waiting() as i64);
        let (in_use, idle) = db.pool_state();
        self.pool.with_label_values(&["in_use"]).set(in_use as i64);
        self.pool.with_label_values(&["idle"]).set(idle as i64);
        let mut buffer = Vec::new();
        TextEncoder::new()
            .encode(&self.registry.gather(), &mut buffer)
            .expect("encoding to memory does not fail");
        String::from_utf8(buffer).expect("the text format is UTF-8")
    }
}

/// How a sign-in attempt ended: the `outcome` label of `latchkey_logins_total`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LoginOutcome {
    Success,
    Failure,
    Throttled,
    /// The password was right and the account asks for its second factor.
    MfaRequired,
    /// The password was right and the address is not verified (`require_verified_email`).
    Unverified,
}

impl LoginOutcome {
    pub fn as_str(self) -> &'static str {
        match self {
            LoginOutcome::Success => "success",
            LoginOutcome::Failure => "failure",
            LoginOutcome::Throttled => "throttled",
            LoginOutcome::MfaRequired => "mfa_required",
            LoginOutcome::Unverified => "unverified",
        }
    }
}

/// Sign-ins by outcome and sessions made and ended: what the sign-in service and the routes
/// that end sessions count.
#[derive(Clone)]
pub struct SignInCounters {
    logins: IntCounterVec,
    pub sessions_created: IntCounter,
    pub sessions_revoked: IntCounter,
}

impl SignInCounters {
    pub fn login(&self, outcome: LoginOutcome) {
        self.logins.with_label_values(&[outcome.as_str()]).inc();
    }
}

impl Default for Metrics {
    fn default() -> Self {
        Metrics::new()
    }
}

pub(crate) struct RequestStart(pub(crate) Instant);

/// Counts and times every request, labelled by the matched route's name.
pub struct RequestMetrics;

#[rocket::async_trait]
impl Fairing for RequestMetrics {
    fn info(&self) -> Info {
        Info {
            name: "request metrics",
            kind: Kind::Request | Kind::Response,
        }
    }

    async fn on_request(&self, req: &mut Request<'_>, _: &mut Data<'_>) {
        req.local_cache(|| RequestStart(Instant::now()));
    }

    async fn on_response<'r>(&self, req: &'r Request<'_>, res: &mut Response<'r>) {
        let Some(metrics) = req.rocket().state::<Metrics>() else {
            return;
        };
        let route = req
            .route()
            .and_then(|r| r.name.as_deref())
            .unwrap_or("unmatched");
        let started = req.local_cache(|| RequestStart(Instant::now())).0;
        metrics
            .requests
            .with_label_values(&[
                route,
                req.method().as_str(),
                res.status().code.to_string().as_str(),
            ])
            .inc();
        metrics
            .latency
            .with_label_values(&[route])
            .observe(started.elapsed().as_secs_f64());
    }
}

/// `GET /metrics`, to mount where the application wants it (the server mounts it at `/`).
pub fn routes() -> Vec<Route> {
    rocket::routes![metrics]
}

#[rocket::get("/metrics")]
fn metrics(
    metrics: &State<Metrics>,
    db: &State<Db>,
    auth: &State<Authenticator>,
) -> (ContentType, String) {
    let text = metrics.render(db, &auth.lookup);
    (
        ContentType::new("text", "plain").with_params(("version", "0.0.4")),
        text,
    )
}

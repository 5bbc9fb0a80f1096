//! Mail: the two letters latchkey sends (address verification, password reset), each a
//! plain-text and an HTML part with a link to the page under `public_url`, sent over SMTP with
//! lettre by a background outbox. A request only hands a letter over and answers; the outbox
//! sends it after, retrying with back-off, and a mail server that is down or slow costs no
//! request anything. Failures are logged without the link and counted in `/metrics`.

use std::sync::Arc;
use std::time::Duration;

use lettre::message::header::{ContentTransferEncoding, ContentType};
use lettre::message::{Mailbox, MultiPart, SinglePart};
use lettre::{AsyncSmtpTransport, AsyncTransport, Message, Tokio1Executor};
use prometheus::IntCounterVec;
use rocket::tokio::sync::{mpsc, Semaphore};

use chrono::NaiveDateTime;
use diesel::QueryResult;

use crate::config::MailSettings;
use crate::db::models::{MailKind, MailToken, User};
use crate::db::DbConnection;
use crate::token::Token;

/// One letter to send: to whom, which kind, and the token its link carries.
pub struct Letter {
    pub to: Mailbox,
    pub name: String,
    pub kind: MailKind,
    pub token: Token,
}

/// The counters the outbox keeps (registered in `/metrics`).
#[derive(Clone)]
pub struct MailCounters {
    /// Letters handed to the outbox, by kind.
    pub queued: IntCounterVec,
    /// Password reset requests handled after their answer, whether or not the address has
    /// an account (so that a test, or an operator, can tell one has been dealt with).
    pub resets_handled: prometheus::IntCounter,
    /// Letters sent, by kind.
    pub sent: IntCounterVec,
    /// Letters given up after every attempt failed (or dropped with the outbox full), by kind.
    pub failed: IntCounterVec,
}

/// Letters that may wait at once; beyond it new ones are dropped (and counted as failed).
const OUTBOX_SIZE: usize = 1024;
/// Letters being sent at once.
const CONCURRENT_SENDS: usize = 4;
/// Attempts per letter, and the wait before the second (doubling after).
const ATTEMPTS: u32 = 4;
const FIRST_RETRY: Duration = Duration::from_secs(1);
/// How long one SMTP conversation may take.
const SMTP_TIMEOUT: Duration = Duration::from_secs(10);

/// The handle requests hand letters to.
#[derive(Clone)]
pub struct Outbox {
    queue: mpsc::Sender<Letter>,
    counters: MailCounters,
}

impl Outbox {
    /// Starts the outbox's task on the current Tokio runtime.
    pub fn start(settings: MailSettings, link: MailLink, counters: MailCounters) -> Outbox {
        let (queue, mut letters) = mpsc::channel::<Letter>(OUTBOX_SIZE);
        let outbox = Outbox {
            queue,
            counters: counters.clone(),
        };
        let settings = Arc::new(settings);
        rocket::tokio::spawn(async move {
            let transport = match AsyncSmtpTransport::<Tokio1Executor>::from_url(&settings.smtp_url)
            {
                Ok(builder) => builder.timeout(Some(SMTP_TIMEOUT)).build(),
                Err(e) => {
                    // Checked at boot; this would be a bug.
                    tracing::error!(error = %e, "mail: smtp_url cannot be used; no mail is sent");
                    return;
                }
            };
            let sending = Arc::new(Semaphore::new(CONCURRENT_SENDS));
            while let Some(letter) = letters.recv().await {
                let Ok(permit) = sending.clone().acquire_owned().await else {
                    return;
                };
                let (transport, settings, counters) =
                    (transport.clone(), settings.clone(), counters.clone());
                rocket::tokio::spawn(async move {
                    let _permit = permit;
                    deliver(&transport, (&settings, link), &counters, letter).await;
                });
            }
        });
        outbox
    }

    /// Hands a letter over; returns at once.
    pub fn send(&self, letter: Letter) {
        let kind = letter.kind;
        if self.queue.try_send(letter).is_ok() {
            self.counters
                .queued
                .with_label_values(&[kind.as_str()])
                .inc();
        } else {
            tracing::warn!(
                kind = kind.as_str(),
                "mail: the outbox is full; letter dropped"
            );
            self.counters
                .failed
                .with_label_values(&[kind.as_str()])
                .inc();
        }
    }
}

async fn deliver(
    transport: &AsyncSmtpTransport<Tokio1Executor>,
    (settings, link): (&MailSettings, MailLink),
    counters: &MailCounters,
    letter: Letter,
) {
    let kind = letter.kind.as_str();
    let message = match compose(settings, link, &letter) {
        Ok(message) => message,
        Err(e) => {
            tracing::error!(kind, error = %e, "mail: the letter could not be built");
            counters.failed.with_label_values(&[kind]).inc();
            return;
        }
    };
    let mut wait = FIRST_RETRY;
    for attempt in 1..=ATTEMPTS {
        match transport.send(message.clone()).await {
            Ok(_) => {
                tracing::info!(kind, attempt, "mail sent");
                counters.sent.with_label_values(&[kind]).inc();
                return;
            }
            // lettre's error names the server and the step, never the message or its link.
            Err(e) if attempt < ATTEMPTS => {
                tracing::warn!(kind, attempt, error = %e, retry_in_secs = wait.as_secs(), "mail: sending failed; will retry");
                rocket::tokio::time::sleep(wait).await;
                wait *= 2;
            }
            Err(e) => {
                tracing::error!(kind, attempts = ATTEMPTS, error = %e, "mail: sending failed; giving up");
                counters.failed.with_label_values(&[kind]).inc();
            }
        }
    }
}

/// How a letter's link is written from `public_url`, the kind and the token: the page's
/// business (`web::mail_link`), handed to the mail service by whoever starts it.
pub type MailLink = fn(public_url: &str, kind: MailKind, token: &str) -> String;

fn escape(text: &str) -> String {
    text.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

fn compose(
    settings: &MailSettings,
    link: MailLink,
    letter: &Letter,
) -> Result<Message, lettre::error::Error> {
    let url = link(&settings.public_url, letter.kind, &letter.token.expose());
    let (subject, lead, button, after) = match letter.kind {
        MailKind::VerifyEmail => (
            "Confirm your email address",
            "Please confirm that this is your email address by opening this link:",
            "Confirm my address",
            "The link works once and expires in a few days. If you did not create an account, do not open it: someone else used your address. To take the account over, choose \"Forgot your password?\" on the sign-in page; that signs out everyone else and removes every other way into it.",
        ),
        MailKind::PasswordReset => (
            "Reset your password",
            "Someone (hopefully you) asked to reset the password of your account. To choose a new password, open this link:",
            "Choose a new password",
            "The link works once and expires soon. Every device signed in to your account will be signed out. If you did not ask for this, ignore this mail: your password stays as it is.",
        ),
    };
    let hello = format!("Hello {},", letter.name);
    let text = format!("{hello}\n\n{lead}\n\n{url}\n\n{after}\n");
    let html = format!(
        "<!doctype html><html><body style=\"font-family: sans-serif\"><p>{}</p><p>{}</p>\
         <p><a href=\"{url}\">{}</a></p><p style=\"color: #555\">{}</p>\
         <p style=\"color: #555; font-size: small\">{url}</p></body></html>",
        escape(&hello),
        escape(lead),
        escape(button),
        escape(after),
        url = escape(&url),
    );
    Message::builder()
        .from(settings.from.clone())
        .to(letter.to.clone())
        .subject(subject)
        .multipart(
            MultiPart::alternative()
                .singlepart(part(ContentType::TEXT_PLAIN, text))
                .singlepart(part(ContentType::TEXT_HTML, html)),
        )
}

/// One part, base64 encoded (so no line of it is ever re-wrapped on the way).
fn part(content_type: ContentType, body: String) -> SinglePart {
    SinglePart::builder()
        .header(content_type)
        .header(ContentTransferEncoding::Base64)
        .body(body)
}

/// The managed mail service: the outbox when mail is configured, and the links' lifetimes.
#[derive(Clone)]
pub struct Mailer {
    outbox: Option<Outbox>,
    counters: MailCounters,
    reset_ttl: chrono::Duration,
    verify_ttl: chrono::Duration,
}

impl Mailer {
    /// Starts the outbox when `settings` configure mail (on the current Tokio runtime).
    pub fn start(
        settings: &crate::config::Settings,
        link: MailLink,
        counters: MailCounters,
    ) -> Mailer {
        Mailer {
            outbox: settings
                .mail
                .clone()
                .map(|mail| Outbox::start(mail, link, counters.clone())),
            counters,
            reset_ttl: settings.password_reset_ttl,
            verify_ttl: settings.email_verification_ttl,
        }
    }

    /// Counts a password reset request handled (see [`MailCounters::resets_handled`]).
    pub fn reset_handled(&self) {
        self.counters.resets_handled.inc();
    }

    /// Whether mail is configured.
    pub fn enabled(&self) -> bool {
        self.outbox.is_some()
    }

    /// A new link of `kind` for `user`, stored (replacing the user's earlier one of that kind)
    /// on `conn`, in the caller's transaction; the letter to hand to [`Mailer::send`] once it
    /// has committed. `None` when mail is off, or the address is one SMTP cannot carry.
    pub fn prepare(
        &self,
        conn: &mut DbConnection,
        user: &User,
        kind: MailKind,
        now: NaiveDateTime,
    ) -> QueryResult<Option<Letter>> {
        if self.outbox.is_none() {
            return Ok(None);
        }
        let Ok(to) = user.email.parse::<Mailbox>() else {
            tracing::warn!(user = %user.id, "mail: the account's address cannot be mailed");
            return Ok(None);
        };
        let lifetime = match kind {
            MailKind::VerifyEmail => self.verify_ttl,
            MailKind::PasswordReset => self.reset_ttl,
        };
        let token = Token::generate();
        MailToken::replace(conn, &user.id, kind, &token.hash(), now, lifetime)?;
        Ok(Some(Letter {
            to,
            name: user.name.clone(),
            kind,
            token,
        }))
    }

    /// Hands a prepared letter to the outbox.
    pub fn send(&self, letter: Letter) {
        if let Some(outbox) = &self.outbox {
            outbox.send(letter);
        }
    }
}

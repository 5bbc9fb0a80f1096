//! `smtp_url`, `mail_from` and `public_url`: where and how mail goes.

use std::fmt;

use super::ConfigError;

/// Where and how mail goes (`smtp_url`, `mail_from`, `public_url`).
#[derive(Clone)]
pub struct MailSettings {
    /// The SMTP server, as lettre reads it: `smtp://host:port`, `smtps://user:pass@host:465`,
    /// `smtp://user:pass@host:587?tls=required`. May carry a password: never printed.
    pub smtp_url: String,
    /// The From address.
    pub from: lettre::message::Mailbox,
    /// latchkey's public base URL, without a trailing slash.
    pub public_url: String,
}

impl fmt::Debug for MailSettings {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("MailSettings")
            .field("from", &self.from.to_string())
            .field("public_url", &self.public_url)
            .finish_non_exhaustive()
    }
}

/// `smtp_url`, `mail_from` and `public_url` checked together: all or none of the first two,
/// and `public_url` with them (the links need it).
pub(super) fn mail_settings(
    smtp_url: Option<String>,
    mail_from: Option<String>,
    public_url: Option<&str>,
) -> Result<Option<MailSettings>, ConfigError> {
    let error = |key: &str, problem: String| ConfigError {
        key: key.into(),
        problem,
    };
    let smtp_url = smtp_url
        .map(|u| u.trim().to_string())
        .filter(|u| !u.is_empty());
    let Some(smtp_url) = smtp_url else {
        return Ok(None);
    };
    use lettre::{AsyncSmtpTransport, Tokio1Executor};
    if let Err(e) = AsyncSmtpTransport::<Tokio1Executor>::from_url(&smtp_url) {
        // lettre's message names the part it could not use, not the password.
        return Err(error(
            "smtp_url",
            format!("is not a usable SMTP URL ({e}); use smtp://host:port, smtps://user:pass@host:465 or smtp://user:pass@host:587?tls=required"),
        ));
    }
    let Some(from) = mail_from.filter(|f| !f.trim().is_empty()) else {
        return Err(error(
            "mail_from",
            "is required with `smtp_url` (e.g. \"latchkey <auth@example.com>\")".into(),
        ));
    };
    let from = from.trim().parse().map_err(|_| {
        error(
            "mail_from",
            format!("must be an address like `auth@example.com` or `Name <auth@example.com>` (got `{from}`)"),
        )
    })?;
    let Some(public_url) = public_url else {
        return Err(error(
            "public_url",
            "is required with `smtp_url`: the links in mails point there".into(),
        ));
    };
    Ok(Some(MailSettings {
        smtp_url,
        from,
        public_url: public_url.to_string(),
    }))
}

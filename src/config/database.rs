//! `database_url`: which backend, where, and how it is described without its password.

use std::fmt;
use std::path::PathBuf;

/// Where the data lives. The scheme of `database_url` picks the backend, and nothing else does.
#[derive(Clone, PartialEq, Eq)]
pub enum DatabaseTarget {
    /// `postgres://…` or `postgresql://…`: the URL as given, `database_schema` when it is
    /// not `public` (every table and migration of latchkey lives there), and whether Diesel
    /// may keep prepared statements (`pg_statement_cache`; not behind a transaction pooler).
    Postgres {
        url: String,
        schema: Option<String>,
        statement_cache: bool,
    },
    /// `sqlite://PATH` or a plain path.
    Sqlite(PathBuf),
}

impl DatabaseTarget {
    /// Picks the backend from the scheme; an unknown scheme is an error naming it.
    pub fn parse(url: &str) -> Result<Self, String> {
        let url = url.trim();
        if url.is_empty() {
            return Err("is empty".into());
        }
        match scheme_of(url) {
            Some("postgres") | Some("postgresql") => {
                let rest = &url[url.find("://").map(|i| i + 3).unwrap_or(0)..];
                if rest.is_empty() || rest.starts_with('/') && rest.len() == 1 {
                    return Err("names no PostgreSQL host or database".into());
                }
                Ok(Self::Postgres {
                    url: url.to_string(),
                    schema: None,
                    statement_cache: true,
                })
            }
            Some("sqlite") => {
                let path = &url["sqlite://".len()..];
                if path.is_empty() {
                    return Err("names no SQLite file (use sqlite://PATH)".into());
                }
                Ok(Self::Sqlite(PathBuf::from(path)))
            }
            Some(other) => Err(format!(
                "has unknown scheme `{other}` (use postgres://, postgresql:// or sqlite://)"
            )),
            // A libpq connection string (`host=db user=app password=…`) is not a file name:
            // taken as one it would become a SQLite file named after it, password and all.
            // The value is not repeated, for the same reason.
            None if url.contains('=') && url.contains(char::is_whitespace) => Err(
                "looks like a libpq `key=value` string, which latchkey does not read: \
                 write it as a URL, postgres://user:password@host:port/database"
                    .into(),
            ),
            None => Ok(Self::Sqlite(PathBuf::from(url))),
        }
    }

    /// Where the data is, for the boot log: the absolute SQLite path (it resolves from the
    /// working directory), or the PostgreSQL URL without its password.
    pub fn describe(&self) -> String {
        match self {
            Self::Sqlite(path) => {
                let absolute = std::path::absolute(path).unwrap_or_else(|_| path.clone());
                format!("sqlite {}", absolute.display())
            }
            Self::Postgres { url, schema, .. } => {
                let shown = without_password(url);
                match schema {
                    Some(schema) => format!("postgres {shown} (schema {schema})"),
                    None => format!("postgres {shown}"),
                }
            }
        }
    }

    /// Which backend this target is.
    pub fn backend(&self) -> Backend {
        match self {
            Self::Postgres { .. } => Backend::Postgres,
            Self::Sqlite(_) => Backend::Sqlite,
        }
    }
}

/// Never print a PostgreSQL URL: it may carry a password.
impl fmt::Debug for DatabaseTarget {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Postgres { schema, .. } => write!(f, "Postgres(<url>, schema {schema:?})"),
            Self::Sqlite(path) => write!(f, "Sqlite({})", path.display()),
        }
    }
}

/// `postgres://ann:secret@host/db?password=x` → `postgres://ann:***@host/db?password=***`.
fn without_password(url: &str) -> String {
    let Some(start) = url.find("://").map(|i| i + 3) else {
        return url.to_string();
    };
    let end = url[start..].find('/').map_or(url.len(), |i| start + i);
    let mut shown = url.to_string();
    if let Some(at) = url[start..end].rfind('@') {
        if let Some(colon) = url[start..start + at].find(':') {
            shown = format!("{}***{}", &url[..start + colon + 1], &url[start + at..]);
        }
    }
    if let Some(query) = shown.find('?') {
        let params: Vec<String> = shown[query + 1..]
            .split('&')
            .map(|param| match param.split_once('=') {
                Some((name, _)) if name.eq_ignore_ascii_case("password") => format!("{name}=***"),
                _ => param.to_string(),
            })
            .collect();
        shown = format!("{}?{}", &shown[..query], params.join("&"));
    }
    shown
}

fn scheme_of(url: &str) -> Option<&str> {
    let end = url.find("://")?;
    let scheme = &url[..end];
    let valid = scheme.starts_with(|c: char| c.is_ascii_alphabetic())
        && scheme
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '+' | '-' | '.'));
    valid.then_some(scheme)
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "lowercase")]
/// The database backend.
pub enum Backend {
    /// PostgreSQL.
    Postgres,
    /// SQLite.
    Sqlite,
}

impl Backend {
    /// `postgres` or `sqlite`, as the API reports it.
    pub fn as_str(self) -> &'static str {
        match self {
            Backend::Postgres => "postgres",
            Backend::Sqlite => "sqlite",
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn described_urls_hide_passwords() {
        assert_eq!(
            without_password("postgres://ann:s3cret@db:5432/app?sslmode=require&password=x"),
            "postgres://ann:***@db:5432/app?sslmode=require&password=***"
        );
        assert_eq!(
            without_password("postgres://ann@h1,h2/app"),
            "postgres://ann@h1,h2/app"
        );
    }
}

//! `users`: accounts. The password hash is an Argon2id PHC string and never leaves this crate.

use std::fmt;

use chrono::NaiveDateTime;
use diesel::prelude::*;

use crate::db::schema::users;
use crate::db::DbConnection;

pub use crate::domain::Role;
use crate::domain::UserId;

#[derive(Queryable, Selectable, Clone)]
#[diesel(table_name = users)]
pub struct User {
    /// A random UUID.
    #[diesel(deserialize_as = String)]
    pub id: UserId,
    /// Trimmed, lowercased, international domains in ASCII form.
    pub email: String,
    /// The display name.
    pub name: String,
    /// Argon2id PHC string; never shown by the API. `None` for an account made by an OpenID
    /// provider's sign-in that has not set a password. Private: only the sign-in service
    /// reads it ([`User::password_hash`]).
    password_hash: Option<String>,
    /// `user` or `admin`.
    #[diesel(deserialize_as = String)]
    pub role: Role,
    /// UTC.
    pub created_at: NaiveDateTime,
    /// UTC.
    pub updated_at: NaiveDateTime,
    /// When a mailed link showed the address is the user's (UTC); `None` until then.
    pub email_verified_at: Option<NaiveDateTime>,
    /// When the second factor was turned on (UTC); `None` while sign-in needs only the
    /// password.
    pub mfa_enabled_at: Option<NaiveDateTime>,
}

impl fmt::Debug for User {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("User")
            .field("id", &self.id)
            .field("role", &self.role)
            .finish_non_exhaustive()
    }
}

impl User {
    pub fn is_admin(&self) -> bool {
        self.role == Role::Admin
    }

    /// Whether the account can sign in with a password.
    pub fn has_password(&self) -> bool {
        self.password_hash.is_some()
    }

    /// The Argon2id PHC string, for the sign-in service to check a password against.
    pub(crate) fn password_hash(&self) -> Option<&str> {
        self.password_hash.as_deref()
    }

    /// What a sign-in checks, as [`User::lock_credentials`] reads it again under the lock.
    pub(crate) fn credentials(&self) -> Credentials {
        (self.password_hash.clone(), self.mfa_enabled_at)
    }

    /// Whether sign-in asks for a second factor.
    pub fn mfa_enabled(&self) -> bool {
        self.mfa_enabled_at.is_some()
    }

    pub fn find_by_id(conn: &mut DbConnection, id: &UserId) -> QueryResult<Option<User>> {
        users::table
            .find(id.as_str())
            .select(User::as_select())
            .first(conn)
            .optional()
    }

    /// The account's credentials as they are now (the password hash, and when the second
    /// factor was turned on), locked until the caller's transaction ends (PostgreSQL:
    /// `FOR UPDATE`; SQLite: the caller has already written, which holds the database's one
    /// write lock). `None` when the account is gone.
    pub fn lock_credentials(
        conn: &mut DbConnection,
        id: &UserId,
    ) -> QueryResult<Option<Credentials>> {
        let query = users::table
            .find(id.as_str())
            .select((users::password_hash, users::mfa_enabled_at));
        match conn {
            DbConnection::Postgres(pg) => query.for_update().first(pg).optional(),
            DbConnection::Sqlite(sqlite) => query.first(sqlite).optional(),
        }
    }

    /// `email` must already be normalised (trimmed, lowercased).
    pub fn find_by_email(conn: &mut DbConnection, email: &str) -> QueryResult<Option<User>> {
        users::table
            .filter(users::email.eq(email))
            .select(User::as_select())
            .first(conn)
            .optional()
    }

    /// Fails with a unique violation when the email is taken.
    pub fn insert(conn: &mut DbConnection, new: &NewUser<'_>) -> QueryResult<User> {
        diesel::insert_into(users::table)
            .values((
                users::id.eq(new.id.as_str()),
                users::email.eq(new.email),
                users::name.eq(new.name),
                users::password_hash.eq(new.password_hash),
                users::role.eq(new.role.as_str()),
                users::created_at.eq(new.created_at),
                users::updated_at.eq(new.updated_at),
                users::email_verified_at.eq(new.email_verified_at),
            ))
            .execute(conn)?;
        users::table
            .find(new.id.as_str())
            .select(User::as_select())
            .first(conn)
    }

    /// Sets the password, and voids every mailed link of the account with it (a reset link
    /// sent before the change must not work after it). Run it in the caller's transaction.
    pub fn set_password_hash(
        conn: &mut DbConnection,
        id: &UserId,
        password_hash: &str,
        now: NaiveDateTime,
    ) -> QueryResult<usize> {
        let changed = diesel::update(users::table.find(id.as_str()))
            .set((
                users::password_hash.eq(password_hash),
                users::updated_at.eq(now),
            ))
            .execute(conn)?;
        crate::db::models::MailToken::void_all(conn, id)?;
        Ok(changed)
    }

    /// Writes the account's row (its `updated_at`) to hold it until the caller's transaction
    /// ends: on SQLite a write is what takes the lock (see [`User::lock_credentials`]).
    pub fn touch(conn: &mut DbConnection, id: &UserId, now: NaiveDateTime) -> QueryResult<usize> {
        diesel::update(users::table.find(id.as_str()))
            .set(users::updated_at.eq(now))
            .execute(conn)
    }

    /// Records that the address is the user's (once: the first time stays).
    pub fn mark_email_verified(
        conn: &mut DbConnection,
        id: &UserId,
        now: NaiveDateTime,
    ) -> QueryResult<usize> {
        diesel::update(
            users::table
                .find(id.as_str())
                .filter(users::email_verified_at.is_null()),
        )
        .set(users::email_verified_at.eq(Some(now)))
        .execute(conn)
    }

    /// Returns how many accounts matched the email (0 or 1).
    pub fn set_role(
        conn: &mut DbConnection,
        email: &str,
        role: Role,
        now: NaiveDateTime,
    ) -> QueryResult<usize> {
        diesel::update(users::table.filter(users::email.eq(email)))
            .set((users::role.eq(role.as_str()), users::updated_at.eq(now)))
            .execute(conn)
    }

    /// Deletes the account; its sessions go with it (ON DELETE CASCADE).
    pub fn delete(conn: &mut DbConnection, id: &UserId) -> QueryResult<usize> {
        diesel::delete(users::table.find(id.as_str())).execute(conn)
    }
}

/// An account about to be inserted.
pub struct NewUser<'a> {
    pub id: &'a UserId,
    pub email: &'a str,
    pub name: &'a str,
    /// `None`: the account signs in through an OpenID provider only.
    pub password_hash: Option<&'a str>,
    pub role: Role,
    pub created_at: NaiveDateTime,
    pub updated_at: NaiveDateTime,
    /// Set when the address is already known to be the user's (a provider said so).
    pub email_verified_at: Option<NaiveDateTime>,
}

/// What a sign-in checked: the password hash, and when the second factor was turned on.
pub type Credentials = (Option<String>, Option<NaiveDateTime>);

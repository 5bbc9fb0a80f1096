//! `users`: accounts. The password hash is an Argon2id PHC string and never leaves this crate.

use std::fmt;

use chrono::NaiveDateTime;
use diesel::prelude::*;

use crate::db::schema::users;
use crate::db::DbConnection;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    User,
    Admin,
}

impl Role {
    pub fn as_str(self) -> &'static str {
        match self {
            Role::User => "user",
            Role::Admin => "admin",
        }
    }
}

#[derive(Queryable, Selectable, Clone)]
#[diesel(table_name = users)]
pub struct User {
    pub id: String,
    pub email: String,
    pub name: String,
    pub password_hash: String,
    pub role: String,
    pub created_at: NaiveDateTime,
    pub updated_at: NaiveDateTime,
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
        self.role == Role::Admin.as_str()
    }

    pub fn find_by_id(conn: &mut DbConnection, id: &str) -> QueryResult<Option<User>> {
        users::table
            .find(id)
            .select(User::as_select())
            .first(conn)
            .optional()
    }

    /// The account's password hash, locked until the caller's transaction ends (PostgreSQL:
    /// `FOR UPDATE`; SQLite: the caller has already written, which holds the database's one
    /// write lock). `None` when the account is gone.
    pub fn lock_password_hash(conn: &mut DbConnection, id: &str) -> QueryResult<Option<String>> {
        let query = users::table.find(id).select(users::password_hash);
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
            .values(new)
            .execute(conn)?;
        users::table
            .find(new.id)
            .select(User::as_select())
            .first(conn)
    }

    pub fn set_password_hash(
        conn: &mut DbConnection,
        id: &str,
        password_hash: &str,
        now: NaiveDateTime,
    ) -> QueryResult<usize> {
        diesel::update(users::table.find(id))
            .set((
                users::password_hash.eq(password_hash),
                users::updated_at.eq(now),
            ))
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
    pub fn delete(conn: &mut DbConnection, id: &str) -> QueryResult<usize> {
        diesel::delete(users::table.find(id)).execute(conn)
    }
}

#[derive(Insertable)]
#[diesel(table_name = users)]
pub struct NewUser<'a> {
    pub id: &'a str,
    pub email: &'a str,
    pub name: &'a str,
    pub password_hash: &'a str,
    pub role: &'a str,
    pub created_at: NaiveDateTime,
    pub updated_at: NaiveDateTime,
}

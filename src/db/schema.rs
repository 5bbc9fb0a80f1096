//! The Diesel schema, written by hand because one schema serves both backends: ids are text,
//! times are UTC `TIMESTAMP` without zone, token hashes are binary.

diesel::table! {
    users (id) {
        id -> Text,
        email -> Text,
        name -> Text,
        password_hash -> Nullable<Text>,
        role -> Text,
        created_at -> Timestamp,
        updated_at -> Timestamp,
        email_verified_at -> Nullable<Timestamp>,
        mfa_enabled_at -> Nullable<Timestamp>,
    }
}

diesel::table! {
    totp_factors (user_id) {
        user_id -> Text,
        secret -> Text,
        last_step -> Nullable<BigInt>,
        created_at -> Timestamp,
    }
}

diesel::table! {
    recovery_codes (code_hash) {
        code_hash -> Binary,
        user_id -> Text,
        used_at -> Nullable<Timestamp>,
    }
}

diesel::table! {
    identities (id) {
        id -> Text,
        user_id -> Text,
        provider -> Text,
        issuer -> Text,
        subject -> Text,
        created_at -> Timestamp,
    }
}

diesel::table! {
    oidc_logins (state_hash) {
        state_hash -> Binary,
        provider -> Text,
        nonce -> Text,
        pkce_verifier -> Text,
        return_to -> Text,
        link_session_id -> Nullable<Text>,
        mfa_user_id -> Nullable<Text>,
        created_at -> Timestamp,
        expires_at -> Timestamp,
    }
}

diesel::table! {
    mail_tokens (token_hash) {
        token_hash -> Binary,
        user_id -> Text,
        kind -> Text,
        created_at -> Timestamp,
        expires_at -> Timestamp,
    }
}

diesel::table! {
    sessions (id) {
        id -> Text,
        token_hash -> Binary,
        user_id -> Text,
        created_at -> Timestamp,
        last_seen_at -> Timestamp,
        expires_at -> Timestamp,
        ip -> Nullable<Text>,
        user_agent -> Nullable<Text>,
        previous_token_hash -> Nullable<Binary>,
    }
}

diesel::table! {
    security_events (id) {
        id -> Text,
        user_id -> Nullable<Text>,
        kind -> Text,
        at -> Timestamp,
        session_id -> Nullable<Text>,
        ip -> Nullable<Text>,
        user_agent -> Nullable<Text>,
    }
}

diesel::table! {
    login_throttles (key) {
        key -> Text,
        failures -> Integer,
        window_start -> Timestamp,
        last_failure_at -> Timestamp,
    }
}

diesel::table! {
    cleanup_runs (id) {
        id -> Text,
        started_at -> Timestamp,
        finished_at -> Timestamp,
        sessions_deleted -> BigInt,
        events_deleted -> BigInt,
        throttles_deleted -> BigInt,
        duration_ms -> BigInt,
    }
}

diesel::table! {
    cleanup_lease (id) {
        id -> Integer,
        holder -> Text,
        expires_at -> Timestamp,
    }
}

diesel::joinable!(sessions -> users (user_id));
diesel::joinable!(mail_tokens -> users (user_id));
diesel::joinable!(totp_factors -> users (user_id));
diesel::joinable!(recovery_codes -> users (user_id));
diesel::joinable!(identities -> users (user_id));

diesel::allow_tables_to_appear_in_same_query!(
    users,
    sessions,
    security_events,
    login_throttles,
    cleanup_runs,
    cleanup_lease,
    mail_tokens,
    totp_factors,
    recovery_codes,
    identities,
    oidc_logins
);

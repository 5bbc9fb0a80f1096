//! The latchkey server: reads the configuration, connects and migrates, then serves.

use std::process::ExitCode;

use latchkey::config::{self, Settings};

#[rocket::main]
async fn main() -> ExitCode {
    latchkey::init_tracing();
    let figment = config::figment();
    let settings = match Settings::from_figment(&figment) {
        Ok(settings) => settings,
        Err(e) => {
            eprintln!("latchkey: {e}");
            return ExitCode::from(2);
        }
    };
    if settings.release && !settings.cookie_secure {
        tracing::warn!("cookie_secure is off in the release profile: session cookies will be sent over plain HTTP");
    }
    let rocket = match latchkey::build(settings, figment) {
        Ok(rocket) => rocket,
        Err(e) => {
            eprintln!("latchkey: invalid configuration: `database_url` {e}");
            return ExitCode::from(1);
        }
    };
    // The first login with an unknown email would otherwise pay for the dummy hash.
    rocket::tokio::task::spawn_blocking(latchkey::auth::password::warm_up);
    match rocket.launch().await {
        Ok(_) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("latchkey: {e}");
            ExitCode::from(1)
        }
    }
}

//! The latchkey server: the configuration, the fairing (connect, migrate, the API), the page
//! and `/metrics`, then serve.

use std::process::ExitCode;

use latchkey::{config, server, BootError, Latchkey};

#[rocket::main]
async fn main() -> ExitCode {
    latchkey::init_tracing();
    let latchkey = Latchkey::fairing();
    let boot = latchkey.boot_watch();
    let ignited = server::rocket(config::figment(), latchkey).ignite().await;
    let rocket = match ignited {
        Ok(rocket) => rocket,
        Err(e) => {
            // The fairing has printed its one line; Rocket's own error is printed otherwise.
            return match boot.failure() {
                Some(BootError::Config(_)) => {
                    let _ = e.kind();
                    ExitCode::from(2)
                }
                Some(BootError::Database(_)) => {
                    let _ = e.kind();
                    ExitCode::from(1)
                }
                None => {
                    eprintln!("latchkey: {e}");
                    ExitCode::from(1)
                }
            };
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

//! `latchkey`: the server (`latchkey` or `latchkey serve`) and its operator commands
//! (`migrate`, `cleanup [--once]`, `admin promote|demote EMAIL`); `latchkey --help` says more.

fn main() -> std::process::ExitCode {
    latchkey::cli::server_main()
}

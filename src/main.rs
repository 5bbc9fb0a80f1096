//! `latchkey`: the server (`latchkey` or `latchkey serve`) and its operator commands
//! (`migrate`, `cleanup [--once]`, `admin promote|demote EMAIL`); `latchkey --help` says more.

fn main() -> std::process::ExitCode {
    latchkey::cli::server_main()
}

/// The server's allocator: mimalloc, not the system's. A request allocates and frees many
/// small buffers across threads, which costs less CPU with mimalloc than with glibc's malloc
/// (bench/RESULTS.md has the figures). Built without transparent huge pages, which would
/// raise the resident size. Only this binary: an application that attaches the crate keeps its
/// own allocator.
#[cfg(feature = "mimalloc")]
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

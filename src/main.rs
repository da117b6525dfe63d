//! `regserve`: parse the command line, then run the command. All logic lives in the library.

use regserve::config::Command;

/// jemalloc, with background threads purging pages a second after they are freed: the memory a
/// burst of big requests took is given back to the system instead of staying the process's RSS
/// (glibc's malloc keeps it in its per-thread arenas). Request threads never purge themselves.
#[global_allocator]
static ALLOCATOR: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

fn main() -> std::process::ExitCode {
    return_memory_promptly();
    // The command line, the environment and the configuration file (`--config`), in that order.
    let cli = regserve::config::file::cli();
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info,ort=warn".into()),
        )
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .init();
    let result = match cli.command {
        Command::Serve(args) => regserve::cli::serve(&cli.global, args),
        Command::Models(cmd) => regserve::cli::models(&cli.global, cmd),
        Command::Predict(args) => regserve::cli::predict(&cli.global, args),
        Command::Server(args) => regserve::cli::server(&cli.global, args),
        Command::Pull(args) => regserve::cli::pull(&cli.global, args),
    };
    match result {
        Ok(()) => std::process::ExitCode::SUCCESS,
        // The reader of our output went away (`regserve models list | head -1`): it has what it
        // wanted, so stop quietly, as `cat` or `ls` do, rather than report an error.
        Err(e) if is_broken_pipe(&e) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}

fn is_broken_pipe(e: &anyhow::Error) -> bool {
    e.chain().any(|c| c.downcast_ref::<std::io::Error>().is_some_and(|io| io.kind() == std::io::ErrorKind::BrokenPipe))
}

/// Purge freed pages after about a second (jemalloc's default is 10 s), from jemalloc's own
/// background threads. Runs first in `main`, before other threads exist, so every arena gets the
/// setting. Failing only costs memory: warn and go on.
fn return_memory_promptly() {
    use tikv_jemalloc_ctl::{Access, AsName};
    const DECAY_MS: isize = 1000;
    let set = || -> Result<(), tikv_jemalloc_ctl::Error> {
        b"arenas.dirty_decay_ms\0".name().write(DECAY_MS)?;
        b"arena.0.dirty_decay_ms\0".name().write(DECAY_MS)?;
        tikv_jemalloc_ctl::background_thread::write(true)
    };
    if let Err(e) = set() {
        eprintln!("warning: jemalloc will keep freed memory longer: {e}");
    }
}

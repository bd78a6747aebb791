//! `sidecar`: run the proxy, or check a config file.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand, ValueEnum};
use mesh_api::config::LogFormat;
use sidecar::{allocator, app, config, telemetry};

/// Small, short-lived allocations on every request (headers, futures):
/// mimalloc serves them from thread-local pages; measured in `bench/`.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[derive(Parser)]
#[command(
    name = "sidecar",
    version,
    about = "The mesh proxy: sidecar and edge modes"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the proxy.
    Run {
        /// The config file (YAML).
        #[arg(long, short)]
        config: PathBuf,
        /// Log format; overrides MESH_LOG_FORMAT and the config.
        #[arg(long, value_enum)]
        log_format: Option<Format>,
        /// Worker threads (default: one per core).
        #[arg(long)]
        workers: Option<usize>,
        /// Keep polling for I/O this long after each request instead of
        /// sleeping (e.g. 1ms): lower latency on VMs, a core kept busy
        /// while requests come. Needs `--workers 1`.
        #[arg(long, value_parser = mesh_api::units::parse_duration)]
        busy_poll: Option<std::time::Duration>,
    },
    /// Validate config files without running; exit 1 listing every error.
    Check {
        /// Config files (YAML).
        #[arg(required = true)]
        files: Vec<PathBuf>,
    },
    /// The NAT rules that redirect this workload's TCP to the proxy.
    Iptables {
        /// print: show the commands; apply: write them (idempotent); remove: delete them.
        #[arg(value_enum)]
        action: IptablesAction,
        /// The config file (YAML): listeners and `interception:`.
        #[arg(long, short)]
        config: PathBuf,
    },
}

#[derive(Clone, Copy, ValueEnum)]
enum IptablesAction {
    Print,
    Apply,
    Remove,
}

#[derive(Clone, Copy, ValueEnum)]
enum Format {
    Json,
    Pretty,
}

fn main() -> ExitCode {
    match Cli::parse().command {
        Command::Check { files } => check(&files),
        Command::Iptables { action, config } => iptables(action, &config),
        Command::Run {
            config,
            log_format,
            workers,
            busy_poll,
        } => run(config, log_format, workers, busy_poll),
    }
}

fn check(files: &[PathBuf]) -> ExitCode {
    let mut ok = true;
    for file in files {
        match config::load_file(file) {
            Ok(_) => println!("{}: ok", file.display()),
            Err(errors) => {
                ok = false;
                for error in errors {
                    eprintln!("{}: {error}", file.display());
                }
            }
        }
    }
    if ok {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    }
}

fn iptables(action: IptablesAction, path: &std::path::Path) -> ExitCode {
    let settings = match config::load_file(path) {
        Ok(settings) => settings,
        Err(errors) => {
            for error in errors {
                eprintln!("{}: {error}", path.display());
            }
            return ExitCode::FAILURE;
        }
    };
    let result = sidecar::iptables::plan(&settings).and_then(|plan| match action {
        IptablesAction::Print => {
            print!("{}", plan.print());
            Ok(())
        }
        IptablesAction::Apply => plan.apply(),
        IptablesAction::Remove => plan.remove(),
    });
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("sidecar iptables: {err}");
            ExitCode::FAILURE
        }
    }
}

fn run(
    path: PathBuf,
    format: Option<Format>,
    workers: Option<usize>,
    busy_poll: Option<std::time::Duration>,
) -> ExitCode {
    let one_worker = matches!(workers, Some(0 | 1));
    if busy_poll.is_some() && !one_worker {
        eprintln!("--busy-poll needs --workers 1 (it spins the one worker's own thread)");
        return ExitCode::FAILURE;
    }
    let settings = match config::load_file(&path) {
        Ok(settings) => settings,
        Err(errors) => {
            for error in errors {
                eprintln!("{}: {error}", path.display());
            }
            return ExitCode::FAILURE;
        }
    };
    let format = match format {
        Some(Format::Json) => LogFormat::Json,
        Some(Format::Pretty) => LogFormat::Pretty,
        None => telemetry::logging::format_from_env().unwrap_or(settings.raw.log.format),
    };
    telemetry::logging::init(format, &settings.raw.log.level);
    // One worker: a current-thread runtime (no work-stealing queues, no
    // cross-thread wake-ups): ~15% less CPU per request than a one-worker
    // multi-thread runtime, by measurement (bench/README.md).
    let mut builder = match workers {
        Some(0 | 1) => tokio::runtime::Builder::new_current_thread(),
        _ => tokio::runtime::Builder::new_multi_thread(),
    };
    if let Some(workers) = workers.filter(|w| *w > 1) {
        builder.worker_threads(workers);
    }
    builder.on_thread_park(allocator::collect_when_due);
    let runtime = match builder.enable_all().build() {
        Ok(runtime) => runtime,
        Err(err) => {
            eprintln!("cannot start the runtime: {err}");
            return ExitCode::FAILURE;
        }
    };
    runtime.spawn(allocator::collector());
    if let Some(window) = busy_poll {
        runtime.spawn(sidecar::busy_poll::spin(window));
    }
    match runtime.block_on(app::run(path, settings)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            tracing::error!(error = %err, "proxy failed");
            ExitCode::FAILURE
        }
    }
}

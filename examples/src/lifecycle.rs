//! Process lifecycle shared by every demo binary: logging to stderr, binding
//! `--listen` and announcing the bound address as one JSON line on stdout (so
//! tests never guess ports), and the SIGTERM/SIGINT shutdown signal.
//! Errors: bind and stdout failures, as `anyhow` errors for `main`.

use std::io::Write as _;
use std::net::SocketAddr;
use std::time::Duration;

use anyhow::Context as _;
use tokio::net::TcpListener;
use tracing_subscriber::EnvFilter;

/// How long in-flight requests and streams get to finish after a shutdown signal.
pub const DRAIN_DEADLINE: Duration = Duration::from_secs(5);

/// The `--listen` flag every demo binary takes.
#[derive(Debug, clap::Args)]
pub struct ListenArgs {
    /// Address to listen on; port 0 picks a free port, reported on stdout.
    #[arg(long, value_name = "ADDR", default_value = "127.0.0.1:0")]
    pub listen: SocketAddr,
}

/// Logs to stderr (stdout carries only the `{"listening":...}` line), at
/// `info` unless `RUST_LOG` says otherwise.
pub fn init_tracing() {
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .init();
}

/// Binds `addr` and prints `{"listening":"IP:PORT"}` (the real bound address)
/// as the only line this process writes to stdout.
pub async fn bind_and_announce(addr: SocketAddr) -> anyhow::Result<TcpListener> {
    let listener = TcpListener::bind(addr)
        .await
        .with_context(|| format!("binding {addr}"))?;
    let local = listener.local_addr().context("reading the bound address")?;
    let line = serde_json::json!({ "listening": local.to_string() });
    let mut stdout = std::io::stdout().lock();
    writeln!(stdout, "{line}")
        .and_then(|()| stdout.flush())
        .context("writing the listening line to stdout")?;
    tracing::info!(addr = %local, "listening");
    Ok(listener)
}

/// Resolves on the first SIGTERM or SIGINT.
pub async fn shutdown_signal() {
    use tokio::signal::unix::{signal, SignalKind};

    let terminate = async {
        match signal(SignalKind::terminate()) {
            Ok(mut sigterm) => {
                sigterm.recv().await;
            }
            Err(error) => {
                tracing::warn!(%error, "cannot listen for SIGTERM");
                std::future::pending::<()>().await;
            }
        }
    };
    let interrupt = async {
        if let Err(error) = tokio::signal::ctrl_c().await {
            tracing::warn!(%error, "cannot listen for SIGINT");
            std::future::pending::<()>().await;
        }
    };
    tokio::select! {
        () = terminate => tracing::info!("SIGTERM received, shutting down"),
        () = interrupt => tracing::info!("SIGINT received, shutting down"),
    }
}

//! HTTP: one router per role, errors mapped in [`error`], served until a shutdown signal.
//!
//! - [`scoring`]: `/ping`, `/health`, `/version`, `/invocations`, `/models/{name}/invocations`

pub mod error;
pub mod scoring;

use std::future::Future;

use axum::Router;
use tokio::net::TcpListener;

pub use error::ApiError;
pub use scoring::ScoringState;

/// Serve `app` on an already-bound listener until `shutdown` resolves, then stop accepting and
/// let in-flight requests finish.
pub async fn serve(
    listener: TcpListener,
    app: Router,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let app = app.fallback(|| async { ApiError::NotFound("no such endpoint".into()) });
    axum::serve(listener, app)
        .with_graceful_shutdown(shutdown)
        .await
}

/// Resolves on SIGINT or SIGTERM.
pub async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! {
        _ = ctrl_c => {},
        _ = term => {},
    }
    tracing::info!("shutdown signal received; draining in-flight requests");
}

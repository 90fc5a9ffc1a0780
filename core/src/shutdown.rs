//! Waiting for a daemon's stop request: Ctrl-C or SIGTERM (what `kill`, systemd and
//! Kubernetes send).

/// Resolves when the process is asked to stop.
pub async fn requested() {
    let mut terminate =
        tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()).ok();
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = async {
            match terminate.as_mut() {
                Some(signal) => { signal.recv().await; }
                None => std::future::pending::<()>().await,
            }
        } => {}
    }
}

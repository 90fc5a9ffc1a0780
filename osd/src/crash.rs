//! Places where a chaos build (the `failpoints` feature) can kill the OSD on
//! purpose, to test what the cluster does about a crash at the worst moment of a
//! protocol: set the failpoint of that name to `return` (`PUT /failpoints/NAME` on
//! the metrics endpoint) and the next OSD to pass there aborts. A release build
//! compiles them to nothing.
//!
//! - `crash-replicated-applied`: a replicated primary applied a write, no replica
//!   has it yet;
//! - `crash-ec-prepared`: an erasure-coded primary has every shard's part pending,
//!   none committed;
//! - `crash-ec-shard-commit`: a shard is about to commit its part, the primary
//!   waits for it.

/// Aborts the process when the failpoint `name` is set (chaos builds only).
pub fn point(name: &str) {
    #[cfg(feature = "failpoints")]
    if fail::eval(name, |_| ()).is_some() {
        tracing::error!(failpoint = name, "crashing on purpose");
        std::process::abort();
    }
    #[cfg(not(feature = "failpoints"))]
    let _ = name;
}

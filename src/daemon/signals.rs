//! The one place where signals become [`Control`] messages: SIGHUP → reload,
//! SIGTERM/SIGINT → shutdown (a second one: stop waiting).

use super::Control;
use anyhow::Context;
use futures_util::StreamExt;
use tokio::sync::mpsc::UnboundedSender;
use tracing::info;

/// Installs the handlers and forwards each signal to `tx` until the receiver is gone.
/// Must be called inside the runtime.
pub fn forward(tx: UnboundedSender<Control>) -> anyhow::Result<()> {
    use signal_hook::consts::{SIGHUP, SIGINT, SIGTERM};
    let mut signals = signal_hook_tokio::Signals::new([SIGHUP, SIGINT, SIGTERM])
        .context("installing signal handlers")?;
    tokio::spawn(async move {
        while let Some(sig) = signals.next().await {
            let msg = if sig == SIGHUP {
                info!("SIGHUP: reloading policies and reopening the audit log");
                Control::Reload
            } else {
                info!(signal = sig, "stop signal received");
                Control::Shutdown
            };
            if tx.send(msg).is_err() {
                break;
            }
        }
    });
    Ok(())
}

//! SIGINT and SIGTERM for the commands that read a capture file (`flows`, `replay`):
//! the first one asks the file reader to stop at the next read, so that the run ends as
//! if the capture ended there — every packet read so far is metered, flows are flushed,
//! outputs are written whole — and the command says it was interrupted and exits
//! 128 + the signal number. The handler is installed with `SA_RESETHAND`: a second
//! signal has its default effect (the process ends at once; outputs are written to an
//! unnamed temporary and linked into place only when complete, so nothing half-written
//! is left). Live capture handles its signals itself (`engine::live`, `sigtimedwait`).
#![allow(unsafe_code)] // sigaction; the block has a SAFETY comment

use std::sync::atomic::{AtomicI32, Ordering::Relaxed};

use nix::sys::signal::{sigaction, SaFlags, SigAction, SigHandler, SigSet, Signal};

/// The signal that asked the reader to stop (0: none).
static REQUESTED: AtomicI32 = AtomicI32::new(0);

extern "C" fn on_signal(sig: libc::c_int) {
    // Async-signal-safe: one atomic store.
    REQUESTED.store(sig, Relaxed);
}

/// Installs the handlers for SIGINT and SIGTERM (once per process).
pub fn install() -> std::io::Result<()> {
    let act = SigAction::new(
        SigHandler::Handler(on_signal),
        // SA_RESTART: other threads' blocking calls are not interrupted; the reader polls
        // streams with a timeout and reads files in bounded steps, so it sees the flag.
        SaFlags::SA_RESETHAND | SaFlags::SA_RESTART,
        SigSet::empty(),
    );
    for sig in [Signal::SIGINT, Signal::SIGTERM] {
        // SAFETY: the handler only stores into an atomic, which is async-signal-safe.
        unsafe { sigaction(sig, &act) }.map_err(std::io::Error::from)?;
    }
    Ok(())
}

/// The signal received since [`install`], if any.
#[inline]
pub fn requested() -> Option<i32> {
    match REQUESTED.load(Relaxed) {
        0 => None,
        s => Some(s),
    }
}

/// "SIGINT", "SIGTERM", or the number.
pub fn signal_name(sig: i32) -> String {
    Signal::try_from(sig).map_or_else(|_| format!("signal {sig}"), |s| s.as_str().to_string())
}

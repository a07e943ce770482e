//! Ctrl-C and friends: a signal only sets a flag, and the bench stops after the
//! current run so its cleanup guards still run.

use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

static INTERRUPTED: AtomicBool = AtomicBool::new(false);

extern "C" fn on_signal(_sig: libc::c_int) {
    if !INTERRUPTED.swap(true, Ordering::SeqCst) {
        let msg = b"\ninterrupted: cleaning up after the current run\n";
        // SAFETY: write(2) is async-signal-safe; the buffer is static.
        unsafe {
            libc::write(2, msg.as_ptr().cast(), msg.len());
        }
    }
}

pub fn install_signal_handlers() {
    let handler = on_signal as extern "C" fn(libc::c_int);
    for sig in [libc::SIGINT, libc::SIGTERM, libc::SIGHUP] {
        // SAFETY: the handler only touches an atomic and calls write(2).
        unsafe {
            libc::signal(sig, handler as libc::sighandler_t);
        }
    }
}

pub fn interrupted() -> bool {
    INTERRUPTED.load(Ordering::SeqCst)
}

/// Sleeps, but returns early once interrupted or `stop` is set.
pub fn sleep_unless(d: Duration, stop: Option<&AtomicBool>) {
    let step = Duration::from_millis(20);
    let mut left = d;
    while !left.is_zero() {
        if interrupted() || stop.is_some_and(|s| s.load(Ordering::SeqCst)) {
            return;
        }
        let s = left.min(step);
        std::thread::sleep(s);
        left -= s;
    }
}

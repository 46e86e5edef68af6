//! Shared by the examples: SIGINT (Ctrl-C) and SIGTERM (`kill`, systemd, container runtimes)
//! both ask an example to stop, and it stops the same way for either.

use std::fmt;
use std::io;

use tokio::signal::unix::{signal, Signal, SignalKind};

/// A signal that asked the example to stop.
#[derive(Debug, Clone, Copy)]
pub enum StopSignal {
    Interrupt,
    Terminate,
}

impl StopSignal {
    /// The status a shell reports for a process this signal killed (128 + its number).
    #[allow(dead_code)] // Only the demo, which exits 0 only when every step happened.
    pub fn shell_status(self) -> u8 {
        match self {
            StopSignal::Interrupt => 128 + 2,
            StopSignal::Terminate => 128 + 15,
        }
    }
}

impl fmt::Display for StopSignal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            StopSignal::Interrupt => "SIGINT",
            StopSignal::Terminate => "SIGTERM",
        })
    }
}

/// SIGINT and SIGTERM, caught from [`StopSignals::install`] on: neither kills the process
/// any more, [`StopSignals::recv`] reports them. Install before loading anything that must
/// be unloaded, so a signal that comes in the meantime waits for the cleanup.
pub struct StopSignals {
    interrupt: Signal,
    terminate: Signal,
}

impl StopSignals {
    pub fn install() -> io::Result<Self> {
        Ok(StopSignals {
            interrupt: signal(SignalKind::interrupt())?,
            terminate: signal(SignalKind::terminate())?,
        })
    }

    /// The next SIGINT or SIGTERM (one received since `install` counts).
    pub async fn recv(&mut self) -> StopSignal {
        tokio::select! {
            _ = self.interrupt.recv() => StopSignal::Interrupt,
            _ = self.terminate.recv() => StopSignal::Terminate,
        }
    }
}

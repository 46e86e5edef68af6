//! The crate's errors: [`QosError`], the typed source inside the `io::Error`s the socket API
//! returns, and [`InvalidSpec`]. They sit below both the agent and the socket API, which
//! both report them.

use std::io;

use crate::engine::CommandError;
use crate::flow::AdmissionDenied;
use crate::wire::RsvpError;

/// Why a [`QosSpec`](crate::QosSpec) can never be a valid flowspec: the field and what is wrong with it.
/// Returned by [`QosSpec::validate`](crate::QosSpec::validate); `connect` and `bind` report it as an `InvalidInput`
/// error whose source is [`QosError::InvalidSpec`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid qos spec: {field} {problem}")]
#[non_exhaustive]
pub struct InvalidSpec {
    /// The spec's field: `rate`, `bucket`, `peak`, `min_policed`, `max_packet` or
    /// `reserved rate`.
    pub field: &'static str,
    /// What is wrong with it.
    pub problem: String,
}

/// Why a QoS socket operation failed. The socket API returns it as the source of an
/// [`io::Error`]; get it back with `err.get_ref().and_then(|e| e.downcast_ref::<QosError>())`.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[non_exhaustive]
pub enum QosError {
    /// `Signaling::None` was asked for on the client side, where IBM i's `qtoq_connect` calls it invalid.
    #[error("signaling none is only valid on the server side: use Signaling::Rsvp for a client, or a plain TcpStream")]
    NoSignalingOnClient,
    /// The spec can never be a valid flowspec (see [`QosSpec::validate`](crate::QosSpec::validate)).
    #[error(transparent)]
    InvalidSpec(#[from] InvalidSpec),
    /// Admission control refused the connection's rule (`Signaling::None` accept).
    #[error("admission denied: {0}")]
    AdmissionDenied(#[from] AdmissionDenied),
    /// The enforcer could not load the connection's rule.
    #[error("the enforcement rule could not be loaded: {reason} ({error})")]
    RuleFailed {
        /// The RSVP error the failure deserves (see
        /// [`EnforceError::rsvp_error`](crate::enforce::EnforceError::rsvp_error)).
        error: RsvpError,
        /// Why.
        reason: String,
    },
    /// The enforcer could not unload the connection's rule on close.
    #[error("the enforcement rule could not be removed: {0}")]
    RuleRemoval(String),
    /// The agent refused the command.
    #[error("the qos agent refused the request: {0}")]
    Command(#[from] CommandError),
    /// qosd, the host's daemon, refused the request or went away.
    #[error("qosd: {0}")]
    Daemon(String),
    /// The agent task is gone (its runtime shut down, or it failed).
    #[error("the qos agent has stopped: build a new agent (or let the default one restart)")]
    AgentStopped,
}

impl QosError {
    /// The [`io::ErrorKind`] this error is reported with.
    pub fn kind(&self) -> io::ErrorKind {
        match self {
            QosError::NoSignalingOnClient | QosError::InvalidSpec(_) => io::ErrorKind::InvalidInput,
            QosError::AdmissionDenied(_) => io::ErrorKind::PermissionDenied,
            QosError::RuleFailed { .. } | QosError::RuleRemoval(_) => io::ErrorKind::Other,
            // Not the caller's input: the agent has no room (like EMFILE).
            QosError::Command(CommandError::TableFull) => io::ErrorKind::Other,
            QosError::Command(_) => io::ErrorKind::InvalidInput,
            QosError::AgentStopped => io::ErrorKind::BrokenPipe,
            QosError::Daemon(_) => io::ErrorKind::Other,
        }
    }

    /// Whether admission control refused the request.
    pub fn is_admission_denied(&self) -> bool {
        matches!(self, QosError::AdmissionDenied(_))
    }
}

impl From<QosError> for io::Error {
    fn from(err: QosError) -> io::Error {
        io::Error::new(err.kind(), err)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn io_errors_carry_the_typed_source() {
        let denied = AdmissionDenied::admission(2, "pool full");
        let io: io::Error = QosError::from(denied.clone()).into();
        assert_eq!(io.kind(), io::ErrorKind::PermissionDenied);
        let source = io.get_ref().and_then(|e| e.downcast_ref::<QosError>());
        assert_eq!(source, Some(&QosError::AdmissionDenied(denied)));
        assert!(io.to_string().contains("pool full"));
        let client: io::Error = QosError::NoSignalingOnClient.into();
        assert_eq!(client.kind(), io::ErrorKind::InvalidInput);
        let full: io::Error = QosError::Command(CommandError::TableFull).into();
        assert_eq!(full.kind(), io::ErrorKind::Other);
        assert!(full.to_string().contains("session table full"));
    }
}

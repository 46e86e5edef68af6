//! The public socket API: [`QosListener`], [`QosStream`], [`QosEvents`], [`QosSpec`].
//!
//! The three flows of IBM i's QoS socket API (`qtoq_accept` with and without signaling, `qtoq_connect`),
//! async-native:
//!
//! | call | what happens |
//! |---|---|
//! | `QosListener::accept`, [`Signaling::Rsvp`] | TCP accept; session for the connection; PATH toward the client; the stream returns at once; `Established` when the client's RESV was admitted and the rule loaded |
//! | `QosListener::accept`, [`Signaling::None`] | TCP accept; admission and rule load *before* `accept` returns; a refused connection is closed and reported as an error |
//! | `QosStream::connect` | session primed for the server's PATH; TCP connect; RESV sent when the PATH arrives; `Established` on the confirmation |
//! | `QosStream::builder().signaling(Signaling::None)` | `InvalidInput`, nothing created |

pub(crate) mod event;
mod listener;
mod spec;
mod stream;

pub use event::{QosEvent, QosEvents};
pub use listener::{QosListener, QosListenerBuilder};
pub use spec::{QosSpec, Signaling};
pub use stream::{QosStream, QosStreamBuilder};

use crate::Agent;

/// The agent a socket uses: the one given, or the process's default.
fn agent_or_default(agent: Option<&Agent>) -> std::io::Result<Agent> {
    match agent {
        Some(agent) => Ok(agent.clone()),
        None => Agent::default_agent(),
    }
}

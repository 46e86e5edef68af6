//! Shared by the examples: the one line that says which agent an example uses.

use qtoq::agent::protocol::socket_path;
use qtoq::Agent;

/// `qosd at PATH ...` for the host's daemon, `embedded ...` for an agent of this process.
pub fn describe(agent: &Agent) -> String {
    if agent.uses_daemon() {
        format!(
            "qosd at {} (the host's daemon: its policy, enforcer and budget; transport {})",
            socket_path().display(),
            agent.transport()
        )
    } else {
        format!(
            "embedded in this process (transport {}, bound {:?})",
            agent.transport(),
            agent.bound_addrs()
        )
    }
}

//! The Tokio driver ("QoS server"): owns a transport, the engine, timers and the enforcer.

/// Handle to a running agent.
#[derive(Debug, Clone)]
pub struct Agent {}

//! # qtoq — RSVP-signaled, enforced QoS reservations for Tokio TCP connections
//!
//! `qtoq` rebuilds the IBM i `qtoq_accept()` / `qtoq_connect()` / `qtoq_close()` flow
//! async-native: a [`QosListener`] and a [`QosStream`] wrap Tokio sockets, a background
//! agent signals RSVP (RFC 2205) reservations for the connection, runs admission control,
//! loads an enforcement rule into the Linux stack and keeps the soft state refreshed.
//!
//! The crate is layered, each layer using only those listed before it (the README's
//! "Layers" section maps them to folders; `tests/layers.rs` checks the order):
//!
//! * [`wire`] — sans-IO RSVP codec (RFC 2205 and 2210, RFC 2747 INTEGRITY, RFC 2961
//!   refresh-reduction objects and messages);
//! * [`integrity`] — RSVP message authentication (RFC 2747): keys, signing, verification,
//!   replay protection;
//! * [`flow`] — the vocabulary the layers above share: flows, rules, admission;
//! * [`engine`] — sans-IO RSVP soft-state machine, time passed in;
//! * [`policy`] — QoS policy rules and admission control;
//! * [`enforce`] — enforcement backends (socket options, Linux tc, recording);
//! * [`QosError`] and [`InvalidSpec`] — the errors the agent and the socket API report;
//! * [`agent`] — the Tokio driver that owns transport, engine, timers and enforcer; it never
//!   names a socket type;
//! * the public socket API re-exported at the crate root ([`QosListener`], [`QosStream`],
//!   [`QosEvents`]), a thin front end over the agent.
#![warn(missing_docs, missing_debug_implementations, unreachable_pub)]
#![deny(unsafe_code)]

pub mod agent;
#[cfg(feature = "daemon")]
pub mod daemon;
pub mod enforce;
pub mod engine;
mod error;
pub mod flow;
pub mod integrity;
mod net;
pub mod policy;
mod sys;
pub mod wire;

pub use agent::{Agent, Reservation};
pub use error::{InvalidSpec, QosError};
pub use net::*;

// Compile-checks the README's code blocks.
#[doc = include_str!("../README.md")]
#[cfg(doctest)]
pub struct ReadmeDoctests;

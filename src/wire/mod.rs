//! Sans-IO RSVP codec (RFC 2205 messages and objects, RFC 2210 IntServ bodies, RFC 2747
//! INTEGRITY, RFC 2961 refresh reduction). No tokio, no sockets, no clock.

pub mod intserv;

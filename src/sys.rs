//! The only module allowed `unsafe`: thin wrappers over socket options libc exposes and
//! socket2 does not.
#![allow(unsafe_code)]

//! qosctl: see what qosd holds (placeholder until its commands land).
fn main() {}

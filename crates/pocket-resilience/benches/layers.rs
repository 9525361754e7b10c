//! The added cost of the resilience layers per call (written next).

fn main() {}

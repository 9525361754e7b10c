//! Dispatch benchmarks (placeholder).
fn main() {}

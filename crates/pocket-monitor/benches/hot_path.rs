//! Hot-path costs (placeholder, replaced below).
fn main() {}

//! Task store benchmarks (filled in with the SQL stores).

fn main() {}

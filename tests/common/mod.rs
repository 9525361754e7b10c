//! Shared by the integration tests that start `pocket serve`.

use std::io::{BufRead, BufReader};
use std::process::Child;

/// Reads a spawned `pocket serve`'s stderr (it must be piped) up to its status line and
/// returns the base URL it prints (`pocket serve on http://ADDR ...`). Every stderr line, the
/// ones before and after it included, goes to `sink`; a thread keeps draining stderr so the
/// server never blocks on a full pipe.
pub(crate) fn serve_address(
    child: &mut Child,
    mut sink: impl FnMut(&str) + Send + 'static,
) -> String {
    let mut lines = BufReader::new(child.stderr.take().expect("stderr is piped")).lines();
    let base = loop {
        let line = lines
            .next()
            .expect("pocket serve printed its address")
            .expect("stderr is readable");
        sink(&line);
        if let Some(rest) = line.strip_prefix("pocket serve on ") {
            break rest
                .split_whitespace()
                .next()
                .expect("an address follows")
                .to_owned();
        }
    };
    std::thread::spawn(move || {
        for line in lines.map_while(Result::ok) {
            sink(&line);
        }
    });
    base
}

//! Local sinks: `file` (JSON Lines), `stdout` and `discard`.
//!
//! Each module holds one sink and its config struct. These sinks write the
//! native envelope (one JSON object per line). They never drop or reorder
//! events; the coordinator owns retries.

pub mod discard;
pub mod file;
pub mod stdout;

pub use discard::{DiscardConfig, DiscardSink};
pub use file::{FileConfig, FileSink};
pub use stdout::{StdoutConfig, StdoutSink};

/// Appends the native envelopes of `events` to `buf`, one JSON object per line.
pub fn encode_lines(events: &[deltaforge_core::Event], buf: &mut Vec<u8>) {
    for e in events {
        serde_json::to_writer(&mut *buf, &e.native()).expect("events always serialize");
        buf.push(b'\n');
    }
}

//! Other views of the event stream (`podtrace replay FILE --export FORMAT`).
//!
//! Exporters consume the enriched `Event`s that `run` prints and `replay` reproduces, so they
//! depend on the event schema only, never on the engine's internals.
pub mod chrome_trace;

pub use chrome_trace::ChromeTrace;

//! Log lines while `top` has the terminal: kept here (the last one shows on the bottom line)
//! and printed to stderr once the terminal is given back. Only when stderr is that terminal;
//! a redirected stderr gets them as they come, as with `run`.
use std::collections::VecDeque;
use std::io::Write;
use std::sync::Mutex;

/// Lines kept (the oldest go first).
const KEPT: usize = 1000;

static LINES: Mutex<VecDeque<String>> = Mutex::new(VecDeque::new());

/// A `tracing_subscriber` writer: each log line goes to the buffer.
#[derive(Clone, Copy, Debug, Default)]
pub struct Buffered;

pub struct LineWriter(Vec<u8>);

impl Write for LineWriter {
    fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
        self.0.extend_from_slice(b);
        Ok(b.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl Drop for LineWriter {
    fn drop(&mut self) {
        let text = String::from_utf8_lossy(&self.0);
        if let Ok(mut lines) = LINES.lock() {
            for l in text.lines().filter(|l| !l.is_empty()) {
                if lines.len() >= KEPT {
                    lines.pop_front();
                }
                lines.push_back(l.to_string());
            }
        }
    }
}

impl<'a> tracing_subscriber::fmt::MakeWriter<'a> for Buffered {
    type Writer = LineWriter;
    fn make_writer(&'a self) -> LineWriter {
        LineWriter(Vec::new())
    }
}

/// The last line logged, if any.
pub fn last() -> Option<String> {
    LINES.lock().ok().and_then(|l| l.back().cloned())
}

/// Prints what was kept to stderr and forgets it.
pub fn flush_to_stderr() {
    let lines: Vec<String> = match LINES.lock() {
        Ok(mut l) => l.drain(..).collect(),
        Err(_) => return,
    };
    let mut err = std::io::stderr().lock();
    for l in lines {
        let _ = writeln!(err, "{l}");
    }
}

//! The terminal under `top`: raw mode and the alternate screen, restored on every way out
//! (q, Ctrl-C, SIGTERM, an error, a panic); frames written by a thread of their own, so that
//! a slow terminal (SSH) never holds up the event loop (a frame is drawn only when the last
//! one is out: a frame is skipped, never queued); keys and resizes read by another thread.
use std::cell::RefCell;
use std::io::{IsTerminal, Write};
use std::rc::Rc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{mpsc, Arc, Once};
use std::thread::JoinHandle;
use std::time::Duration;

use anyhow::{Context, Result};
use crossterm::cursor::{Hide, Show};
use crossterm::event::{self, Event};
use crossterm::terminal::{
    disable_raw_mode, enable_raw_mode, EnterAlternateScreen, LeaveAlternateScreen,
};
use ratatui::backend::CrosstermBackend;
use ratatui::{Frame, Terminal};

use crate::error::Failure;

/// What the input thread reports.
#[derive(Debug)]
pub enum Input {
    Event(Event),
    /// The terminal went away (read failed: hang-up).
    Gone(String),
}

/// Where ratatui's output for one frame collects.
#[derive(Clone, Default)]
struct FrameBuf(Rc<RefCell<Vec<u8>>>);

impl Write for FrameBuf {
    fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
        self.0.borrow_mut().extend_from_slice(b);
        Ok(b.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// The terminal is in raw mode on the alternate screen (set by [`Term::enter`]).
static TAKEN: AtomicBool = AtomicBool::new(false);

/// Leaves the alternate screen, shows the cursor, and turns raw mode off; only the first
/// call after [`Term::enter`] does anything. A second leave would move the cursor back to
/// where it was saved on entering (xterm's and tmux's 1049 restores it), and the shell would
/// then write over what came after: a panic's message, restored by the panic hook and again
/// by `Term`'s drop while unwinding.
pub fn restore() {
    if !TAKEN.swap(false, Ordering::AcqRel) {
        return;
    }
    let _ = disable_raw_mode();
    let mut out = std::io::stdout();
    let _ = crossterm::execute!(out, Show, LeaveAlternateScreen);
    let _ = out.flush();
}

static PANIC_HOOK: Once = Once::new();

/// A panic restores the terminal before the message is printed (else it is lost on the
/// alternate screen and the shell is left in raw mode).
fn restore_on_panic() {
    PANIC_HOOK.call_once(|| {
        let previous = std::panic::take_hook();
        std::panic::set_hook(Box::new(move |info| {
            restore();
            previous(info);
        }));
    });
}

pub struct Term {
    terminal: Terminal<CrosstermBackend<FrameBuf>>,
    frame: FrameBuf,
    /// To the writer thread; it clears `busy` when a frame is out.
    frames: Option<mpsc::SyncSender<Vec<u8>>>,
    busy: Arc<AtomicBool>,
    /// The writer could not write (the terminal is gone).
    broken: Arc<AtomicBool>,
    writer: Option<JoinHandle<()>>,
    stop_input: Arc<AtomicBool>,
    reader: Option<JoinHandle<()>>,
    closed: bool,
}

impl Term {
    /// Takes the terminal on stdout (raw mode, alternate screen, no cursor); keys and
    /// resizes go to `input`.
    pub fn enter(input: tokio::sync::mpsc::UnboundedSender<Input>) -> Result<Self> {
        if !std::io::stdout().is_terminal() {
            return Err(Failure::BadInput(
                "podtrace top draws on a terminal, and stdout is not one (`podtrace run` \
                 prints events to a pipe or a file)"
                    .into(),
            )
            .into());
        }
        restore_on_panic();
        enable_raw_mode().context("turning on the terminal's raw mode")?;
        TAKEN.store(true, Ordering::Release);
        let mut out = std::io::stdout();
        if let Err(e) = crossterm::execute!(out, EnterAlternateScreen, Hide) {
            restore();
            return Err(e).context("switching to the terminal's alternate screen");
        }
        let frame = FrameBuf::default();
        let terminal = match Terminal::new(CrosstermBackend::new(frame.clone())) {
            Ok(t) => t,
            Err(e) => {
                restore();
                return Err(e).context("reading the terminal's size");
            }
        };
        let (tx, rx) = mpsc::sync_channel::<Vec<u8>>(1);
        let busy = Arc::new(AtomicBool::new(false));
        let broken = Arc::new(AtomicBool::new(false));
        let writer = {
            let (busy, broken) = (Arc::clone(&busy), Arc::clone(&broken));
            std::thread::Builder::new()
                .name("top-writer".into())
                .spawn(move || {
                    let mut out = std::io::stdout();
                    for bytes in rx {
                        if !broken.load(Ordering::Relaxed)
                            && (out.write_all(&bytes).is_err() || out.flush().is_err())
                        {
                            broken.store(true, Ordering::Relaxed);
                        }
                        busy.store(false, Ordering::Release);
                    }
                })
                .context("starting the terminal writer")?
        };
        let stop_input = Arc::new(AtomicBool::new(false));
        let reader = {
            let stop = Arc::clone(&stop_input);
            std::thread::Builder::new()
                .name("top-input".into())
                .spawn(move || {
                    while !stop.load(Ordering::Relaxed) {
                        // Checked before crossterm reads: on a hung-up terminal its read
                        // loop sees end of file forever and never returns.
                        if terminal_hung_up() {
                            let _ = input.send(Input::Gone("the terminal hung up".into()));
                            return;
                        }
                        let ready = match event::poll(Duration::from_millis(100)) {
                            Ok(r) => r,
                            Err(e) => {
                                let _ = input.send(Input::Gone(e.to_string()));
                                return;
                            }
                        };
                        if !ready {
                            continue;
                        }
                        let sent = match event::read() {
                            Ok(ev) => input.send(Input::Event(ev)),
                            Err(e) => {
                                let _ = input.send(Input::Gone(e.to_string()));
                                return;
                            }
                        };
                        if sent.is_err() {
                            return;
                        }
                    }
                })
                .context("starting the terminal reader")?
        };
        Ok(Self {
            terminal,
            frame,
            frames: Some(tx),
            busy,
            broken,
            writer: Some(writer),
            stop_input,
            reader: Some(reader),
            closed: false,
        })
    }

    /// The last frame is still being written (the next one waits).
    pub fn busy(&self) -> bool {
        self.busy.load(Ordering::Acquire)
    }

    /// The terminal could not be written to.
    pub fn broken(&self) -> bool {
        self.broken.load(Ordering::Relaxed)
    }

    /// Rows and columns now.
    pub fn size(&self) -> (u16, u16) {
        self.terminal
            .size()
            .map(|s| (s.width, s.height))
            .unwrap_or((80, 24))
    }

    /// Draws a frame and hands it to the writer; false (nothing drawn) while the last one is
    /// still being written.
    pub fn draw(&mut self, f: impl FnOnce(&mut Frame<'_>)) -> Result<bool> {
        if self.busy() {
            return Ok(false);
        }
        self.terminal.draw(f).context("drawing a frame")?;
        let bytes = std::mem::take(&mut *self.frame.0.borrow_mut());
        if bytes.is_empty() {
            return Ok(true);
        }
        if let Some(tx) = &self.frames {
            self.busy.store(true, Ordering::Release);
            if tx.try_send(bytes).is_err() {
                self.busy.store(false, Ordering::Release);
            }
        }
        Ok(true)
    }

    /// The terminal hung up (the SSH connection or the terminal emulator is gone).
    pub fn hung_up(&self) -> bool {
        terminal_hung_up()
    }

    /// Waits for the last frame, stops the writer, asks the reader to stop and gives the
    /// terminal back as it was. The reader is not waited for: if the terminal hung up while
    /// crossterm was reading it, that read never returns, and the process's exit ends it.
    pub fn close(&mut self) {
        if self.closed {
            return;
        }
        self.closed = true;
        self.stop_input.store(true, Ordering::Relaxed);
        self.frames = None;
        if let Some(w) = self.writer.take() {
            let _ = w.join();
        }
        restore();
        drop(self.reader.take());
    }
}

/// Whether the terminal on stdout hung up: a hung-up terminal polls as POLLHUP or POLLERR on
/// every descriptor that refers to it.
fn terminal_hung_up() -> bool {
    let mut fds = libc::pollfd {
        fd: libc::STDOUT_FILENO,
        events: libc::POLLOUT,
        revents: 0,
    };
    // SAFETY: one valid pollfd, a zero timeout; stdout stays open while top runs.
    let n = unsafe { libc::poll(&mut fds, 1, 0) };
    n > 0 && fds.revents & (libc::POLLHUP | libc::POLLERR | libc::POLLNVAL) != 0
}

impl Drop for Term {
    fn drop(&mut self) {
        self.close();
    }
}

//! `podtrace top`: the node's pods, containers and process trees as they change, full
//! screen. Fed by the same pipeline and engine as `run` (live: `live::run_with` serves this
//! frontend from its own event loop) and `replay` (`--from`: [`play`]); never by /proc.
//!
//! Every refresh (`--interval`, 1 s) takes the view model (`crate::view`) from the engine's
//! state, with the processes that exited a moment ago and each container's activity
//! ([`activity`]); keys change only how it is shown ([`ui`], [`model`]). Frames are drawn
//! at most every refresh and, after a key, at most 20 times a second, and are written by a
//! thread of their own ([`term`]): the event loop never waits on the terminal.
pub mod activity;
pub mod logbuf;
pub mod model;
pub mod play;
pub mod render;
pub mod term;
pub mod ui;
pub mod users;

use std::path::Path;
use std::time::Duration;

use anyhow::{Context, Result};
use crossterm::event::Event;
use tokio::signal::unix::{signal, SignalKind};
use tokio::sync::mpsc::{unbounded_channel, UnboundedReceiver};
use tokio::time::Instant;

use crate::cli::At;
use crate::clock::format_rfc3339;
use crate::engine::Engine;
use crate::live::{self, boot_now_ns, Flow, Frontend, RunOptions};
use crate::view::Filter;
use activity::Activity;
use model::{Row, Shape, Snapshot};
use term::{Input, Term};
use ui::{Action, Ui};
use users::Users;

/// Frames drawn after keys come at most this often.
const MIN_FRAME: Duration = Duration::from_millis(50);
/// Records applied between two looks at the terminal when playing a trace fast.
const PLAY_BATCH: usize = 20_000;

/// How `top` starts.
#[derive(Clone, Debug)]
pub struct Options {
    /// The filter it starts with (`--pod`, `--namespace`, `--container`, `--command`,
    /// `--all`).
    pub filter: Filter,
    /// How often the picture is taken again.
    pub interval: Duration,
    /// Colors (off with NO_COLOR).
    pub color: bool,
    /// Start frozen (from a trace: paused).
    pub frozen: bool,
}

/// Colors unless NO_COLOR is set to something (https://no-color.org).
pub fn color_wanted() -> bool {
    std::env::var_os("NO_COLOR").is_none_or(|v| v.is_empty())
}

enum Source {
    Live {
        node: String,
    },
    Trace {
        file: String,
        hostname: String,
        started_ns: u64,
    },
}

/// What the app waited for.
pub enum Wake {
    Input(Option<Input>),
    Refresh,
    Redraw,
    HangUp,
}

pub struct App {
    term: Term,
    input: UnboundedReceiver<Input>,
    hangup: tokio::signal::unix::Signal,
    refresh: tokio::time::Interval,
    redraw_at: Option<Instant>,
    last_draw: Instant,
    ui: Ui,
    activity: Activity,
    snap: Option<Snapshot>,
    users: Users,
    color: bool,
    source: Source,
    /// From a trace: where the playback is (set before each wake).
    playback: Option<play::Status>,
    /// From a trace: doublings (or halvings) of the speed asked for since the last look.
    speed_steps: i32,
}

impl App {
    fn new(opts: &Options, source: Source, users: Users) -> Result<Self> {
        let (tx, rx) = unbounded_channel();
        let hangup = signal(SignalKind::hangup()).context("installing the SIGHUP handler")?;
        let term = Term::enter(tx)?;
        let mut refresh = tokio::time::interval(opts.interval);
        refresh.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut ui = Ui::new(opts.filter.clone());
        ui.frozen = opts.frozen;
        Ok(Self {
            term,
            input: rx,
            hangup,
            refresh,
            redraw_at: None,
            last_draw: Instant::now(),
            ui,
            activity: Activity::new(u64::try_from(opts.interval.as_nanos()).unwrap_or(u64::MAX)),
            snap: None,
            users,
            color: opts.color,
            source,
            playback: None,
            speed_steps: 0,
        })
    }

    /// The display clock (ns since boot): now (never before the engine's latest record), or
    /// where the playback is.
    fn clock_ns(&self, engine: &Engine) -> u64 {
        match &self.playback {
            Some(p) => p.position_ns,
            None => boot_now_ns().max(engine.now_ns()),
        }
    }

    /// A new picture from the engine (the activity as of the last refresh).
    fn take(&mut self, engine: Option<&Engine>) {
        if let Some(e) = engine {
            self.snap = Some(Snapshot::take(
                e,
                &self.activity,
                self.clock_ns(e),
                self.ui.filter.all,
            ));
        }
    }

    /// A refresh: the activity since the last one, and a new picture.
    fn refresh_now(&mut self, engine: Option<&Engine>) {
        if std::env::var_os("PODTRACE_TOP_PANIC").is_some() {
            // The test of the panic path (docs/testing.md): the terminal must come back.
            panic!("PODTRACE_TOP_PANIC is set: panicking on purpose");
        }
        if let Some(e) = engine {
            let clock = self.clock_ns(e);
            self.activity.refresh(e, clock);
        }
        self.take(engine);
    }

    fn rows(&self) -> Vec<Row> {
        match &self.snap {
            Some(s) => model::rows(
                s,
                &Shape {
                    filter: self.ui.filter.clone(),
                    collapsed: Some(&self.ui.collapsed),
                    search: self.ui.search.as_deref(),
                    users: Some(&self.users),
                },
            ),
            None => Vec::new(),
        }
    }

    fn title(&self) -> String {
        let Some(s) = &self.snap else {
            return "podtrace top · starting: loading the kernel programs, reading /proc".into();
        };
        let when = format_rfc3339(s.clock.unix_ns(s.clock_ns));
        let (source, when) = match &self.source {
            Source::Live { node } => (node.clone(), when.get(11..19).unwrap_or(&when).to_string()),
            Source::Trace {
                file,
                hostname,
                started_ns,
            } => (
                format!("{file} ({hostname})"),
                format!(
                    "{} +{:.1}s",
                    when.get(..19).unwrap_or(&when),
                    s.clock_ns.saturating_sub(*started_ns) as f64 / 1e9
                ),
            ),
        };
        let containers = s.view.all_containers().count();
        let mut t = format!(
            "podtrace top · {source} · {when} · {} pods {containers} containers {} processes",
            s.view.pods.len(),
            s.processes
        );
        if let Some(r) = s.total_execs_per_s {
            t.push_str(&format!(" · {r:.1} exec/s"));
        }
        t
    }

    fn status(&self) -> String {
        let mut parts = Vec::new();
        let f = ui::filter_text(&self.ui.filter);
        parts.push(if f.is_empty() {
            "filter: none (\\)".to_string()
        } else {
            format!("filter: {f}")
        });
        if let Some(s) = &self.ui.search {
            parts.push(format!("search: {s}"));
        }
        parts.push(format!(
            "host: {} (H)",
            if self.ui.filter.all {
                "shown"
            } else {
                "hidden"
            }
        ));
        match &self.playback {
            Some(p) => {
                parts.push(format!(
                    "{} ×{}",
                    if p.paused { "PAUSED" } else { "playing" },
                    speed_text(p.speed)
                ));
                if p.ended {
                    parts.push("end of trace".into());
                }
            }
            None if self.ui.frozen => parts.push("FROZEN (f)".into()),
            None => {}
        }
        if let Some(s) = self.snap.as_ref().filter(|s| s.lost > 0) {
            parts.push(format!("lost {}", s.lost));
        }
        parts.push("? help  q quit".into());
        parts.join(" │ ")
    }

    fn schedule_redraw(&mut self) {
        let at = (self.last_draw + MIN_FRAME).max(Instant::now());
        self.redraw_at = Some(self.redraw_at.map_or(at, |t| t.min(at)));
    }

    /// Draws a frame unless the last one is still being written (then soon).
    fn draw(&mut self) -> Result<()> {
        if self.term.busy() {
            self.redraw_at = Some(Instant::now() + MIN_FRAME);
            return Ok(());
        }
        let rows = self.rows();
        let (_, h) = self.term.size();
        self.ui
            .place_cursor(&rows, usize::from(h).saturating_sub(render::CHROME));
        let title = self.title();
        let status = self.status();
        let screen = render::Screen {
            title,
            status,
            rows: &rows,
            ui: &self.ui,
            bottom: logbuf::last().unwrap_or_default(),
            color: self.color,
        };
        self.term.draw(|f| render::draw(f, &screen))?;
        self.redraw_at = None;
        self.last_draw = Instant::now();
        Ok(())
    }

    /// Doublings of the playback speed asked for since the last call.
    fn take_speed_steps(&mut self) -> i32 {
        std::mem::take(&mut self.speed_steps)
    }

    fn close(&mut self) {
        self.term.close();
    }
}

fn speed_text(s: f64) -> String {
    if s >= 1.0 {
        format!("{s:.0}")
    } else {
        format!("1/{:.0}", 1.0 / s)
    }
}

impl Frontend for App {
    type Wake = Wake;

    fn wait(&mut self) -> impl std::future::Future<Output = Wake> {
        let redraw_at = self.redraw_at;
        async move {
            tokio::select! {
                i = self.input.recv() => Wake::Input(i),
                _ = self.refresh.tick() => Wake::Refresh,
                _ = self.hangup.recv() => Wake::HangUp,
                _ = tokio::time::sleep_until(redraw_at.unwrap_or_else(Instant::now)), if redraw_at.is_some() => Wake::Redraw,
            }
        }
    }

    fn wake(&mut self, w: Wake, engine: Option<&Engine>) -> Result<Flow> {
        match w {
            Wake::Input(None) | Wake::HangUp => return Ok(Flow::Stop),
            Wake::Input(Some(Input::Gone(why))) => {
                tracing::warn!("the terminal went away: {why}");
                return Ok(Flow::Stop);
            }
            Wake::Input(Some(Input::Event(Event::Key(k)))) => {
                let rows = self.rows();
                match self.ui.key(k, &rows) {
                    Action::Quit => return Ok(Flow::Stop),
                    Action::Refresh => self.take(engine),
                    Action::Freeze if !self.ui.frozen => self.take(engine),
                    Action::Faster => self.speed_steps += 1,
                    Action::Slower => self.speed_steps -= 1,
                    Action::Freeze | Action::Redraw | Action::None => {}
                }
                self.schedule_redraw();
            }
            Wake::Input(Some(Input::Event(Event::Resize(..)))) => self.schedule_redraw(),
            Wake::Input(Some(Input::Event(_))) => {}
            Wake::Refresh => {
                if !self.ui.frozen || self.snap.is_none() {
                    self.refresh_now(engine);
                }
                self.draw()?;
            }
            Wake::Redraw => self.draw()?,
        }
        if self.term.broken() {
            tracing::warn!("the terminal cannot be written to: stopping");
            return Ok(Flow::Stop);
        }
        if self.term.hung_up() {
            tracing::warn!("the terminal hung up: stopping");
            return Ok(Flow::Stop);
        }
        Ok(Flow::Continue)
    }
}

fn runtime() -> Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("starting the async runtime")
}

/// `podtrace top` on the live node: `run`'s loop (`opts`: no NDJSON, `--record` if asked)
/// with the terminal as its frontend.
pub fn live(opts: RunOptions, top: Options) -> Result<()> {
    let node = opts.node.clone().unwrap_or_else(|| {
        std::fs::read_to_string("/proc/sys/kernel/hostname")
            .map(|s| s.trim().to_string())
            .unwrap_or_else(|_| "this node".into())
    });
    let result = runtime()?.block_on(async {
        let mut app = App::new(&top, Source::Live { node }, Users::from_host())?;
        app.draw()?;
        let r = live::run_with(opts, &mut app).await;
        app.close();
        r
    });
    logbuf::flush_to_stderr();
    result.map(|_| ())
}

/// `podtrace top --from TRACE`: the trace played from `at` at `speed`.
pub fn trace(path: &Path, lenient: bool, at: Option<At>, speed: f64, top: Options) -> Result<()> {
    // Before the terminal is taken: a bad trace is a plain error message.
    let mut player = play::Player::open(path, lenient, at, speed)?;
    let source = Source::Trace {
        file: path.display().to_string(),
        hostname: player.hostname.clone(),
        started_ns: player.started_ns,
    };
    let result = runtime()?.block_on(async {
        let mut sigint = signal(SignalKind::interrupt()).context("installing SIGINT handler")?;
        let mut sigterm = signal(SignalKind::terminate()).context("installing SIGTERM handler")?;
        let mut app = App::new(&top, source, Users::numeric())?;
        player.set_paused(top.frozen);
        app.playback = Some(player.status());
        let r: Result<()> = async {
            loop {
                let due = player.next_due()?;
                app.playback = Some(player.status());
                tokio::select! {
                    _ = tokio::time::sleep_until(due.unwrap_or_else(Instant::now)), if due.is_some() => {
                        player.advance(PLAY_BATCH)?;
                    }
                    w = app.wait() => {
                        app.playback = Some(player.status());
                        if app.wake(w, player.engine())? == Flow::Stop {
                            return Ok(());
                        }
                        player.set_paused(app.ui.frozen);
                        let steps = app.take_speed_steps();
                        if steps != 0 {
                            player.set_speed(player.speed() * 2f64.powi(steps));
                            app.playback = Some(player.status());
                            app.schedule_redraw();
                        }
                    }
                    _ = sigint.recv() => return Ok(()),
                    _ = sigterm.recv() => return Ok(()),
                }
            }
        }
        .await;
        app.close();
        r
    });
    logbuf::flush_to_stderr();
    result
}

#[cfg(test)]
mod tests;

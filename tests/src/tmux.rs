//! A real terminal for `podtrace top`: a tmux server of its own (`tmux -S <temp dir>/sock`), one
//! session running a shell, keys typed with `send-keys`, the screen read with
//! `capture-pane -p`. Dropping it kills the server.
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::{Duration, Instant};

use tempfile::TempDir;

/// Panics with a message unless `program` can be run (`program arg` starts at all).
pub fn require_tool(program: &str, arg: &str) {
    match Command::new(program).arg(arg).output() {
        Ok(_) => {}
        Err(e) => panic!(
            "`{program}` is needed by this test and cannot be run ({e}): \
             `cargo xtask setup --runtimes` installs it"
        ),
    }
}

pub struct Tmux {
    socket: PathBuf,
    pub session: String,
    _dir: TempDir,
}

impl Tmux {
    /// A detached session `width` x `height` running `sh` with the prompt `lab$ `, in `dir`.
    pub fn start(width: u16, height: u16, dir: &Path) -> Self {
        require_tool("tmux", "-V");
        let sock_dir = tempfile::Builder::new()
            .prefix("podtrace-top-tmux-")
            .tempdir()
            .expect("temp dir for the tmux socket");
        let t = Self {
            socket: sock_dir.path().join("sock"),
            session: "top".to_string(),
            _dir: sock_dir,
        };
        let (w, h) = (width.to_string(), height.to_string());
        let dir_s = dir.display().to_string();
        let out = t.run(&[
            "-f",
            "/dev/null",
            "new-session",
            "-d",
            "-s",
            &t.session.clone(),
            "-x",
            &w,
            "-y",
            &h,
            "-c",
            &dir_s,
            "env",
            "PS1=lab$ ",
            "ENV=/dev/null",
            "sh",
        ]);
        assert!(
            out.status.success(),
            "tmux new-session failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        // No status line: the pane is the whole window.
        t.ok(&["set-option", "-t", &t.session.clone(), "status", "off"]);
        t.wait_for(Duration::from_secs(10), "the shell's prompt", |s| {
            s.contains("lab$")
        });
        t
    }

    fn run(&self, args: &[&str]) -> Output {
        Command::new("tmux")
            .arg("-S")
            .arg(&self.socket)
            .args(args)
            .output()
            .unwrap_or_else(|e| {
                panic!("cannot run tmux ({e}): `cargo xtask setup --runtimes` installs it")
            })
    }

    fn ok(&self, args: &[&str]) -> String {
        let out = self.run(args);
        assert!(
            out.status.success(),
            "`tmux {}` failed: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// Types `text` literally (no key names).
    pub fn type_text(&self, text: &str) {
        self.ok(&["send-keys", "-t", &self.session, "-l", text]);
    }

    /// Presses a key by its tmux name (`Enter`, `Escape`, `q`).
    pub fn key(&self, name: &str) {
        self.ok(&["send-keys", "-t", &self.session, name]);
    }

    /// A command line typed into the shell and run.
    pub fn shell(&self, line: &str) {
        self.type_text(line);
        self.key("Enter");
    }

    /// The visible screen, one string per line, trailing blanks cut.
    pub fn screen(&self) -> String {
        self.ok(&["capture-pane", "-p", "-t", &self.session])
    }

    /// Whether the pane shows the alternate screen (a full-screen program is on).
    pub fn alternate_on(&self) -> bool {
        self.ok(&[
            "display-message",
            "-p",
            "-t",
            &self.session,
            "#{alternate_on}",
        ])
        .trim()
            == "1"
    }

    /// The pane's terminal device (`/dev/pts/N`).
    pub fn pane_tty(&self) -> String {
        self.ok(&["display-message", "-p", "-t", &self.session, "#{pane_tty}"])
            .trim()
            .to_string()
    }

    /// Polls the screen every 100 ms until `f` holds; panics with `what` and the last screen.
    pub fn wait_for(&self, limit: Duration, what: &str, mut f: impl FnMut(&str) -> bool) -> String {
        let start = Instant::now();
        loop {
            let s = self.screen();
            if f(&s) {
                return s;
            }
            assert!(
                start.elapsed() < limit,
                "after {limit:?} the terminal does not show {what}; it shows:\n{s}"
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }
}

impl Drop for Tmux {
    fn drop(&mut self) {
        let _ = self.run(&["kill-server"]);
    }
}

/// One process row of `top`'s screen: `M HOST-PID CTR-PID USER AGE COMMAND`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProcRow {
    pub mark: char,
    pub pid: u32,
    /// None for `-` (the same pid namespace as the host).
    pub ctr_pid: Option<u32>,
    pub user: String,
    pub command: String,
}

/// The process rows of a screen (lines that are not titles, pods, containers or the header).
pub fn proc_rows(screen: &str) -> Vec<ProcRow> {
    screen.lines().filter_map(proc_row).collect()
}

/// A line as a process row, if it is one.
pub fn proc_row(line: &str) -> Option<ProcRow> {
    let mut chars = line.chars();
    let mark = chars.next()?;
    if !matches!(mark, ' ' | '+' | 'x' | 'Z') {
        return None;
    }
    let rest: String = chars.collect();
    let mut words = rest.split_whitespace();
    let pid = words.next()?.parse().ok()?;
    let ctr = words.next()?;
    let ctr_pid = if ctr == "-" {
        None
    } else {
        Some(ctr.parse().ok()?)
    };
    let user = words.next()?.to_string();
    let _age = words.next()?;
    let command = words.collect::<Vec<_>>().join(" ");
    Some(ProcRow {
        mark,
        pid,
        ctr_pid,
        user,
        command,
    })
}

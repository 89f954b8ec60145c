//! Drawing `top`'s rows with ratatui: a title line, a status line, the column header, the
//! rows around the cursor, and a bottom line (a prompt, a message or the last log line);
//! the help over them. Color only when asked (not with NO_COLOR): then bold, reverse, dim
//! and underline say the same.
use ratatui::layout::Rect;
use ratatui::style::{Color, Modifier, Style};
use ratatui::text::{Line, Span};
use ratatui::widgets::{Block, Clear, Paragraph};
use ratatui::Frame;

use super::activity::Rate;
use super::model::{Cells, Fold, Mark, Row};
use super::ui::{Prompt, Ui};

/// What one frame shows besides the rows.
pub struct Screen<'a> {
    pub title: String,
    pub status: String,
    pub rows: &'a [Row],
    pub ui: &'a Ui,
    /// The bottom line when no prompt is open and no message waits.
    pub bottom: String,
    pub color: bool,
}

/// Lines above the rows (title, status, column header) and below them (bottom line).
pub const CHROME: usize = 4;

/// The column header of process rows.
pub const HEADER: &str = "  HOST-PID CTR-PID USER       AGE COMMAND";

pub const HELP: &[&str] = &[
    "podtrace top: pods, containers and their processes as they change",
    "",
    "  up/down k/j  move          PgUp/PgDn g/G  page, first, last",
    "  left/right   fold, unfold  Enter/space     fold or unfold",
    "  C / E        fold all containers and pods, unfold all",
    "  \\ or F       filter: pod:NAME ns:NAMESPACE ctr:ID-OR-NAME cmd:TEXT",
    "               (words alone: command text; empty: no filter)",
    "  /            search; n / N next, previous match; Esc clears",
    "  f or z       freeze (from a trace: pause)",
    "  H or a       show or hide host processes",
    "  > / <        from a trace: play faster, slower",
    "  ?            this help        q, Ctrl-C  quit",
    "",
    "  marks: + started a moment ago, x exited (how, for 5 s),",
    "         Z exited, not reaped (<defunct>)",
    "  container: processes, execs per second, and processes that",
    "             came and went between two refreshes (short-lived)",
    "",
    "  any key closes this help",
];

fn style(color: bool, fg: Color, no_color: Modifier) -> Style {
    if color {
        Style::default().fg(fg)
    } else {
        Style::default().add_modifier(no_color)
    }
}

/// `3 procs  1.5 exec/s  7 short-lived`.
pub fn activity_text(processes: usize, rate: Rate) -> String {
    let mut s = format!("{processes} proc{}", if processes == 1 { "" } else { "s" });
    if let Some(r) = rate.execs_per_s {
        s.push_str(&format!(
            "  {r:.1} exec/s  {} short-lived",
            rate.short_lived
        ));
    }
    s
}

/// At most `width` characters of `s` (the last one `…` when cut).
pub fn fit(s: &str, width: usize) -> String {
    if s.chars().count() <= width {
        return s.to_string();
    }
    if width == 0 {
        return String::new();
    }
    let mut out: String = s.chars().take(width - 1).collect();
    out.push('…');
    out
}

fn fold_glyph(f: Fold) -> char {
    match f {
        Fold::Leaf => ' ',
        Fold::Open => '▾',
        Fold::Closed => '▸',
    }
}

/// `left` then `right` flush to the end of `width` (left cut to make room).
fn spread(left: &str, right: &str, width: usize) -> String {
    let r = right.chars().count();
    if r + 2 > width {
        return fit(left, width);
    }
    let l = fit(left, width - r - 2);
    let pad = width - l.chars().count() - r;
    format!("{l}{:pad$}{right}", "")
}

/// A row as text, `width` wide at most.
pub fn row_text(row: &Row, width: usize) -> String {
    let indent = "  ".repeat(row.depth);
    match &row.cells {
        Cells::Pod {
            label,
            containers,
            processes,
        } => spread(
            &format!("{indent}{} {label}", fold_glyph(row.fold)),
            &format!(
                "{containers} container{}  {processes} procs",
                if *containers == 1 { "" } else { "s" }
            ),
            width,
        ),
        Cells::Container {
            label,
            processes,
            rate,
        } => spread(
            &format!("{indent}{} {label}", fold_glyph(row.fold)),
            &activity_text(*processes, *rate),
            width,
        ),
        Cells::Host { processes, rate } => spread(
            &format!("{indent}{} host processes", fold_glyph(row.fold)),
            &activity_text(*processes, *rate),
            width,
        ),
        Cells::Proc {
            pid,
            ctr_pid,
            user,
            age,
            command,
        } => {
            let ctr = ctr_pid.map_or_else(|| "-".to_string(), |p| p.to_string());
            let line = format!(
                "{} {pid:>8} {ctr:>7} {:<8} {age:>5} {command}",
                row.mark.symbol(),
                fit(user, 8),
            );
            fit(&line, width)
        }
    }
}

fn row_style(row: &Row, color: bool) -> Style {
    let mut s = match (&row.cells, row.mark) {
        (Cells::Pod { .. }, _) => {
            style(color, Color::Cyan, Modifier::BOLD).add_modifier(Modifier::BOLD)
        }
        (Cells::Container { .. }, _) => {
            style(color, Color::Yellow, Modifier::BOLD).add_modifier(Modifier::BOLD)
        }
        (Cells::Host { .. }, _) => {
            style(color, Color::Magenta, Modifier::BOLD).add_modifier(Modifier::BOLD)
        }
        (_, Mark::New) => style(color, Color::Green, Modifier::BOLD),
        (_, Mark::Exited) => style(color, Color::Red, Modifier::DIM),
        (_, Mark::Zombie) => style(color, Color::Magenta, Modifier::DIM),
        _ if super::model::is_init(row) => style(color, Color::LightBlue, Modifier::empty()),
        _ => Style::default(),
    };
    if row.matched {
        s = s.add_modifier(Modifier::UNDERLINED);
        if color {
            s = s.bg(Color::Rgb(60, 60, 0));
        }
    }
    s
}

/// Draws one frame.
pub fn draw(f: &mut Frame<'_>, s: &Screen<'_>) {
    let area = f.area();
    let width = usize::from(area.width);
    let height = usize::from(area.height);
    if width < 20 || height < CHROME + 1 {
        f.render_widget(Paragraph::new("podtrace top: terminal too small"), area);
        return;
    }
    let title_style = if s.color {
        Style::default()
            .fg(Color::White)
            .bg(Color::Blue)
            .add_modifier(Modifier::BOLD)
    } else {
        Style::default().add_modifier(Modifier::REVERSED | Modifier::BOLD)
    };
    let line = |y: usize| Rect::new(area.x, area.y + y as u16, area.width, 1);
    f.render_widget(
        Paragraph::new(Line::styled(
            format!("{:width$}", fit(&s.title, width)),
            title_style,
        )),
        line(0),
    );
    f.render_widget(Paragraph::new(fit(&s.status, width)), line(1));
    f.render_widget(
        Paragraph::new(Line::styled(
            fit(HEADER, width),
            Style::default().add_modifier(Modifier::BOLD | Modifier::UNDERLINED),
        )),
        line(2),
    );
    let body = height - CHROME;
    let shown = s.rows.iter().enumerate().skip(s.ui.scroll).take(body);
    let lines: Vec<Line<'_>> = shown
        .map(|(i, r)| {
            let mut st = row_style(r, s.color);
            let text = if i == s.ui.cursor_index {
                st = st.add_modifier(Modifier::REVERSED);
                format!("{:width$}", row_text(r, width))
            } else {
                row_text(r, width)
            };
            Line::styled(text, st)
        })
        .collect();
    f.render_widget(
        Paragraph::new(lines),
        Rect::new(area.x, area.y + 3, area.width, body as u16),
    );
    let bottom = match (&s.ui.prompt, &s.ui.message) {
        (Some(Prompt::Filter(t)), _) => Line::from(vec![
            Span::styled("filter> ", Style::default().add_modifier(Modifier::BOLD)),
            Span::raw(format!("{t}▏")),
        ]),
        (Some(Prompt::Search(t)), _) => Line::from(vec![
            Span::styled("search> ", Style::default().add_modifier(Modifier::BOLD)),
            Span::raw(format!("{t}▏")),
        ]),
        (None, Some(m)) => {
            Line::styled(fit(m, width), Style::default().add_modifier(Modifier::BOLD))
        }
        (None, None) => Line::raw(fit(&s.bottom, width)),
    };
    f.render_widget(Paragraph::new(bottom), line(height - 1));
    if s.ui.help {
        let w = (HELP.iter().map(|l| l.chars().count()).max().unwrap_or(0) + 2).min(width) as u16;
        let h = (HELP.len() + 2).min(height) as u16;
        let r = Rect::new(
            area.x + (area.width - w) / 2,
            area.y + (area.height - h) / 2,
            w,
            h,
        );
        f.render_widget(Clear, r);
        f.render_widget(
            Paragraph::new(HELP.iter().map(|l| Line::raw(*l)).collect::<Vec<_>>())
                .block(Block::bordered().title(" help ")),
            r,
        );
    }
}

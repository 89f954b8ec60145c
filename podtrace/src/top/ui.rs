//! What the user changed in `top`: the filter, the search, folds, the cursor, freeze, host
//! processes, help, and a prompt being typed; and what each key does to it.
use std::collections::HashSet;

use crossterm::event::{KeyCode, KeyEvent, KeyEventKind, KeyModifiers};

use super::model::{Fold, Row, RowKey};
use crate::view::Filter;

/// What is being typed at the bottom line.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Prompt {
    Filter(String),
    Search(String),
}

/// What the app must do after a key.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Action {
    /// Draw again (the cursor moved, a fold, a prompt...).
    Redraw,
    /// Take a new picture from the engine (host processes toggled), then draw.
    Refresh,
    /// Freeze or unfreeze (from a trace: pause or play).
    Freeze,
    /// Play a trace faster or slower.
    Faster,
    Slower,
    Quit,
    None,
}

#[derive(Clone, Debug, Default)]
pub struct Ui {
    pub filter: Filter,
    pub search: Option<String>,
    pub frozen: bool,
    pub help: bool,
    pub collapsed: HashSet<RowKey>,
    /// The row under the cursor, and where it was.
    pub cursor: Option<RowKey>,
    pub cursor_index: usize,
    /// The first row shown.
    pub scroll: usize,
    pub prompt: Option<Prompt>,
    /// One line for the user (a filter that did not parse), until the next key.
    pub message: Option<String>,
    /// Rows that fit on the screen (paging).
    pub page: usize,
}

/// Parses what was typed at the filter prompt: `pod:NAME ns:NAMESPACE ctr:ID-OR-NAME
/// cmd:TEXT` (also `namespace:`, `container:`, `command:`, and `=` for `:`); other words are
/// command text. Host processes are kept as they were.
pub fn parse_filter(text: &str, all: bool) -> Result<Filter, String> {
    let mut f = Filter {
        all,
        ..Filter::default()
    };
    let mut words = Vec::new();
    for w in text.split_whitespace() {
        let Some((k, v)) = w.split_once([':', '=']) else {
            words.push(w);
            continue;
        };
        let v = Some(v.to_string()).filter(|v| !v.is_empty());
        match k {
            "pod" => f.pod = v,
            "ns" | "namespace" => f.namespace = v,
            "ctr" | "container" => f.container = v,
            "cmd" | "command" => f.command = v,
            _ => {
                return Err(format!(
                    "filter: unknown key `{k}:` (pod:, ns:, ctr:, cmd:, or words of a command)"
                ))
            }
        }
    }
    if !words.is_empty() {
        f.command = Some(words.join(" "));
    }
    Ok(f)
}

/// The filter as it would be typed.
pub fn filter_text(f: &Filter) -> String {
    let mut parts = Vec::new();
    for (k, v) in [
        ("pod", &f.pod),
        ("ns", &f.namespace),
        ("ctr", &f.container),
        ("cmd", &f.command),
    ] {
        if let Some(v) = v {
            parts.push(format!("{k}:{v}"));
        }
    }
    parts.join(" ")
}

impl Ui {
    pub fn new(filter: Filter) -> Self {
        Self {
            filter,
            page: 10,
            ..Self::default()
        }
    }

    /// Puts the cursor back on its row after the rows changed (or on the row now at its old
    /// place), and scrolls so that it is shown in `height` rows.
    pub fn place_cursor(&mut self, rows: &[Row], height: usize) {
        self.page = height.max(1);
        if rows.is_empty() {
            self.cursor = None;
            self.cursor_index = 0;
            self.scroll = 0;
            return;
        }
        let found = self
            .cursor
            .as_ref()
            .and_then(|k| rows.iter().position(|r| &r.key == k));
        let i = found.unwrap_or(self.cursor_index.min(rows.len() - 1));
        self.set_cursor(rows, i);
        if self.cursor_index < self.scroll {
            self.scroll = self.cursor_index;
        }
        if self.cursor_index >= self.scroll + self.page {
            self.scroll = self.cursor_index + 1 - self.page;
        }
        self.scroll = self.scroll.min(rows.len().saturating_sub(self.page));
    }

    fn set_cursor(&mut self, rows: &[Row], i: usize) {
        let i = i.min(rows.len().saturating_sub(1));
        self.cursor_index = i;
        self.cursor = rows.get(i).map(|r| r.key.clone());
    }

    fn moved(&mut self, rows: &[Row], by: isize) {
        let i = self.cursor_index as isize + by;
        self.set_cursor(rows, i.max(0) as usize);
    }

    /// The next (or previous) row the search matches, from the cursor on, wrapping.
    fn next_match(&mut self, rows: &[Row], forward: bool) -> bool {
        let n = rows.len();
        for step in 1..=n {
            let i = if forward {
                (self.cursor_index + step) % n
            } else {
                (self.cursor_index + n - step % n) % n
            };
            if rows[i].matched {
                self.set_cursor(rows, i);
                return true;
            }
        }
        false
    }

    /// A key, with the rows on screen now.
    pub fn key(&mut self, k: KeyEvent, rows: &[Row]) -> Action {
        if k.kind == KeyEventKind::Release {
            return Action::None;
        }
        if k.code == KeyCode::Char('c') && k.modifiers.contains(KeyModifiers::CONTROL) {
            return Action::Quit;
        }
        self.message = None;
        if let Some(p) = self.prompt.take() {
            return self.prompt_key(p, k, rows);
        }
        if self.help {
            self.help = false;
            return match k.code {
                KeyCode::Char('q') => Action::Quit,
                _ => Action::Redraw,
            };
        }
        let current = rows.get(self.cursor_index);
        match k.code {
            KeyCode::Char('q') => Action::Quit,
            KeyCode::Esc => {
                self.search = None;
                Action::Redraw
            }
            KeyCode::Up | KeyCode::Char('k') => {
                self.moved(rows, -1);
                Action::Redraw
            }
            KeyCode::Down | KeyCode::Char('j') => {
                self.moved(rows, 1);
                Action::Redraw
            }
            KeyCode::PageUp => {
                self.moved(rows, -(self.page as isize));
                Action::Redraw
            }
            KeyCode::PageDown => {
                self.moved(rows, self.page as isize);
                Action::Redraw
            }
            KeyCode::Home | KeyCode::Char('g') => {
                self.set_cursor(rows, 0);
                Action::Redraw
            }
            KeyCode::End | KeyCode::Char('G') => {
                self.set_cursor(rows, rows.len().saturating_sub(1));
                Action::Redraw
            }
            KeyCode::Left | KeyCode::Char('h') => {
                match current {
                    Some(r) if r.fold == Fold::Open => {
                        self.collapsed.insert(r.key.clone());
                    }
                    // On a leaf or a closed node: to the row it hangs under.
                    Some(r) => {
                        let depth = r.depth;
                        if let Some(i) = rows[..self.cursor_index]
                            .iter()
                            .rposition(|p| p.depth < depth)
                        {
                            self.set_cursor(rows, i);
                        }
                    }
                    None => {}
                }
                Action::Redraw
            }
            KeyCode::Right | KeyCode::Char('l') => {
                if let Some(r) = current.filter(|r| r.fold == Fold::Closed) {
                    self.collapsed.remove(&r.key);
                }
                Action::Redraw
            }
            KeyCode::Enter | KeyCode::Char(' ') => {
                if let Some(r) = current {
                    match r.fold {
                        Fold::Open => {
                            self.collapsed.insert(r.key.clone());
                        }
                        Fold::Closed => {
                            self.collapsed.remove(&r.key);
                        }
                        Fold::Leaf => {}
                    }
                }
                Action::Redraw
            }
            KeyCode::Char('E') => {
                self.collapsed.clear();
                Action::Redraw
            }
            KeyCode::Char('C') => {
                self.collapsed.extend(
                    rows.iter()
                        .filter(|r| r.fold == Fold::Open && !matches!(r.key, RowKey::Proc(..)))
                        .map(|r| r.key.clone()),
                );
                Action::Redraw
            }
            KeyCode::Char('/') => {
                self.prompt = Some(Prompt::Search(String::new()));
                Action::Redraw
            }
            KeyCode::Char('\\') | KeyCode::Char('F') => {
                self.prompt = Some(Prompt::Filter(filter_text(&self.filter)));
                Action::Redraw
            }
            KeyCode::Char('n') => {
                if !self.next_match(rows, true) && self.search.is_some() {
                    self.message = Some("no match".into());
                }
                Action::Redraw
            }
            KeyCode::Char('N') => {
                if !self.next_match(rows, false) && self.search.is_some() {
                    self.message = Some("no match".into());
                }
                Action::Redraw
            }
            KeyCode::Char('f') | KeyCode::Char('z') => {
                self.frozen = !self.frozen;
                Action::Freeze
            }
            KeyCode::Char('H') | KeyCode::Char('a') => {
                self.filter.all = !self.filter.all;
                Action::Refresh
            }
            KeyCode::Char('>') | KeyCode::Char('+') => Action::Faster,
            KeyCode::Char('<') | KeyCode::Char('-') => Action::Slower,
            KeyCode::Char('?') | KeyCode::F(1) => {
                self.help = true;
                Action::Redraw
            }
            _ => Action::None,
        }
    }

    fn prompt_key(&mut self, p: Prompt, k: KeyEvent, rows: &[Row]) -> Action {
        let (mut text, search) = match p {
            Prompt::Filter(t) => (t, false),
            Prompt::Search(t) => (t, true),
        };
        match k.code {
            KeyCode::Esc => return Action::Redraw,
            KeyCode::Enter => {
                if search {
                    self.search = Some(text).filter(|t| !t.is_empty());
                    return Action::Refresh;
                }
                match parse_filter(&text, self.filter.all) {
                    Ok(f) => {
                        self.filter = f;
                        self.scroll = 0;
                    }
                    Err(e) => self.message = Some(e),
                }
                return Action::Redraw;
            }
            KeyCode::Backspace => {
                text.pop();
            }
            KeyCode::Char('u') if k.modifiers.contains(KeyModifiers::CONTROL) => text.clear(),
            KeyCode::Char(c) => text.push(c),
            _ => {}
        }
        let _ = rows;
        self.prompt = Some(if search {
            Prompt::Search(text)
        } else {
            Prompt::Filter(text)
        });
        Action::Redraw
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn filter_words_and_keys() {
        let f = parse_filter("ns:lab pod=web ctr:app sleep 600", true).expect("parses");
        assert_eq!(f.namespace.as_deref(), Some("lab"));
        assert_eq!(f.pod.as_deref(), Some("web"));
        assert_eq!(f.container.as_deref(), Some("app"));
        assert_eq!(f.command.as_deref(), Some("sleep 600"));
        assert!(f.all);
        assert_eq!(filter_text(&f), "pod:web ns:lab ctr:app cmd:sleep 600");
        assert!(parse_filter("bogus:x", false).is_err());
        assert_eq!(parse_filter("", false), Ok(Filter::default()));
    }
}

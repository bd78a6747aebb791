//! `mesh-ctl top`: the busiest routes of the mesh, live. Every `interval`
//! the proxies are scraped and each service / direction / route /
//! upstream is shown with its RPS, success rate and p50 / p99 latency over
//! the last few seconds, busiest first.
//! Reads: the proxies' admin APIs (`signals::scrape_all`), keys (`q`,
//! `Esc`, Ctrl-C quit). Writes: a full-screen view (ratatui, crossterm
//! backend) on a terminal; one plain table per refresh otherwise, for
//! scripts. Ends on a quit key, after `--iterations` refreshes or after
//! `--duration`.
//! Errors: a terminal that cannot be set up is a problem; proxies that
//! cannot be read are listed on screen and in the problems at the end.

use std::collections::BTreeMap;
use std::io::{self, IsTerminal, Write};
use std::time::{Duration, Instant};

use mesh_api::golden::{self, History, Scrape, Signals};
use ratatui::crossterm::event::{self, Event, KeyCode, KeyEventKind, KeyModifiers};
use ratatui::layout::{Constraint, Layout};
use ratatui::style::{Color, Modifier, Style};
use ratatui::text::Line;
use ratatui::widgets::{Block, Borders, Cell, Paragraph, Row, Table};
use ratatui::{DefaultTerminal, Frame};

use crate::commands::Report;
use crate::signals::{pairs, scrape_all, signal_cells, split};

/// How far back the rates look once there is that much history.
const WINDOW: Duration = Duration::from_secs(5);

/// When to stop, besides a quit key.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    pub interval: Duration,
    pub iterations: Option<u64>,
    pub duration: Option<Duration>,
}

/// One refresh: the rows, busiest first, and what went wrong.
struct View {
    rows: Vec<Signals>,
    window: Option<Duration>,
    proxies: usize,
    problems: Vec<String>,
}

/// Scrapes every proxy and computes the rows against the history.
fn refresh(
    admins: &[String],
    timeout: Duration,
    history: &mut History<BTreeMap<String, Scrape>>,
) -> View {
    let (scrapes, problems) = split(scrape_all(admins, timeout));
    let baseline = history.record(Instant::now(), scrapes.clone());
    let window = baseline.map(|(_, age)| age);
    let mut rows = golden::signals(&pairs(baseline.map(|(b, _)| b), &scrapes), window);
    rows.sort_by(|a, b| {
        let rps = |r: &Signals| r.rps.unwrap_or(0.0);
        rps(b)
            .total_cmp(&rps(a))
            .then(b.requests.cmp(&a.requests))
            .then_with(|| (&a.service, &a.upstream).cmp(&(&b.service, &b.upstream)))
    });
    View {
        rows,
        window,
        proxies: scrapes.len(),
        problems,
    }
}

const HEADER: [&str; 8] = [
    "SERVICE",
    "DIRECTION",
    "ROUTE",
    "UPSTREAM",
    "RPS",
    "SUCCESS",
    "P50",
    "P99",
];

/// The cells of `stat` that fit a terminal: all but P95 and REQUESTS.
fn cells(row: &Signals) -> [String; 8] {
    let [service, direction, route, upstream, rps, success, p50, _p95, p99, _requests] =
        signal_cells(row);
    [service, direction, route, upstream, rps, success, p50, p99]
}

fn title(view: &View, total: usize) -> String {
    let window = view.window.map_or_else(
        || "totals".to_string(),
        |w| format!("last {:.1}s", w.as_secs_f64()),
    );
    format!(
        "mesh-ctl top: {} of {total} proxies, {window} (q to quit)",
        view.proxies
    )
}

/// `mesh-ctl top`.
pub fn top(admins: &[String], limits: Limits, timeout: Duration) -> Report {
    let outcome = if io::stdout().is_terminal() {
        run_terminal(admins, limits, timeout)
    } else {
        run_plain(admins, limits, timeout)
    };
    match outcome {
        Ok(problems) => Report {
            stdout: String::new(),
            problems,
        },
        Err(err) => Report {
            stdout: String::new(),
            problems: vec![format!("top: {err}")],
        },
    }
}

/// Whether to stop after refresh number `done` (1-based), started at `start`.
fn finished(limits: &Limits, done: u64, start: Instant) -> bool {
    limits.iterations.is_some_and(|n| done >= n)
        || limits.duration.is_some_and(|d| start.elapsed() >= d)
}

/// The time until the next refresh, or less when `--duration` ends first.
fn pause(limits: &Limits, start: Instant, refreshed: Instant) -> Duration {
    let next = limits.interval.saturating_sub(refreshed.elapsed());
    match limits.duration {
        Some(d) => next.min(d.saturating_sub(start.elapsed())),
        None => next,
    }
}

fn run_plain(admins: &[String], limits: Limits, timeout: Duration) -> io::Result<Vec<String>> {
    let start = Instant::now();
    let mut history = History::new(WINDOW);
    let mut done = 0;
    loop {
        let refreshed = Instant::now();
        let view = refresh(admins, timeout, &mut history);
        done += 1;
        let rows: Vec<Vec<String>> = view.rows.iter().map(|r| cells(r).to_vec()).collect();
        let mut out = io::stdout().lock();
        writeln!(out, "{}", title(&view, admins.len()))?;
        write!(out, "{}", crate::table::render(&HEADER, &rows))?;
        for problem in &view.problems {
            writeln!(out, "! {problem}")?;
        }
        writeln!(out)?;
        out.flush()?;
        if finished(&limits, done, start) {
            return Ok(view.problems);
        }
        std::thread::sleep(pause(&limits, start, refreshed));
    }
}

fn run_terminal(admins: &[String], limits: Limits, timeout: Duration) -> io::Result<Vec<String>> {
    let mut terminal = ratatui::try_init()?;
    let result = watch(&mut terminal, admins, limits, timeout);
    let restored = ratatui::try_restore();
    let problems = result?;
    restored?;
    Ok(problems)
}

fn watch(
    terminal: &mut DefaultTerminal,
    admins: &[String],
    limits: Limits,
    timeout: Duration,
) -> io::Result<Vec<String>> {
    let start = Instant::now();
    let mut history = History::new(WINDOW);
    let mut done = 0;
    loop {
        let refreshed = Instant::now();
        let view = refresh(admins, timeout, &mut history);
        done += 1;
        terminal.draw(|frame| draw(frame, &view, admins.len()))?;
        if finished(&limits, done, start) {
            return Ok(view.problems);
        }
        // Keys until the next refresh.
        loop {
            let wait = pause(&limits, start, refreshed);
            if wait.is_zero() || !event::poll(wait)? {
                break;
            }
            if let Event::Key(key) = event::read()? {
                let ctrl_c =
                    key.code == KeyCode::Char('c') && key.modifiers.contains(KeyModifiers::CONTROL);
                let quit = matches!(key.code, KeyCode::Char('q') | KeyCode::Esc) || ctrl_c;
                if key.kind == KeyEventKind::Press && quit {
                    return Ok(view.problems);
                }
            }
        }
        if finished(&limits, done, start) {
            return Ok(view.problems);
        }
    }
}

fn draw(frame: &mut Frame, view: &View, total: usize) {
    let problems = view.problems.len().min(5);
    let [head, body, foot] = Layout::vertical([
        Constraint::Length(1),
        Constraint::Min(3),
        Constraint::Length(u16::try_from(problems).unwrap_or(5)),
    ])
    .areas(frame.area());
    frame.render_widget(
        Paragraph::new(title(view, total)).style(Style::new().add_modifier(Modifier::BOLD)),
        head,
    );
    let header = Row::new(HEADER.map(Cell::from))
        .style(Style::new().add_modifier(Modifier::BOLD).fg(Color::Cyan));
    let rows = view.rows.iter().map(|row| {
        let failing = row.success_rate.is_some_and(|s| s < 0.95);
        let style = if failing {
            Style::new().fg(Color::Red)
        } else {
            Style::new()
        };
        Row::new(cells(row).map(Cell::from)).style(style)
    });
    let widths = [
        Constraint::Min(10),
        Constraint::Length(9),
        Constraint::Min(8),
        Constraint::Min(10),
        Constraint::Length(9),
        Constraint::Length(8),
        Constraint::Length(8),
        Constraint::Length(8),
    ];
    let table = Table::new(rows, widths)
        .header(header)
        .block(Block::new().borders(Borders::TOP));
    frame.render_widget(table, body);
    let lines: Vec<Line> = view
        .problems
        .iter()
        .take(problems)
        .map(|p| Line::styled(format!("! {p}"), Style::new().fg(Color::Red)))
        .collect();
    frame.render_widget(Paragraph::new(lines), foot);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stops_after_iterations_or_duration() {
        let start = Instant::now();
        let limits = Limits {
            interval: Duration::from_secs(1),
            iterations: Some(2),
            duration: None,
        };
        assert!(!finished(&limits, 1, start));
        assert!(finished(&limits, 2, start));
        let limits = Limits {
            interval: Duration::from_secs(1),
            iterations: None,
            duration: Some(Duration::ZERO),
        };
        assert!(finished(&limits, 1, start));
        assert_eq!(pause(&limits, start, start), Duration::ZERO);
        let forever = Limits {
            interval: Duration::from_secs(1),
            iterations: None,
            duration: None,
        };
        assert!(!finished(&forever, 1_000, start));
        assert!(pause(&forever, start, Instant::now()) <= Duration::from_secs(1));
    }
}

//! The node's logging: where lines go and the ring of recent ones.
//!
//! `mimorid` logs with `tracing` to stderr, as text (colored on a terminal) or as one
//! JSON object per line (`log_format = "json"`), filtered per module by `RUST_LOG` or
//! the `log` setting. Every line also goes, as plain text, into a [`LogRing`] of the
//! last [`RING_LINES_MAX`] lines, which the admin protocol serves (`dbctl logs`), so an
//! operator can read a remote node's recent lines without a shell on its host.
//!
//! What is logged never includes values, document bodies, the cluster secret or the
//! admin token (the code logs keys' lengths, ids and counts instead).
//!
//! Invariants: the ring holds at most `RING_LINES_MAX` lines of at most
//! `LINE_BYTES_MAX` bytes each; sequences are 1, 2, 3, ... in the order lines were
//! written, never reused, so a follower can ask for what came after the last one it
//! saw and learn how many it missed.

use serde::{Deserialize, Serialize};
use std::collections::VecDeque;
use std::io::Write;
use std::sync::{Arc, Mutex, OnceLock};
use tracing_subscriber::fmt::MakeWriter;
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::{EnvFilter, Layer};

/// Lines the ring keeps, at most (the oldest go first).
pub const RING_LINES_MAX: usize = 2_000;
/// Bytes of one line the ring keeps, at most; longer lines are cut with `…`.
pub const LINE_BYTES_MAX: usize = 4_096;
/// Lines one admin request returns, at most.
pub const LINES_PER_REQUEST_MAX: u32 = 500;

/// How lines are written to stderr.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "snake_case")]
pub enum LogFormat {
    /// Human-readable, colored when stderr is a terminal.
    #[default]
    Text,
    /// One JSON object per line (`timestamp`, `level`, `target`, `fields`, `spans`).
    Json,
}

/// One line of the ring.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct LogLine {
    pub sequence: u64,
    pub text: String,
}

/// The answer to a read of the ring.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct LogPage {
    pub lines: Vec<LogLine>,
    /// Lines that were asked for but had already left the ring.
    pub missed: u64,
    /// The sequence to ask after next time: the last line returned, or the newest
    /// line written when none was.
    pub last: u64,
}

/// The last lines this process logged.
#[derive(Debug, Default)]
pub struct LogRing {
    state: Mutex<RingState>,
}

#[derive(Debug, Default)]
struct RingState {
    lines: VecDeque<LogLine>,
    /// Sequence of the newest line written (0 before the first).
    newest: u64,
}

impl LogRing {
    /// Appends one line, cut to `LINE_BYTES_MAX` bytes, dropping the oldest when full.
    pub fn push(&self, text: &str) {
        let text = cut(text.trim_end_matches(['\n', '\r']), LINE_BYTES_MAX);
        let Ok(mut state) = self.state.lock() else {
            return;
        };
        state.newest += 1;
        let sequence = state.newest;
        if state.lines.len() >= RING_LINES_MAX {
            state.lines.pop_front();
        }
        state.lines.push_back(LogLine { sequence, text });
    }

    /// The last `limit` lines, or with `after`, the first `limit` lines written
    /// after that sequence. `limit` is capped at [`LINES_PER_REQUEST_MAX`].
    pub fn read(&self, after: Option<u64>, limit: u32) -> LogPage {
        let limit = limit.min(LINES_PER_REQUEST_MAX) as usize;
        let Ok(state) = self.state.lock() else {
            return LogPage {
                lines: Vec::new(),
                missed: 0,
                last: 0,
            };
        };
        let (lines, missed): (Vec<LogLine>, u64) = match after {
            None => {
                let skip = state.lines.len().saturating_sub(limit);
                (state.lines.iter().skip(skip).cloned().collect(), 0)
            }
            Some(after) => {
                let oldest = state
                    .lines
                    .front()
                    .map_or(state.newest + 1, |line| line.sequence);
                let missed = oldest.saturating_sub(after.saturating_add(1));
                let lines = state
                    .lines
                    .iter()
                    .filter(|line| line.sequence > after)
                    .take(limit)
                    .cloned()
                    .collect();
                (lines, missed)
            }
        };
        let last = lines.last().map_or(state.newest, |line| line.sequence);
        LogPage {
            lines,
            missed,
            last,
        }
    }
}

/// `text` cut to at most `bytes_max` bytes on a character boundary, marked with `…`.
fn cut(text: &str, bytes_max: usize) -> String {
    if text.len() <= bytes_max {
        return text.to_string();
    }
    let mut end = bytes_max.saturating_sub('…'.len_utf8());
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}…", &text[..end])
}

/// The process's ring, once [`init`] ran.
static RING: OnceLock<Arc<LogRing>> = OnceLock::new();

/// The ring of this process's recent lines, if logging was set up with [`init`].
pub fn ring() -> Option<Arc<LogRing>> {
    RING.get().cloned()
}

/// Sets up logging for the process: stderr in `format` with the filter from
/// `RUST_LOG`, else `filter` (else `info`), and the ring. Call once, first thing.
pub fn init(filter: &str, format: LogFormat) {
    let ring = Arc::clone(RING.get_or_init(Arc::default));
    let filter = EnvFilter::try_from_default_env()
        .or_else(|_| EnvFilter::try_new(filter))
        .unwrap_or_else(|_| EnvFilter::new("info"));
    let stderr = match format {
        LogFormat::Text => tracing_subscriber::fmt::layer()
            .with_writer(std::io::stderr)
            .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
            .boxed(),
        LogFormat::Json => tracing_subscriber::fmt::layer()
            .json()
            .with_writer(std::io::stderr)
            .boxed(),
    };
    let recent = tracing_subscriber::fmt::layer()
        .with_ansi(false)
        .with_writer(RingWriter { ring });
    // Fails only when a subscriber is already installed (a test that set one up);
    // the first one stays.
    let _ = tracing_subscriber::registry()
        .with(filter)
        .with(stderr)
        .with(recent)
        .try_init();
}

/// Writes formatted events into the ring, one event per writer.
#[derive(Clone)]
struct RingWriter {
    ring: Arc<LogRing>,
}

impl<'writer> MakeWriter<'writer> for RingWriter {
    type Writer = RingLine;

    fn make_writer(&'writer self) -> RingLine {
        RingLine {
            ring: Arc::clone(&self.ring),
            buffer: Vec::new(),
        }
    }
}

/// One event being formatted; pushed to the ring when dropped.
struct RingLine {
    ring: Arc<LogRing>,
    buffer: Vec<u8>,
}

impl Write for RingLine {
    fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
        // Bounded: nothing past a line's limit is kept anyway.
        let room = (LINE_BYTES_MAX * 2).saturating_sub(self.buffer.len());
        self.buffer
            .extend_from_slice(&bytes[..bytes.len().min(room)]);
        Ok(bytes.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl Drop for RingLine {
    fn drop(&mut self) {
        if self.buffer.is_empty() {
            return;
        }
        let text = String::from_utf8_lossy(&self.buffer);
        for line in text.lines().filter(|line| !line.is_empty()) {
            self.ring.push(line);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Proves the ring keeps the newest `RING_LINES_MAX` lines in order, answers
    /// "the last N" and "after S" reads, counts lines a slow follower missed, caps
    /// a read at `LINES_PER_REQUEST_MAX`, and cuts long lines on a character
    /// boundary.
    #[test]
    fn the_ring_keeps_the_newest_lines() {
        let ring = LogRing::default();
        assert_eq!(ring.read(None, 10).lines, Vec::new());
        assert_eq!(ring.read(Some(0), 10).last, 0);
        for index in 1..=(RING_LINES_MAX + 5) {
            ring.push(&format!("line {index}\n"));
        }
        let newest = (RING_LINES_MAX + 5) as u64;
        let last_three = ring.read(None, 3);
        let texts: Vec<&str> = last_three
            .lines
            .iter()
            .map(|line| line.text.as_str())
            .collect();
        assert_eq!(
            texts,
            [
                format!("line {}", newest - 2),
                format!("line {}", newest - 1),
                format!("line {newest}")
            ]
        );
        assert_eq!(last_three.last, newest);
        let after = ring.read(Some(newest - 1), 10);
        assert_eq!(after.lines.len(), 1);
        assert_eq!(after.missed, 0);
        let caught_up = ring.read(Some(newest), 10);
        assert!(caught_up.lines.is_empty());
        assert_eq!(caught_up.last, newest);
        // Lines 1 to 5 left the ring: a follower at 0 missed them.
        let slow = ring.read(Some(0), 10_000);
        assert_eq!(slow.missed, 5);
        assert_eq!(slow.lines.len(), LINES_PER_REQUEST_MAX as usize);
        assert_eq!(slow.lines[0].sequence, 6);

        ring.push(&"é".repeat(LINE_BYTES_MAX));
        let long = ring.read(None, 1).lines.remove(0).text;
        assert!(
            long.len() <= LINE_BYTES_MAX && long.ends_with('…'),
            "{}",
            long.len()
        );
    }

    /// Proves a formatted event written in pieces becomes one line per text line.
    #[test]
    fn a_writer_pushes_whole_lines() {
        let writer = RingWriter {
            ring: Arc::default(),
        };
        {
            let mut line = writer.make_writer();
            line.write_all(b"2026-12-02T00:00:00Z  INFO ").unwrap();
            line.write_all(b"mimorid serving node_id=1\n").unwrap();
        }
        let page = writer.ring.read(None, 10);
        assert_eq!(page.lines.len(), 1);
        assert_eq!(
            page.lines[0].text,
            "2026-12-02T00:00:00Z  INFO mimorid serving node_id=1"
        );
    }
}

//! The result of a benchmark run: counters merged from every connection, latency
//! percentiles, and their two renderings (an aligned text table and JSON).
//!
//! Who talks to it: [`super::load`] fills a [`Tally`] per connection and merges them;
//! [`super::run`] turns the merged tally into a [`Report`]; the binary prints it.
//!
//! Invariants: latencies are whole microseconds everywhere (histogram, JSON field names
//! ending in `_us`, table headers); the JSON field names are a contract with scripts
//! (`scripts/bench` reads them) and only ever gain fields.

use super::workload::{Operation, Protocol};
use hdrhistogram::Histogram;
use serde::Serialize;
use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::time::Duration;

/// Significant decimal digits the latency histograms keep: 0.1% relative error, which
/// is far below run-to-run noise, at a few tens of kilobytes per histogram.
const LATENCY_SIGNIFICANT_DIGITS: u8 = 3;

/// Counters of one connection, or of several merged.
#[derive(Clone, Debug)]
pub struct Tally {
    /// Latency of every `Ok` and `NotFound` response, in microseconds. Auto-resizing,
    /// so it only grows as far as the slowest response recorded.
    pub latency_us: Histogram<u64>,
    /// Responses that did what was asked.
    pub ok_total: u64,
    /// Reads of missing keys.
    pub not_found_total: u64,
    /// Unexpected HTTP statuses, by status code.
    pub errors_by_status: BTreeMap<u16, u64>,
    /// Requests that got no response: connection refused, reset or closed mid-request.
    pub transport_errors_total: u64,
    /// Requests that got no response within the per-request bound.
    pub timeouts_total: u64,
}

impl Tally {
    /// An empty tally.
    pub fn new() -> Tally {
        let latency_us = Histogram::new(LATENCY_SIGNIFICANT_DIGITS)
            .expect("3 significant digits is within hdrhistogram's supported 0..=5");
        Tally {
            latency_us,
            ok_total: 0,
            not_found_total: 0,
            errors_by_status: BTreeMap::new(),
            transport_errors_total: 0,
            timeouts_total: 0,
        }
    }

    /// Records one latency, growing the histogram as needed. Only a value too large to
    /// grow to (beyond any request timeout) saturates at the top of the range, so it is
    /// still counted rather than dropped.
    pub fn record_latency(&mut self, latency: Duration) {
        let micros = u64::try_from(latency.as_micros()).unwrap_or(u64::MAX);
        // Zero is below the histogram's lowest value; a sub-microsecond response counts
        // as one microsecond.
        let micros = micros.max(1);
        // `saturating_record` never resizes, so it is only the fallback.
        if self.latency_us.record(micros).is_err() {
            self.latency_us.saturating_record(micros);
        }
    }

    /// Adds `other` into `self`.
    pub fn merge(&mut self, other: &Tally) {
        // Both histograms auto-resize and share the precision, so adding cannot fail.
        self.latency_us
            .add(&other.latency_us)
            .expect("auto-resizing histograms of equal precision always merge");
        self.ok_total += other.ok_total;
        self.not_found_total += other.not_found_total;
        for (status, count) in &other.errors_by_status {
            *self.errors_by_status.entry(*status).or_insert(0) += count;
        }
        self.transport_errors_total += other.transport_errors_total;
        self.timeouts_total += other.timeouts_total;
    }

    /// Every failed request: bad statuses, transport errors and timeouts.
    pub fn errors_total(&self) -> u64 {
        self.errors_by_status.values().sum::<u64>()
            + self.transport_errors_total
            + self.timeouts_total
    }
}

impl Default for Tally {
    fn default() -> Tally {
        Tally::new()
    }
}

/// Latency percentiles in microseconds. Each is the highest latency the histogram
/// cannot tell apart from the true percentile, so it never flatters the server.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
pub struct LatencySummary {
    pub latency_us_p50: u64,
    pub latency_us_p90: u64,
    pub latency_us_p99: u64,
    pub latency_us_p999: u64,
    pub latency_us_max: u64,
}

impl LatencySummary {
    /// Reads the percentiles off a histogram of microseconds; all zero when empty.
    pub fn from_histogram(histogram: &Histogram<u64>) -> LatencySummary {
        if histogram.is_empty() {
            return LatencySummary {
                latency_us_p50: 0,
                latency_us_p90: 0,
                latency_us_p99: 0,
                latency_us_p999: 0,
                latency_us_max: 0,
            };
        }
        LatencySummary {
            latency_us_p50: histogram.value_at_quantile(0.50),
            latency_us_p90: histogram.value_at_quantile(0.90),
            latency_us_p99: histogram.value_at_quantile(0.99),
            latency_us_p999: histogram.value_at_quantile(0.999),
            latency_us_max: histogram.max(),
        }
    }
}

/// What one run measured. Serialized as the `-o json` output.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Report {
    pub target: String,
    pub protocol: Protocol,
    pub operation: Operation,
    pub connections: u32,
    pub keys: u64,
    pub value_bytes: u32,
    /// Wall time from the first request to the last response, in seconds.
    pub elapsed_seconds: f64,
    /// Completed operations: `Ok` plus `NotFound` responses.
    pub ops_total: u64,
    /// Reads of missing keys, included in `ops_total`.
    pub not_found_total: u64,
    /// Every failed request, not included in `ops_total`.
    pub errors_total: u64,
    /// Unexpected HTTP statuses by code (JSON object keys are the codes as strings).
    pub errors_by_status: BTreeMap<u16, u64>,
    pub transport_errors_total: u64,
    pub timeouts_total: u64,
    /// `ops_total / elapsed_seconds`.
    pub ops_per_second: f64,
    #[serde(flatten)]
    pub latency: LatencySummary,
}

/// Run settings that are not counters, to label a [`Report`].
#[derive(Clone, Debug)]
pub struct RunLabel {
    pub target: String,
    pub protocol: Protocol,
    pub operation: Operation,
    pub connections: u32,
    pub keys: u64,
    pub value_bytes: u32,
}

impl Report {
    /// Builds the report of a run that took `elapsed`.
    pub fn new(label: RunLabel, tally: &Tally, elapsed: Duration) -> Report {
        let ops_total = tally.ok_total + tally.not_found_total;
        let elapsed_seconds = elapsed.as_secs_f64();
        let ops_per_second = if elapsed_seconds > 0.0 {
            ops_total as f64 / elapsed_seconds
        } else {
            0.0
        };
        Report {
            target: label.target,
            protocol: label.protocol,
            operation: label.operation,
            connections: label.connections,
            keys: label.keys,
            value_bytes: label.value_bytes,
            elapsed_seconds,
            ops_total,
            not_found_total: tally.not_found_total,
            errors_total: tally.errors_total(),
            errors_by_status: tally.errors_by_status.clone(),
            transport_errors_total: tally.transport_errors_total,
            timeouts_total: tally.timeouts_total,
            ops_per_second,
            latency: LatencySummary::from_histogram(&tally.latency_us),
        }
    }

    /// The report as one line of JSON.
    pub fn to_json(&self) -> String {
        serde_json::to_string(self).expect("a report holds only numbers and strings")
    }

    /// The report as an aligned text table: one header row, one value row, then a
    /// line per kind of error when there were any.
    pub fn to_table(&self) -> String {
        let operation = serde_json::to_value(self.operation)
            .ok()
            .and_then(|value| value.as_str().map(str::to_string))
            .unwrap_or_default();
        let protocol = serde_json::to_value(self.protocol)
            .ok()
            .and_then(|value| value.as_str().map(str::to_string))
            .unwrap_or_default();
        let columns: [(&str, String); 12] = [
            ("protocol", protocol),
            ("op", operation),
            ("conns", self.connections.to_string()),
            ("seconds", format!("{:.1}", self.elapsed_seconds)),
            ("ops", self.ops_total.to_string()),
            ("ops/s", format!("{:.0}", self.ops_per_second)),
            ("p50 us", self.latency.latency_us_p50.to_string()),
            ("p90 us", self.latency.latency_us_p90.to_string()),
            ("p99 us", self.latency.latency_us_p99.to_string()),
            ("p99.9 us", self.latency.latency_us_p999.to_string()),
            ("max us", self.latency.latency_us_max.to_string()),
            ("errors", self.errors_total.to_string()),
        ];
        let mut header = String::new();
        let mut values = String::new();
        for (index, (name, value)) in columns.iter().enumerate() {
            let width = name.len().max(value.len());
            let separator = if index == 0 { "" } else { "  " };
            // Text columns read best left-aligned, numbers right-aligned.
            if index < 2 {
                let _ = write!(header, "{separator}{name:<width$}");
                let _ = write!(values, "{separator}{value:<width$}");
            } else {
                let _ = write!(header, "{separator}{name:>width$}");
                let _ = write!(values, "{separator}{value:>width$}");
            }
        }
        let mut table = format!("{}\n{}\n", header.trim_end(), values.trim_end());
        if self.not_found_total > 0 {
            let _ = writeln!(table, "not found (in ops): {}", self.not_found_total);
        }
        for (status, count) in &self.errors_by_status {
            let _ = writeln!(table, "errors with status {status}: {count}");
        }
        if self.transport_errors_total > 0 {
            let _ = writeln!(table, "transport errors: {}", self.transport_errors_total);
        }
        if self.timeouts_total > 0 {
            let _ = writeln!(table, "timeouts: {}", self.timeouts_total);
        }
        table
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn label() -> RunLabel {
        RunLabel {
            target: "127.0.0.1:7070".to_string(),
            protocol: Protocol::Mimori,
            operation: Operation::Put,
            connections: 2,
            keys: 100,
            value_bytes: 256,
        }
    }

    /// Proves the percentiles come out of merged per-connection histograms: latencies
    /// 1..=1000 us split across two tallies must read back as the exact quantiles
    /// (values below 2048 are exact at 3 significant digits).
    #[test]
    fn percentiles_of_merged_tallies() {
        let mut first = Tally::new();
        let mut second = Tally::new();
        for micros in 1..=1000u64 {
            let tally = if micros % 2 == 0 {
                &mut first
            } else {
                &mut second
            };
            tally.record_latency(Duration::from_micros(micros));
            tally.ok_total += 1;
        }
        second.errors_by_status.insert(503, 2);
        second.transport_errors_total = 1;
        first.merge(&second);

        let report = Report::new(label(), &first, Duration::from_secs(2));
        assert_eq!(report.ops_total, 1000);
        assert_eq!(report.ops_per_second, 500.0);
        assert_eq!(report.errors_total, 3);
        assert_eq!(
            report.latency,
            LatencySummary {
                latency_us_p50: 500,
                latency_us_p90: 900,
                latency_us_p99: 990,
                latency_us_p999: 999,
                latency_us_max: 1000,
            }
        );
    }

    /// Proves large latencies keep 3 significant digits and the maximum is not lost.
    #[test]
    fn large_latencies_keep_precision() {
        let mut tally = Tally::new();
        tally.record_latency(Duration::from_millis(250));
        tally.record_latency(Duration::from_nanos(10));
        let summary = LatencySummary::from_histogram(&tally.latency_us);
        // A sub-microsecond latency counts as 1 us, not 0, so the histogram keeps it.
        assert_eq!(tally.latency_us.len(), 2);
        assert_eq!(summary.latency_us_p50, 1);
        assert!(summary.latency_us_max >= 250_000);
        assert!(summary.latency_us_max <= 250_000 + 250);
    }

    /// Proves the JSON field names scripts rely on, and an empty run reads as zeros.
    #[test]
    fn json_field_names() {
        let mut tally = Tally::new();
        tally.errors_by_status.insert(503, 4);
        let report = Report::new(label(), &tally, Duration::ZERO);
        let json: serde_json::Value =
            serde_json::from_str(&report.to_json()).expect("report JSON parses");
        assert_eq!(json["protocol"], "mimori");
        assert_eq!(json["operation"], "put");
        assert_eq!(json["ops_total"], 0);
        assert_eq!(json["ops_per_second"], 0.0);
        assert_eq!(json["errors_by_status"]["503"], 4);
        assert_eq!(json["errors_total"], 4);
        assert_eq!(json["latency_us_p99"], 0);
        assert_eq!(json["latency_us_max"], 0);
    }

    /// Proves the table shows the unit in its headers and lists errors by status.
    #[test]
    fn table_layout() {
        let mut tally = Tally::new();
        tally.record_latency(Duration::from_micros(120));
        tally.ok_total = 1;
        tally.errors_by_status.insert(503, 4);
        let table = Report::new(label(), &tally, Duration::from_secs(1)).to_table();
        let lines: Vec<&str> = table.lines().collect();
        assert!(lines[0].starts_with("protocol  op   conns"));
        assert!(lines[0].contains("p99 us"));
        assert!(lines[1].starts_with("mimori    put"));
        assert!(lines[1].contains(" 120 "));
        assert_eq!(lines[2], "errors with status 503: 4");
        assert_eq!(lines.len(), 3);
    }
}

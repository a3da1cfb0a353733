//! The summary a run prints: operations by outcome, faults by kind, and the verdict
//! of every check.

use crate::runner::RunReport;
use std::fmt::Write;

/// Problems listed in full at most; the rest are counted.
const PROBLEMS_SHOWN_MAX: usize = 10;

/// The summary table of a run.
pub fn summary(run: &RunReport) -> String {
    let check = &run.check;
    let mut out = String::new();
    let _ = writeln!(
        out,
        "chaos summary (seed {}, {} nodes, {:.0} s)",
        run.seed, run.nodes, run.duration_s
    );
    let _ = writeln!(
        out,
        "  {:<22} {:>9} {:>9} {:>9}",
        "operations", "ok", "failed", "unknown"
    );
    for (name, counts) in [
        ("register", &check.register_operations),
        ("append", &check.appends),
    ] {
        let _ = writeln!(
            out,
            "  {:<22} {:>9} {:>9} {:>9}",
            name, counts.ok, counts.failed, counts.unknown
        );
    }
    let by_kind = run.faults_by_kind();
    let kinds: Vec<String> = by_kind
        .iter()
        .map(|(kind, count)| format!("{} {count}", kind.name()))
        .collect();
    let _ = writeln!(
        out,
        "  {:<22} {} ({})",
        "faults injected",
        run.faults.len(),
        kinds.join(", ")
    );
    let _ = writeln!(out, "  {:<22} {}", "fault errors", run.fault_errors.len());
    let _ = writeln!(
        out,
        "  {:<22} {} ({} keys)",
        "linearizability",
        check.linearizability(),
        check.keys_checked
    );
    let verdict = if run.passed() { "PASS" } else { "FAIL" };
    for (label, value) in [
        ("lost acknowledged", check.lost_appends.len().to_string()),
        ("phantom writes", check.phantom_appends.len().to_string()),
        (
            "revision conflicts",
            check.revision_conflicts.len().to_string(),
        ),
        (
            "divergent replicas",
            check.divergent_shards.len().to_string(),
        ),
        (
            "unconverged shards",
            check.unconverged_shards.len().to_string(),
        ),
        ("verdict", verdict.to_string()),
    ] {
        let _ = writeln!(out, "  {label:<22} {value}");
    }
    let problems = run
        .fault_errors
        .iter()
        .chain(&check.not_linearizable)
        .chain(&check.inconclusive)
        .chain(&check.revision_conflicts)
        .chain(&check.lost_appends)
        .chain(&check.phantom_appends)
        .chain(&check.divergent_shards)
        .chain(&check.unconverged_shards);
    let mut shown = 0;
    let mut hidden = 0;
    for problem in problems {
        if shown < PROBLEMS_SHOWN_MAX {
            let _ = writeln!(out, "  ! {problem}");
            shown += 1;
        } else {
            hidden += 1;
        }
    }
    if hidden > 0 {
        let _ = writeln!(out, "  ! ... and {hidden} more (report.json)");
    }
    let _ = writeln!(out, "  files: {}", run.directory.display());
    out
}

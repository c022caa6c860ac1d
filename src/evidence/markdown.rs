//! The evidence as Markdown (GitHub-flavoured), short enough for a pull-request comment: a
//! summary line per region, then the paths that need attention, then every path in a table.

use super::{Evidence, Status};

/// A table cell: pipes escaped, line breaks flattened.
pub fn cell(text: &str) -> String {
    text.replace('|', "\\|").replace(['\n', '\r'], " ")
}

/// A status with a symbol that survives any renderer.
pub fn status(status: Status) -> String {
    match status {
        Status::Ok => "ok".to_owned(),
        Status::Violation => "**:x: violation**".to_owned(),
        Status::Unguarded => "**:warning: unguarded**".to_owned(),
        Status::Unknown => "**:question: unknown**".to_owned(),
    }
}

/// The whole report.
pub fn render(evidence: &Evidence) -> String {
    let mut out = String::from("## Sovereignty evidence\n\n");
    if evidence.regions.is_empty() {
        out.push_str("No SovereignRegion in the input.\n");
        return out;
    }
    for region in &evidence.regions {
        let s = &region.summary;
        out.push_str(&format!(
            "- **{}** ({}{}): {} paths, {} guarded, {} violations, {} unknown\n",
            region.name,
            region.jurisdiction,
            if region.frameworks.is_empty() {
                String::new()
            } else {
                format!("; {}", region.frameworks.join(", "))
            },
            s.paths,
            s.guarded,
            s.violations,
            s.unknown
        ));
    }
    let attention: Vec<_> = evidence
        .regions
        .iter()
        .flat_map(|r| r.paths.iter().map(move |p| (r, p)))
        .filter(|(_, p)| p.status != Status::Ok)
        .collect();
    if !attention.is_empty() {
        out.push_str("\n### Needs attention\n\n");
        for (region, path) in attention {
            out.push_str(&format!(
                "- {} `{}` {}: {} → `{}` ({}): {}\n",
                status(path.status),
                region.name,
                path.flow.as_str(),
                cell(&path.from),
                cell(&path.to),
                path.jurisdiction,
                cell(&path.reason)
            ));
        }
    }
    for region in &evidence.regions {
        out.push_str(&format!(
            "\n### Region `{}` ({}, namespace `{}`, locations {})\n\n",
            region.name,
            region.jurisdiction,
            region.namespace,
            region.locations.join(", ")
        ));
        if !region.admission.is_empty() {
            out.push_str("Admission: ");
            let parts: Vec<String> = region
                .admission
                .iter()
                .map(|a| {
                    format!(
                        "`{}` ({}; {}; {})",
                        a.name,
                        a.data_classes.join(", "),
                        a.rules.join(", "),
                        a.actions.join("/")
                    )
                })
                .collect();
            out.push_str(&parts.join(", "));
            out.push_str("\n\n");
        }
        out.push_str(
            "| Flow | From | To | Jurisdiction | Data classes | Guards | Status | Reason |\n",
        );
        out.push_str("|---|---|---|---|---|---|---|---|\n");
        for path in &region.paths {
            let guards: Vec<String> = path
                .guards
                .iter()
                .map(|g| format!("{}: {}", g.kind, g.name))
                .collect();
            out.push_str(&format!(
                "| {} | {} | {} | {}{} | {} | {} | {} | {} |\n",
                path.flow.as_str(),
                cell(&path.from),
                cell(&path.to),
                path.jurisdiction,
                path.location
                    .as_deref()
                    .map(|l| format!(" ({})", cell(l)))
                    .unwrap_or_default(),
                path.data_classes.join(", "),
                cell(&guards.join("; ")),
                status(path.status),
                cell(&path.reason)
            ));
        }
    }
    out
}

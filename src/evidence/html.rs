//! The evidence as one self-contained HTML page for people: per region, a diagram in the
//! spirit of a reference architecture (users → gateway → backends; vector store; object
//! storage; observability; usage and metadata), every box marked with its jurisdiction and
//! every arrow with its guards, violations in red, then the table of every path. No script,
//! no font, no image, no network fetch: it opens the same on an air-gapped laptop.
//!
//! Every path carries `data-flow`, `data-from` and `data-to` attributes (in the diagram and in
//! the table), which is how the browser test finds each path of the JSON on the page.

use super::{Evidence, Flow, Path, RegionEvidence, Status};

/// HTML text and attribute escaping.
pub fn escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

const STYLE: &str = r#"
*{box-sizing:border-box}
body{font-family:system-ui,-apple-system,"Segoe UI",Roboto,sans-serif;margin:0;padding:16px;color:#1a1a1a;background:#f6f7f9;line-height:1.35}
h1{font-size:1.5rem;margin:0 0 4px}
h2{font-size:1.25rem;margin:0 0 4px}
h3{font-size:1rem;margin:12px 0 6px}
.region{background:#fff;border:1px solid #d0d4da;border-radius:8px;padding:16px;margin:16px 0}
.summary{margin:4px 0 12px;display:flex;flex-wrap:wrap;gap:6px}
.pill{display:inline-block;border-radius:999px;padding:2px 10px;font-size:.85rem;border:1px solid #ccc;background:#fafafa}
.pill.bad{background:#b00020;color:#fff;border-color:#b00020;font-weight:700}
.diagram{display:flex;flex-wrap:wrap;align-items:flex-start;gap:8px}
.stage{flex:0 1 300px;min-width:0;max-width:340px}
.stage.users{flex:0 1 140px}
.stage.targets{flex:1 1 420px;max-width:none}
.box{border:2px solid #4a5568;border-radius:6px;padding:6px 8px;background:#fff;min-width:0;overflow-wrap:anywhere;word-break:break-word}
.box .j{display:inline-block;margin-left:4px;font-size:.75rem;font-weight:700;padding:0 6px;border-radius:4px;background:#e2e8f0}
.connector{align-self:center;font-size:1.4rem;color:#4a5568;padding:0 2px}
.lanes{display:grid;grid-template-columns:repeat(auto-fit,minmax(min(100%,280px),1fr));gap:10px;margin-top:12px}
.lane{border:1px dashed #a0aec0;border-radius:6px;padding:8px;min-width:0}
.lane h3{margin-top:0}
.edge{display:flex;flex-direction:column;margin:6px 0;min-width:0}
.edge .arrow{font-size:.78rem;color:#2f6b3a;border-left:3px solid #2f855a;padding:2px 6px;margin-left:8px;overflow-wrap:anywhere}
.edge .arrow::before{content:"\2192  ";font-weight:700}
.edge .from{font-size:.8rem;color:#4a5568;overflow-wrap:anywhere}
.edge.ok .box{border-color:#2f855a}
.edge.violation .box{border:3px solid #b00020;background:#ffe5e9}
.edge.violation .j{background:#b00020;color:#fff}
.why{font-size:.78rem;margin-top:4px;overflow-wrap:anywhere}
.edge.violation .arrow{color:#b00020;border-left-color:#b00020;font-weight:700}
.edge.unknown .box{border:3px dashed #6b21a8;background:#f3e8ff}
.edge.unknown .arrow{color:#6b21a8;border-left-color:#6b21a8}
.edge.unguarded .box{border:3px dashed #b7791f;background:#fffbea}
.edge.unguarded .arrow{color:#975a16;border-left-color:#b7791f}
.status{font-weight:700;font-size:.8rem;text-transform:uppercase}
.status.violation{color:#fff;background:#b00020;padding:0 6px;border-radius:4px}
.status.unknown{color:#fff;background:#6b21a8;padding:0 6px;border-radius:4px}
.status.unguarded{color:#1a1a1a;background:#f6e05e;padding:0 6px;border-radius:4px}
.status.ok{color:#2f855a}
table{border-collapse:collapse;width:100%;margin-top:12px;font-size:.85rem;table-layout:fixed}
th,td{border:1px solid #d0d4da;padding:4px 6px;text-align:left;vertical-align:top;overflow-wrap:anywhere;word-break:break-word}
th{background:#edf2f7}
tr.violation td{background:#ffe5e9}
tr.unknown td{background:#f3e8ff}
tr.unguarded td{background:#fffbea}
ul.guards{margin:0;padding-left:16px}
@media (max-width:760px){
 body{padding:8px}
 .connector{display:none}
 .stage,.stage.users,.stage.targets{flex:1 1 100%;max-width:none}
 col{width:auto !important}
 table,thead,tbody,tr,th,td{display:block;width:100%}
 thead{display:none}
 tr{border:1px solid #d0d4da;margin:8px 0;border-radius:6px}
 td{border:none;border-bottom:1px solid #edf2f7}
 td::before{content:attr(data-label) ": ";font-weight:700}
}
"#;

fn jurisdiction_tag(path: &Path) -> String {
    let location = path
        .location
        .as_deref()
        .map(|l| format!(" · {}", escape(l)))
        .unwrap_or_default();
    format!(
        "<span class=\"j\">{}{location}</span>",
        escape(&path.jurisdiction)
    )
}

fn attributes(path: &Path) -> String {
    format!(
        "data-flow=\"{}\" data-from=\"{}\" data-to=\"{}\" data-status=\"{}\"",
        path.flow.as_str(),
        escape(&path.from),
        escape(&path.to),
        path.status.as_str()
    )
}

/// A guard's name as an arrow label: without the `Kind namespace/` prefix the table spells out.
fn short(name: &str) -> &str {
    match name.split_once(' ') {
        Some((kind, rest)) if kind.chars().next().is_some_and(char::is_uppercase) => {
            match rest.split_once('/') {
                Some((namespace, tail)) if !namespace.contains(' ') => tail,
                _ => rest,
            }
        }
        _ => name,
    }
}

/// One arrow (its guards) and the box it points to.
fn edge(path: &Path, show_from: bool) -> String {
    let guards = if path.guards.is_empty() {
        "no guard".to_owned()
    } else {
        path.guards
            .iter()
            .map(|g| escape(short(&g.name)))
            .collect::<Vec<_>>()
            .join(" · ")
    };
    let from = if show_from {
        format!("<div class=\"from\">from {}</div>", escape(&path.from))
    } else {
        String::new()
    };
    let status = if path.status == Status::Ok {
        String::new()
    } else {
        format!(
            " <span class=\"status {0}\">{0}</span><div class=\"why\">{1}</div>",
            path.status.as_str(),
            escape(&path.reason)
        )
    };
    format!(
        "<div class=\"edge {}\" {}>{from}<div class=\"arrow\">{guards}</div><div class=\"box\">{}{}{status}</div></div>\n",
        path.status.as_str(),
        attributes(path),
        escape(&path.to),
        jurisdiction_tag(path),
    )
}

fn lane(title: &str, paths: &[&Path]) -> String {
    if paths.is_empty() {
        return String::new();
    }
    let mut out = format!("<div class=\"lane\"><h3>{}</h3>\n", escape(title));
    for path in paths {
        out.push_str(&edge(path, true));
    }
    out.push_str("</div>\n");
    out
}

fn region_section(region: &RegionEvidence) -> String {
    let s = &region.summary;
    let mut out = format!(
        "<section class=\"region\" id=\"region-{}\" data-region=\"{}\">\n<h2>Region {} — {}{}</h2>\n<div class=\"meta\">namespace {} · locations {}</div>\n",
        escape(&region.name),
        escape(&region.name),
        escape(&region.name),
        escape(&region.jurisdiction),
        if region.frameworks.is_empty() {
            String::new()
        } else {
            format!(" ({})", escape(&region.frameworks.join(", ")))
        },
        escape(&region.namespace),
        escape(&region.locations.join(", ")),
    );
    out.push_str(&format!(
        "<div class=\"summary\"><span class=\"pill\">{} paths</span><span class=\"pill\">{} guarded</span><span class=\"pill{}\">{} violations</span><span class=\"pill{}\">{} unknown</span></div>\n",
        s.paths,
        s.guarded,
        if s.violations > 0 { " bad" } else { "" },
        s.violations,
        if s.unknown > 0 { " bad" } else { "" },
        s.unknown
    ));
    let of = |flows: &[Flow]| -> Vec<&Path> {
        region
            .paths
            .iter()
            .filter(|p| flows.contains(&p.flow))
            .collect()
    };
    // Users → gateway → backends.
    let inference = of(&[Flow::Inference]);
    let (ingress, routes): (Vec<&Path>, Vec<&Path>) =
        inference.iter().partition(|p| p.from == "clients");
    out.push_str("<div class=\"diagram\">\n<div class=\"stage users\"><h3>Users</h3><div class=\"box\"><b>Clients</b> <span class=\"j\">any namespace</span></div></div>\n<div class=\"connector\">→</div>\n<div class=\"stage\">");
    out.push_str("<h3>Gateway</h3>\n");
    for path in &ingress {
        out.push_str(&edge(path, false));
    }
    if ingress.is_empty() {
        out.push_str(&format!(
            "<div class=\"box\"><b>Gateway</b> <span class=\"j\">{}</span></div>",
            escape(&region.jurisdiction)
        ));
    }
    out.push_str("</div>\n<div class=\"connector\">→</div>\n<div class=\"stage targets\"><h3>Backends</h3>\n");
    for path in &routes {
        out.push_str(&edge(path, true));
    }
    out.push_str("</div>\n</div>\n<div class=\"lanes\">\n");
    out.push_str(&lane(
        "Vector store",
        &of(&[Flow::Embeddings, Flow::Vectors]),
    ));
    out.push_str(&lane(
        "Object storage: weights, backups, replicas",
        &of(&[Flow::ModelWeights, Flow::Backup, Flow::Replication]),
    ));
    out.push_str(&lane(
        "Observability",
        &of(&[Flow::Traces, Flow::Logs, Flow::Metrics]),
    ));
    out.push_str(&lane(
        "Usage and metadata",
        &of(&[Flow::Usage, Flow::Metadata]),
    ));
    out.push_str("</div>\n");
    if !region.admission.is_empty() {
        out.push_str("<h3>Admission policies</h3><ul>");
        for a in &region.admission {
            out.push_str(&format!(
                "<li>{} — {}; rules {}; {}</li>",
                escape(&a.name),
                escape(&a.data_classes.join(", ")),
                escape(&a.rules.join(", ")),
                escape(&a.actions.join("/"))
            ));
        }
        out.push_str("</ul>\n");
    }
    out.push_str("<table><colgroup><col style=\"width:8%\"><col style=\"width:12%\"><col style=\"width:14%\"><col style=\"width:9%\"><col style=\"width:9%\"><col style=\"width:22%\"><col style=\"width:7%\"><col style=\"width:19%\"></colgroup><thead><tr><th>Flow</th><th>From</th><th>To</th><th>Jurisdiction</th><th>Data classes</th><th>Guards</th><th>Status</th><th>Reason</th></tr></thead><tbody>\n");
    for path in &region.paths {
        let guards: String = path
            .guards
            .iter()
            .map(|g| format!("<li>{}: {}</li>", escape(&g.kind), escape(&g.name)))
            .collect();
        out.push_str(&format!(
            "<tr class=\"{status}\" {attrs}><td data-label=\"Flow\">{}</td><td data-label=\"From\">{}</td><td data-label=\"To\">{}</td><td data-label=\"Jurisdiction\">{}{}</td><td data-label=\"Data classes\">{}</td><td data-label=\"Guards\"><ul class=\"guards\">{guards}</ul></td><td data-label=\"Status\"><span class=\"status {status}\">{status}</span></td><td data-label=\"Reason\">{}</td></tr>\n",
            path.flow.as_str(),
            escape(&path.from),
            escape(&path.to),
            escape(&path.jurisdiction),
            path.location
                .as_deref()
                .map(|l| format!(" ({})", escape(l)))
                .unwrap_or_default(),
            escape(&path.data_classes.join(", ")),
            escape(&path.reason),
            status = path.status.as_str(),
            attrs = attributes(path),
        ));
    }
    out.push_str("</tbody></table>\n</section>\n");
    out
}

/// The whole page.
pub fn render(evidence: &Evidence) -> String {
    let mut out = String::from(
        "<!DOCTYPE html>\n<html lang=\"en\">\n<head>\n<meta charset=\"utf-8\">\n<meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\n<title>Sovereignty evidence</title>\n<style>",
    );
    out.push_str(STYLE);
    out.push_str("</style>\n</head>\n<body>\n<h1>Sovereignty evidence</h1>\n<p>Every data path of each region: where it goes, in which jurisdiction, and what holds it there. Generated by <code>sovereign-operator evidence</code>.</p>\n");
    if evidence.regions.is_empty() {
        out.push_str("<p>No SovereignRegion in the input.</p>\n");
    }
    for region in &evidence.regions {
        out.push_str(&region_section(region));
    }
    out.push_str("</body>\n</html>\n");
    out
}

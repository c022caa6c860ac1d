//! What a change does to the paths: added, removed and altered paths between two reports,
//! matched by region, flow, from and to. A change is *breaking* (exit 1) when it adds a path
//! that leaves the jurisdiction or is not `ok`, turns a path's destination outside, worsens its
//! status, or loses one of its guards.

use std::collections::BTreeMap;

use serde::Serialize;

use super::{Evidence, Flow, Guard, Path, Status};

/// One path that is new, gone, or different.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Change {
    /// The region.
    pub region: String,
    /// `added`, `removed` or `changed`.
    pub change: &'static str,
    /// The path as it was (None when added).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub old: Option<Path>,
    /// The path as it is (None when removed).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub new: Option<Path>,
    /// Why this change is breaking, when it is.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub breaking: Vec<String>,
    /// The new path, else the old one.
    #[serde(skip)]
    current: Path,
}

impl Change {
    /// The path this change is about (the new one, else the old one).
    pub fn path(&self) -> &Path {
        &self.current
    }

    /// A one-line description: `eu inference gateway: x → api.openai.com (US): violation`.
    pub fn describe(&self) -> String {
        let path = self.path();
        let mut line = format!(
            "{} {} {}: {} → {} ({}): {}",
            self.change,
            self.region,
            path.flow.as_str(),
            path.from,
            path.to,
            path.jurisdiction,
            path.status.as_str()
        );
        if let (Some(old), Some(new)) = (&self.old, &self.new) {
            line.push_str(&format!(" [{}]", differences(old, new).join("; ")));
        }
        line
    }
}

/// What differs between two versions of one path, for people.
pub fn differences(old: &Path, new: &Path) -> Vec<String> {
    let mut out = Vec::new();
    if old.jurisdiction != new.jurisdiction {
        out.push(format!(
            "jurisdiction {} → {}",
            old.jurisdiction, new.jurisdiction
        ));
    }
    if old.location != new.location {
        out.push(format!(
            "location {} → {}",
            old.location.as_deref().unwrap_or("-"),
            new.location.as_deref().unwrap_or("-")
        ));
    }
    if old.status != new.status {
        out.push(format!(
            "status {} → {}",
            old.status.as_str(),
            new.status.as_str()
        ));
    }
    if old.data_classes != new.data_classes {
        out.push(format!(
            "data classes {} → {}",
            old.data_classes.join(","),
            new.data_classes.join(",")
        ));
    }
    for guard in lost(old, new) {
        out.push(format!("loses guard {} {}", guard.kind, guard.name));
    }
    for guard in new.guards.iter().filter(|g| !old.guards.contains(g)) {
        out.push(format!("gains guard {} {}", guard.kind, guard.name));
    }
    if out.is_empty() && old.reason != new.reason {
        out.push("reason".to_owned());
    }
    out
}

fn lost<'a>(old: &'a Path, new: &Path) -> Vec<&'a Guard> {
    old.guards
        .iter()
        .filter(|g| !new.guards.contains(g))
        .collect()
}

/// The changes from `old` to `new`, sorted by region, flow, from and to.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct Diff {
    /// Every change.
    pub changes: Vec<Change>,
}

impl Diff {
    /// Whether any change is breaking.
    pub fn is_breaking(&self) -> bool {
        self.changes.iter().any(|c| !c.breaking.is_empty())
    }

    /// 1 when breaking, else 0.
    pub fn exit_code(&self) -> u8 {
        u8::from(self.is_breaking())
    }

    /// `{"breaking": bool, "changes": [...]}`.
    pub fn to_json(&self) -> Result<String, super::EvidenceError> {
        let value = serde_json::json!({
            "breaking": self.is_breaking(),
            "changes": self.changes,
        });
        serde_json::to_string_pretty(&value)
            .map(|mut t| {
                t.push('\n');
                t
            })
            .map_err(|e| super::EvidenceError::Serialize(e.to_string()))
    }

    /// A pull-request comment.
    pub fn to_markdown(&self) -> String {
        let mut out = String::from("## Sovereignty evidence: what this change does\n\n");
        if self.changes.is_empty() {
            out.push_str("No data path is added, removed or changed.\n");
            return out;
        }
        let breaking: Vec<&Change> = self
            .changes
            .iter()
            .filter(|c| !c.breaking.is_empty())
            .collect();
        if breaking.is_empty() {
            out.push_str("No path leaves its jurisdiction and no guard is lost.\n\n");
        } else {
            out.push_str(&format!(
                "**:x: {} breaking change{}:**\n\n",
                breaking.len(),
                if breaking.len() == 1 { "" } else { "s" }
            ));
            for change in &breaking {
                let path = change.path();
                let flow = path.flow.as_str();
                let article = if flow.starts_with(['a', 'e', 'i', 'o', 'u']) {
                    "an"
                } else {
                    "a"
                };
                out.push_str(&format!(
                    "- this {} {article} {flow} path of region `{}` to `{}` ({}): {}\n",
                    match change.change {
                        "added" => "adds",
                        "removed" => "removes",
                        _ => "changes",
                    },
                    change.region,
                    super::markdown::cell(&path.to),
                    path.jurisdiction,
                    super::markdown::cell(&change.breaking.join("; "))
                ));
            }
            out.push('\n');
        }
        out.push_str(
            "| Change | Region | Flow | From | To | Jurisdiction | Status | What differs |\n",
        );
        out.push_str("|---|---|---|---|---|---|---|---|\n");
        for change in &self.changes {
            let path = change.path();
            let what = match (&change.old, &change.new) {
                (Some(old), Some(new)) => differences(old, new).join("; "),
                _ => path.reason.clone(),
            };
            out.push_str(&format!(
                "| {} | {} | {} | {} | {} | {} | {} | {} |\n",
                change.change,
                change.region,
                path.flow.as_str(),
                super::markdown::cell(&path.from),
                super::markdown::cell(&path.to),
                path.jurisdiction,
                super::markdown::status(path.status),
                super::markdown::cell(&what)
            ));
        }
        out
    }
}

/// Why a path that exists in the new report (and `old`, when it existed) makes the change
/// breaking.
fn breaking(old: Option<&Path>, new: &Path) -> Vec<String> {
    let mut out = Vec::new();
    let leaves = !new.in_jurisdiction && old.is_none_or(|o| o.in_jurisdiction);
    if leaves {
        out.push(format!(
            "it goes to {} ({}), outside the region's jurisdiction",
            new.to, new.jurisdiction
        ));
    }
    if new.status != Status::Ok && old.is_none_or(|o| o.status == Status::Ok) {
        out.push(format!("status {}: {}", new.status.as_str(), new.reason));
    }
    if let Some(old) = old {
        for guard in lost(old, new) {
            out.push(format!("loses guard {} {}", guard.kind, guard.name));
        }
    }
    out
}

/// The changes from `old` to `new`.
pub fn diff(old: &Evidence, new: &Evidence) -> Diff {
    let index = |evidence: &'_ Evidence| -> BTreeMap<(String, Flow, String, String), Path> {
        evidence
            .regions
            .iter()
            .flat_map(|r| {
                r.paths.iter().map(move |p| {
                    (
                        (r.name.clone(), p.flow, p.from.clone(), p.to.clone()),
                        p.clone(),
                    )
                })
            })
            .collect()
    };
    let (before, after) = (index(old), index(new));
    let mut changes = Vec::new();
    for (key, path) in &after {
        match before.get(key) {
            None => changes.push(Change {
                region: key.0.clone(),
                change: "added",
                old: None,
                new: Some(path.clone()),
                breaking: breaking(None, path),
                current: path.clone(),
            }),
            Some(previous) if previous != path => changes.push(Change {
                region: key.0.clone(),
                change: "changed",
                old: Some(previous.clone()),
                new: Some(path.clone()),
                breaking: breaking(Some(previous), path),
                current: path.clone(),
            }),
            Some(_) => {}
        }
    }
    for (key, path) in &before {
        if !after.contains_key(key) {
            changes.push(Change {
                region: key.0.clone(),
                change: "removed",
                old: Some(path.clone()),
                new: None,
                breaking: Vec::new(),
                current: path.clone(),
            });
        }
    }
    changes.sort_by(|a, b| (&a.region, a.path().key()).cmp(&(&b.region, b.path().key())));
    Diff { changes }
}

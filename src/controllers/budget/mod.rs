//! The TokenBudget controller: [`observe`] (the ledgers of the regions a budget covers) →
//! [`decide`] (pure: period, spend, forecast and thresholds from `finops::budget`, the status
//! worth writing, the Events) → write status → publish an Event (and call the webhook) for
//! each threshold crossed. The gateway actions of crossed thresholds are written by the usage
//! collector from these statuses. A budget whose other regions are counted by peer clusters
//! adds their published totals (`peer`, `finops::global`) before the thresholds are judged.

mod decide;
mod observe;

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use k8s_openapi::api::core::v1::Secret;
use k8s_openapi::jiff::Timestamp;
use kube::runtime::controller::Action;
use kube::runtime::events::EventType;
use kube::{Api, ResourceExt};
use serde_json::json;
use tracing::{Instrument, info_span};

use super::{Context, Error};
use crate::api::budget::TokenBudget;
use crate::finops::budget::BurnHistory;
pub use decide::{Announcement, Decision, Notice, decide};
pub use observe::{LedgerCache, Observed, observe};

/// Field manager of the status this controller writes.
pub const MANAGER: &str = "sovereign-operator-budget";

/// Runs the controller until `shutdown` resolves; every budget is re-evaluated each
/// `interval`, the pace at which the ledgers change.
pub async fn run(
    ctx: Arc<Context>,
    interval: Duration,
    shutdown: impl std::future::Future<Output = ()> + Send + Sync + 'static,
) {
    let http = reqwest::Client::builder()
        .timeout(Duration::from_secs(10))
        .build()
        .unwrap_or_default();
    let controller = super::controller::<TokenBudget>(&ctx.client, super::CONCURRENCY);
    let state = Arc::new(BudgetContext {
        ctx: ctx.clone(),
        interval,
        http,
        ledgers: LedgerCache::default(),
        burn: Mutex::new(HashMap::new()),
    });
    // Every budget again as soon as the usage collector committed new usage: the spend a
    // budget sees is then at most one scrape old, not one scrape plus one requeue.
    let ledgers_changed = futures::stream::unfold(ctx, |ctx| async move {
        ctx.budget_wakeup.notified().await;
        Some(((), ctx))
    });
    let controller = controller.reconcile_all_on(ledgers_changed);
    super::drive("budget", controller, state, reconcile, shutdown).await;
}

/// What a budget reconcile gets.
struct BudgetContext {
    ctx: Arc<Context>,
    interval: Duration,
    http: reqwest::Client,
    ledgers: LedgerCache,
    /// Burn history per budget UID (for `predictive`): process memory, see `BurnHistory`.
    burn: Mutex<HashMap<String, BurnHistory>>,
}

impl AsRef<Context> for BudgetContext {
    fn as_ref(&self) -> &Context {
        &self.ctx
    }
}

async fn reconcile(budget: Arc<TokenBudget>, state: Arc<BudgetContext>) -> Result<Action, Error> {
    let span = info_span!(
        "reconcile",
        controller = "budget",
        namespace = %budget.namespace().unwrap_or_default(),
        budget = %budget.name_any()
    );
    reconcile_inner(&budget, &state).instrument(span).await
}

async fn reconcile_inner(budget: &TokenBudget, state: &BudgetContext) -> Result<Action, Error> {
    let ctx = &state.ctx;
    let mut observed = observe(ctx, &state.ledgers, budget).await?;
    let uid = budget.uid().unwrap_or_default();
    observed.burn = state
        .burn
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .get(&uid)
        .cloned()
        .unwrap_or_default();
    let decision = decide(
        budget,
        &observed,
        &ctx.scope,
        state.interval,
        Timestamp::now(),
    );
    // The status first, so a crossed threshold is recorded before it is announced: a failed
    // write announces nothing and the next reconcile tries again.
    if let Some(status) = &decision.status {
        let current = budget.status.clone().unwrap_or_default();
        super::status::write(ctx, MANAGER, budget, &current, status).await?;
    }
    if let Some(burn) = decision.burn {
        state
            .burn
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(uid, burn);
    }
    // A threshold that acts at the gateway: the actions now, not at the next collection.
    if decision.announcements.iter().any(|a| a.warning) || decision.closed.is_some() {
        ctx.actions_wakeup.notify_one();
    }
    if let Some((used, forecast)) = decision.ratios {
        ctx.metrics.budget_ratios(
            &budget.namespace().unwrap_or_default(),
            &budget.name_any(),
            used,
            forecast,
        );
    }
    for announcement in &decision.announcements {
        // Process memory, not the status: a reconcile that ran on a status older than its
        // own last write must not announce twice.
        if ctx.first_announcement(&announcement.key) {
            announce(budget, state, announcement).await;
        }
    }
    if let Some(stale) = decision.stale_peers {
        ctx.metrics.budget_peers_stale(
            &budget.namespace().unwrap_or_default(),
            &budget.name_any(),
            stale,
        );
    }
    for notice in decision.notices {
        let type_ = if notice.warning {
            EventType::Warning
        } else {
            EventType::Normal
        };
        ctx.event(budget, type_, notice.reason, notice.note).await;
    }
    if let Some(note) = decision.closed {
        ctx.event(budget, EventType::Normal, "PeriodClosed", note)
            .await;
    }
    Ok(decision.requeue)
}

/// An Event for a crossed threshold, and the webhook's message if one is configured.
async fn announce(budget: &TokenBudget, state: &BudgetContext, announcement: &Announcement) {
    let ctx = &state.ctx;
    let type_ = if announcement.warning {
        EventType::Warning
    } else {
        EventType::Normal
    };
    ctx.event(budget, type_, "ThresholdCrossed", announcement.note.clone())
        .await;

    let Some(reference) = budget
        .spec
        .notify
        .as_ref()
        .and_then(|n| n.webhook_secret.as_ref())
    else {
        return;
    };
    let namespace = budget.namespace().unwrap_or_default();
    let url = match Api::<Secret>::namespaced(ctx.client.clone(), &namespace)
        .get_opt(&reference.name)
        .await
    {
        Ok(secret) => secret
            .and_then(|s| s.data)
            .and_then(|d| d.get(&reference.key).cloned())
            .and_then(|b| String::from_utf8(b.0).ok()),
        Err(error) => {
            tracing::warn!(%error, "cannot read the webhook Secret");
            None
        }
    };
    let Some(url) = url else {
        ctx.event(
            budget,
            EventType::Warning,
            "WebhookMissing",
            format!(
                "Secret {namespace}/{} has no key {}",
                reference.name, reference.key
            ),
        )
        .await;
        return;
    };
    let result = state
        .http
        .post(url.trim())
        .json(&json!(announcement.webhook))
        .send()
        .await;
    let failure = match result {
        Ok(response) if response.status().is_success() => None,
        Ok(response) => Some(format!("HTTP {}", response.status())),
        Err(error) => Some(error.to_string()),
    };
    if let Some(failure) = failure {
        ctx.event(
            budget,
            EventType::Warning,
            "WebhookFailed",
            format!("the notification webhook failed: {failure}"),
        )
        .await;
    }
}

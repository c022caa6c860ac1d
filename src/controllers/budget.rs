//! The TokenBudget controller: fetch the ledgers of the regions a budget covers → evaluate
//! (period, spend, forecast, thresholds; pure, in `finops::budget`) → write status → publish
//! an Event (and call the webhook) for each threshold crossed. The gateway actions of crossed
//! thresholds are written by the usage collector from these statuses.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use k8s_openapi::api::core::v1::{ConfigMap, Secret};
use k8s_openapi::jiff::Timestamp;
use kube::api::{ListParams, Patch, PatchParams};
use kube::runtime::controller::{self, Action};
use kube::runtime::events::EventType;
use kube::runtime::{Controller, watcher};
use kube::{Api, ResourceExt};
use serde_json::json;
use tracing::{Instrument, info_span};

use super::usage::{LEDGER_NAME, stored_ledger};
use super::{Context, Error, managed_elsewhere};
use crate::api::budget::{CrossedThreshold, ThresholdAction, TokenBudget, TokenBudgetStatus};
use crate::api::conditions::{self, DesiredCondition, Status};
use crate::api::region::SovereignRegion;
use crate::finops::budget::{LineKey, LineUsage, evaluate, ledger_lines};
use crate::finops::ledger::Ledger;

/// Field manager of the status this controller writes.
pub const MANAGER: &str = "sovereign-operator-budget";
/// The budget conditions.
pub const CONDITIONS: [&str; 3] = ["WithinBudget", "AtRisk", "Exceeded"];

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
    let state = Arc::new(BudgetContext {
        ctx,
        interval,
        http,
        lines: std::sync::Mutex::default(),
    });
    Controller::new(
        Api::<TokenBudget>::all(state.ctx.client.clone()),
        watcher::Config::default().any_semantic(),
    )
    .with_config(controller::Config::default().concurrency(super::CONCURRENCY))
    .graceful_shutdown_on(shutdown)
    .run(
        reconcile,
        |budget, error, state: Arc<BudgetContext>| {
            super::error_policy(budget, error, state.ctx.clone())
        },
        state,
    )
    .for_each(|_| futures::future::ready(()))
    .await;
}

/// What a budget reconcile gets.
struct BudgetContext {
    ctx: Arc<Context>,
    interval: Duration,
    http: reqwest::Client,
    /// The lines of each region's ledger, by the resourceVersion they were read at: every
    /// budget reads every ledger each interval, and a large ledger is megabytes of JSON to
    /// decompress and sum.
    lines: std::sync::Mutex<std::collections::HashMap<String, (String, Arc<Lines>)>>,
}

/// The usage lines of a ledger.
type Lines = BTreeMap<LineKey, LineUsage>;

async fn reconcile(budget: Arc<TokenBudget>, state: Arc<BudgetContext>) -> Result<Action, Error> {
    let span = info_span!(
        "reconcile",
        controller = "budget",
        namespace = %budget.namespace().unwrap_or_default(),
        budget = %budget.name_any()
    );
    super::measured(
        "budget",
        &*budget,
        &state.ctx,
        reconcile_inner(&budget, &state).instrument(span),
    )
    .await
}

async fn reconcile_inner(budget: &TokenBudget, state: &BudgetContext) -> Result<Action, Error> {
    let ctx = &state.ctx;
    let namespace = budget.namespace().unwrap_or_default();
    let name = budget.name_any();

    // fetch: the regions this instance manages and the budget covers, and their ledgers
    let regions = Api::<SovereignRegion>::all(ctx.client.clone())
        .list(&ListParams::default())
        .await
        .map_err(|e| Error::kube("list SovereignRegions", e))?
        .items;
    let scope = &budget.spec.scope;
    let covered: Vec<&SovereignRegion> = regions
        .iter()
        .filter(|r| ctx.scope.manages(&r.name_any()))
        .filter(|r| scope.regions.is_empty() || scope.regions.contains(&r.name_any()))
        .collect();
    if covered.is_empty() && !scope.regions.is_empty() {
        // Another instance in this cluster maintains the figures: leave them alone. (In the
        // one-cluster-per-jurisdiction mode each cluster has its own copy of the budget, and
        // this instance is then the only writer.)
        if budget
            .status
            .as_ref()
            .is_some_and(|s| s.period_start.is_some())
        {
            return Ok(Action::requeue(super::RESYNC));
        }
        let conditions = managed_elsewhere(&CONDITIONS, &ctx.scope, &scope.regions.join(", "));
        write_conditions_only(budget, ctx, conditions).await?;
        return Ok(Action::requeue(super::RESYNC));
    }
    let mut lines: BTreeMap<LineKey, LineUsage> = BTreeMap::new();
    for region in covered {
        let region_lines = region_lines(state, region).await?;
        lines.extend(region_lines.iter().map(|(k, v)| (k.clone(), v.clone())));
    }

    // validate + build
    let now = Timestamp::now();
    let evaluation = match evaluate(
        &budget.spec,
        budget.metadata.generation,
        budget.status.as_ref(),
        &lines,
        now,
    ) {
        Ok(evaluation) => evaluation,
        Err(error) => {
            let conditions = CONDITIONS
                .iter()
                .map(|t| DesiredCondition {
                    type_: t,
                    status: Status::Unknown,
                    reason: "InvalidSpec",
                    message: error.to_string(),
                })
                .collect();
            write_conditions_only(budget, ctx, conditions).await?;
            // Only a spec change can fix it.
            return Ok(Action::await_change());
        }
    };

    // apply: the status first, so a crossed threshold is recorded before it is announced:
    // a failed write announces nothing and the next reconcile tries again.
    if worth_writing(budget.status.as_ref(), &evaluation.status) {
        patch_status(budget, ctx, &evaluation.status).await?;
    }
    ctx.metrics.budget_ratios(
        &namespace,
        &name,
        evaluation.used_ratio,
        evaluation.forecast_ratio,
    );
    for crossed in &evaluation.fired {
        if !ctx.first_announcement(&format!(
            "{}/{:?}/{}",
            budget.uid().unwrap_or_default(),
            evaluation.status.period_start,
            crossed.percent
        )) {
            continue;
        }
        announce(budget, state, &evaluation.status, crossed).await;
    }
    if let Some(closed) = &evaluation.closed {
        ctx.event(
            budget,
            EventType::Normal,
            "PeriodClosed",
            format!(
                "period {} closed at {} {} ({}% of the limit); actions lifted",
                closed.period_start.0,
                closed.spent.amount,
                closed.spent.currency,
                closed.percent_used
            ),
        )
        .await;
    }
    Ok(Action::requeue(state.interval))
}

/// The usage lines of `region`'s ledger, decoded once per resourceVersion.
async fn region_lines(
    state: &BudgetContext,
    region: &SovereignRegion,
) -> Result<Arc<Lines>, Error> {
    let namespace = region.stack_namespace();
    let name = region.name_any();
    let api = Api::<ConfigMap>::namespaced(state.ctx.client.clone(), &namespace);
    // The metadata first: when the ledger has not changed, its megabyte stays where it is.
    let meta = api
        .get_metadata_opt(LEDGER_NAME)
        .await
        .map_err(|e| Error::kube(format!("get ConfigMap {namespace}/{LEDGER_NAME}"), e))?;
    let Some(version) = meta.and_then(|m| m.metadata.resource_version) else {
        return Ok(Arc::new(Lines::new()));
    };
    {
        let cache = state.lines.lock().unwrap_or_else(|e| e.into_inner());
        if let Some((cached, lines)) = cache.get(&name)
            && *cached == version
        {
            return Ok(lines.clone());
        }
    }
    let stored = api
        .get_opt(LEDGER_NAME)
        .await
        .map_err(|e| Error::kube(format!("get ConfigMap {namespace}/{LEDGER_NAME}"), e))?;
    let version = stored
        .as_ref()
        .and_then(|cm| cm.metadata.resource_version.clone())
        .unwrap_or_default();
    // A ledger this version cannot read is reported by the collector; counting it as empty
    // here would reopen the period at zero, so the reconcile fails and retries instead.
    let ledger: Ledger = stored_ledger(stored.as_ref()).map_err(|e| Error::Ledger {
        region: name.clone(),
        message: e.to_string(),
    })?;
    let lines = Arc::new(ledger_lines(&ledger, &name));
    let mut cache = state.lines.lock().unwrap_or_else(|e| e.into_inner());
    cache.insert(name, (version, lines.clone()));
    Ok(lines)
}

/// Whether the new status says something the old one does not. The forecast moves with the
/// clock; alone, a move of under 1% is not worth a write every interval.
fn worth_writing(old: Option<&TokenBudgetStatus>, new: &TokenBudgetStatus) -> bool {
    let Some(old) = old else { return true };
    let strip = |s: &TokenBudgetStatus| {
        let mut s = s.clone();
        s.forecast = None;
        for c in &mut s.conditions {
            c.message.clear();
        }
        s
    };
    if strip(old) != strip(new) {
        return true;
    }
    let amount = |s: &TokenBudgetStatus| {
        s.forecast
            .as_ref()
            .and_then(|f| f.amount.parse::<f64>().ok())
            .unwrap_or(0.0)
    };
    let (before, after) = (amount(old), amount(new));
    (after - before).abs() > before.abs() * 0.01
        || old.forecast.as_ref().map(|f| &f.exhausts_at)
            != new.forecast.as_ref().map(|f| &f.exhausts_at)
}

async fn patch_status(
    budget: &TokenBudget,
    ctx: &Context,
    status: &TokenBudgetStatus,
) -> Result<(), Error> {
    let api =
        Api::<TokenBudget>::namespaced(ctx.client.clone(), &budget.namespace().unwrap_or_default());
    // A merge patch replaces each list whole, and the status is computed whole.
    api.patch_status(
        &budget.name_any(),
        &PatchParams::default(),
        &Patch::Merge(json!({ "status": status })),
    )
    .await
    .map_err(|e| {
        Error::kube(
            format!("patch status of TokenBudget {}", budget.name_any()),
            e,
        )
    })?;
    ctx.metrics.wrote(MANAGER, "TokenBudget", "status");
    Ok(())
}

async fn write_conditions_only(
    budget: &TokenBudget,
    ctx: &Context,
    desired: Vec<DesiredCondition<'_>>,
) -> Result<(), Error> {
    let mut status = budget.status.clone().unwrap_or_default();
    let mut changed = status.observed_generation != budget.metadata.generation;
    status.observed_generation = budget.metadata.generation;
    for condition in desired {
        changed |= conditions::upsert(
            &mut status.conditions,
            condition,
            budget.metadata.generation,
            Timestamp::now(),
        );
    }
    if changed {
        patch_status(budget, ctx, &status).await?;
    }
    Ok(())
}

/// An Event for a crossed threshold, and the webhook's message if one is configured.
async fn announce(
    budget: &TokenBudget,
    state: &BudgetContext,
    status: &TokenBudgetStatus,
    crossed: &CrossedThreshold,
) {
    let ctx = &state.ctx;
    let spent = status.spent.clone().unwrap_or_default();
    let limit = &budget.spec.limit;
    let limit_text = match (&limit.amount, &limit.currency, limit.tokens) {
        (Some(amount), Some(currency), _) => format!("{amount} {currency}"),
        (_, _, Some(tokens)) => format!("{tokens} tokens"),
        _ => "the limit".to_owned(),
    };
    let (type_, consequence) = match crossed.action {
        ThresholdAction::Notify => (EventType::Normal, "notify".to_owned()),
        ThresholdAction::Throttle => (
            EventType::Warning,
            "the scope is throttled at the gateway until the period ends".to_owned(),
        ),
        ThresholdAction::Block => (
            EventType::Warning,
            "the scope is blocked at the gateway until the period ends".to_owned(),
        ),
        ThresholdAction::Downgrade => (
            EventType::Warning,
            "the scope is routed to a cheaper in-jurisdiction model until the period ends"
                .to_owned(),
        ),
    };
    let note = format!(
        "{}% threshold crossed: {} {} spent, {} input + {} output tokens, of {limit_text} ({:.2}%); {consequence}",
        crossed.percent,
        spent.amount,
        spent.currency,
        spent.input_tokens,
        spent.output_tokens,
        status.percent_used.unwrap_or(0.0),
    );
    ctx.event(budget, type_, "ThresholdCrossed", note.clone())
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
    let message = json!({
        "budget": format!("{namespace}/{}", budget.name_any()),
        "percent": crossed.percent,
        "action": crossed.action,
        "spent": spent,
        "limit": limit,
        "periodStart": status.period_start,
        "periodEnd": status.period_end,
        "text": note,
    });
    let result = state.http.post(url.trim()).json(&message).send().await;
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

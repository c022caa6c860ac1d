use super::*;
use crate::api::budget::{BudgetLimit, Threshold};

fn at(text: &str) -> Timestamp {
    text.parse().expect("timestamp")
}

fn key(team: &str, cost_center: &str, model: &str, region: &str) -> LineKey {
    LineKey {
        team: team.into(),
        cost_center: cost_center.into(),
        model: model.into(),
        region: region.into(),
    }
}

fn usage(input: u64, output: u64, eur: &str) -> LineUsage {
    let mut cost = Amounts::new();
    add_amount(&mut cost, "EUR", Decimal::from_str(eur).expect("decimal"));
    LineUsage {
        input_tokens: input,
        output_tokens: output,
        requests: 1,
        cost,
        ..LineUsage::default()
    }
}

fn budget(limit: &str, thresholds: &[(i32, ThresholdAction)]) -> TokenBudgetSpec {
    TokenBudgetSpec {
        scope: BudgetScope {
            teams: vec!["search".into()],
            ..BudgetScope::default()
        },
        period: BudgetPeriod::Monthly,
        time_zone: Some("Europe/Paris".into()),
        limit: BudgetLimit {
            amount: Some(limit.into()),
            currency: Some("EUR".into()),
            tokens: None,
        },
        thresholds: thresholds
            .iter()
            .map(|(percent, action)| Threshold {
                percent: *percent,
                action: *action,
                downgrade_to: None,
                requests_per_minute: None,
            })
            .collect(),
        notify: None,
        predictive: None,
        global: None,
    }
}

fn condition<'a>(status: &'a TokenBudgetStatus, type_: &str) -> &'a str {
    status
        .conditions
        .iter()
        .find(|c| c.type_ == type_)
        .map(|c| c.status.as_str())
        .unwrap_or("missing")
}

#[test]
fn periods_start_at_midnight_in_the_budget_time_zone() {
    let kolkata = TimeZone::get("Asia/Kolkata").expect("zone");
    // 20:00 UTC on 30 November is 01:30 on 1 December in India.
    let (start, end) =
        period_bounds(BudgetPeriod::Monthly, &kolkata, at("2026-11-30T20:00:00Z")).expect("bounds");
    assert_eq!(start, at("2026-11-30T18:30:00Z"));
    assert_eq!(end, at("2026-12-31T18:30:00Z"));
    assert_eq!(
        period_label(BudgetPeriod::Monthly, &kolkata, start),
        "2026-12"
    );

    let paris = TimeZone::get("Europe/Paris").expect("zone");
    // The day DST starts in Paris is 23 hours long.
    let (start, end) =
        period_bounds(BudgetPeriod::Daily, &paris, at("2026-03-29T12:00:00Z")).expect("bounds");
    assert_eq!(
        (start, end),
        (at("2026-03-28T23:00:00Z"), at("2026-03-29T22:00:00Z"))
    );

    let (start, end) = period_bounds(
        BudgetPeriod::Weekly,
        &TimeZone::UTC,
        at("2026-11-28T10:00:00Z"),
    )
    .expect("bounds");
    assert_eq!(
        (start, end),
        (at("2026-11-23T00:00:00Z"), at("2026-11-30T00:00:00Z"))
    );
    assert_eq!(
        period_label(BudgetPeriod::Weekly, &TimeZone::UTC, start),
        "2026-W48"
    );

    let (start, end) = period_bounds(
        BudgetPeriod::Quarterly,
        &TimeZone::UTC,
        at("2026-11-28T10:00:00Z"),
    )
    .expect("bounds");
    assert_eq!(
        (start, end),
        (at("2026-10-01T00:00:00Z"), at("2027-01-01T00:00:00Z"))
    );
    assert_eq!(
        period_label(BudgetPeriod::Quarterly, &TimeZone::UTC, start),
        "2026-Q4"
    );
}

#[test]
fn an_unknown_time_zone_is_an_error_naming_it() {
    let mut spec = budget("100", &[]);
    spec.time_zone = Some("Mars/Olympus_Mons".into());
    let err = evaluate(
        &spec,
        Some(1),
        None,
        &BTreeMap::new(),
        at("2026-11-28T10:00:00Z"),
    )
    .expect_err("unknown zone");
    assert!(err.to_string().contains("Mars/Olympus_Mons"), "{err}");
}

#[test]
fn spend_counts_from_the_opening_and_thresholds_fire_once_per_period() {
    let spec = budget(
        "10",
        &[(50, ThresholdAction::Notify), (100, ThresholdAction::Block)],
    );
    let search = key("search", "CC-100", "llama", "eu");
    let support = key("support", "CC-100", "llama", "eu");
    // What the ledger held before the budget existed is not the budget's.
    let mut lines = BTreeMap::from([
        (search.clone(), usage(100, 50, "3")),
        (support.clone(), usage(7, 7, "99")),
    ]);
    let first = evaluate(&spec, Some(1), None, &lines, at("2026-11-10T00:00:00Z")).expect("eval");
    assert_eq!(
        first.status.spent.as_ref().map(|s| s.amount.as_str()),
        Some("0")
    );
    assert!(first.fired.is_empty());
    assert_eq!(condition(&first.status, "WithinBudget"), "True");

    // 6 EUR more for search (support is out of scope): 60%, the 50% threshold fires.
    lines.insert(search.clone(), usage(400, 150, "9"));
    lines.insert(support.clone(), usage(8, 8, "150"));
    let second = evaluate(
        &spec,
        Some(1),
        Some(&first.status),
        &lines,
        at("2026-11-11T00:00:00Z"),
    )
    .expect("eval");
    let spent = second.status.spent.clone().expect("spent");
    assert_eq!(
        (
            spent.amount.as_str(),
            spent.input_tokens,
            spent.output_tokens
        ),
        ("6", 300, 100)
    );
    assert_eq!(second.status.percent_used, Some(60.0));
    assert_eq!(
        second.fired.iter().map(|f| f.percent).collect::<Vec<_>>(),
        [50]
    );
    assert!(active_actions("ns", "b", &spec, &second.status).is_empty());

    // Same usage again: nothing fires twice.
    let third = evaluate(
        &spec,
        Some(1),
        Some(&second.status),
        &lines,
        at("2026-11-12T00:00:00Z"),
    )
    .expect("eval");
    assert!(third.fired.is_empty());
    assert_eq!(third.status.thresholds_crossed.len(), 1);

    // Over the limit: Block fires, the budget is Exceeded, the action is in force.
    lines.insert(search.clone(), usage(500, 200, "13.5"));
    let fourth = evaluate(
        &spec,
        Some(1),
        Some(&third.status),
        &lines,
        at("2026-11-13T00:00:00Z"),
    )
    .expect("eval");
    assert_eq!(
        fourth.fired.iter().map(|f| f.percent).collect::<Vec<_>>(),
        [100]
    );
    assert_eq!(condition(&fourth.status, "Exceeded"), "True");
    assert_eq!(condition(&fourth.status, "WithinBudget"), "False");
    let actions = active_actions("ns", "b", &spec, &fourth.status);
    assert_eq!(actions.len(), 1);
    assert_eq!(actions[0].action, ThresholdAction::Block);
    assert_eq!(actions[0].teams, ["search"]);

    // December (in Paris): November closes with 10.5 EUR, the block is lifted.
    lines.insert(search.clone(), usage(510, 210, "13.9"));
    let december = evaluate(
        &spec,
        Some(1),
        Some(&fourth.status),
        &lines,
        at("2026-11-30T23:30:00Z"),
    )
    .expect("eval");
    let closed = december.closed.clone().expect("November closed");
    assert_eq!(closed.spent.amount, "10.9");
    assert_eq!(closed.period_start.0, at("2026-10-31T23:00:00Z"));
    assert_eq!(december.status.history.len(), 1);
    assert_eq!(
        december.status.spent.as_ref().map(|s| s.amount.as_str()),
        Some("0")
    );
    assert!(december.status.thresholds_crossed.is_empty());
    assert!(active_actions("ns", "b", &spec, &december.status).is_empty());
    // Nothing is lost or counted twice across the boundary: 3 → 13.9 EUR is 10.9.
}

#[test]
fn usage_lines_add_up_to_spent_and_the_breakdown_ranks_by_amount() {
    let mut spec = budget("1000", &[]);
    spec.scope = BudgetScope::default();
    let mut lines = BTreeMap::new();
    let opening = evaluate(&spec, Some(1), None, &lines, at("2026-11-01T12:00:00Z")).expect("eval");
    for i in 0..(MAX_USAGE_LINES + 50) {
        lines.insert(
            key(&format!("team-{i:03}"), "CC", "m", "eu"),
            usage(i as u64, 1, &format!("0.{i:03}")),
        );
    }
    let now = evaluate(
        &spec,
        Some(1),
        Some(&opening.status),
        &lines,
        at("2026-11-02T12:00:00Z"),
    )
    .expect("eval");
    let status = now.status;
    assert_eq!(status.usage.len(), MAX_USAGE_LINES);
    assert_eq!(
        status.usage.last().map(|l| l.team.as_str()),
        Some("(other)")
    );
    let sum: Decimal = status.usage.iter().map(|l| decimal(&l.amount)).sum();
    assert_eq!(
        money(sum),
        status
            .spent
            .as_ref()
            .map(|s| s.amount.clone())
            .unwrap_or_default()
    );
    let teams: Vec<_> = status
        .breakdown
        .iter()
        .filter(|b| b.dimension == "team")
        .map(|b| b.value.as_str())
        .collect();
    assert_eq!(
        teams,
        ["team-249", "team-248", "team-247", "team-246", "team-245"]
    );
}

#[test]
fn forecast_projects_the_burn_rate_to_period_end() {
    let mut spec = budget("100", &[]);
    spec.time_zone = None;
    spec.scope = BudgetScope::default();
    let k = key("a", "", "m", "eu");
    let start = BTreeMap::from([(k.clone(), usage(0, 0, "0"))]);
    let opening = evaluate(&spec, Some(1), None, &start, at("2026-11-01T00:00:00Z")).expect("eval");
    // 20 EUR in the first 6 of 30 days: 100 EUR by the end, the limit reached on day 30.
    let lines = BTreeMap::from([(k, usage(10, 10, "20"))]);
    let later = evaluate(
        &spec,
        Some(1),
        Some(&opening.status),
        &lines,
        at("2026-11-07T00:00:00Z"),
    )
    .expect("eval");
    let forecast = later.status.forecast.clone().expect("forecast");
    assert_eq!(forecast.amount, "100");
    assert_eq!(
        forecast.exhausts_at, None,
        "reached exactly at period end, not inside it"
    );
    assert_eq!(condition(&later.status, "AtRisk"), "True");
    assert!((later.forecast_ratio - 1.0).abs() < 1e-9);
}

#[test]
fn usage_in_another_currency_is_refused_with_a_condition() {
    let mut spec = budget("100", &[]);
    spec.scope = BudgetScope::default();
    let mut usd = Amounts::new();
    add_amount(&mut usd, "USD", Decimal::ONE);
    let lines = BTreeMap::from([
        (key("a", "", "m", "eu"), usage(1, 1, "1")),
        (
            key("b", "", "gpt", "eu"),
            LineUsage {
                cost: usd,
                ..LineUsage::default()
            },
        ),
    ]);
    let eval = evaluate(&spec, Some(1), None, &lines, at("2026-11-07T00:00:00Z")).expect("eval");
    for type_ in ["WithinBudget", "AtRisk", "Exceeded"] {
        let c = eval
            .status
            .conditions
            .iter()
            .find(|c| c.type_ == type_)
            .expect("condition");
        assert_eq!(
            (c.status.as_str(), c.reason.as_str()),
            ("Unknown", "CurrencyMismatch")
        );
        assert!(
            c.message.contains("USD") && c.message.contains("EUR"),
            "{}",
            c.message
        );
    }
}

#[test]
fn a_token_limit_counts_input_and_output_tokens() {
    let mut spec = budget("100", &[(80, ThresholdAction::Notify)]);
    spec.limit = BudgetLimit {
        amount: None,
        currency: None,
        tokens: Some(1000),
    };
    spec.scope = BudgetScope::default();
    let k = key("a", "", "m", "eu");
    let first = evaluate(
        &spec,
        None,
        None,
        &BTreeMap::from([(k.clone(), usage(0, 0, "0"))]),
        at("2026-11-07T00:00:00Z"),
    )
    .expect("eval");
    let lines = BTreeMap::from([(k, usage(500, 350, "1"))]);
    let eval = evaluate(
        &spec,
        None,
        Some(&first.status),
        &lines,
        at("2026-11-08T00:00:00Z"),
    )
    .expect("eval");
    assert_eq!(eval.status.percent_used, Some(85.0));
    assert_eq!(eval.fired.len(), 1);
}

#[test]
fn idle_gpu_cost_is_its_own_line_and_only_in_unscoped_budgets() {
    let mut ledger = Ledger::default();
    ledger.gpu.insert(
        "ns.llama".into(),
        crate::finops::ledger::GpuMeter {
            model: "llama".into(),
            idle_cost: Amounts::from([("EUR".to_owned(), Decimal::from(6))]),
            ..Default::default()
        },
    );
    let lines = ledger_lines(&ledger, "eu");
    let idle = key(UNALLOCATED, "", "llama", "eu");
    assert_eq!(lines[&idle].cost["EUR"], Decimal::from(6));
    assert!(in_scope(&BudgetScope::default(), &idle));
    assert!(!in_scope(
        &BudgetScope {
            teams: vec!["search".into()],
            ..Default::default()
        },
        &idle
    ));
}

#[test]
fn region_actions_keep_downgrades_inside_the_region_and_skip_other_regions() {
    use crate::api::budget::TokenBudget;
    let mut spec = budget(
        "10",
        &[
            (90, ThresholdAction::Downgrade),
            (100, ThresholdAction::Block),
        ],
    );
    spec.thresholds[0].downgrade_to = Some("small-eu".into());
    spec.scope.regions = vec!["eu".into()];
    let crossed = CrossedThreshold {
        percent: 90,
        action: ThresholdAction::Downgrade,
        crossed_at: Time(at("2026-11-02T00:00:00Z")),
    };
    let mut eu = TokenBudget::new("search", spec.clone());
    eu.metadata.namespace = Some("team".into());
    eu.status = Some(TokenBudgetStatus {
        thresholds_crossed: vec![crossed],
        ..Default::default()
    });

    let served = std::collections::BTreeSet::from(["small-eu".to_owned(), "large-eu".to_owned()]);
    let file = region_actions(std::slice::from_ref(&eu), "eu", &served);
    assert_eq!(file.actions.len(), 1);
    assert_eq!(file.actions[0].downgrade_to.as_deref(), Some("small-eu"));
    assert_eq!(file.actions[0].budget, "team/search");
    assert!(file.refused.is_empty());

    // A target the region does not serve would leave the jurisdiction: refused, not routed.
    let only_large = std::collections::BTreeSet::from(["large-eu".to_owned()]);
    let file = region_actions(std::slice::from_ref(&eu), "eu", &only_large);
    assert!(file.actions.is_empty());
    assert!(file.refused[0].contains("small-eu"), "{:?}", file.refused);

    // Another region's gateway gets nothing from an EU budget.
    assert_eq!(region_actions(&[eu], "in", &served), ActionsFile::default());
}

/// Evaluates `spec` every `interval` seconds from 2026-11-10T00:00:00Z over the cumulative
/// search spend `cumulative` (EUR, one value per look; the first opens the budget) with the
/// burn history carried along, as the controller does. Returns, per look, the percent used,
/// the projection and the thresholds fired.
fn run(
    spec: &TokenBudgetSpec,
    interval: f64,
    cumulative: &[&str],
) -> Vec<(f64, Option<f64>, Vec<i32>)> {
    let mut previous: Option<TokenBudgetStatus> = None;
    let mut burn = BurnHistory::default();
    let start = at("2026-11-10T00:00:00Z");
    let mut out = Vec::new();
    for (i, eur) in cumulative.iter().enumerate() {
        let lines = BTreeMap::from([(key("search", "", "m", "eu"), usage(1, 1, eur))]);
        let now = Timestamp::from_second(start.as_second() + (i as f64 * interval) as i64)
            .expect("in range");
        let evaluation = evaluate_with(
            spec,
            Some(1),
            previous.as_ref(),
            &lines,
            now,
            &Beyond {
                burn: burn.clone(),
                interval,
                ..Beyond::default()
            },
        )
        .expect("eval");
        burn = evaluation.burn.clone();
        out.push((
            evaluation.status.percent_used.unwrap_or(0.0),
            evaluation.projected_percent,
            evaluation.fired.iter().map(|c| c.percent).collect(),
        ));
        previous = Some(evaluation.status);
    }
    out
}

/// The look at which threshold `percent` fired, with the percent used then.
fn fired_at(looks: &[(f64, Option<f64>, Vec<i32>)], percent: i32) -> Option<(usize, f64)> {
    looks
        .iter()
        .enumerate()
        .find(|(_, (_, _, fired))| fired.contains(&percent))
        .map(|(i, (used, _, _))| (i, *used))
}

/// 9 EUR per 30 s interval against 100 EUR: 99 EUR at the 11th look, 108 at the 12th.
const STEADY: [&str; 14] = [
    "0", "0", "9", "18", "27", "36", "45", "54", "63", "72", "81", "90", "99", "108",
];

#[test]
fn a_steady_burn_right_under_the_limit_is_blocked_one_interval_early_when_predictive() {
    let mut spec = budget(
        "100",
        &[(80, ThresholdAction::Notify), (100, ThresholdAction::Block)],
    );
    spec.predictive = Some(true);
    let looks = run(&spec, 30.0, &STEADY[1..]);
    // At 90 % the next interval and a half (13.5 %) crosses the limit: Block now, under
    // the limit; at 81 % (94.5 % projected) it was not yet time.
    let (look, used) = fired_at(&looks, 100).expect("Block fires");
    assert_eq!(used, 90.0, "{looks:?}");
    assert_eq!(looks[look].1, Some(103.5));
    assert_eq!(looks[look - 1].1, Some(94.5));
    // Notify says what happened, not what will: it fires at 81 %, not at 72 % + 9 %.
    assert_eq!(fired_at(&looks, 80).map(|(_, used)| used), Some(81.0));

    // Without prediction the same burn is blocked only once it is over: 8 % too late.
    spec.predictive = None;
    let looks = run(&spec, 30.0, &STEADY[1..]);
    assert_eq!(fired_at(&looks, 100).map(|(_, used)| used), Some(108.0));
    assert!(looks.iter().all(|(_, projected, _)| projected.is_none()));
}

#[test]
fn a_burst_does_not_block_a_user_far_under_the_limit() {
    let mut spec = budget("100", &[(100, ThresholdAction::Block)]);
    spec.predictive = Some(true);
    // 1 EUR per interval, then one burst of 60 EUR in one interval, then 1 EUR again: at 63 %
    // the last interval alone (60 %/interval) would project 153 %; the slower of the last
    // two (1 %/interval) projects 64.5 %. Nobody is blocked before the limit.
    let looks = run(
        &spec,
        30.0,
        &["0", "1", "2", "3", "63", "64", "65", "66", "67"],
    );
    assert!(fired_at(&looks, 100).is_none(), "{looks:?}");
    assert_eq!(looks[4].1, Some(64.5), "{looks:?}");
    // A burn that stays fast is a rate, not a burst: after two fast intervals it acts, at
    // 62 % (107 % projected), before the 30 %/interval burn goes over.
    let looks = run(&spec, 30.0, &["0", "1", "2", "32", "62", "92", "122"]);
    let (look, used) = fired_at(&looks, 100).expect("Block fires");
    assert_eq!((look, used), (4, 62.0), "{looks:?}");
}

#[test]
fn prediction_waits_for_two_intervals_and_skips_the_echo_of_its_own_write() {
    let history = BurnHistory::default();
    let sample = |at: f64, percent: f64| BurnSample { at, percent };
    let one = history.observe(0, sample(0.0, 10.0), 30.0);
    let two = one.observe(0, sample(30.0, 20.0), 30.0);
    assert_eq!(two.rate(), None, "one interval is no rate yet");
    // The reconcile caused by the status write, a moment later, saw the same use: no sample.
    let echo = two.observe(0, sample(31.0, 20.0), 30.0);
    assert_eq!(echo, two);
    let three = echo.observe(0, sample(60.0, 30.0), 30.0);
    let rate = three.rate().expect("two intervals");
    assert!((rate - 1.0 / 3.0).abs() < 1e-9, "{rate}");
    assert_eq!(three.projected(30.0), Some(40.0));
    // A look between two commits (a requeue just before the collector's next commit) is no
    // sample: it would make a zero rate of a steady burn.
    assert_eq!(three.observe(0, sample(89.0, 30.0), 30.0), three);
    // Two intervals without new use are a pause: the rate falls.
    let quiet = three.observe(0, sample(120.0, 30.0), 30.0);
    assert_eq!(quiet.rate(), Some(0.0));
    // A new period (or a ledger reset: use going down) starts again.
    assert_eq!(three.observe(100, sample(61.0, 0.0), 30.0).rate(), None);
    assert_eq!(three.observe(0, sample(61.0, 5.0), 30.0).rate(), None);
}

#[test]
fn notify_never_fires_ahead_and_acting_thresholds_do() {
    assert!(!threshold_fires(
        80,
        ThresholdAction::Notify,
        79.0,
        Some(95.0)
    ));
    assert!(threshold_fires(80, ThresholdAction::Notify, 80.0, None));
    for action in [
        ThresholdAction::Block,
        ThresholdAction::Throttle,
        ThresholdAction::Downgrade,
    ] {
        assert!(threshold_fires(100, action, 95.0, Some(100.0)));
        assert!(!threshold_fires(100, action, 95.0, Some(99.99)));
        assert!(!threshold_fires(100, action, 95.0, None));
    }
}

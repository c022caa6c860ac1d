//! Leader election with a `coordination.k8s.io/v1` Lease, so that of several replicas only one
//! reconciles (writes) at a time.
//!
//! kube-rs has no leader election of its own. This is the client-go algorithm, kept small:
//!
//! - **Acquire**: a replica takes the Lease when it has no holder (released on a graceful
//!   shutdown: the standby takes over on its next poll, within [`ElectionConfig::retry_period`])
//!   or when its record (holder, renewTime) has not changed for `leaseDurationSeconds` as
//!   measured on the *standby's own clock* since it saw the record change. Measuring locally,
//!   not by comparing `renewTime` with the local time, makes clock skew between nodes harmless.
//! - **Renew**: the holder rewrites `renewTime` every [`ElectionConfig::renew_period`].
//! - **Lose**: a holder that has not renewed successfully for
//!   [`ElectionConfig::renew_deadline`] (shorter than the lease duration) stops, before any
//!   standby can consider the lease expired; so two replicas never reconcile at once.
//! - Every write is a `replace` carrying the `resourceVersion` that was read: of two replicas
//!   racing for the same Lease, the API server lets exactly one win (409 Conflict for the other).
//!
//! The decision itself ([`decide`]) is a pure function, unit-tested below; [`Elector`] does the
//! I/O.

use std::time::Duration;

use k8s_openapi::api::coordination::v1::{Lease, LeaseSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::MicroTime;
use k8s_openapi::jiff::Timestamp;
use kube::api::{ObjectMeta, PostParams};
use kube::{Api, Client};
use tokio::time::Instant;

/// Timing and identity of one elector.
#[derive(Clone, Debug)]
pub struct ElectionConfig {
    /// Namespace of the Lease.
    pub namespace: String,
    /// Name of the Lease (`--leader-election-id`).
    pub name: String,
    /// This replica's identity (the Pod name, else host name and process id).
    pub identity: String,
    /// How long a standby waits for a renewal before taking over.
    pub lease_duration: Duration,
    /// How often the leader renews.
    pub renew_period: Duration,
    /// How long the leader keeps leading without a successful renewal; must be shorter than
    /// `lease_duration` so the leader stops before a standby takes over.
    pub renew_deadline: Duration,
    /// How often a standby looks at the Lease (and the leader retries a failed renewal).
    pub retry_period: Duration,
}

impl ElectionConfig {
    /// The defaults: 12 s lease, renew every 4 s, give up after 8 s, standby polls every
    /// second. A standby takes over once the record has stood still for the lease duration
    /// as it observed it, so after a crash it leads within lease + one poll ≈ 13 s (the issue
    /// asks for ~15 s; client-go's 15/10/2 measured 15–17 s here). A leader gives up 4 s
    /// before anyone may take over.
    pub fn new(namespace: String, name: String, identity: String) -> Self {
        Self {
            namespace,
            name,
            identity,
            lease_duration: Duration::from_secs(12),
            renew_period: Duration::from_secs(4),
            renew_deadline: Duration::from_secs(8),
            retry_period: Duration::from_secs(1),
        }
    }
}

/// This process's identity: `POD_NAME` (set by the chart from the downward API), else the host
/// name and the process id, so two processes on one machine never share an identity.
pub fn default_identity() -> String {
    if let Ok(pod) = std::env::var("POD_NAME")
        && !pod.is_empty()
    {
        return pod;
    }
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname")
        .or_else(|_| std::fs::read_to_string("/etc/hostname"))
        .map(|h| h.trim().to_owned())
        .ok()
        .filter(|h| !h.is_empty())
        .or_else(|| std::env::var("HOSTNAME").ok())
        .unwrap_or_else(|| "unknown-host".to_owned());
    format!("{host}_{}", std::process::id())
}

/// What to do with the Lease as it was read.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Decision {
    /// Nobody holds it, or the holder has let it expire: take it.
    Acquire,
    /// We hold it: renew it.
    Renew,
    /// Somebody else holds it and is renewing: wait.
    Wait,
}

/// The election rule. `holder` is the Lease's `holderIdentity`; `unchanged_for` is how long,
/// on this process's clock, the Lease record has looked the same; `lease_duration` is what the
/// holder announced (`leaseDurationSeconds`).
pub fn decide(
    holder: Option<&str>,
    identity: &str,
    unchanged_for: Duration,
    lease_duration: Duration,
) -> Decision {
    match holder {
        None | Some("") => Decision::Acquire,
        Some(holder) if holder == identity => Decision::Renew,
        Some(_) if unchanged_for >= lease_duration => Decision::Acquire,
        Some(_) => Decision::Wait,
    }
}

/// The outcome of one look at the Lease.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Round {
    /// We hold the Lease (acquired or renewed just now).
    Held,
    /// Another replica holds it.
    HeldBy(String),
    /// Our write lost a race (409): look again.
    Conflict,
}

/// What identifies a version of the Lease record, for the local expiry clock.
#[derive(Clone, Debug, PartialEq, Eq)]
struct Record {
    holder: Option<String>,
    renew_time: Option<Timestamp>,
}

/// How long the Lease record has looked the same, on this process's clock.
#[derive(Debug, Default)]
struct ExpiryClock {
    seen: Option<(Record, Instant)>,
}

impl ExpiryClock {
    /// Notes `record` as seen at `now`; returns for how long it has been unchanged.
    fn unchanged_for(&mut self, record: Record, now: Instant) -> Duration {
        match &self.seen {
            Some((seen, since)) if *seen == record => now.saturating_duration_since(*since),
            _ => {
                self.seen = Some((record, now));
                Duration::ZERO
            }
        }
    }
}

/// Why a leader stopped leading.
#[derive(Debug, thiserror::Error)]
pub enum Lost {
    /// Another replica holds the Lease now.
    #[error("the lease is held by {0}")]
    TakenBy(String),
    /// No successful renewal within the renew deadline.
    #[error("no successful renewal within {0:?}: {1}")]
    Deadline(Duration, String),
}

/// Reads and writes one Lease for one identity.
pub struct Elector {
    api: Api<Lease>,
    config: ElectionConfig,
    /// The last record seen and since when (local clock) it has looked like that.
    clock: ExpiryClock,
}

impl Elector {
    /// An elector for `config` using `client`.
    pub fn new(client: Client, config: ElectionConfig) -> Self {
        Self {
            api: Api::namespaced(client, &config.namespace),
            config,
            clock: ExpiryClock::default(),
        }
    }

    /// The configuration.
    pub fn config(&self) -> &ElectionConfig {
        &self.config
    }

    /// One round: read the Lease, decide, and write it when acquiring or renewing.
    pub async fn round(&mut self) -> Result<Round, kube::Error> {
        let now = Timestamp::now();
        let Some(mut lease) = self.api.get_opt(&self.config.name).await? else {
            let lease = Lease {
                metadata: ObjectMeta {
                    name: Some(self.config.name.clone()),
                    namespace: Some(self.config.namespace.clone()),
                    ..ObjectMeta::default()
                },
                spec: Some(self.spec(now, now, 0)),
            };
            return match self.api.create(&PostParams::default(), &lease).await {
                Ok(created) => Ok(self.written(created)),
                // Another replica created it first.
                Err(kube::Error::Api(status)) if status.code == 409 => Ok(Round::Conflict),
                Err(error) => Err(error),
            };
        };
        let spec = lease.spec.clone().unwrap_or_default();
        let record = Record {
            holder: spec.holder_identity.clone().filter(|h| !h.is_empty()),
            renew_time: spec.renew_time.as_ref().map(|t| t.0),
        };
        let unchanged_for = self.clock.unchanged_for(record.clone(), Instant::now());
        let announced = spec
            .lease_duration_seconds
            .and_then(|s| u64::try_from(s).ok())
            .map(Duration::from_secs)
            .unwrap_or(self.config.lease_duration);
        let decision = decide(
            record.holder.as_deref(),
            &self.config.identity,
            unchanged_for,
            announced,
        );
        let (acquired, transitions) = match decision {
            Decision::Wait => {
                return Ok(Round::HeldBy(record.holder.unwrap_or_default()));
            }
            Decision::Renew => (
                spec.acquire_time.as_ref().map(|t| t.0).unwrap_or(now),
                spec.lease_transitions.unwrap_or(0),
            ),
            Decision::Acquire => {
                tracing::info!(
                    previous = record.holder.as_deref().unwrap_or("nobody"),
                    "acquiring the leader lease"
                );
                (now, spec.lease_transitions.unwrap_or(0).saturating_add(1))
            }
        };
        // `lease` still carries the resourceVersion just read: the replace succeeds only if
        // nobody wrote the Lease in between.
        lease.spec = Some(self.spec(acquired, now, transitions));
        match self
            .api
            .replace(&self.config.name, &PostParams::default(), &lease)
            .await
        {
            Ok(written) => Ok(self.written(written)),
            Err(kube::Error::Api(status)) if status.code == 409 => Ok(Round::Conflict),
            Err(error) => Err(error),
        }
    }

    fn spec(&self, acquired: Timestamp, renewed: Timestamp, transitions: i32) -> LeaseSpec {
        LeaseSpec {
            holder_identity: Some(self.config.identity.clone()),
            lease_duration_seconds: Some(
                i32::try_from(self.config.lease_duration.as_secs()).unwrap_or(15),
            ),
            acquire_time: Some(MicroTime(acquired)),
            renew_time: Some(MicroTime(renewed)),
            lease_transitions: Some(transitions),
            ..LeaseSpec::default()
        }
    }

    fn written(&mut self, lease: Lease) -> Round {
        let spec = lease.spec.unwrap_or_default();
        let record = Record {
            holder: spec.holder_identity,
            renew_time: spec.renew_time.map(|t| t.0),
        };
        self.clock.unchanged_for(record, Instant::now());
        Round::Held
    }

    /// Waits until this replica holds the Lease. `on_contact` is called after every round that
    /// reached the API server (a standby that can read the Lease is healthy).
    pub async fn acquire(&mut self, mut on_contact: impl FnMut()) {
        let mut last_holder = String::new();
        loop {
            match tokio::time::timeout(self.config.retry_period * 3, self.round()).await {
                Ok(Ok(Round::Held)) => {
                    on_contact();
                    tracing::info!(identity = %self.config.identity, lease = %self.config.name, "became the leader");
                    return;
                }
                Ok(Ok(Round::HeldBy(holder))) => {
                    on_contact();
                    if holder != last_holder {
                        tracing::info!(%holder, "standing by: another replica leads");
                        last_holder = holder;
                    }
                }
                Ok(Ok(Round::Conflict)) => on_contact(),
                Ok(Err(error)) => tracing::warn!(%error, "cannot read the leader lease"),
                Err(_) => tracing::warn!("reading the leader lease timed out"),
            }
            tokio::time::sleep(self.config.retry_period).await;
        }
    }

    /// Keeps renewing the Lease; returns only when leadership is lost. Each attempt is bounded
    /// by the renew deadline, so a hung request cannot keep a stale leader alive.
    pub async fn hold(&mut self) -> Lost {
        let mut last_renewal = Instant::now();
        loop {
            tokio::time::sleep(self.config.renew_period).await;
            loop {
                let deadline = last_renewal + self.config.renew_deadline;
                let outcome = tokio::time::timeout_at(deadline, self.round()).await;
                let problem = match outcome {
                    Ok(Ok(Round::Held)) => {
                        last_renewal = Instant::now();
                        break;
                    }
                    Ok(Ok(Round::HeldBy(holder))) => return Lost::TakenBy(holder),
                    // Someone wrote the Lease (an edit by hand?): read it again.
                    Ok(Ok(Round::Conflict)) => "conflict".to_owned(),
                    Ok(Err(error)) => error.to_string(),
                    Err(_) => "timed out".to_owned(),
                };
                if Instant::now() >= deadline {
                    return Lost::Deadline(self.config.renew_deadline, problem);
                }
                tracing::warn!(%problem, "renewing the leader lease failed; retrying");
                let retry = (Instant::now() + self.config.retry_period).min(deadline);
                tokio::time::sleep_until(retry).await;
            }
        }
    }

    /// Gives the Lease up (graceful shutdown), so that a standby takes over on its next poll
    /// instead of waiting for the lease to expire. Only when we still hold it.
    pub async fn release(&mut self) {
        let result = async {
            let Some(mut lease) = self.api.get_opt(&self.config.name).await? else {
                return Ok(false);
            };
            let mut spec = lease.spec.clone().unwrap_or_default();
            if spec.holder_identity.as_deref() != Some(self.config.identity.as_str()) {
                return Ok(false);
            }
            spec.holder_identity = None;
            spec.lease_duration_seconds = Some(1);
            spec.renew_time = Some(MicroTime(Timestamp::now()));
            lease.spec = Some(spec);
            self.api
                .replace(&self.config.name, &PostParams::default(), &lease)
                .await
                .map(|_| true)
        };
        match tokio::time::timeout(self.config.renew_deadline, result).await {
            Ok(Ok(true)) => tracing::info!("released the leader lease"),
            Ok(Ok(false)) => {}
            Ok(Err(error)) => tracing::warn!(%error, "cannot release the leader lease"),
            Err(_) => tracing::warn!("releasing the leader lease timed out"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const LEASE: Duration = Duration::from_secs(15);

    #[test]
    fn a_free_lease_is_taken_at_once() {
        assert_eq!(decide(None, "a", Duration::ZERO, LEASE), Decision::Acquire);
        // What a graceful release leaves behind.
        assert_eq!(
            decide(Some(""), "a", Duration::ZERO, LEASE),
            Decision::Acquire
        );
    }

    #[test]
    fn the_holder_renews() {
        assert_eq!(decide(Some("a"), "a", LEASE * 2, LEASE), Decision::Renew);
    }

    #[test]
    fn a_live_holder_is_left_alone_until_its_lease_expires() {
        assert_eq!(
            decide(Some("b"), "a", Duration::from_secs(14), LEASE),
            Decision::Wait
        );
        assert_eq!(decide(Some("b"), "a", LEASE, LEASE), Decision::Acquire);
    }

    #[test]
    fn the_holders_announced_duration_counts() {
        // A holder that announced 1 s (what a release writes) is stale after 1 s.
        assert_eq!(
            decide(
                Some("b"),
                "a",
                Duration::from_secs(1),
                Duration::from_secs(1)
            ),
            Decision::Acquire
        );
    }

    #[test]
    fn the_leader_gives_up_before_a_standby_can_take_over() {
        let config = ElectionConfig::new("ns".into(), "lease".into(), "a".into());
        assert!(config.renew_deadline < config.lease_duration);
        assert!(config.renew_period < config.renew_deadline);
        assert!(config.retry_period < config.renew_period);
    }

    #[test]
    fn a_changed_record_restarts_the_local_expiry_clock() {
        let mut clock = ExpiryClock::default();
        let mut observe = |record: Record, now: Instant| clock.unchanged_for(record, now);
        let start = Instant::now();
        let first = Record {
            holder: Some("b".into()),
            renew_time: None,
        };
        assert_eq!(observe(first.clone(), start), Duration::ZERO);
        assert_eq!(
            observe(first.clone(), start + Duration::from_secs(7)),
            Duration::from_secs(7)
        );
        let renewed = Record {
            renew_time: Some(Timestamp::UNIX_EPOCH),
            ..first
        };
        assert_eq!(
            observe(renewed, start + Duration::from_secs(8)),
            Duration::ZERO
        );
    }
}

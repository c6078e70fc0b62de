//! Leader election with a `coordination.k8s.io/v1` Lease, as client-go's
//! leaderelection package does it: every replica serves, and only the holder
//! of the Lease may write (CA Secret creation, the root ConfigMap, status).
//! [`run`] publishes "am I the holder" on a watch channel; writers check it
//! right before each write.
//!
//! * A replica takes the Lease when it does not exist (create), when nobody
//!   holds it, or when its holder has not renewed it for `lease_duration`;
//!   the holder renews it every `retry_period`. Every write is a create or an
//!   update carrying the resourceVersion just read, so of two replicas racing
//!   for it one gets `409 Conflict` and stays a follower.
//! * Expiry is judged on this replica's own clock: a record counts as renewed
//!   when this replica *sees* it change, so clock skew between nodes does not
//!   matter (client-go's rule).
//! * A holder that cannot renew for `renew_deadline` (shorter than
//!   `lease_duration`) stops claiming leadership, before any other replica
//!   may take the Lease over. An API call that hangs counts as failed at the
//!   deadline.

use std::time::Duration;

use ::kube::Api;
use ::kube::api::{ObjectMeta, PostParams};
use k8s_openapi::api::coordination::v1::{Lease, LeaseSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::MicroTime;
use tokio::sync::watch;
use tokio::time::Instant;
use tracing::{debug, info, warn};

/// What the elector does with Leases: the RBAC Role in `manifests/` grants
/// exactly these (tests/manifests.rs checks it).
pub const LEASE_VERBS: [&str; 3] = ["create", "get", "update"];

/// The Lease's name in pilotfish's namespace.
pub const LEASE_NAME: &str = "pilotfish";

/// client-go's defaults (kube-controller-manager, kube-scheduler): a new
/// leader within ~15 s of a holder dying, 2 s between attempts, and a 5 s
/// margin between a holder giving up and anyone else taking over.
pub const LEASE_DURATION: Duration = Duration::from_secs(15);
pub const RENEW_DEADLINE: Duration = Duration::from_secs(10);
pub const RETRY_PERIOD: Duration = Duration::from_secs(2);

#[derive(Clone, Debug)]
pub struct Options {
    pub namespace: String,
    pub name: String,
    /// Who holds it: the pod name, unique among the replicas.
    pub identity: String,
    pub lease_duration: Duration,
    pub renew_deadline: Duration,
    pub retry_period: Duration,
}

impl Options {
    pub fn new(namespace: &str, identity: &str) -> Options {
        Options {
            namespace: namespace.to_string(),
            name: LEASE_NAME.to_string(),
            identity: identity.to_string(),
            lease_duration: LEASE_DURATION,
            renew_deadline: RENEW_DEADLINE,
            retry_period: RETRY_PERIOD,
        }
    }
}

#[derive(Debug, thiserror::Error)]
enum AttemptError {
    #[error("Lease {0} is held by {1}")]
    HeldBy(String, String),
    #[error("Lease {0} was written by another replica meanwhile (409 Conflict)")]
    Conflict(String),
    #[error("Lease {0}: {1}")]
    Api(String, #[source] ::kube::Error),
}

/// The last Lease record seen, and when this replica first saw it.
struct Observed {
    spec: Option<LeaseSpec>,
    at: Instant,
}

struct Elector {
    api: Api<Lease>,
    opts: Options,
    observed: Option<Observed>,
}

/// Campaigns for the Lease until `tx` has no receivers; `tx` carries whether
/// this replica holds it.
pub async fn run(client: ::kube::Client, opts: Options, tx: watch::Sender<bool>) {
    run_until(client, opts, tx, std::future::pending()).await
}

/// [`run`] until `shutdown` completes; then, if this replica holds the Lease,
/// it says so first (`tx` false: writers stop) and releases the Lease (empty
/// holder, as client-go's `ReleaseOnCancel`), so another replica takes over
/// within its retry period instead of waiting out the lease.
pub async fn run_until(
    client: ::kube::Client,
    opts: Options,
    tx: watch::Sender<bool>,
    shutdown: impl std::future::Future<Output = ()>,
) {
    tokio::pin!(shutdown);
    let api = Api::namespaced(client, &opts.namespace);
    let mut e = Elector {
        api,
        opts,
        observed: None,
    };
    let stopping = tokio::select! {
        _ = campaign(&mut e, &tx) => false,
        _ = &mut shutdown => true,
    };
    if stopping && tx.send_replace(false) {
        let release = tokio::time::timeout(e.opts.renew_deadline, e.release());
        match release.await {
            Ok(Ok(())) => info!(identity = %e.opts.identity, "leader election: released the Lease"),
            Ok(Err(err)) => warn!(error = %err, "leader election: releasing the Lease failed"),
            Err(_) => warn!("leader election: releasing the Lease timed out"),
        }
    }
}

async fn campaign(e: &mut Elector, tx: &watch::Sender<bool>) {
    let (lease, me) = (
        format!("{}/{}", e.opts.namespace, e.opts.name),
        e.opts.identity.clone(),
    );
    info!(%lease, identity = %me, "leader election: campaigning");
    // When the Lease was last written by us, while we hold it.
    let mut renewed: Option<Instant> = None;
    loop {
        let deadline = renewed.map(|r| r + e.opts.renew_deadline);
        let limit = deadline.unwrap_or_else(|| Instant::now() + e.opts.renew_deadline);
        let attempt = tokio::time::timeout_at(limit, e.try_acquire_or_renew()).await;
        match attempt {
            Ok(Ok(())) => {
                if renewed.is_none() {
                    info!(%lease, identity = %me, "leader election: became the leader");
                }
                renewed = Some(Instant::now());
                tx.send_if_modified(|l| !std::mem::replace(l, true));
            }
            Ok(Err(err)) => {
                match &err {
                    AttemptError::HeldBy(..) => debug!(error = %err, "leader election: following"),
                    _ if renewed.is_some() => {
                        warn!(error = %err, "leader election: renewing the Lease failed")
                    }
                    _ => debug!(error = %err, "leader election: acquiring the Lease failed"),
                }
                if renewed.is_some() && matches!(err, AttemptError::HeldBy(..)) {
                    // Someone else holds it now (our record was overwritten).
                    renewed = None;
                }
            }
            Err(_) => warn!(%lease, "leader election: the API call timed out"),
        }
        if renewed.is_some_and(|r| Instant::now() >= r + e.opts.renew_deadline) {
            renewed = None;
        }
        if renewed.is_none() && *tx.borrow() {
            warn!(%lease, identity = %me, "leader election: lost the Lease; no longer the leader");
            tx.send_replace(false);
        }
        // Wake for the next attempt, or at the renew deadline to give
        // leadership up on time even if nothing else happens.
        let mut wake = Instant::now() + e.opts.retry_period;
        if let Some(r) = renewed {
            wake = wake.min(r + e.opts.renew_deadline);
        }
        tokio::select! {
            _ = tokio::time::sleep_until(wake) => {}
            _ = tx.closed() => return,
        }
    }
}

impl Elector {
    /// Gives the Lease up if this replica still holds it.
    async fn release(&mut self) -> Result<(), AttemptError> {
        let name = self.opts.name.clone();
        let api_err = |e| AttemptError::Api(name.clone(), e);
        let Some(mut current) = self.api.get_opt(&self.opts.name).await.map_err(api_err)? else {
            return Ok(());
        };
        let spec = current.spec.clone().unwrap_or_default();
        if spec.holder_identity.as_deref() != Some(self.opts.identity.as_str()) {
            return Ok(());
        }
        let now = MicroTime(k8s_openapi::jiff::Timestamp::now());
        current.spec = Some(LeaseSpec {
            holder_identity: None,
            lease_duration_seconds: Some(1),
            acquire_time: Some(now.clone()),
            renew_time: Some(now),
            lease_transitions: spec.lease_transitions,
            ..LeaseSpec::default()
        });
        match self
            .api
            .replace(&self.opts.name, &PostParams::default(), &current)
            .await
        {
            Ok(_) => Ok(()),
            Err(::kube::Error::Api(s)) if s.code == 409 => {
                Err(AttemptError::Conflict(self.opts.name.clone()))
            }
            Err(e) => Err(api_err(e)),
        }
    }

    async fn try_acquire_or_renew(&mut self) -> Result<(), AttemptError> {
        let name = self.opts.name.clone();
        let api_err = |e| AttemptError::Api(name.clone(), e);
        let now = MicroTime(k8s_openapi::jiff::Timestamp::now());
        let Some(current) = self.api.get_opt(&self.opts.name).await.map_err(api_err)? else {
            let lease = Lease {
                metadata: ObjectMeta {
                    name: Some(self.opts.name.clone()),
                    namespace: Some(self.opts.namespace.clone()),
                    ..ObjectMeta::default()
                },
                spec: Some(self.spec(now.clone(), now, 0)),
            };
            return match self.api.create(&PostParams::default(), &lease).await {
                Ok(l) => {
                    self.observe(l.spec);
                    Ok(())
                }
                Err(::kube::Error::Api(s)) if s.code == 409 => {
                    Err(AttemptError::Conflict(self.opts.name.clone()))
                }
                Err(e) => Err(api_err(e)),
            };
        };
        self.observe(current.spec.clone());
        let spec = current.spec.clone().unwrap_or_default();
        let holder = spec.holder_identity.clone().filter(|h| !h.is_empty());
        let mine = holder.as_deref() == Some(self.opts.identity.as_str());
        if let Some(h) = &holder
            && !mine
        {
            let duration = spec
                .lease_duration_seconds
                .and_then(|s| u64::try_from(s).ok())
                .map(Duration::from_secs)
                .unwrap_or(self.opts.lease_duration);
            let seen = self.observed.as_ref().map_or_else(Instant::now, |o| o.at);
            if Instant::now() < seen + duration {
                return Err(AttemptError::HeldBy(self.opts.name.clone(), h.clone()));
            }
        }
        let (acquired, transitions) = if mine {
            (
                spec.acquire_time.clone().unwrap_or_else(|| now.clone()),
                spec.lease_transitions.unwrap_or(0),
            )
        } else {
            (now.clone(), spec.lease_transitions.unwrap_or(0) + 1)
        };
        let mut next = current;
        // `metadata.resourceVersion` stays as read: a concurrent write wins.
        next.spec = Some(self.spec(acquired, now, transitions));
        match self
            .api
            .replace(&self.opts.name, &PostParams::default(), &next)
            .await
        {
            Ok(l) => {
                self.observe(l.spec);
                Ok(())
            }
            Err(::kube::Error::Api(s)) if s.code == 409 => {
                Err(AttemptError::Conflict(self.opts.name.clone()))
            }
            Err(e) => Err(api_err(e)),
        }
    }

    fn spec(&self, acquired: MicroTime, renewed: MicroTime, transitions: i32) -> LeaseSpec {
        LeaseSpec {
            holder_identity: Some(self.opts.identity.clone()),
            lease_duration_seconds: Some(
                i32::try_from(self.opts.lease_duration.as_secs().max(1)).unwrap_or(i32::MAX),
            ),
            acquire_time: Some(acquired),
            renew_time: Some(renewed),
            lease_transitions: Some(transitions),
            ..LeaseSpec::default()
        }
    }

    /// Notes a record; the clock starts when it differs from the last one.
    fn observe(&mut self, spec: Option<LeaseSpec>) {
        if self.observed.as_ref().is_some_and(|o| o.spec == spec) {
            return;
        }
        self.observed = Some(Observed {
            spec,
            at: Instant::now(),
        });
    }
}

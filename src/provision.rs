//! Creating the PVs one reconcile decided on: the plan's candidates are
//! checked before their first offer ([`crate::first_offer`]), then created
//! for the live Node. A device whose PV the API server refuses (or whose
//! wipe before its first offer failed) waits on its own backoff and is
//! reported once; an unreachable API server makes the whole batch wait. A
//! created PV counts as existing until the watch shows it, so a lagging
//! store never causes a second create.

use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use k8s_openapi::api::core::v1::{ObjectReference, PersistentVolume};
use tokio::time::Instant;

use crate::apply::CreateOutcome;
use crate::backoff::{BackoffTable, REFUSED_CREATE_RETRY, UNREACHABLE_RETRY};
use crate::context::Context;
use crate::discovery::{Device, DeviceProblem, ProblemKind, Scan};
use crate::first_offer::{FirstOffers, Verdict};
use crate::plan::{ExistingPv, plan};
use crate::pv::{NodeFacts, local_path};
use crate::report::NodeReports;
use crate::spec::PvSpec;

/// How long a created PV the watch has not shown yet still counts as existing.
const CREATED_MEMORY: Duration = Duration::from_secs(30);

/// What one round of provisioning found.
#[derive(Debug, Default)]
pub struct Provisioned {
    /// Usable devices (with a PV, getting one, or being wiped).
    pub available: usize,
    /// Devices that get no PV, and why.
    pub problems: Vec<DeviceProblem>,
    /// Whether the API server answered (`None`: nothing was asked).
    pub api_reachable: Option<bool>,
}

/// The state of creating PVs, kept from one reconcile to the next.
#[derive(Default)]
pub struct Provisioning {
    refused: BTreeMap<PathBuf, DeviceProblem>,
    refused_backoff: Option<BackoffTable<PathBuf>>,
    unreachable: Option<BackoffTable<()>>,
    recently_created: Vec<(Instant, PersistentVolume)>,
    offers: FirstOffers,
}

/// What to provision for.
pub struct Inputs<'a> {
    /// The live Node's facts.
    pub facts: &'a NodeFacts,
    /// The node's spec.
    pub spec: &'a PvSpec,
    /// The devices found.
    pub scan: &'a Scan,
    /// This node's PVs.
    pub existing: &'a [ExistingPv],
    /// The Node, for Events.
    pub node: &'a ObjectReference,
}

impl Provisioning {
    fn refused_backoff(&mut self) -> &mut BackoffTable<PathBuf> {
        self.refused_backoff
            .get_or_insert_with(|| BackoffTable::new(REFUSED_CREATE_RETRY))
    }

    fn unreachable(&mut self) -> &mut BackoffTable<()> {
        self.unreachable
            .get_or_insert_with(|| BackoffTable::new(UNREACHABLE_RETRY))
    }

    /// This node's PVs: those in the store, and those created that the
    /// watch has not shown yet.
    pub fn existing(&mut self, pvs: &[Arc<PersistentVolume>]) -> Vec<ExistingPv> {
        let now = Instant::now();
        self.recently_created.retain(|(at, created)| {
            now.duration_since(*at) < CREATED_MEMORY
                && !pvs
                    .iter()
                    .any(|pv| pv.metadata.name == created.metadata.name)
        });
        pvs.iter()
            .map(|pv| ExistingPv::from_pv(pv))
            .chain(
                self.recently_created
                    .iter()
                    .map(|(_, pv)| ExistingPv::from_pv(pv)),
            )
            .collect()
    }

    /// A full rescan: devices known to hold data are probed again.
    pub fn rescan(&mut self) {
        self.offers.forget();
    }

    /// When the next retry is due.
    pub fn next_due(&self) -> Option<Instant> {
        let refused = self
            .refused_backoff
            .as_ref()
            .and_then(BackoffTable::next_due);
        let unreachable = self.unreachable.as_ref().and_then(BackoffTable::next_due);
        refused.into_iter().chain(unreachable).min()
    }

    /// Plans, checks and creates; reports what only this step knows.
    pub async fn provision(
        &mut self,
        ctx: &Context,
        inputs: Inputs<'_>,
        reports: &mut NodeReports,
    ) -> Provisioned {
        let decided = plan(
            inputs.facts,
            inputs.spec,
            inputs.scan,
            inputs.existing,
            &ctx.wipes.snapshot(),
        );
        for group in &decided.collisions {
            tracing::warn!(devices = ?group, "device names collide after sanitizing; they get hashed PV names");
        }
        let mut outcome = Provisioned {
            available: decided.available,
            problems: decided.problems.clone(),
            api_reachable: None,
        };
        let candidates = self.due_candidates(&decided.create, inputs.scan, &mut outcome);
        let devices: Vec<Device> = candidates
            .iter()
            .map(|(device, _)| device.clone())
            .collect();
        let judged = self.offers.judge(devices, inputs.spec, &ctx.cancel).await;
        let mut offered = Vec::new();
        for (device, verdict) in judged {
            match verdict {
                Verdict::Offer => {
                    let pv = candidates
                        .iter()
                        .find(|(d, _)| d.path == device.path)
                        .map(|(_, pv)| *pv);
                    offered.extend(pv);
                }
                Verdict::NotOffered(problem) => {
                    outcome.available -= 1;
                    outcome.problems.push(problem);
                }
            }
        }
        let now = Instant::now();
        if !offered.is_empty() && self.unreachable().remaining(&(), now).is_none() {
            match self
                .create(ctx, inputs.facts, &offered, inputs.node, reports)
                .await
            {
                Ok(refused) => {
                    outcome.api_reachable = Some(true);
                    outcome.available -= refused.len();
                    outcome.problems.extend(refused);
                }
                Err(()) => outcome.api_reachable = Some(false),
            }
        }
        outcome.problems.sort_by(|a, b| a.name.cmp(&b.name));
        outcome
    }

    /// The planned PVs whose device is not waiting after a refusal, with
    /// their devices; the waiting ones are counted as problems.
    fn due_candidates<'a>(
        &mut self,
        planned: &'a [PersistentVolume],
        scan: &Scan,
        outcome: &mut Provisioned,
    ) -> Vec<(Device, &'a PersistentVolume)> {
        let now = Instant::now();
        let paths: BTreeSet<PathBuf> = planned
            .iter()
            .filter_map(|pv| local_path(pv).map(PathBuf::from))
            .collect();
        self.refused.retain(|path, _| paths.contains(path));
        self.refused_backoff().retain(|path| paths.contains(path));
        let mut due = Vec::new();
        for pv in planned {
            let path = PathBuf::from(local_path(pv).unwrap_or_default());
            let waiting = self.refused_backoff().remaining(&path, now).is_some();
            match self.refused.get(&path) {
                Some(problem) if waiting => {
                    outcome.available -= 1;
                    outcome.problems.push(problem.clone());
                }
                _ => {
                    if let Some(device) = scan.devices.iter().find(|d| d.path == path) {
                        due.push((device.clone(), pv));
                    }
                }
            }
        }
        due
    }

    /// Creates `pvs` for the live Node; returns the devices the API server
    /// refused, or `Err` when it could not be reached (the batch waits).
    async fn create(
        &mut self,
        ctx: &Context,
        facts: &NodeFacts,
        pvs: &[&PersistentVolume],
        node: &ObjectReference,
        reports: &mut NodeReports,
    ) -> Result<Vec<DeviceProblem>, ()> {
        // The owner must be the live Node: after an API server restart the
        // PV watch can relist before the Node watch does, and a PV owned by
        // a Node that is gone is garbage-collected at once.
        match ctx.api.get_node(&ctx.settings.node_name).await {
            Ok(Some(live)) if live.metadata.uid.as_deref() == Some(facts.uid.as_str()) => {}
            Ok(_) => {
                tracing::debug!(
                    "the Node in the watch store is not the live one; creating nothing until the watch catches up"
                );
                return Ok(Vec::new());
            }
            Err(error) => {
                tracing::warn!(%error, "reading the Node before creating PVs failed; retrying");
                self.unreachable().record_failure(&(), Instant::now());
                return Err(());
            }
        }
        let mut refused = Vec::new();
        for pv in pvs {
            let path = PathBuf::from(local_path(pv).unwrap_or_default());
            match ctx.api.create_pv(pv, &ctx.pvs, &ctx.label_value).await {
                CreateOutcome::Created(created) => {
                    self.refused.remove(&path);
                    self.refused_backoff().clear(&path);
                    ctx.reporter.created(&created);
                    self.recently_created.push((Instant::now(), *created));
                }
                CreateOutcome::AlreadyOurs => {}
                CreateOutcome::Refused(reason) => {
                    let problem = refused_pv_problem(&path, reason);
                    self.refused_backoff().record_failure(&path, Instant::now());
                    reports.create_refused(node, &problem);
                    self.refused.insert(path, problem.clone());
                    refused.push(problem);
                }
                CreateOutcome::Unreachable(error) => {
                    tracing::warn!(%error, "creating the PersistentVolume failed; retrying");
                    self.unreachable().record_failure(&(), Instant::now());
                    return Err(());
                }
            }
        }
        self.unreachable().clear(&());
        Ok(refused)
    }
}

/// The device problem of a PV the API server would not take.
fn refused_pv_problem(path: &std::path::Path, reason: String) -> DeviceProblem {
    DeviceProblem {
        name: path
            .file_name()
            .map(|name| name.to_string_lossy().into_owned())
            .unwrap_or_default(),
        path: path.to_path_buf(),
        reason,
        number: None,
        kind: ProblemKind::Refused,
    }
}

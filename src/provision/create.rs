//! Creating the PVs one reconcile decided on: the plan's candidates are
//! checked before their first offer ([`crate::provision::first_offer`]), then created
//! for the live Node. A device whose PV the API server refuses (or whose
//! wipe before its first offer failed) waits on its own backoff and is
//! reported once; an unreachable API server makes the whole batch wait. A
//! created PV counts as existing until the watch shows it, so a lagging
//! store never causes a second create.

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use futures::StreamExt;

use k8s_openapi::api::core::v1::{ObjectReference, PersistentVolume};
use tokio::time::Instant;

use crate::api::context::Context;
use crate::api::requests::CreateOutcome;
use crate::backoff::{BackoffTable, REFUSED_CREATE_RETRY, UNREACHABLE_RETRY};
use crate::device::probe::ProbeResult;
use crate::discover::devices::{Device, DeviceProblem, ProblemKind};
use crate::objects::pv::LeanPv;
use crate::objects::spec::{NodeSpec, PvSpec};
use crate::observe::history;
use crate::observe::metrics::{CREATE_REFUSED, CREATE_UNREACHABLE};
use crate::provision::build::NodeFacts;
use crate::provision::classes::Classified;
use crate::provision::first_offer::{FirstOffers, OfferRules, Verdict, check, verdict};
use crate::provision::plan::{ExistingPv, Planned, plan};
use crate::provision::report::NodeReports;

/// How long a created PV the watch has not shown yet still counts as existing.
const CREATED_MEMORY: Duration = Duration::from_secs(30);

/// What one round of provisioning found.
#[derive(Debug, Default)]
pub struct Provisioned {
    /// Usable devices (with a PV, getting one, or being wiped).
    pub available: usize,
    /// The same, for each class (in the spec's order).
    pub available_by_class: Vec<usize>,
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
    recently_created: Vec<(Instant, ExistingPv)>,
    offers: FirstOffers,
    /// The Node UID a GET confirmed live, and the PV watch's relist count then.
    confirmed: Option<(String, u64)>,
    /// When each device waiting for its PV was first seen.
    first_seen: HashMap<PathBuf, Instant>,
    /// Devices held back by their class's `maxDevices`, longest first.
    held: Vec<PathBuf>,
}

/// The key under which the device's history waits for its next PV.
fn device_key(device: &Device) -> String {
    history::device_key(device.stable_id.as_deref(), &device.number.to_string())
}

/// `pv`, carrying the history of its device when the device had a PV before.
fn with_history(ctx: &Context, device: &Device, mut pv: PersistentVolume) -> PersistentVolume {
    if let Some(carried) = ctx.history_for(&device_key(device)) {
        pv.metadata.annotations.get_or_insert_default().insert(
            history::HISTORY_ANNOTATION.to_string(),
            history::to_annotation(&carried),
        );
    }
    pv
}

/// One candidate after its check (and create).
struct Checked<'a> {
    planned: &'a Planned,
    /// The probe's result and the verdict on it, or why it could not probe.
    judged: Result<(ProbeResult, Verdict), String>,
    created: Option<CreateOutcome>,
}

/// Devices probed-and-created at once. The API server's Priority and
/// Fairness is the throttle for the creates; this bound keeps the probes'
/// reads and the open connections modest.
pub const CONCURRENT_OFFERS: usize = 16;

/// What to provision for.
pub struct Inputs<'a> {
    /// The live Node's facts.
    pub facts: &'a NodeFacts,
    /// The node's spec.
    pub spec: &'a NodeSpec,
    /// The devices found, each in its class.
    pub classified: &'a Classified,
    /// This node's PVs.
    pub existing: &'a [ExistingPv],
    /// The Node, for Events.
    pub node: &'a ObjectReference,
    /// When the scan began: a device our own wipe held at any moment since
    /// is not offered and not reported.
    pub scan_began: Instant,
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
    pub fn existing(&mut self, pvs: &[Arc<LeanPv>]) -> Vec<ExistingPv> {
        let now = Instant::now();
        let stored: HashSet<&str> = pvs
            .iter()
            .filter_map(|pv| pv.metadata.name.as_deref())
            .collect();
        self.recently_created.retain(|(at, created)| {
            now.duration_since(*at) < CREATED_MEMORY && !stored.contains(created.name.as_str())
        });
        if self.recently_created.is_empty() {
            // Give back what a burst of creates grew it to.
            self.recently_created = Vec::new();
        }
        pvs.iter()
            .map(|pv| ExistingPv::from_pv(pv))
            .chain(self.recently_created.iter().map(|(_, pv)| pv.clone()))
            .collect()
    }

    /// The PVs this process created that the watch has not shown yet.
    pub fn recently_created(&self) -> impl Iterator<Item = &ExistingPv> {
        self.recently_created.iter().map(|(_, pv)| pv)
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
            &inputs.spec.classes,
            inputs.classified,
            inputs.existing,
            &ctx.wipes.since(inputs.scan_began),
            &self.held,
        );
        for group in &decided.collisions {
            tracing::warn!(devices = ?group, "device names collide after sanitizing; they get hashed PV names");
        }
        self.held.retain(|path| decided.held.contains(path));
        for path in &decided.held {
            if !self.held.contains(path) {
                self.held.push(path.clone());
            }
        }
        let mut outcome = Provisioned {
            available: decided.available,
            available_by_class: decided.available_by_class.clone(),
            problems: decided.problems.clone(),
            api_reachable: None,
        };
        let candidates = self.due_candidates(&decided.create, &mut outcome);
        self.offers
            .retain(candidates.iter().map(|planned| &planned.device));
        let waiting = self.unreachable().remaining(&(), Instant::now()).is_some();
        if !candidates.is_empty() && !waiting {
            outcome.api_reachable = Some(match self.confirm_node(ctx, inputs.facts).await {
                Ok(true) => {
                    let results = self
                        .check_and_create(ctx, inputs.facts, inputs.spec, candidates)
                        .await;
                    let classes = &inputs.spec.classes;
                    self.settle(ctx, results, inputs.node, classes, reports, &mut outcome)
                }
                Ok(false) => true,
                Err(()) => false,
            });
        }
        outcome.problems.sort_by(|a, b| a.name.cmp(&b.name));
        outcome
    }

    /// Whether the Node in the store is the live one. The owner must be the
    /// live Node: after an API server restart the PV watch can relist
    /// before the Node watch does, and a PV owned by a Node that is gone is
    /// garbage-collected at once. One GET confirms it until the PV watch
    /// lists again. `Err`: the API server could not be reached.
    async fn confirm_node(&mut self, ctx: &Context, facts: &NodeFacts) -> Result<bool, ()> {
        let relists = ctx.pv_relists.load(Ordering::Relaxed);
        if self.confirmed.as_ref() == Some(&(facts.uid.clone(), relists)) {
            return Ok(true);
        }
        match ctx.api.get_node(&ctx.settings.node_name).await {
            Ok(Some(live)) if live.metadata.uid.as_deref() == Some(facts.uid.as_str()) => {
                self.confirmed = Some((facts.uid.clone(), relists));
                Ok(true)
            }
            Ok(_) => {
                tracing::debug!(
                    "the Node in the watch store is not the live one; creating nothing until the watch catches up"
                );
                Ok(false)
            }
            Err(error) => {
                tracing::warn!(%error, "reading the Node before creating PVs failed; retrying");
                self.unreachable().record_failure(&(), Instant::now());
                Err(())
            }
        }
    }

    /// Probes each candidate and creates the PV of each blank one, at most
    /// [`CONCURRENT_OFFERS`] devices at a time, each on its own: one
    /// device's slow probe or refused create never delays another's. After
    /// the API server fails to answer, no further create is sent.
    async fn check_and_create<'a>(
        &self,
        ctx: &Context,
        facts: &NodeFacts,
        spec: &NodeSpec,
        candidates: Vec<&'a Planned>,
    ) -> Vec<Checked<'a>> {
        let rules: Vec<OfferRules> = spec
            .classes
            .iter()
            .map(|class| OfferRules::of(class, ctx.settings.wipe_method))
            .collect();
        let unreachable = AtomicBool::new(false);
        let unreachable = &unreachable;
        futures::stream::iter(candidates)
            .map(|planned| {
                let device = &planned.device;
                let rules = rules[planned.class].clone();
                let known = self.offers.known(device, &rules);
                async move {
                    let probe = match known {
                        Some(result) => Ok(result),
                        None => check(device.clone(), rules, ctx.cancel.clone()).await,
                    };
                    let judged = probe.map(|result| {
                        let verdict = verdict(device, &result);
                        (result, verdict)
                    });
                    let created = match &judged {
                        Ok((_, Verdict::Offer)) if !unreachable.load(Ordering::Relaxed) => {
                            let pv = planned.pv(facts, &spec.classes);
                            let pv = with_history(ctx, device, pv);
                            let created = ctx.api.create_pv(&pv, &ctx.pvs, &ctx.label_value).await;
                            if matches!(created, CreateOutcome::Unreachable(_)) {
                                unreachable.store(true, Ordering::Relaxed);
                            }
                            Some(created)
                        }
                        _ => None,
                    };
                    Checked {
                        planned,
                        judged,
                        created,
                    }
                }
            })
            .buffer_unordered(CONCURRENT_OFFERS)
            .collect()
            .await
    }

    /// Records what the checks and creates did; returns whether the API
    /// server answered every create it was sent.
    fn settle(
        &mut self,
        ctx: &Context,
        results: Vec<Checked<'_>>,
        node: &ObjectReference,
        classes: &[PvSpec],
        reports: &mut NodeReports,
        outcome: &mut Provisioned,
    ) -> bool {
        let mut reachable = true;
        let mut made = Vec::new();
        for Checked {
            planned,
            judged,
            created,
        } in results
        {
            let (class, device) = (planned.class, &planned.device);
            let path = device.path.clone();
            let class_name = classes[class].class.as_str();
            let (result, verdict) = match judged {
                Ok(judged) => judged,
                Err(error) => {
                    tracing::warn!(device = %path.display(), %error, "cannot probe the device; trying again later");
                    continue;
                }
            };
            self.offers.record(device, &result);
            if let Verdict::NotOffered(mut problem) = verdict {
                outcome.not_available(class);
                problem.class = Some(class_name.to_string());
                outcome.problems.push(problem);
                continue;
            }
            match created {
                Some(CreateOutcome::Created(created)) => {
                    self.refused.remove(&path);
                    self.refused_backoff().clear(&path);
                    ctx.forget_history(&device_key(device));
                    if let Some(seen) = self.first_seen.remove(&path) {
                        let waited = Instant::now().duration_since(seen).as_secs_f64();
                        ctx.reporter.metrics.pv_create_duration.observe(waited);
                    }
                    self.recently_created
                        .push((Instant::now(), ExistingPv::from_pv(&created)));
                    made.push(*created);
                }
                Some(CreateOutcome::Refused(reason)) => {
                    ctx.reporter
                        .metrics
                        .pv_create_failures
                        .with_label_values(&[CREATE_REFUSED])
                        .inc();
                    let problem = refused_pv_problem(class_name, &path, reason);
                    self.refused_backoff().record_failure(&path, Instant::now());
                    reports.create_refused(node, &problem);
                    self.refused.insert(path, problem.clone());
                    outcome.not_available(class);
                    outcome.problems.push(problem);
                }
                Some(CreateOutcome::Unreachable(error)) => {
                    ctx.reporter
                        .metrics
                        .pv_create_failures
                        .with_label_values(&[CREATE_UNREACHABLE])
                        .inc();
                    tracing::warn!(%error, "creating the PersistentVolume failed; retrying");
                    reachable = false;
                }
                Some(CreateOutcome::AlreadyOurs) | None => {}
            }
        }
        ctx.reporter.created(node, &made);
        if reachable {
            self.unreachable().clear(&());
        } else {
            self.unreachable().record_failure(&(), Instant::now());
        }
        reachable
    }

    /// The planned PVs whose device is not waiting after a refusal; the
    /// waiting ones are counted as problems.
    fn due_candidates<'a>(
        &mut self,
        planned: &'a [Planned],
        outcome: &mut Provisioned,
    ) -> Vec<&'a Planned> {
        let now = Instant::now();
        let paths: BTreeSet<PathBuf> = planned
            .iter()
            .map(|planned| planned.device.path.clone())
            .collect();
        self.refused.retain(|path, _| paths.contains(path));
        self.first_seen.retain(|path, _| paths.contains(path));
        for path in &paths {
            self.first_seen.entry(path.clone()).or_insert(now);
        }
        self.refused_backoff().retain(|path| paths.contains(path));
        let mut due = Vec::new();
        for planned in planned {
            let path = &planned.device.path;
            let waiting = self.refused_backoff().remaining(path, now).is_some();
            match self.refused.get(path) {
                Some(problem) if waiting => {
                    outcome.not_available(planned.class);
                    outcome.problems.push(problem.clone());
                }
                _ => due.push(planned),
            }
        }
        due
    }
}

impl Provisioned {
    /// A device of class `class` counted usable turned out not to be.
    fn not_available(&mut self, class: usize) {
        self.available -= 1;
        if let Some(count) = self.available_by_class.get_mut(class) {
            *count -= 1;
        }
    }
}

/// The device problem of a PV the API server would not take.
fn refused_pv_problem(class: &str, path: &std::path::Path, reason: String) -> DeviceProblem {
    DeviceProblem {
        name: path
            .file_name()
            .map(|name| name.to_string_lossy().into_owned())
            .unwrap_or_default(),
        path: path.to_path_buf(),
        reason,
        number: None,
        kind: ProblemKind::Refused,
        class: Some(class.to_string()),
    }
}

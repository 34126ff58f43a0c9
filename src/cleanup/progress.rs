//! A full wipe's progress, made visible while it runs: the PV annotation
//! `wipe-progress: DONE/TOTAL` (bytes zeroed, verified and flushed; a
//! restart resumes from it), the gauge
//! `local_pv_provisioner_wipe_progress_ratio{persistentvolume}`, and a
//! `WipeProgress` Event at most every [`EVENT_EVERY`].
//!
//! The wipe reports an offset at most once a second (each report flushes
//! the device first), and every report is written, so the annotation is
//! written at most once a second and, on a device that keeps up with its
//! chunks, at least every few seconds. A write the API server refuses
//! because the PV changed is tried once more on a fresh read; one that
//! fails is logged and the wipe goes on (the next report writes again): a
//! lost progress write only makes a restart start earlier, never later.

use std::collections::BTreeMap;
use std::time::Duration;

use tokio::time::Instant;

use crate::api::context::Context;
use crate::objects::pv::{LeanPv, WIPE_PROGRESS_ANNOTATION};

/// Least time between two `WipeProgress` Events about one PV.
pub const EVENT_EVERY: Duration = Duration::from_secs(180);

/// The progress of one full wipe.
pub struct Progress<'a> {
    ctx: &'a Context,
    /// The PV as last written (its resourceVersion guards the next write).
    pv: LeanPv,
    name: String,
    total: u64,
    started: Instant,
    first: Option<u64>,
    last_event: Instant,
}

impl<'a> Progress<'a> {
    /// The progress of wiping `pv`'s device of `total` bytes.
    pub fn new(pv: &LeanPv, total: u64, ctx: &'a Context) -> Self {
        let now = Instant::now();
        Progress {
            ctx,
            name: pv.metadata.name.clone().unwrap_or_default(),
            pv: pv.clone(),
            total,
            started: now,
            first: None,
            last_event: now,
        }
    }

    /// The device is zeroed, verified and flushed up to `done`.
    pub async fn record(&mut self, done: u64) {
        let ratio = if self.total == 0 {
            1.0
        } else {
            done as f64 / self.total as f64
        };
        self.ctx
            .reporter
            .metrics
            .wipe_progress
            .with_label_values(&[&self.name])
            .set(ratio);
        let first = *self.first.get_or_insert(done);
        self.write(done).await;
        if self.last_event.elapsed() >= EVENT_EVERY {
            self.last_event = Instant::now();
            let rate = (done - first) as f64 / self.started.elapsed().as_secs_f64().max(0.001);
            self.ctx
                .reporter
                .wipe_progress(&self.pv, done, self.total, rate);
        }
    }

    /// Writes the annotation; once more on a fresh read if the PV changed.
    async fn write(&mut self, done: u64) {
        let value = BTreeMap::from([(
            WIPE_PROGRESS_ANNOTATION.to_string(),
            format!("{done}/{}", self.total),
        )]);
        for _ in 0..2 {
            match self.ctx.api.annotate_pv(&self.pv, &value).await {
                Ok(Some(written)) => {
                    self.pv = written;
                    return;
                }
                Ok(None) => match self.ctx.api.get_pv(&self.name).await {
                    Ok(Some(fresh)) if fresh.metadata.uid == self.pv.metadata.uid => {
                        self.pv = fresh;
                    }
                    _ => return,
                },
                Err(error) => {
                    tracing::warn!(%error, "recording the wipe's progress failed; the next report writes it again");
                    return;
                }
            }
        }
    }

    /// The wipe ended: its gauge goes.
    pub fn finish(self) {
        let _ = self
            .ctx
            .reporter
            .metrics
            .wipe_progress
            .remove_label_values(&[&self.name]);
    }
}

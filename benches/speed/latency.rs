//! New device → PV: a blank loop device is linked into `deviceDir` (as
//! udev links a new disk) and the clock stops when the benchmark's watch
//! sees its PV. Once with the inotify watch of `deviceDir` (the default),
//! once with polling only (`LP_WATCH_DEVICE_DIR=false`, every
//! `LPP_BENCH_POLL_INTERVAL`). Each sample is a device of its own: the
//! program gives one device one PV. Before each link the benchmark pauses
//! (100–200 ms with inotify, a random part of the interval when polling, so
//! that links fall anywhere between two polls).

use std::os::unix::fs::symlink;
use std::time::{Duration, Instant, SystemTime};

use crate::devices::{Pool, link_dir};
use crate::options::Options;
use crate::procfs::{Spread, millis};
use crate::stage::Stage;
use crate::table::{Table, Verdict};

/// Size of each device.
const DEVICE_BYTES: u64 = 16 << 20;
/// The targets with inotify: issue 9's (< 50 ms), issue 19's (median
/// ≤ 15 ms, max ≤ 30 ms).
const TARGET: Duration = Duration::from_millis(50);
const TARGET_MEDIAN: Duration = Duration::from_millis(15);
const TARGET_MAX: Duration = Duration::from_millis(30);

/// A small xorshift generator for the pauses (no need for more).
pub struct Rng(u64);

impl Rng {
    /// Seeded from the clock.
    pub fn seeded() -> Rng {
        let nanos = SystemTime::now()
            .duration_since(SystemTime::UNIX_EPOCH)
            .map_or(1, |d| d.as_nanos() as u64);
        Rng(nanos | 1)
    }

    /// A duration in `[0, bound)`.
    pub fn below(&mut self, bound: Duration) -> Duration {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        let nanos = bound.as_nanos().max(1) as u64;
        Duration::from_nanos(self.0 % nanos)
    }
}

/// What one mode measured.
struct Measured {
    /// Link → PV seen by the benchmark's watch.
    total: Spread,
    /// Link → the program's create reaching the fake API server.
    to_create: Option<Spread>,
}

/// Runs both modes and adds their rows.
pub async fn run(options: &Options, table: &mut Table) {
    let inotify = measure(options, true).await;
    let total = inotify.total;
    table.row(
        "new device → PV (timed by a PV watch), inotify watch of `deviceDir` (default)",
        total.text_with_range(),
        "median ≤ 15 ms, max ≤ 30 ms (issue 19; issue 9: < 50 ms)",
        inotify.to_create.map_or("–".into(), |s| {
            format!("link → the program's POST reached the server: {}", s.text())
        }),
        Verdict::of(total.median <= TARGET_MEDIAN && total.max <= TARGET_MAX && total.p99 < TARGET),
    );
    table.real("median 20.4 ms, 19.2–26.2 ms (n = 15)");
    let polling = measure(options, false).await;
    table.row(
        format!(
            "new device → PV, polling only (`LP_WATCH_DEVICE_DIR=false`, `LP_POLLING_INTERVAL={}`)",
            options.poll_interval
        ),
        polling.total.text(),
        "– (bounded by the interval)",
        format!(
            "links at random times: expected median ≈ interval / 2 = {}",
            millis(options.poll / 2)
        ),
        Verdict::Info,
    );
}

/// Links `samples` devices one after another and times each one's PV.
async fn measure(options: &Options, inotify: bool) -> Measured {
    let mode = if inotify { "inotify" } else { "poll" };
    let pool = Pool::attach(options.samples, DEVICE_BYTES);
    let dir = link_dir(mode);
    let stage = Stage::open(options, mode, dir.path(), "^new", &[]).await;
    let env = if inotify {
        vec![]
    } else {
        vec![
            ("LP_WATCH_DEVICE_DIR", "false".to_string()),
            ("LP_POLLING_INTERVAL", options.poll_interval.clone()),
        ]
    };
    let process = stage.start(env);
    stage.wait_ready(&process).await;
    let limit = options.poll * 3 + Duration::from_secs(30);
    let mut rng = Rng::seeded();
    let mut total = Vec::new();
    let mut to_create = Vec::new();
    for (index, device) in pool.devices.iter().enumerate() {
        let pause = if inotify {
            Duration::from_millis(100) + rng.below(Duration::from_millis(100))
        } else {
            rng.below(options.poll)
        };
        tokio::time::sleep(pause).await;
        let entry = dir.path().join(format!("new{index:04}"));
        let path = entry.to_str().expect("UTF-8 path").to_string();
        let started = Instant::now();
        symlink(&device.path, &entry).expect("device link");
        let seen = stage.timeline.added(&path, &[], limit).await;
        total.push(seen.at - started);
        if let Some(at) = stage.arrival("create", "persistentvolumes", &seen.name, started) {
            to_create.push(at - started);
        }
    }
    stage.close(process).await;
    pool.detach();
    Measured {
        total: Spread::of(&total),
        to_create: (to_create.len() == total.len()).then(|| Spread::of(&to_create)),
    }
}

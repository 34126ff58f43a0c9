//! Watch streams: the initial events (or a resume from a resourceVersion, or
//! 410 Expired), the change history turned into events for the watcher's
//! namespace and selectors, bookmarks, timeouts, the watch lag a test sets,
//! and the cuts a test asks for (between events or in the middle of one).

use std::collections::{HashMap, VecDeque};
use std::io;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use axum::body::{Body, Bytes};
use axum::http::StatusCode;
use axum::response::Response;
use serde_json::{Value, json};
use tokio::sync::watch;
use tokio::time::Instant;

use super::super::Shared;
use super::super::resources::{ApiError, RESOURCES};
use super::super::selectors::Selectors;
use super::super::store::{Change, ChangeKind, Store};
use super::json_body;

/// How often a watch with `allowWatchBookmarks=true` gets a BOOKMARK.
const BOOKMARK_INTERVAL: Duration = Duration::from_secs(1);

/// One watch event as a line of the stream.
fn event_line(kind: &str, object: &Value) -> Bytes {
    let mut line = serde_json::to_vec(&json!({"type": kind, "object": object})).expect("JSON");
    line.push(b'\n');
    Bytes::from(line)
}

/// Whether a watch line is a BOOKMARK (those are never cut in half: they
/// come every second, the test wants to hit a real event).
fn is_bookmark(line: &[u8]) -> bool {
    serde_json::from_slice::<Value>(line)
        .ok()
        .is_some_and(|event| event["type"] == "BOOKMARK")
}

/// A BOOKMARK at `rv`; `initial_end` marks the end of the initial events.
fn bookmark(res: usize, rv: u64, initial_end: bool) -> Bytes {
    let def = &RESOURCES[res];
    let mut meta = json!({"resourceVersion": rv.to_string()});
    if initial_end {
        meta["annotations"] = json!({"k8s.io/initial-events-end": "true"});
    }
    event_line(
        "BOOKMARK",
        &json!({"kind": def.kind, "apiVersion": def.api_version(), "metadata": meta}),
    )
}

/// The watch event a change turns into for a watcher with these filters; an
/// object that starts or stops matching the selectors is sent as ADDED or
/// DELETED, like the real watch cache does.
fn translate(change: &Change, ns: Option<&str>, sel: &Selectors) -> Option<Bytes> {
    if ns.is_some_and(|ns| ns != change.namespace) {
        return None;
    }
    let now = sel.matches(&change.object);
    let kind = match change.kind {
        ChangeKind::Added => now.then_some("ADDED")?,
        ChangeKind::Deleted => now.then_some("DELETED")?,
        ChangeKind::Modified => {
            let before = change.previous.as_ref().is_some_and(|p| sel.matches(p));
            match (before, now) {
                (true, true) => "MODIFIED",
                (false, true) => "ADDED",
                (true, false) => "DELETED",
                (false, false) => return None,
            }
        }
    };
    Some(event_line(kind, &change.object))
}

/// What a watch asks for in its query.
struct WatchQuery<'a> {
    /// `resourceVersion`, `""` when missing.
    from: &'a str,
    /// `sendInitialEvents=true`.
    initial_events: bool,
    /// `allowWatchBookmarks=true`.
    bookmarks: bool,
    /// When `timeoutSeconds` runs out.
    deadline: Option<Instant>,
}

impl<'a> WatchQuery<'a> {
    fn parse(query: &'a HashMap<String, String>) -> Self {
        WatchQuery {
            from: query
                .get("resourceVersion")
                .map(String::as_str)
                .unwrap_or(""),
            initial_events: query.get("sendInitialEvents").is_some_and(|v| v == "true"),
            bookmarks: query
                .get("allowWatchBookmarks")
                .is_some_and(|v| v == "true"),
            deadline: query
                .get("timeoutSeconds")
                .and_then(|t| t.parse::<u64>().ok())
                .filter(|t| *t > 0)
                .map(|t| Instant::now() + Duration::from_secs(t)),
        }
    }

    /// Whether the watch starts with the current objects (rather than
    /// resuming after a resourceVersion).
    fn lists_first(&self) -> bool {
        self.from.is_empty() || self.from == "0" || self.initial_events
    }
}

/// Where a watch starts.
struct Start {
    /// Events to send first.
    pending: VecDeque<Bytes>,
    /// Changes after this resourceVersion follow.
    last_rv: u64,
    /// End the stream once `pending` is sent.
    done: bool,
}

/// A watch starting with an `ADDED` event for every current object
/// matching, then (with `sendInitialEvents`) a bookmark marking their end.
fn listed_start(
    store: &Store,
    res: usize,
    namespace: Option<&str>,
    selectors: &Selectors,
    initial_events: bool,
) -> Start {
    let mut pending = VecDeque::new();
    for obj in store.list(res, namespace).filter(|o| selectors.matches(o)) {
        pending.push_back(event_line("ADDED", obj));
    }
    if initial_events {
        pending.push_back(bookmark(res, store.rv(), true));
    }
    Start {
        pending,
        last_rv: store.rv(),
        done: false,
    }
}

/// A watch resuming after resourceVersion `from`; one that is older than
/// the history gets a 410 Expired, as an `ERROR` event or (when the test
/// asked so) as the HTTP answer.
fn resumed_start(
    shared: &Shared,
    store: &Store,
    res: usize,
    from: &str,
) -> Result<Start, ApiError> {
    let rv: u64 = from
        .parse()
        .map_err(|_| ApiError::bad_request(format!("invalid resource version: {from:?}")))?;
    let mut start = Start {
        pending: VecDeque::new(),
        last_rv: rv,
        done: false,
    };
    if let Err(oldest) = store.changes_since(res, rv) {
        let err = ApiError::expired(rv, oldest);
        if shared.gone_as_http.load(Ordering::SeqCst) {
            return Err(err);
        }
        start.pending.push_back(event_line("ERROR", &err.status()));
        start.done = true;
    }
    Ok(start)
}

/// Answers a watch request with an event stream.
pub(super) fn start_watch(
    shared: &Arc<Shared>,
    res: usize,
    namespace: Option<String>,
    selectors: Selectors,
    query: &HashMap<String, String>,
) -> Result<Response, ApiError> {
    let query = WatchQuery::parse(query);
    let store = shared.store.lock().expect("store");
    let start = if query.lists_first() {
        listed_start(
            &store,
            res,
            namespace.as_deref(),
            &selectors,
            query.initial_events,
        )
    } else {
        resumed_start(shared, &store, res, query.from)?
    };
    let rv_rx = store.subscribe();
    drop(store);
    let stream = WatchStream::new(shared, res, namespace, selectors, start, rv_rx, &query);
    let body = Body::from_stream(futures::stream::unfold(stream, |mut s| async move {
        s.next_chunk().await.map(|chunk| (chunk, s))
    }));
    Ok(json_body(StatusCode::OK, body))
}

/// State of one open watch.
struct WatchStream {
    shared: Arc<Shared>,
    res: usize,
    namespace: Option<String>,
    selectors: Selectors,
    /// Every change up to here has been looked at.
    last_rv: u64,
    pending: VecDeque<Bytes>,
    /// End cleanly once `pending` is drained.
    done: bool,
    /// Already aborted by a cut.
    cut: bool,
    rv_rx: watch::Receiver<u64>,
    cut_rx: watch::Receiver<u64>,
    cut_gen: u64,
    /// The resource's mid-event cut generation when the watch started; a
    /// newer one makes the next event go out half-written.
    mid_event_gen: u64,
    /// Half an event went out: abort the connection next.
    abort_next: bool,
    deadline: Option<Instant>,
    bookmarks: bool,
    next_bookmark: Instant,
    /// When the next change held back by a watch lag is due.
    next_due: Option<Instant>,
}

/// Why a waiting watch woke up.
enum Wake {
    Changed,
    Due,
    Closed,
    Timeout,
    Bookmark,
}

impl WatchStream {
    /// A watch from `start`, cut by the cuts asked for from now on.
    fn new(
        shared: &Arc<Shared>,
        res: usize,
        namespace: Option<String>,
        selectors: Selectors,
        start: Start,
        rv_rx: watch::Receiver<u64>,
        query: &WatchQuery<'_>,
    ) -> WatchStream {
        let cut_rx = shared.cut.subscribe();
        let cut_gen = *cut_rx.borrow();
        let mid_event_gen = shared.mid_event.lock().expect("mid-event cuts")[res];
        WatchStream {
            shared: shared.clone(),
            res,
            namespace,
            selectors,
            last_rv: start.last_rv,
            pending: start.pending,
            done: start.done,
            cut: false,
            rv_rx,
            cut_rx,
            cut_gen,
            mid_event_gen,
            abort_next: false,
            deadline: query.deadline,
            bookmarks: query.bookmarks,
            next_bookmark: Instant::now() + BOOKMARK_INTERVAL,
            next_due: None,
        }
    }

    /// The next chunk: `Ok` with one or more event lines, `Err` to abort the
    /// connection mid-stream (a cut), `None` to end the stream cleanly.
    async fn next_chunk(&mut self) -> Option<Result<Bytes, io::Error>> {
        loop {
            if self.cut {
                return None;
            }
            if self.abort_next {
                // Let the half event reach the client before the connection dies.
                tokio::time::sleep(Duration::from_millis(100)).await;
                self.cut = true;
                return Some(Err(io::Error::other("watch cut mid-event by the test")));
            }
            if *self.cut_rx.borrow() != self.cut_gen {
                self.cut = true;
                return Some(Err(io::Error::other("watch cut by the test")));
            }
            if let Some(line) = self.pending.pop_front() {
                if self.mid_event_armed() && !is_bookmark(&line) {
                    self.abort_next = true;
                    self.shared.mid_event_cuts.fetch_add(1, Ordering::SeqCst);
                    return Some(Ok(line.slice(..line.len() / 2)));
                }
                return Some(Ok(line));
            }
            if self.done {
                return None;
            }
            self.collect();
            if !self.pending.is_empty() {
                continue;
            }
            let deadline = self.deadline;
            let due = self.next_due;
            let wake = tokio::select! {
                r = self.rv_rx.changed() => if r.is_ok() { Wake::Changed } else { Wake::Closed },
                _ = self.cut_rx.changed() => Wake::Changed,
                _ = async {
                    match deadline {
                        Some(d) => tokio::time::sleep_until(d).await,
                        None => std::future::pending().await,
                    }
                } => Wake::Timeout,
                _ = tokio::time::sleep_until(self.next_bookmark), if self.bookmarks => Wake::Bookmark,
                _ = async {
                    match due {
                        Some(d) => tokio::time::sleep_until(d).await,
                        None => std::future::pending().await,
                    }
                } => Wake::Due,
            };
            match wake {
                Wake::Changed | Wake::Due => {}
                Wake::Closed | Wake::Timeout => self.done = true,
                Wake::Bookmark => {
                    self.collect();
                    if !self.done {
                        self.pending
                            .push_back(bookmark(self.res, self.last_rv, false));
                    }
                    self.next_bookmark = Instant::now() + BOOKMARK_INTERVAL;
                }
            }
        }
    }

    /// Whether a mid-event cut of this watch's resource was asked for after
    /// the watch started.
    fn mid_event_armed(&self) -> bool {
        self.shared.mid_event.lock().expect("mid-event cuts")[self.res] != self.mid_event_gen
    }

    /// Queues the events of changes after `last_rv` that are due (all of
    /// them unless the resource's watch lags; see
    /// [`super::super::FakeApiServer::set_watch_lag`]).
    fn collect(&mut self) {
        let lag = self.shared.watch_lag.lock().expect("watch lag")[self.res];
        let store = self.shared.store.lock().expect("store");
        self.next_due = None;
        match store.changes_since(self.res, self.last_rv) {
            Err(oldest) => {
                let err = ApiError::expired(self.last_rv, oldest);
                self.pending.push_back(event_line("ERROR", &err.status()));
                self.done = true;
            }
            Ok(changes) => {
                let now = std::time::Instant::now();
                for change in changes {
                    if change.at + lag > now {
                        // Held back, and everything after it: order is kept.
                        self.next_due = Some(Instant::from_std(change.at + lag));
                        self.last_rv = change.rv - 1;
                        return;
                    }
                    if let Some(line) =
                        translate(&change, self.namespace.as_deref(), &self.selectors)
                    {
                        self.pending.push_back(line);
                    }
                    self.last_rv = change.rv;
                }
                self.last_rv = self.last_rv.max(store.rv());
            }
        }
    }
}

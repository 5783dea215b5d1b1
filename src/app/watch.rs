//! Runs that are only watched: a Nix build followed by `drover monitor`, a recording played by
//! `drover replay`. A thread reads the events from their source (as they come, or at their
//! recorded pace) into a queue; the TUI takes them through a [`WatchLink`], the
//! [`RunLink`] of a run nobody here can steer: it takes no commands, and the TUI is told so
//! ([`TuiOptions::read_only`]).
//!
//! The queue is lossless (the goal graph must be whole) and bounded: a reader that gets far
//! ahead of the screen waits, as a pipe's writer does.

use std::path::Path;
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use tokio::sync::Notify;

use crate::app::AppError;
use crate::app::tui::{self, TuiOptions};
use crate::engine::api::{Batch, Command, Event, EventKind, Level, RunLink, Time};

/// Events queued at most before the reader waits for the screen to take them.
pub const QUEUE_LIMIT: usize = 1 << 16;

/// When events are handed on.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Pace {
    /// As soon as they are read (a live stream brings its own pace).
    AsRead,
    /// At their recorded times divided by `speed`, from the first event on.
    Recorded { speed: f64 },
}

#[derive(Default)]
struct Queue {
    events: Vec<Event>,
    /// The source has no more events.
    ended: bool,
    /// The watcher left: the reader stops.
    left: bool,
}

#[derive(Default)]
struct Shared {
    queue: Mutex<Queue>,
    /// Events were queued, or the source ended.
    arrived: Notify,
    /// Events were taken, or the watcher left.
    taken: Condvar,
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, Queue> {
        // A reader that panicked left a queue that is still whole.
        self.queue.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// The watcher's end: events in, no commands out.
pub struct WatchLink {
    shared: Arc<Shared>,
}

impl WatchLink {
    /// The queued events as one batch; `Some(None)` once the source ended and all was taken.
    fn take(&self) -> Option<Option<Batch>> {
        let mut q = self.shared.lock();
        if !q.events.is_empty() {
            let events = std::mem::take(&mut q.events);
            drop(q);
            self.shared.taken.notify_all();
            return Some(Some(Arc::new(events)));
        }
        q.ended.then_some(None)
    }
}

impl RunLink for WatchLink {
    async fn next_batch(&mut self) -> Option<Batch> {
        loop {
            if let Some(batch) = self.take() {
                return batch;
            }
            // A notification sent since the check above is kept for this wait.
            self.shared.arrived.notified().await;
        }
    }

    fn try_next_batch(&mut self) -> Option<Batch> {
        self.take().flatten()
    }

    fn dropped(&self) -> u64 {
        0
    }

    fn send(&self, _command: Command) -> bool {
        false
    }
}

impl Drop for WatchLink {
    fn drop(&mut self) {
        self.shared.lock().left = true;
        self.shared.taken.notify_all();
    }
}

/// The reader's end.
struct Feeder {
    shared: Arc<Shared>,
}

impl Feeder {
    /// Queues an event (waiting while the queue is full); false once the watcher left.
    fn push(&self, e: Event) -> bool {
        let mut q = self.shared.lock();
        while q.events.len() >= QUEUE_LIMIT && !q.left {
            q = self.shared.taken.wait(q).unwrap_or_else(|e| e.into_inner());
        }
        if q.left {
            return false;
        }
        q.events.push(e);
        drop(q);
        self.shared.arrived.notify_one();
        true
    }

    /// Waits until `deadline`; false if the watcher left meanwhile.
    fn wait_until(&self, deadline: Instant) -> bool {
        let mut q = self.shared.lock();
        loop {
            if q.left {
                return false;
            }
            let now = Instant::now();
            if now >= deadline {
                return true;
            }
            q = self
                .shared
                .taken
                .wait_timeout(q, deadline - now)
                .unwrap_or_else(|e| e.into_inner())
                .0;
        }
    }
}

impl Drop for Feeder {
    /// The source ended (or its reader failed): the watcher sees the end of the stream.
    fn drop(&mut self) {
        self.shared.lock().ended = true;
        self.shared.arrived.notify_one();
    }
}

/// The reading thread; its result is the source's error, if it failed.
pub type Reader = JoinHandle<Result<(), AppError>>;

/// Starts reading the events of the source `open` makes, on a thread of its own (where `open`
/// runs, so the source itself need not be `Send`); the link to watch it with.
///
/// A source error ends the stream: it is shown as an error message (the last event) and
/// returned by the thread.
pub fn start<F, I>(open: F, pace: Pace) -> Result<(WatchLink, Reader), AppError>
where
    F: FnOnce() -> I + Send + 'static,
    I: Iterator<Item = Result<Event, AppError>>,
{
    let shared = Arc::new(Shared::default());
    let feeder = Feeder {
        shared: shared.clone(),
    };
    let reader = std::thread::Builder::new()
        .name("watch-reader".into())
        .spawn(move || feed(open(), pace, &feeder))
        .map_err(|e| AppError::io("starting", Path::new("the reading thread"), e))?;
    Ok((WatchLink { shared }, reader))
}

fn feed<I>(source: I, pace: Pace, feeder: &Feeder) -> Result<(), AppError>
where
    I: Iterator<Item = Result<Event, AppError>>,
{
    let start = Instant::now();
    let mut first: Option<Time> = None;
    let mut last = (0, Time::ZERO);
    for item in source {
        let e = match item {
            Ok(e) => e,
            Err(err) => {
                feeder.push(Event {
                    seq: last.0 + 1,
                    time: last.1,
                    kind: EventKind::Message {
                        level: Level::Error,
                        text: err.to_string(),
                        goal: None,
                    },
                });
                return Err(err);
            }
        };
        if let Pace::Recorded { speed } = pace {
            let t0 = *first.get_or_insert(e.time);
            let due = Duration::from_secs_f64(e.time.millis_since(t0) as f64 / 1000.0 / speed);
            if !feeder.wait_until(start + due) {
                return Ok(());
            }
        }
        last = (e.seq, e.time);
        if !feeder.push(e) {
            return Ok(());
        }
    }
    Ok(())
}

/// Shows the events of the source `open` makes in the TUI (read-only, `options.read_only` says what is watched) until the
/// user leaves. The watched run's exit status (1 if it did not end), or the source's error.
pub fn show_in_tui<F, I>(open: F, pace: Pace, options: TuiOptions) -> Result<u8, AppError>
where
    F: FnOnce() -> I + Send + 'static,
    I: Iterator<Item = Result<Event, AppError>>,
{
    let (link, reader) = start(open, pace)?;
    let status = tui::run(link, options)?;
    // A reader still blocked on its input (a live stream the user stopped watching) is left
    // to the process's exit.
    if reader.is_finished() {
        reader
            .join()
            .map_err(|_| AppError::Usage("the reading thread failed".into()))??;
    }
    Ok(status)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn event(seq: u64, ms: u64) -> Event {
        Event {
            seq,
            time: Time(ms),
            kind: EventKind::RunDone { exit_status: 0 },
        }
    }

    fn collect(mut link: WatchLink) -> Vec<Event> {
        let rt = tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap();
        let mut all = Vec::new();
        while let Some(b) = rt.block_on(link.next_batch()) {
            all.extend(b.iter().cloned());
        }
        all
    }

    #[test]
    fn every_event_arrives_in_order_even_past_the_queue_limit() {
        let n = QUEUE_LIMIT as u64 * 2 + 7;
        let source = (0..n).map(|i| Ok(event(i, i)));
        let (link, reader) = start(move || source, Pace::AsRead).unwrap();
        assert!(
            !link.send(Command::CancelAll),
            "a watched run takes no commands"
        );
        let seqs: Vec<u64> = collect(link).iter().map(|e| e.seq).collect();
        assert_eq!(seqs, (0..n).collect::<Vec<_>>());
        reader.join().unwrap().unwrap();
    }

    #[test]
    fn a_source_error_ends_the_stream_with_its_message() {
        let source = vec![
            Ok(event(0, 10)),
            Err(AppError::Usage("bad line 3".into())),
            Ok(event(2, 30)),
        ]
        .into_iter();
        let (link, reader) = start(move || source, Pace::AsRead).unwrap();
        let events = collect(link);
        assert_eq!(events.len(), 2);
        assert!(matches!(
            &events[1].kind,
            EventKind::Message { level: Level::Error, text, .. } if text == "bad line 3"
        ));
        assert_eq!((events[1].seq, events[1].time), (1, Time(10)));
        let err = reader.join().unwrap().unwrap_err();
        assert_eq!(err.to_string(), "bad line 3");
    }

    #[test]
    fn recorded_pace_spreads_events_over_their_times_divided_by_speed() {
        let source = vec![Ok(event(0, 1000)), Ok(event(1, 1400))].into_iter();
        let started = Instant::now();
        let (link, reader) = start(move || source, Pace::Recorded { speed: 4.0 }).unwrap();
        assert_eq!(collect(link).len(), 2);
        let took = started.elapsed();
        assert!(
            took >= Duration::from_millis(100),
            "400ms / 4, took {took:?}"
        );
        reader.join().unwrap().unwrap();
    }

    #[test]
    fn a_watcher_that_leaves_stops_the_reader() {
        let source = (0..u64::MAX).map(|i| Ok(event(i, i * 1000)));
        let (link, reader) = start(move || source, Pace::Recorded { speed: 1.0 }).unwrap();
        drop(link);
        reader.join().unwrap().unwrap();
    }
}

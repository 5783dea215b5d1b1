//! Event fan-out: each subscriber has its own bounded queue of event batches.
//!
//! A *lossy* subscriber (a TUI) never slows the run: when its queue is full the oldest batches
//! are dropped and counted (sequence numbers show the gap). A *lossless* subscriber (a log
//! file, JSON output, a simulation printer) gets every event: the driver waits for room before
//! publishing, which only happens when that consumer falls a whole queue behind.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex};

use tokio::sync::Notify;

pub use crate::engine::api::Batch;

/// How a subscriber wants its events.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Delivery {
    /// Drop the oldest events beyond `capacity` (counted in [`EventStream::dropped`]).
    Lossy { capacity: usize },
    /// Keep every event; the producer waits while `capacity` events are queued.
    Lossless { capacity: usize },
}

#[derive(Debug, Default)]
struct Queue {
    batches: VecDeque<Batch>,
    events: usize,
    dropped: u64,
    closed: bool,
    /// The stream was dropped: nobody reads any more.
    gone: bool,
}

#[derive(Debug)]
struct Subscriber {
    queue: Mutex<Queue>,
    capacity: usize,
    lossless: bool,
    /// Wakes the consumer.
    data: Notify,
    /// Wakes the producer waiting for room.
    space: Notify,
}

impl Subscriber {
    fn lock(&self) -> std::sync::MutexGuard<'_, Queue> {
        self.queue.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// The fan-out point; cheap to clone.
#[derive(Debug, Clone, Default)]
pub struct EventBus {
    subscribers: Arc<Mutex<Vec<Arc<Subscriber>>>>,
}

/// One subscriber's end.
#[derive(Debug)]
pub struct EventStream {
    sub: Arc<Subscriber>,
}

impl EventBus {
    /// A new subscriber; it sees the events published from now on.
    pub fn subscribe(&self, delivery: Delivery) -> EventStream {
        let (capacity, lossless) = match delivery {
            Delivery::Lossy { capacity } => (capacity.max(1), false),
            Delivery::Lossless { capacity } => (capacity.max(1), true),
        };
        let sub = Arc::new(Subscriber {
            queue: Mutex::new(Queue::default()),
            capacity,
            lossless,
            data: Notify::new(),
            space: Notify::new(),
        });
        self.subs().push(sub.clone());
        EventStream { sub }
    }

    fn subs(&self) -> std::sync::MutexGuard<'_, Vec<Arc<Subscriber>>> {
        self.subscribers.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Waits until every lossless subscriber has room for more events.
    pub async fn wait_for_room(&self) {
        let subs: Vec<Arc<Subscriber>> =
            self.subs().iter().filter(|s| s.lossless).cloned().collect();
        for sub in subs {
            loop {
                let space = sub.space.notified();
                {
                    let q = sub.lock();
                    if q.gone || q.events < sub.capacity {
                        break;
                    }
                }
                space.await;
            }
        }
    }

    /// Hands a batch to every subscriber.
    pub fn publish(&self, batch: Batch) {
        if batch.is_empty() {
            return;
        }
        for sub in self.subs().iter() {
            let mut q = sub.lock();
            if q.gone {
                continue;
            }
            if !sub.lossless {
                while q.events + batch.len() > sub.capacity {
                    let Some(old) = q.batches.pop_front() else {
                        break;
                    };
                    q.events -= old.len();
                    q.dropped += old.len() as u64;
                }
            }
            q.events += batch.len();
            q.batches.push_back(batch.clone());
            drop(q);
            sub.data.notify_one();
        }
    }

    /// No more events: streams end once drained.
    pub fn close(&self) {
        for sub in self.subs().iter() {
            sub.lock().closed = true;
            sub.data.notify_one();
        }
    }
}

impl EventStream {
    /// The next batch, in order; `None` once the bus is closed and everything was read.
    pub async fn recv(&mut self) -> Option<Batch> {
        let sub = self.sub.clone();
        loop {
            let data = sub.data.notified();
            if let Some(batch) = take(&sub) {
                return Some(batch);
            }
            if sub.lock().closed {
                return None;
            }
            data.await;
        }
    }

    /// The next batch if one is queued.
    pub fn try_recv(&mut self) -> Option<Batch> {
        take(&self.sub)
    }

    /// Events dropped because this (lossy) subscriber fell behind.
    pub fn dropped(&self) -> u64 {
        self.sub.lock().dropped
    }
}

fn take(sub: &Subscriber) -> Option<Batch> {
    let mut q = sub.lock();
    let batch = q.batches.pop_front()?;
    q.events -= batch.len();
    drop(q);
    sub.space.notify_one();
    Some(batch)
}

impl Drop for EventStream {
    fn drop(&mut self) {
        self.sub.lock().gone = true;
        self.sub.space.notify_one();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::engine::api::{Event, EventKind, Time};

    fn batch(from: u64, n: u64) -> Batch {
        Arc::new(
            (from..from + n)
                .map(|seq| Event {
                    seq,
                    time: Time(0),
                    kind: EventKind::RunDone { exit_status: 0 },
                })
                .collect(),
        )
    }

    #[tokio::test]
    async fn a_lossy_subscriber_drops_the_oldest_and_counts() {
        let bus = EventBus::default();
        let mut s = bus.subscribe(Delivery::Lossy { capacity: 4 });
        bus.publish(batch(0, 3));
        bus.publish(batch(3, 3));
        bus.close();
        let got = s.recv().await.unwrap();
        assert_eq!(got[0].seq, 3);
        assert_eq!(s.dropped(), 3);
        assert!(s.recv().await.is_none());
    }

    #[tokio::test]
    async fn a_lossless_subscriber_holds_the_producer_back() {
        let bus = EventBus::default();
        let mut s = bus.subscribe(Delivery::Lossless { capacity: 2 });
        bus.publish(batch(0, 2));
        let producer = {
            let bus = bus.clone();
            tokio::spawn(async move {
                bus.wait_for_room().await;
                bus.publish(batch(2, 2));
                bus.close();
            })
        };
        tokio::task::yield_now().await;
        assert!(!producer.is_finished(), "the queue is full");
        let mut seqs = Vec::new();
        while let Some(b) = s.recv().await {
            seqs.extend(b.iter().map(|e| e.seq));
        }
        producer.await.unwrap();
        assert_eq!(seqs, vec![0, 1, 2, 3]);
        assert_eq!(s.dropped(), 0);
    }

    #[tokio::test]
    async fn a_dropped_stream_never_blocks() {
        let bus = EventBus::default();
        let s = bus.subscribe(Delivery::Lossless { capacity: 1 });
        bus.publish(batch(0, 5));
        drop(s);
        bus.wait_for_room().await;
        bus.publish(batch(5, 5));
    }
}

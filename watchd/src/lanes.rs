//! The per-route lanes from the watchers to the upload threads (SPEC §4).
//!
//! Each route has an upload thread of its own, fed by a bounded channel of
//! its own (its lane), so that a route the intake is slow on or fails (say
//! `/events` answering 503 for minutes) holds the other two back in no way.
//!
//! One process thread serves the three lanes, and it must never wait on a
//! full one: it would stop every route with it. So each route has as many
//! credits as its lane has room. A watcher takes one of its route's credits
//! before it sends a watch message, and waits for one when none is left
//! (only that route's watchers wait; the API server is their buffer). The
//! message carries the credit through the process thread into the lane, and
//! the credit goes back when the upload thread takes the message out. A lane
//! thus never holds more messages than it has room for, and the process
//! thread's send never waits.

use std::sync::Arc;

use crossbeam_channel::{Receiver, Sender};
use tokio::sync::{OwnedSemaphorePermit, Semaphore, mpsc};

use crate::kube_thread::WatchMsg;
use crate::resources::Route;

/// Every route, in the order of [`PerRoute`].
pub const ROUTES: [Route; 3] = [Route::Resources, Route::CustomResources, Route::Events];

/// One `T` for each route.
#[derive(Clone, Debug)]
pub struct PerRoute<T>([T; 3]);

impl<T> PerRoute<T> {
    pub fn new(make: impl FnMut(Route) -> T) -> Self {
        PerRoute(ROUTES.map(make))
    }

    pub fn get(&self, route: Route) -> &T {
        &self.0[index(route)]
    }
}

impl<A, B> PerRoute<(A, B)> {
    pub fn unzip(self) -> (PerRoute<A>, PerRoute<B>) {
        let [(a0, b0), (a1, b1), (a2, b2)] = self.0;
        (PerRoute([a0, a1, a2]), PerRoute([b0, b1, b2]))
    }
}

impl<T> IntoIterator for PerRoute<T> {
    type Item = (Route, T);
    type IntoIter = std::iter::Zip<std::array::IntoIter<Route, 3>, std::array::IntoIter<T, 3>>;

    fn into_iter(self) -> Self::IntoIter {
        ROUTES.into_iter().zip(self.0)
    }
}

fn index(route: Route) -> usize {
    match route {
        Route::Resources => 0,
        Route::CustomResources => 1,
        Route::Events => 2,
    }
}

/// Room for one message in a route's lane; given back when dropped.
#[derive(Debug)]
pub struct Credit {
    _permit: OwnedSemaphorePermit,
}

/// A watch message and the credit of its route it took.
#[derive(Debug)]
pub struct Credited {
    pub msg: WatchMsg,
    pub credit: Credit,
}

/// What one watch message made: serialized records of one route, in order.
#[derive(Debug)]
pub struct Records {
    pub records: Vec<Vec<u8>>,
    /// Dropped by the upload thread as it takes the records.
    pub credit: Credit,
}

/// The process thread went away (the end of a shutdown).
#[derive(Debug)]
pub struct Closed;

/// The kube thread's end of the event channel: takes a credit, then sends.
#[derive(Clone, Debug)]
pub struct EventSender {
    tx: mpsc::Sender<Credited>,
    credits: PerRoute<Arc<Semaphore>>,
}

impl EventSender {
    /// Sends `msg` to the process thread once its route has a credit and
    /// the channel has room.
    pub async fn send(&self, msg: WatchMsg) -> Result<(), Closed> {
        let credits = self.credits.get(msg.target().route).clone();
        // The semaphore is never closed.
        let credit = Credit {
            _permit: credits.acquire_owned().await.map_err(|_| Closed)?,
        };
        self.tx
            .send(Credited { msg, credit })
            .await
            .map_err(|_| Closed)
    }
}

impl EventSender {
    /// The routes' credits, for the process thread's own messages.
    pub fn credit_pool(&self) -> CreditPool {
        CreditPool {
            credits: self.credits.clone(),
        }
    }
}

/// The credits of every route, without the event channel: for the records
/// the process thread makes itself (a new leader's remembered deletions,
/// [`crate::standby`]), which no watcher's credit carries. Holding one does
/// not keep the event channel open.
#[derive(Clone, Debug)]
pub struct CreditPool {
    credits: PerRoute<Arc<Semaphore>>,
}

impl CreditPool {
    /// A credit of `route`, waiting for one if the lane is full.
    pub fn take_blocking(&self, route: Route) -> Credit {
        let credits = self.credits.get(route).clone();
        let permit = match credits.clone().try_acquire_owned() {
            Ok(permit) => permit,
            // The semaphore is never closed.
            Err(_) => futures::executor::block_on(credits.acquire_owned())
                .expect("the credits are never closed"),
        };
        Credit { _permit: permit }
    }
}

/// Every channel between the kube, process and upload threads.
pub struct Channels {
    pub events: EventSender,
    pub events_rx: mpsc::Receiver<Credited>,
    pub lanes: PerRoute<Sender<Records>>,
    pub lanes_rx: PerRoute<Receiver<Records>>,
}

/// An event channel of `events` messages, and a lane of `lane` messages
/// (with as many credits) for each route.
pub fn channels(events: usize, lane: usize) -> Channels {
    let (tx, events_rx) = mpsc::channel(events);
    let (lanes, lanes_rx) = PerRoute::new(|_| crossbeam_channel::bounded(lane)).unzip();
    Channels {
        events: EventSender {
            tx,
            credits: PerRoute::new(|_| Arc::new(Semaphore::new(lane))),
        },
        events_rx,
        lanes,
        lanes_rx,
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;
    use crate::resources::parse_resources;

    fn listed(resource: &str) -> WatchMsg {
        let target = parse_resources(resource).expect("valid").remove(0);
        WatchMsg::ListStarted(Arc::new(target))
    }

    async fn sends(events: &EventSender, msg: WatchMsg) -> bool {
        tokio::time::timeout(Duration::from_millis(50), events.send(msg))
            .await
            .is_ok()
    }

    #[tokio::test]
    async fn a_route_out_of_credits_waits_alone_until_one_comes_back() {
        let Channels {
            events,
            mut events_rx,
            ..
        } = channels(8, 2);
        assert!(sends(&events, listed("events")).await);
        assert!(sends(&events, listed("events")).await);
        // Both events messages are held (in a lane, say): no credit left.
        let held = [events_rx.recv().await, events_rx.recv().await];
        assert!(!sends(&events, listed("events")).await);
        assert!(sends(&events, listed("pods")).await);
        assert!(sends(&events, listed("pods")).await);
        drop(held);
        assert!(sends(&events, listed("events")).await);
    }
}

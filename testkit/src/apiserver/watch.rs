//! Serving one watch: a 200 with a chunked body, one JSON event a line and
//! a chunk each, until `timeoutSeconds`, a write error, or the server
//! dropping the watch.

use std::io;
use std::net::TcpStream;
use std::time::Instant;

use crossbeam_channel::{Receiver, RecvTimeoutError};
use serde_json::{Value, json};

use super::http;
use super::routes::{WatchPlan, present_owned};
use super::server::Shared;
use super::store::{Delivery, Event, WatchFrom};

/// How a watch ended.
pub(crate) enum WatchEnd {
    /// The body ended normally (timeout, expired): the connection may serve
    /// further requests.
    Finished,
    /// The server broke the watch off: close the connection at once.
    Dropped,
}

/// Unsubscribes when the watch ends, however it ends.
struct Registration<'a> {
    shared: &'a Shared,
    id: u64,
}

impl Drop for Registration<'_> {
    fn drop(&mut self) {
        if let Ok(mut store) = self.shared.store.lock() {
            store.unsubscribe(self.id);
        }
    }
}

pub(crate) fn serve(
    shared: &Shared,
    stream: &mut TcpStream,
    plan: &WatchPlan,
) -> io::Result<WatchEnd> {
    let started = Instant::now();
    let subscribed = shared
        .store
        .lock()
        .expect("store lock")
        .watch(&plan.resource, plan.from);
    let sub = match subscribed {
        Ok(sub) => sub,
        Err(expired) => {
            // The real server answers 200 and reports the error in the stream.
            http::write_chunked_head(stream)?;
            let event = json!({"type": "ERROR", "object": expired.to_status()});
            http::write_chunk(stream, &line(&event))?;
            http::write_last_chunk(stream)?;
            return Ok(WatchEnd::Finished);
        }
    };
    let _registration = Registration { shared, id: sub.id };
    http::write_chunked_head(stream)?;
    let mut last_rv = match plan.from {
        WatchFrom::After(rv) => rv,
        WatchFrom::Now => sub.rv,
    };
    for event in &sub.backlog {
        send_event(stream, plan, event)?;
    }
    if plan.initial_events_end {
        last_rv = last_rv.max(sub.rv);
        send_bookmark(stream, plan, last_rv, true)?;
    }
    let deadline = plan.timeout.map(|t| started + t);
    let mut next_bookmark = Instant::now() + shared.bookmark_interval();
    loop {
        let mut wake = deadline;
        if plan.bookmarks {
            wake = Some(wake.map_or(next_bookmark, |d| d.min(next_bookmark)));
        }
        let received = match wake {
            Some(at) => sub
                .events
                .recv_timeout(at.saturating_duration_since(Instant::now())),
            None => sub
                .events
                .recv()
                .map_err(|_| RecvTimeoutError::Disconnected),
        };
        match received {
            Ok(delivery) => {
                if let Some(end) = deliver(stream, plan, delivery, &mut last_rv)? {
                    return Ok(end);
                }
            }
            Err(RecvTimeoutError::Disconnected) => {
                http::write_last_chunk(stream)?;
                return Ok(WatchEnd::Finished);
            }
            Err(RecvTimeoutError::Timeout) => {
                let ending = deadline.is_some_and(|d| Instant::now() >= d);
                if plan.bookmarks && (ending || Instant::now() >= next_bookmark) {
                    if let Some(end) =
                        bookmark_now(shared, stream, plan, &sub.events, &mut last_rv)?
                    {
                        return Ok(end);
                    }
                    next_bookmark = Instant::now() + shared.bookmark_interval();
                }
                if ending {
                    http::write_last_chunk(stream)?;
                    return Ok(WatchEnd::Finished);
                }
            }
        }
    }
}

/// Sends an event, or ends the watch as the server asked.
fn deliver(
    stream: &mut TcpStream,
    plan: &WatchPlan,
    delivery: Delivery,
    last_rv: &mut u64,
) -> io::Result<Option<WatchEnd>> {
    match delivery {
        Delivery::Event(event) => {
            send_event(stream, plan, &event)?;
            *last_rv = (*last_rv).max(event.rv);
            Ok(None)
        }
        Delivery::End { abrupt: true } => Ok(Some(WatchEnd::Dropped)),
        Delivery::End { abrupt: false } => {
            http::write_last_chunk(stream)?;
            Ok(Some(WatchEnd::Finished))
        }
    }
}

/// Sends a BOOKMARK at the current resourceVersion, unless delivery is
/// frozen. Events already queued are sent first, so the bookmark never
/// claims an event that has not been sent. Returns how the watch ends if
/// the server ended it meanwhile.
fn bookmark_now(
    shared: &Shared,
    stream: &mut TcpStream,
    plan: &WatchPlan,
    events: &Receiver<Delivery>,
    last_rv: &mut u64,
) -> io::Result<Option<WatchEnd>> {
    let (rv, frozen) = {
        let store = shared.store.lock().expect("store lock");
        (store.rv(), store.frozen)
    };
    if frozen {
        return Ok(None);
    }
    // Every event up to `rv` was queued under the lock before we read it.
    while let Ok(delivery) = events.try_recv() {
        if let Some(end) = deliver(stream, plan, delivery, last_rv)? {
            return Ok(Some(end));
        }
    }
    *last_rv = (*last_rv).max(rv);
    send_bookmark(stream, plan, *last_rv, false)?;
    Ok(None)
}

fn line(event: &Value) -> Vec<u8> {
    let mut out = serde_json::to_vec(event).expect("JSON values serialize");
    out.push(b'\n');
    out
}

fn send_event(stream: &mut TcpStream, plan: &WatchPlan, event: &Event) -> io::Result<()> {
    let obj = event.object.value();
    if let Some(ns) = &plan.namespace
        && obj.pointer("/metadata/namespace").and_then(Value::as_str) != Some(ns)
    {
        return Ok(());
    }
    if !plan.selector.matches(&obj) {
        return Ok(());
    }
    let event = json!({
        "type": event.kind.as_str(),
        "object": present_owned(&plan.resource, &plan.version, obj),
    });
    http::write_chunk(stream, &line(&event))
}

fn send_bookmark(
    stream: &mut TcpStream,
    plan: &WatchPlan,
    rv: u64,
    initial_events_end: bool,
) -> io::Result<()> {
    let mut metadata = json!({"resourceVersion": rv.to_string()});
    if initial_events_end {
        metadata["annotations"] = json!({"k8s.io/initial-events-end": "true"});
    }
    let event = json!({
        "type": "BOOKMARK",
        "object": {
            "kind": plan.resource.kind,
            "apiVersion": plan.resource.api_version(&plan.version),
            "metadata": metadata,
        },
    });
    http::write_chunk(stream, &line(&event))
}

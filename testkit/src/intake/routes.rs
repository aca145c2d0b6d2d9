//! Which route answers a request, and how: authentication, faults, size
//! limits, validation and rejections, in the backend's order. The OTLP
//! route (`otlp.rs`) takes the same faults and limits, without the token.

use std::time::Duration;

use super::http::{Body, RequestHead, Response};
use super::logs::parse_logs_request;
use super::otlp::{self, is_otlp_path};
use super::records::{JsonRoute, json_route, parse_records};
use super::store::Delivery;
use super::token::{check_token_request, media_type, token_response};
use super::{
    Faults, LogBatch, MAX_JSON_BODY_BYTES, MAX_LOGS_BODY_BYTES, MAX_OTLP_BODY_BYTES, Shared,
};

/// `/raw` bodies are only counted; this only bounds memory.
const MAX_RAW_BODY_BYTES: usize = 256 * 1024 * 1024;

/// How a request is answered, and what it delivers if answered 2xx.
pub(crate) struct Outcome {
    pub(crate) response: Response,
    pub(crate) delivery: Option<Delivery>,
    /// Waited before answering (injected fault).
    pub(crate) latency: Duration,
}

impl Outcome {
    fn answer(response: Response) -> Outcome {
        Outcome {
            response,
            delivery: None,
            latency: Duration::ZERO,
        }
    }
}

/// How much of a request body to `path` is kept before it is a 413.
pub(crate) fn body_limit(path: &str) -> usize {
    match path {
        "/logs" => MAX_LOGS_BODY_BYTES,
        "/raw" => MAX_RAW_BODY_BYTES,
        path if is_otlp_path(path) => MAX_OTLP_BODY_BYTES,
        _ => MAX_JSON_BODY_BYTES,
    }
}

/// The routes [`Faults`] apply to, and [`super::Intake::max_in_flight`]
/// counts.
pub(crate) fn is_data_route(head: &RequestHead) -> bool {
    head.method == "POST"
        && (matches!(head.path.as_str(), "/logs" | "/raw")
            || json_route(&head.path).is_some()
            || is_otlp_path(&head.path))
}

/// Answers a request with `faults`, those in force when its head arrived.
pub(crate) fn handle(shared: &Shared, head: &RequestHead, faults: &Faults, body: Body) -> Outcome {
    match (head.method.as_str(), head.path.as_str()) {
        ("GET", "/healthz") => Outcome::answer(Response::text(200, "ok")),
        ("POST", "/oauth2/token") => Outcome::answer(issue_token(shared, head, body)),
        ("POST", "/logs") => data_request(shared, head, faults, body, logs),
        ("POST", "/raw") => data_request(shared, head, faults, body, |_, _, body| Ok(raw(body))),
        // No token: OTLP receivers take whatever headers the sender is
        // configured with, which `otlp` records.
        ("POST", path) if is_otlp_path(path) => {
            faulted(faults, body, |body| otlp::export(shared, head, body))
        }
        ("POST", path) => match json_route(path) {
            // Like the backend's routes, these match only JSON bodies.
            Some(route) if is_json(head) => {
                data_request(shared, head, faults, body, |shared, _, body| {
                    records(shared, &route, body)
                })
            }
            _ => Outcome::answer(not_found()),
        },
        _ => Outcome::answer(not_found()),
    }
}

fn not_found() -> Response {
    Response::text(404, "no such route")
}

/// The backend (Rocket, `format = "json"`) compares the media type and
/// ignores parameters such as `charset`.
fn is_json(head: &RequestHead) -> bool {
    head.header("content-type")
        .is_some_and(|ct| media_type(ct).eq_ignore_ascii_case("application/json"))
}

fn issue_token(shared: &Shared, head: &RequestHead, body: Body) -> Response {
    let Body::Complete(body) = body else {
        return Response::text(413, "token request body too large");
    };
    let checked = check_token_request(
        head.header("authorization"),
        head.header("content-type"),
        &body,
    );
    if let Err((status, message)) = checked {
        return Response::text(status, message);
    }
    let expires_in = shared.opts.token_expires_in_secs;
    let token = shared.tokens.issue(Duration::from_secs(expires_in));
    Response::json(200, token_response(&token, expires_in))
}

/// Answers a data route of the intake's own: authentication, then
/// [`faulted`] with `handler`, which turns the body into something to store
/// (answered 200 `Success`) or into the error answer.
fn data_request(
    shared: &Shared,
    head: &RequestHead,
    faults: &Faults,
    body: Body,
    handler: impl FnOnce(&Shared, &RequestHead, Vec<u8>) -> Result<Delivery, Response>,
) -> Outcome {
    if !shared.tokens.accepts(head.header("authorization")) {
        return Outcome::answer(Response::text(
            401,
            "missing, unknown or expired bearer token",
        ));
    }
    faulted(faults, body, |body| {
        let delivery = handler(shared, head, body)?;
        Ok((Response::text(200, "Success"), delivery))
    })
}

/// Faults, then the size limit, then `handler`, which answers the body and
/// says what it delivers if that answer is a 2xx. Every data route goes
/// through here, so injected faults and latency apply to all alike.
fn faulted(
    faults: &Faults,
    body: Body,
    handler: impl FnOnce(Vec<u8>) -> Result<(Response, Delivery), Response>,
) -> Outcome {
    let (response, delivery) = match (injected_fault(faults), body) {
        (Some(response), _) => (response, None),
        (None, Body::TooLarge { len }) => (
            Response::text(413, format!("body of {len} bytes is too large")),
            None,
        ),
        (None, Body::Complete(body)) => match handler(body) {
            Ok((response, delivery)) => (response, Some(delivery)),
            Err(response) => (response, None),
        },
    };
    Outcome {
        response,
        delivery,
        latency: faults.latency,
    }
}

/// Draws once: a 500, 503 or 429 with the configured probabilities.
fn injected_fault(faults: &Faults) -> Option<Response> {
    let draw = fastrand::f64();
    let mut threshold = 0.0;
    for (status, fraction) in [
        (500, faults.fail_500),
        (503, faults.fail_503),
        (429, faults.fail_429),
    ] {
        threshold += fraction;
        if draw < threshold {
            let mut response = Response::text(status, "injected fault");
            if status != 500 {
                response.retry_after_secs = faults.retry_after_secs;
            }
            return Some(response);
        }
    }
    None
}

/// The status of the first rejection whose needle occurs in `haystack`.
fn rejection(shared: &Shared, haystack: &[u8]) -> Option<Response> {
    let rejections = shared.rejections.lock().expect("rejections lock");
    rejections
        .iter()
        .find(|(needle, _)| memchr::memmem::find(haystack, needle.as_bytes()).is_some())
        .map(|(needle, status)| Response::text(*status, format!("rejected: contains {needle:?}")))
}

fn logs(shared: &Shared, head: &RequestHead, body: Vec<u8>) -> Result<Delivery, Response> {
    // The backend answers every malformed /logs body with 500.
    let request = parse_logs_request(head.header("content-type"), body)
        .map_err(|e| Response::text(500, e))?;
    if let Some(response) = rejection(shared, &request.stream) {
        return Err(response);
    }
    let line_count = request.line_count as u64;
    let bytes = request.stream.len() as u64;
    let batch = if shared.opts.count_only {
        None
    } else {
        let lines = request.lines().map(str::to_owned).collect();
        Some(LogBatch {
            path: request.path,
            file: request.file,
            lines,
        })
    };
    Ok(Delivery::Logs {
        batch,
        lines: line_count,
        bytes,
    })
}

fn records(shared: &Shared, route: &JsonRoute, body: Vec<u8>) -> Result<Delivery, Response> {
    let accepted = parse_records(route, &body).map_err(|e| Response::text(500, e))?;
    if let Some(response) = rejection(shared, &body) {
        return Err(response);
    }
    Ok(Delivery::Records {
        route: route.records,
        records: accepted.kept,
        dropped: accepted.dropped,
    })
}

fn raw(body: Vec<u8>) -> Delivery {
    Delivery::Raw {
        lines: memchr::memchr_iter(b'\n', &body).count() as u64,
        bytes: body.len() as u64,
    }
}

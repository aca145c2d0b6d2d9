//! The OAuth2 client-credentials token endpoint and bearer-token checks.

use std::collections::HashMap;
use std::sync::Mutex;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use base64::Engine;

use super::{CLIENT_ID, CLIENT_SECRET, STATIC_TOKEN};

/// Issued tokens and when each expires.
#[derive(Default)]
pub(crate) struct Tokens {
    live: Mutex<HashMap<String, Instant>>,
    issued: AtomicUsize,
}

impl Tokens {
    /// Issues a new unique token that expires `expires_in` from now.
    pub(crate) fn issue(&self, expires_in: Duration) -> String {
        let token = format!(
            "test-token-{:016x}{:016x}",
            fastrand::u64(..),
            fastrand::u64(..)
        );
        self.live
            .lock()
            .expect("tokens lock")
            .insert(token.clone(), Instant::now() + expires_in);
        self.issued.fetch_add(1, Ordering::Relaxed);
        token
    }

    /// Whether `authorization` (the header value) carries a live token.
    pub(crate) fn accepts(&self, authorization: Option<&str>) -> bool {
        let Some(token) = authorization.and_then(bearer_token) else {
            return false;
        };
        if token == STATIC_TOKEN {
            return true;
        }
        let live = self.live.lock().expect("tokens lock");
        live.get(token)
            .is_some_and(|expires| Instant::now() < *expires)
    }

    pub(crate) fn revoke_all(&self) {
        self.live.lock().expect("tokens lock").clear();
    }

    pub(crate) fn issued_count(&self) -> usize {
        self.issued.load(Ordering::Relaxed)
    }
}

fn bearer_token(authorization: &str) -> Option<&str> {
    let (scheme, token) = authorization.trim().split_once(' ')?;
    scheme
        .eq_ignore_ascii_case("bearer")
        .then(|| token.trim())
        .filter(|t| !t.is_empty())
}

/// Why a token request is refused: the status and a short message.
pub(crate) type Refusal = (u16, String);

/// Checks a token request: HTTP Basic auth with the test client's
/// credentials (else 401) and a form body with
/// `grant_type=client_credentials` and at least one `audience` (else 400).
pub(crate) fn check_token_request(
    authorization: Option<&str>,
    content_type: Option<&str>,
    body: &[u8],
) -> Result<(), Refusal> {
    if !basic_auth_matches(authorization) {
        return Err((401, "invalid client credentials".into()));
    }
    let is_form = content_type
        .is_some_and(|ct| media_type(ct).eq_ignore_ascii_case("application/x-www-form-urlencoded"));
    if !is_form {
        return Err((
            400,
            "expected an application/x-www-form-urlencoded body".into(),
        ));
    }
    let form = parse_form(body).ok_or((400, "malformed form body".to_string()))?;
    let grant_type = form
        .iter()
        .find(|(k, _)| k == "grant_type")
        .map(|(_, v)| v.as_str());
    if grant_type != Some("client_credentials") {
        return Err((400, "grant_type must be client_credentials".into()));
    }
    if !form.iter().any(|(k, v)| k == "audience" && !v.is_empty()) {
        return Err((400, "at least one audience is required".into()));
    }
    Ok(())
}

/// The JSON answer to an accepted token request.
pub(crate) fn token_response(token: &str, expires_in_secs: u64) -> Vec<u8> {
    serde_json::json!({
        "access_token": token,
        "token_type": "Bearer",
        "expires_in": expires_in_secs,
    })
    .to_string()
    .into_bytes()
}

/// The `type/subtype` of a Content-Type value, without parameters.
pub(crate) fn media_type(content_type: &str) -> &str {
    content_type.split(';').next().unwrap_or("").trim()
}

fn basic_auth_matches(authorization: Option<&str>) -> bool {
    let Some((scheme, encoded)) = authorization.and_then(|a| a.trim().split_once(' ')) else {
        return false;
    };
    if !scheme.eq_ignore_ascii_case("basic") {
        return false;
    }
    let Ok(decoded) = base64::engine::general_purpose::STANDARD.decode(encoded.trim()) else {
        return false;
    };
    decoded == format!("{CLIENT_ID}:{CLIENT_SECRET}").as_bytes()
}

/// Parses `application/x-www-form-urlencoded`; `None` when a value is not
/// valid percent-encoded UTF-8.
fn parse_form(body: &[u8]) -> Option<Vec<(String, String)>> {
    let body = std::str::from_utf8(body).ok()?;
    body.split('&')
        .filter(|pair| !pair.is_empty())
        .map(|pair| {
            let (key, value) = pair.split_once('=').unwrap_or((pair, ""));
            Some((percent_decode(key)?, percent_decode(value)?))
        })
        .collect()
}

fn percent_decode(s: &str) -> Option<String> {
    let mut out = Vec::with_capacity(s.len());
    let mut bytes = s.bytes();
    while let Some(b) = bytes.next() {
        match b {
            b'+' => out.push(b' '),
            b'%' => {
                let high = hex_value(bytes.next()?)?;
                let low = hex_value(bytes.next()?)?;
                out.push(high << 4 | low);
            }
            _ => out.push(b),
        }
    }
    String::from_utf8(out).ok()
}

fn hex_value(digit: u8) -> Option<u8> {
    (digit as char).to_digit(16).map(|v| v as u8)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn form_values_are_percent_decoded() {
        let form =
            parse_form(b"grant_type=client_credentials&audience=https%3A%2F%2Fapi+x").unwrap();
        assert_eq!(
            form,
            vec![
                ("grant_type".to_string(), "client_credentials".to_string()),
                ("audience".to_string(), "https://api x".to_string()),
            ]
        );
        assert_eq!(parse_form(b"a=%4"), None);
    }
}

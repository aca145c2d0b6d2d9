//! Bearer tokens for the intake (SPEC §1): a static `HIK8S_TOKEN`, or OAuth2
//! client credentials fetched from the token URL, cached, and renewed before
//! they expire and after a 401.

use std::fmt;
use std::io::Read;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use base64::Engine as _;
use serde::Deserialize;

use crate::config::{AuthConfig, Secret};
use crate::intake::SendError;

/// Longest part of an error body kept for logs.
const BODY_START_LEN: usize = 200;

/// Hands out bearer tokens. Thread-safe: share it by reference or `Arc`.
/// Its `Debug` never shows a token or the client secret.
pub struct TokenProvider {
    source: Source,
}

enum Source {
    Static(Arc<str>),
    ClientCredentials {
        token_url: String,
        client_id: String,
        client_secret: Secret,
        /// `grant_type=...&audience=...`, built once.
        form: String,
        cached: Mutex<Option<CachedToken>>,
    },
}

struct CachedToken {
    token: Arc<str>,
    renew_at: Instant,
}

#[derive(Deserialize)]
struct TokenResponse {
    access_token: String,
    expires_in: Option<u64>,
}

impl TokenProvider {
    pub fn new(config: &AuthConfig) -> Self {
        let source = match config {
            AuthConfig::StaticToken(token) => Source::Static(Arc::from(token.expose())),
            AuthConfig::ClientCredentials {
                token_url,
                client_id,
                client_secret,
                audiences,
            } => Source::ClientCredentials {
                token_url: token_url.clone(),
                client_id: client_id.clone(),
                client_secret: client_secret.clone(),
                form: token_form(audiences),
                cached: Mutex::new(None),
            },
        };
        TokenProvider { source }
    }

    /// A valid token: the cached one, or a new one fetched with `agent` when
    /// there is none or it is due for renewal. Only one thread fetches at a
    /// time; the others wait for its token. A failed fetch (token endpoint
    /// down, or refusing the credentials) is [`SendError::Retryable`]: data
    /// must never be dropped because of an auth outage.
    pub fn token(&self, agent: &ureq::Agent) -> Result<Arc<str>, SendError> {
        match &self.source {
            Source::Static(token) => Ok(token.clone()),
            Source::ClientCredentials {
                token_url,
                client_id,
                client_secret,
                form,
                cached,
            } => {
                let mut cached = lock(cached);
                if let Some(token) = cached.as_ref().filter(|t| Instant::now() < t.renew_at) {
                    return Ok(token.token.clone());
                }
                let fetched = fetch_token(agent, token_url, client_id, client_secret, form)?;
                let token = fetched.token.clone();
                *cached = Some(fetched);
                Ok(token)
            }
        }
    }

    /// Forgets `rejected` after the intake answered 401 to it, so the next
    /// [`TokenProvider::token`] fetches a new one. Returns whether a new
    /// token can be had (false for a static token). A token already renewed
    /// by another thread is kept.
    pub fn invalidate(&self, rejected: &str) -> bool {
        match &self.source {
            Source::Static(_) => false,
            Source::ClientCredentials { cached, .. } => {
                let mut cached = lock(cached);
                if cached.as_ref().is_some_and(|t| &*t.token == rejected) {
                    *cached = None;
                }
                true
            }
        }
    }
}

impl fmt::Debug for TokenProvider {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.source {
            Source::Static(_) => f.write_str("TokenProvider::Static(<redacted>)"),
            Source::ClientCredentials {
                token_url,
                client_id,
                ..
            } => f
                .debug_struct("TokenProvider::ClientCredentials")
                .field("token_url", token_url)
                .field("client_id", client_id)
                .finish_non_exhaustive(),
        }
    }
}

/// `grant_type=client_credentials&audience=a&audience=b`, url-encoded.
fn token_form(audiences: &[String]) -> String {
    let mut form = String::from("grant_type=client_credentials");
    for audience in audiences {
        form.push_str("&audience=");
        form.push_str(&form_urlencode(audience));
    }
    form
}

/// application/x-www-form-urlencoded encoding of one value.
fn form_urlencode(value: &str) -> String {
    let mut out = String::with_capacity(value.len());
    for byte in value.bytes() {
        match byte {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'.' | b'_' | b'*' => {
                out.push(byte as char)
            }
            b' ' => out.push('+'),
            _ => out.push_str(&format!("%{byte:02X}")),
        }
    }
    out
}

fn fetch_token(
    agent: &ureq::Agent,
    token_url: &str,
    client_id: &str,
    client_secret: &Secret,
    form: &str,
) -> Result<CachedToken, SendError> {
    let retryable = |reason: String, status: Option<u16>| SendError::Retryable {
        reason,
        status,
        retry_after: None,
    };
    let basic = base64::engine::general_purpose::STANDARD
        .encode(format!("{client_id}:{}", client_secret.expose()));
    let asked_at = Instant::now();
    let mut response = agent
        .post(token_url)
        .header("Authorization", format!("Basic {basic}"))
        .header("Content-Type", "application/x-www-form-urlencoded")
        .send(form)
        .map_err(|e| retryable(format!("token request to {token_url}: {e}"), None))?;
    let status = response.status().as_u16();
    let mut body = Vec::new();
    let read = response
        .body_mut()
        .as_reader()
        .take(1 << 20)
        .read_to_end(&mut body);
    if !(200..300).contains(&status) {
        let start = body_start(&body);
        return Err(retryable(
            format!("token request to {token_url}: HTTP {status}: {start}"),
            Some(status),
        ));
    }
    read.map_err(|e| retryable(format!("token response from {token_url}: {e}"), None))?;
    let parsed: TokenResponse = serde_json::from_slice(&body).map_err(|e| {
        retryable(
            format!("token response from {token_url} is not a token: {e}"),
            Some(status),
        )
    })?;
    let lifetime = Duration::from_secs(parsed.expires_in.unwrap_or(3600));
    log::debug!("fetched an access token valid for {lifetime:?}");
    Ok(CachedToken {
        token: Arc::from(parsed.access_token),
        renew_at: asked_at + renew_after(lifetime),
    })
}

/// When to renew a token valid for `lifetime`: at 80 % of it or a minute
/// before it expires, whichever comes first, but not before half of it (so
/// short-lived tokens are not fetched for every request).
pub fn renew_after(lifetime: Duration) -> Duration {
    let at_80_percent = lifetime.mul_f64(0.8);
    let minute_before = lifetime.saturating_sub(Duration::from_secs(60));
    at_80_percent.min(minute_before).max(lifetime / 2)
}

/// The start of a response body for logs, lossy UTF-8, cut on a character.
pub(crate) fn body_start(body: &[u8]) -> String {
    let text = String::from_utf8_lossy(body);
    let mut end = text.len().min(BODY_START_LEN);
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    text[..end].trim().to_string()
}

/// A poisoned cache lock only means a thread panicked between two
/// assignments of an `Option`: the value is still whole.
fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn form_has_one_audience_per_value_url_encoded() {
        let audiences = vec!["https://api.hik8s.ai/".to_string(), "two words".to_string()];
        assert_eq!(
            token_form(&audiences),
            "grant_type=client_credentials&audience=https%3A%2F%2Fapi.hik8s.ai%2F&audience=two+words"
        );
    }

    #[test]
    fn renewal_is_before_expiry() {
        assert_eq!(
            renew_after(Duration::from_secs(3600)),
            Duration::from_secs(2880)
        );
        assert_eq!(
            renew_after(Duration::from_secs(200)),
            Duration::from_secs(140)
        );
        assert_eq!(renew_after(Duration::from_secs(2)), Duration::from_secs(1));
    }

    #[test]
    fn debug_shows_no_secret() {
        let provider = TokenProvider::new(&AuthConfig::ClientCredentials {
            token_url: "https://issuer.example/oauth2/token".into(),
            client_id: "id".into(),
            client_secret: Secret::new("made-up-client-secret"),
            audiences: vec!["aud".into()],
        });
        let debug = format!("{provider:?}");
        assert!(!debug.contains("made-up-client-secret"), "{debug}");
        let provider = TokenProvider::new(&AuthConfig::StaticToken(Secret::new("made-up-token")));
        let debug = format!("{provider:?}");
        assert!(!debug.contains("made-up-token"), "{debug}");
    }

    #[test]
    fn body_start_is_cut_on_a_character() {
        let body = "é".repeat(150);
        let start = body_start(body.as_bytes());
        assert_eq!(start.len(), 200);
        assert!(start.chars().all(|c| c == 'é'));
    }
}

//! A DNS cache in front of ureq's resolver.
//!
//! ureq resolves the host before every request, even one sent on a pooled
//! connection, and with a timeout set it does so on a new, unnamed thread:
//! a thread spawn and a lookup per request, hundreds a second while logd
//! drains a backlog. The intake is one host, so the last answer is kept for
//! a short while.

use std::sync::Mutex;
use std::time::{Duration, Instant};

use ureq::http::Uri;
use ureq::unversioned::resolver::{DefaultResolver, ResolvedSocketAddrs, Resolver};
use ureq::unversioned::transport::NextTimeout;

/// How long an answer is used: short enough to follow a DNS change soon.
const TTL: Duration = Duration::from_secs(30);

#[derive(Debug, Default)]
pub(crate) struct CachingResolver {
    inner: DefaultResolver,
    /// `scheme://authority`, when it was resolved, and the addresses.
    last: Mutex<Option<(String, Instant, ResolvedSocketAddrs)>>,
}

impl Resolver for CachingResolver {
    fn resolve(
        &self,
        uri: &Uri,
        config: &ureq::config::Config,
        timeout: NextTimeout,
    ) -> Result<ResolvedSocketAddrs, ureq::Error> {
        let key = format!(
            "{}://{}",
            uri.scheme_str().unwrap_or_default(),
            uri.authority().map_or("", |a| a.as_str())
        );
        if let Some((host, at, addrs)) = &*self.lock()
            && *host == key
            && at.elapsed() < TTL
        {
            return Ok(addrs.clone());
        }
        let addrs = self.inner.resolve(uri, config, timeout)?;
        *self.lock() = Some((key, Instant::now(), addrs.clone()));
        Ok(addrs)
    }
}

impl CachingResolver {
    fn lock(&self) -> std::sync::MutexGuard<'_, Option<(String, Instant, ResolvedSocketAddrs)>> {
        // A panic cannot leave the entry half-written: it is replaced whole.
        self.last
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

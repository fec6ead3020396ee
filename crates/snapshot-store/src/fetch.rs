//! One request and its retries: an idle timeout on every read, a body streamed to a sink and
//! checked for length, jittered backoff; and the scrubbing of URLs out of error messages.

use std::future::Future;
use std::ops::Range;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use futures::StreamExt;
use object_store::path::Path as ObjectPath;
use object_store::{GetOptions, GetRange, ObjectStore};
use rand::Rng;
use tokio::sync::Semaphore;

use crate::config::StoreConfig;
use crate::error::{Result, StoreError};
use crate::store::Counters;

/// What a store's requests share; what tasks on the runtime may hold.
pub(crate) struct Inner {
    pub(crate) objects: Arc<dyn ObjectStore>,
    pub(crate) prefix: ObjectPath,
    pub(crate) shown: String,
    pub(crate) config: StoreConfig,
    pub(crate) connections: Arc<Semaphore>,
    pub(crate) counters: Arc<Counters>,
}

/// One failed attempt: retry it, or stop at once.
pub(crate) enum Attempt {
    Retry(String),
    Fatal(StoreError),
}

/// Where a streamed range has got to, and where its bytes go.
pub(crate) struct Delivery<S> {
    pub(crate) next: u64,
    pub(crate) sink: S,
}

pub(crate) fn lock<T: ?Sized>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

/// Runs `attempt` until it succeeds, fails fatally, or the attempts run out; waits a jittered,
/// doubling backoff between attempts.
pub(crate) async fn retried<T, F, Fut>(
    inner: &Inner,
    name: &str,
    range: Range<u64>,
    mut attempt: F,
) -> Result<T>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<T, Attempt>>,
{
    let config = &inner.config;
    let mut backoff = config.backoff;
    let mut last = String::new();
    for n in 1..=config.attempts {
        match attempt().await {
            Ok(value) => return Ok(value),
            Err(Attempt::Fatal(e)) => return Err(e),
            Err(Attempt::Retry(why)) => {
                inner.counters.retries.fetch_add(1, Ordering::Relaxed);
                tracing::debug!(store = %inner.shown, object = name, attempt = n, "{why}");
                last = why;
            }
        }
        if n < config.attempts {
            tokio::time::sleep(jitter(backoff)).await;
            backoff = (backoff * 2).min(config.max_backoff);
        }
    }
    Err(StoreError::Unavailable {
        object: name.to_owned(),
        range,
        attempts: config.attempts,
        last,
    })
}

/// One GET of `range` (the whole object if `None`): the response must start, and then every
/// piece of the body arrive, within the idle timeout; each piece goes to `sink` as it
/// arrives; the body must be as long as asked.
pub(crate) fn fetch_once<K>(
    inner: &Arc<Inner>,
    name: &str,
    path: &ObjectPath,
    range: Option<Range<u64>>,
    mut sink: K,
) -> impl Future<Output = Result<(), Attempt>> + Send + 'static
where
    K: FnMut(&[u8]) -> Result<()> + Send + 'static,
{
    let inner = Arc::clone(inner);
    let (name, path) = (name.to_owned(), path.clone());
    async move {
        let idle = inner.config.idle_timeout;
        let _permit = Arc::clone(&inner.connections).acquire_owned().await;
        inner.counters.gets.fetch_add(1, Ordering::Relaxed);
        let options = GetOptions {
            range: range.clone().map(GetRange::Bounded),
            ..GetOptions::default()
        };
        let response =
            match tokio::time::timeout(idle, inner.objects.get_opts(&path, options)).await {
                Err(_) => return Err(Attempt::Retry(format!("no response for {idle:?}"))),
                Ok(Err(object_store::Error::NotFound { .. })) => {
                    return Err(Attempt::Fatal(StoreError::NotFound { object: name }));
                }
                Ok(Err(e)) => return Err(Attempt::Retry(scrub(&e.to_string()))),
                Ok(Ok(response)) => response,
            };
        let expected = range.map_or(response.meta.size, |r| r.end - r.start);
        let mut received = 0u64;
        let mut stream = response.into_stream();
        loop {
            match tokio::time::timeout(idle, stream.next()).await {
                Err(_) => {
                    return Err(Attempt::Retry(format!(
                        "no byte for {idle:?} after {received} of {expected} bytes"
                    )));
                }
                Ok(None) => break,
                Ok(Some(Err(e))) => {
                    return Err(Attempt::Retry(format!(
                        "after {received} of {expected} bytes: {}",
                        scrub(&e.to_string())
                    )));
                }
                Ok(Some(Ok(piece))) => {
                    // Never more than asked: what a server sends past the range is dropped.
                    let room = (expected - received).min(piece.len() as u64) as usize;
                    sink(&piece[..room]).map_err(Attempt::Fatal)?;
                    received += room as u64;
                    inner
                        .counters
                        .bytes_fetched
                        .fetch_add(room as u64, Ordering::Relaxed);
                    if room < piece.len() {
                        break;
                    }
                }
            }
        }
        if received != expected {
            return Err(Attempt::Retry(format!(
                "body of {received} bytes, expected {expected}"
            )));
        }
        Ok(())
    }
}

/// `text` with every URL in it cut before its query and without user information: error
/// messages of the HTTP client name the URL they failed on, and a presigned or SAS URL
/// carries its signature in the query.
pub(crate) fn scrub(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    loop {
        let start = match (rest.find("http://"), rest.find("https://")) {
            (Some(a), Some(b)) => a.min(b),
            (Some(a), None) | (None, Some(a)) => a,
            (None, None) => break,
        };
        out.push_str(&rest[..start]);
        let url_len = rest[start..]
            .find(|c: char| c.is_whitespace() || matches!(c, ')' | '"' | '\'' | '>' | ','))
            .unwrap_or(rest.len() - start);
        let url = &rest[start..start + url_len];
        match url::Url::parse(url) {
            Ok(parsed) => out.push_str(&crate::location::redact(&parsed)),
            // Not parsable: keep the scheme only.
            Err(_) => out.push_str(&url[..url.find("//").map_or(0, |i| i + 2)]),
        }
        rest = &rest[start + url_len..];
    }
    out.push_str(rest);
    out
}

/// A wait drawn uniformly from `[0, max]` with the OS-seeded thread RNG, so that clients that
/// failed together do not retry together.
fn jitter(max: Duration) -> Duration {
    let nanos = u64::try_from(max.as_nanos()).unwrap_or(u64::MAX);
    Duration::from_nanos(rand::rng().random_range(0..=nanos))
}

#[cfg(test)]
mod tests {
    use super::scrub;

    #[test]
    fn scrub_cuts_queries_and_credentials_out_of_urls() {
        let message = "error sending request for url (https://acct.blob.core.windows.net/c/x.data\
                       ?sv=2024&sig=SECRET), then http://user:pw@host:9000/b?X-Amz-Signature=S2 \
                       and https://plain/path";
        let scrubbed = scrub(message);
        for secret in ["SECRET", "sig=", "pw", "S2"] {
            assert!(!scrubbed.contains(secret), "{secret} in {scrubbed}");
        }
        assert!(scrubbed.starts_with("error sending request for url (https://acct."));
        assert!(scrubbed.contains("https://plain/path"), "{scrubbed}");
        assert!(
            scrubbed.contains("), then http://host:9000/b"),
            "{scrubbed}"
        );
        assert_eq!(scrub("no url here"), "no url here");
    }
}

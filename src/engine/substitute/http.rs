//! `http://` and `https://` binary caches, fetched with a blocking HTTP client (`ureq`, TLS by
//! rustls when the `https` feature is on) from the substituters' worker threads.
//!
//! What Nix's file transfer does, in short: 404 and 410 mean "not there", and so do 401, 403
//! and 407 (S3 answers 403 for a missing file); transient failures (most 5xx, 408, 429,
//! connection errors, timeouts) are retried `download-attempts` times with exponential
//! back-off from 250 ms; a read that stalls for `stalled-download-timeout` fails. With
//! `--fallback`, a cache that failed is disabled for 60 seconds (every request fails fast
//! with "substituter '…' is disabled"). A body is only retried before any of it was read.
//!
//! One difference: a cache that has never answered is not retried after a network failure
//! (no route, no name, refused). The first request, `nix-cache-info` when the cache is opened,
//! then fails at once and the cache is left out for the run with a warning, so an offline
//! machine loses one fast failed connection per cache instead of seconds of back-off.

use std::io::Read;
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use super::{FetchError, Logger};

/// How long a failing cache stays disabled with `--fallback` (Nix's constant).
const DISABLE_FOR: Duration = Duration::from_secs(60);

/// The file-transfer settings (`http-connections`, `connect-timeout`,
/// `stalled-download-timeout`, `download-attempts`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HttpOptions {
    /// Parallel requests across all caches (`http-connections`, default 25).
    pub connections: usize,
    /// `connect-timeout`; `None` (Nix's 0) leaves it to the system.
    pub connect_timeout: Option<Duration>,
    /// `stalled-download-timeout` (default 300 s): a read that waits longer fails.
    pub stalled_timeout: Duration,
    /// `download-attempts` (default 5): tries of a request that fails transiently.
    pub attempts: u32,
    /// First back-off before a retry (Nix: 250 ms, doubling each time).
    pub retry_base: Duration,
}

impl Default for HttpOptions {
    fn default() -> HttpOptions {
        HttpOptions {
            connections: 25,
            connect_timeout: None,
            stalled_timeout: Duration::from_secs(300),
            attempts: 5,
            retry_base: Duration::from_millis(250),
        }
    }
}

/// A reader of a response body.
pub type Body = Box<dyn Read + Send>;

/// One HTTP(S) binary cache.
pub struct HttpTransport {
    /// The cache's URL without a trailing `/`.
    base: String,
    agent: ureq::Agent,
    attempts: u32,
    retry_base: Duration,
    try_fallback: bool,
    disabled_until: Mutex<Option<Instant>>,
    /// The server has answered a request (with any status).
    answered: AtomicBool,
    log: Logger,
}

impl std::fmt::Debug for HttpTransport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HttpTransport")
            .field("base", &self.base)
            .finish_non_exhaustive()
    }
}

impl HttpTransport {
    /// A transport for the cache at `base` (`http(s)://host/path`).
    pub fn new(
        base: &str,
        options: &HttpOptions,
        try_fallback: bool,
        log: Logger,
    ) -> HttpTransport {
        let config = ureq::Agent::config_builder()
            .http_status_as_error(false)
            .timeout_connect(options.connect_timeout)
            .timeout_per_read(Some(options.stalled_timeout))
            .max_idle_connections_per_host(options.connections.max(1))
            .user_agent(concat!("drover/", env!("CARGO_PKG_VERSION")))
            .build();
        HttpTransport {
            base: base.trim_end_matches('/').to_owned(),
            agent: ureq::Agent::new_with_config(config),
            attempts: options.attempts.max(1),
            retry_base: options.retry_base,
            try_fallback,
            disabled_until: Mutex::new(None),
            answered: AtomicBool::new(false),
            log,
        }
    }

    pub fn base(&self) -> &str {
        &self.base
    }

    /// The URL of a cache file: absolute `http(s)://` URLs (a narinfo may point elsewhere)
    /// are taken as they are; `file://` is refused, a remote cache must not read local files.
    fn url(&self, name: &str) -> Result<String, FetchError> {
        if name.starts_with("http://") || name.starts_with("https://") {
            Ok(name.to_owned())
        } else if name.is_empty() || name.contains("://") || name.starts_with('/') {
            Err(FetchError::BadName {
                name: name.to_owned(),
                cache: self.base.clone(),
            })
        } else {
            Ok(format!("{}/{name}", self.base))
        }
    }

    fn check_enabled(&self) -> Result<(), FetchError> {
        let mut disabled = self
            .disabled_until
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        match *disabled {
            Some(until) if Instant::now() < until => Err(FetchError::Disabled(self.base.clone())),
            Some(_) => {
                *disabled = None;
                Ok(())
            }
            None => Ok(()),
        }
    }

    fn maybe_disable(&self) {
        if !self.try_fallback {
            return;
        }
        let mut disabled = self
            .disabled_until
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        if disabled.is_none() {
            self.log.error(&format!(
                "disabling binary cache '{}' for {} seconds",
                self.base,
                DISABLE_FOR.as_secs()
            ));
            *disabled = Some(Instant::now() + DISABLE_FOR);
        }
    }

    /// GETs a cache file: its body and announced length, or `None` if the cache does not
    /// have it.
    pub fn open(&self, name: &str) -> Result<Option<(Body, Option<u64>)>, FetchError> {
        self.check_enabled()?;
        let url = self.url(name)?;
        let mut attempt = 0;
        loop {
            attempt += 1;
            let err = match self.agent.get(&url).call() {
                Ok(response) => {
                    self.answered.store(true, Ordering::Relaxed);
                    let status = response.status();
                    match status.as_u16() {
                        200..=299 => {
                            let body = response.into_body();
                            let length = body.content_length();
                            return Ok(Some((Box::new(body.into_reader()), length)));
                        }
                        404 | 410 | 401 | 403 | 407 => return Ok(None),
                        code => FetchError::Http {
                            url: url.clone(),
                            status: code,
                            reason: status.canonical_reason().unwrap_or("").to_owned(),
                            transient: is_transient_status(code),
                        },
                    }
                }
                Err(e) => FetchError::Transfer {
                    url: url.clone(),
                    transient: is_transient_error(&e),
                    message: e.to_string(),
                },
            };
            let reachable =
                matches!(err, FetchError::Http { .. }) || self.answered.load(Ordering::Relaxed);
            if err.is_transient() && reachable && attempt < self.attempts {
                let delay = self.backoff(attempt);
                self.log
                    .warn(&format!("{err}; retrying in {} ms", delay.as_millis()));
                std::thread::sleep(delay);
                continue;
            }
            self.maybe_disable();
            return Err(err);
        }
    }

    /// Reads a whole cache file of at most `limit` bytes; `None` if the cache lacks it.
    pub fn read(&self, name: &str, limit: u64) -> Result<Option<Vec<u8>>, FetchError> {
        let Some((body, _)) = self.open(name)? else {
            return Ok(None);
        };
        let mut data = Vec::new();
        let url = self.url(name)?;
        body.take(limit + 1)
            .read_to_end(&mut data)
            .map_err(|e| FetchError::Transfer {
                url: url.clone(),
                message: e.to_string(),
                transient: false,
            })?;
        if data.len() as u64 > limit {
            return Err(FetchError::Transfer {
                url,
                message: format!("the file is larger than {limit} bytes"),
                transient: false,
            });
        }
        Ok(Some(data))
    }

    /// Nix's back-off: `base * 2^(attempt - 1 + U[0, 0.5))`.
    fn backoff(&self, attempt: u32) -> Duration {
        let jitter = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.subsec_nanos()) as f64
            / 1e9
            * 0.5;
        let factor = 2f64.powf(f64::from(attempt - 1) + jitter);
        self.retry_base.mul_f64(factor)
    }
}

/// Nix retries most server errors, and 408 and 429, but not 501, 505, 511 or other 4xx.
fn is_transient_status(code: u16) -> bool {
    match code {
        408 | 429 => true,
        501 | 505 | 511 => false,
        400..=499 => false,
        _ => true,
    }
}

/// Network trouble is worth another try; a malformed URL or a protocol mismatch is not.
fn is_transient_error(e: &ureq::Error) -> bool {
    !matches!(
        e,
        ureq::Error::BadUri(_)
            | ureq::Error::Http(_)
            | ureq::Error::InvalidProxyUrl
            | ureq::Error::RedirectFailed
            | ureq::Error::TooManyRedirects
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn transient_statuses_follow_nix() {
        for code in [500, 502, 503, 504, 408, 429] {
            assert!(is_transient_status(code), "{code}");
        }
        for code in [400, 418, 501, 505, 511] {
            assert!(!is_transient_status(code), "{code}");
        }
    }

    #[test]
    fn urls_are_relative_to_the_cache_unless_absolute_http() {
        let t = HttpTransport::new(
            "http://cache.test/sub/",
            &HttpOptions::default(),
            false,
            Logger::none(),
        );
        assert_eq!(t.base(), "http://cache.test/sub");
        assert_eq!(
            t.url("x.narinfo").unwrap(),
            "http://cache.test/sub/x.narinfo"
        );
        assert_eq!(
            t.url("https://elsewhere/nar/y").unwrap(),
            "https://elsewhere/nar/y"
        );
        assert!(t.url("file:///etc/passwd").is_err());
        assert!(t.url("/etc/passwd").is_err());
    }

    #[test]
    fn backoff_doubles_from_the_base() {
        let t = HttpTransport::new(
            "http://cache.test",
            &HttpOptions::default(),
            false,
            Logger::none(),
        );
        for attempt in 1..5 {
            let d = t.backoff(attempt).as_millis();
            let low = 250u128 << (attempt - 1);
            assert!(d >= low && d <= low * 3 / 2, "attempt {attempt}: {d} ms");
        }
    }
}

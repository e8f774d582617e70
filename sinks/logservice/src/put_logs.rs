//! One PutLogs request: lz4 the encoded `LogGroup`, sign, POST, and sort
//! the answer into done, retry or rejected.
//!
//! The signature is Alibaba's own `aliyun-log-sdk-sign` (signature v1:
//! HMAC-SHA1 over `VERB\nCONTENT-MD5\nCONTENT-TYPE\nDATE\n` + the sorted
//! `x-log-*`/`x-acs-*` headers + the resource): it also sets `Date`,
//! `Content-MD5` (uppercase hex of the compressed body), `Content-Length`,
//! `x-log-apiversion: 0.6.0`, `x-log-signaturemethod: hmac-sha1` and
//! `x-acs-security-token`, so what we send is what the SDKs send.

use std::time::Duration;

use aliyun_log_sdk_sign::{sign_v1, QueryParams};
use ureq::http::{self, HeaderMap, HeaderName, HeaderValue, Method};

use crate::credentials::Credentials;
use crate::options::LogServiceConfig;

/// What is read of an error answer: error bodies are a small JSON object.
const MAX_ERROR_BODY: u64 = 64 * 1024;

/// Error codes that mean "later": Log Service is busy or the project's or
/// shard's write quota is used up for now.
const RETRY_ERROR_CODES: [&str; 5] = [
    "ServerBusy",
    "WriteQuotaExceed",
    "ShardWriteQuotaExceed",
    "InternalServerError",
    "RequestTimeout",
];

/// Why a request failed.
#[derive(Debug)]
pub struct PutLogsError {
    /// Whether sending the same request later may succeed.
    pub retry: bool,
    /// For the operator: status, errorCode, errorMessage, request id.
    pub message: String,
    /// What kind of failure this is (`HTTP 503 ServerBusy`, `network`), so
    /// that an outage is logged once rather than at every retry.
    pub kind: String,
}

/// Sends signed PutLogs requests to one logstore.
pub struct PutLogsClient {
    agent: ureq::Agent,
    url: String,
    /// For an IP endpoint: `<project>.<ip>`, since the URL has no project.
    host_header: Option<HeaderValue>,
    /// The signed resource, `/logstores/<logstore>/shards/lb`.
    resource: String,
    credentials: Credentials,
    /// `<project>/<logstore>`, for messages.
    target: String,
}

impl PutLogsClient {
    pub fn new(
        config: &LogServiceConfig,
        credentials: Credentials,
        user_agent: &str,
    ) -> PutLogsClient {
        let e = &config.endpoint;
        let scheme = if e.https { "https" } else { "http" };
        // Load balancing across shards ("lb"), as the SDKs do without a hash key.
        let resource = format!("/logstores/{}/shards/lb", config.logstore);
        let (url, host_header) = if e.is_ip {
            let host = format!("{}.{}", config.project, e.host);
            (
                format!("{scheme}://{}{resource}", e.authority(&e.host)),
                // Validated: project and IP literal are plain ASCII.
                HeaderValue::from_str(&host).ok(),
            )
        } else {
            let host = format!("{}.{}", config.project, e.host);
            (format!("{scheme}://{}{resource}", e.authority(&host)), None)
        };
        let mut builder = ureq::Agent::config_builder();
        // A proxy (HTTPS_PROXY, ALL_PROXY... from the environment, as
        // ureq reads them) cannot reach this host's loopback.
        if e.is_loopback() {
            builder = builder.proxy(None);
        }
        let agent = builder
            .timeout_global(Some(config.timeout))
            // 4xx/5xx answers carry the errorCode we classify by.
            .http_status_as_error(false)
            // A signed POST is not replayed elsewhere; a redirect is an error.
            .max_redirects(0)
            .max_redirects_will_error(false)
            .user_agent(user_agent)
            .build()
            .new_agent();
        PutLogsClient {
            agent,
            url,
            host_header,
            resource,
            credentials,
            target: format!("{}/{}", config.project, config.logstore),
        }
    }

    /// The URL requests go to.
    pub fn url(&self) -> &str {
        &self.url
    }

    /// Sends one encoded `LogGroup`. Returns the request id.
    ///
    /// # Errors
    /// [`PutLogsError`], `retry` for network errors, 5xx, 429 and the busy
    /// and quota error codes; not for the rest (auth, parameters).
    pub fn put(&self, log_group: &[u8]) -> Result<String, PutLogsError> {
        let body = lz4_flex::block::compress(log_group);
        let request = self.signed_request(log_group.len(), body)?;
        let mut response = match self.agent.run(request) {
            Ok(r) => r,
            Err(e) => {
                return Err(PutLogsError {
                    retry: true,
                    message: format!("PutLogs to {}: {} failed: {e}", self.target, self.url),
                    kind: "network".to_owned(),
                })
            }
        };
        let status = response.status().as_u16();
        let request_id = response
            .headers()
            .get("x-log-requestid")
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
            .to_owned();
        // Read to the end (bounded) so the connection can be reused.
        let answer = response
            .body_mut()
            .with_config()
            .limit(MAX_ERROR_BODY)
            .read_to_vec()
            .unwrap_or_default();
        if status == 200 {
            return Ok(request_id);
        }
        let (code, message) = error_of(&answer);
        let retry = is_retryable(status, &code);
        let mut text = format!("PutLogs to {}: HTTP {status}", self.target);
        if !code.is_empty() {
            text.push_str(&format!(" {code}"));
        }
        if !message.is_empty() {
            text.push_str(&format!(": {message}"));
        }
        if !request_id.is_empty() {
            text.push_str(&format!(" (request id {request_id})"));
        }
        Err(PutLogsError {
            retry,
            message: text,
            kind: format!("HTTP {status} {code}"),
        })
    }

    fn signed_request(
        &self,
        raw_len: usize,
        body: Vec<u8>,
    ) -> Result<http::Request<Vec<u8>>, PutLogsError> {
        let mut headers = HeaderMap::new();
        headers.insert(
            http::header::CONTENT_TYPE,
            HeaderValue::from_static("application/x-protobuf"),
        );
        headers.insert(
            HeaderName::from_static("x-log-bodyrawsize"),
            HeaderValue::from(raw_len),
        );
        headers.insert(
            HeaderName::from_static("x-log-compresstype"),
            HeaderValue::from_static("lz4"),
        );
        if let Some(host) = &self.host_header {
            headers.insert(http::header::HOST, host.clone());
        }
        let c = &self.credentials;
        sign_v1(
            &c.access_key_id,
            c.access_key_secret.expose(),
            c.security_token.as_ref().map(|t| t.expose()),
            Method::POST,
            &self.resource,
            &mut headers,
            QueryParams::empty(),
            Some(&body),
        )
        // Only a header value with invisible characters fails here, and the
        // options and credentials were checked for that at open.
        .map_err(|e| PutLogsError {
            retry: false,
            message: format!("PutLogs to {}: cannot sign the request: {e}", self.target),
            kind: "sign".to_owned(),
        })?;
        let mut request = http::Request::post(&self.url)
            .body(body)
            .map_err(|e| PutLogsError {
                retry: false,
                message: format!(
                    "PutLogs to {}: bad request for {}: {e}",
                    self.target, self.url
                ),
                kind: "request".to_owned(),
            })?;
        *request.headers_mut() = headers;
        Ok(request)
    }
}

/// Whether an error answer is worth retrying: the service is down or busy
/// (5xx, 429) or a write quota is used up for the moment. Everything else
/// (bad signature, unknown project or logstore, invalid body) comes back
/// the same however often it is sent.
pub fn is_retryable(status: u16, error_code: &str) -> bool {
    status >= 500 || status == 429 || RETRY_ERROR_CODES.contains(&error_code)
}

/// `errorCode` and `errorMessage` of an error body, or what the body says
/// if it is not Log Service's JSON (a proxy's error page).
fn error_of(body: &[u8]) -> (String, String) {
    if let Ok(v) = serde_json::from_slice::<serde_json::Value>(body) {
        let field = |k: &str| v.get(k).and_then(|x| x.as_str()).unwrap_or("").to_owned();
        let code = field("errorCode");
        if !code.is_empty() {
            return (code, field("errorMessage"));
        }
    }
    let text: String = String::from_utf8_lossy(body)
        .chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .take(200)
        .collect();
    (String::new(), text.trim().to_owned())
}

/// A pause of 0 to 200 ms before answering RETRY. The host's backoff is
/// exponential but deterministic, and capture windows end on the wall
/// clock, so a fleet of VMs that hit a write quota together would retry
/// together, at 100, 200, 400 ms... and hit it again. A little randomness
/// spreads them; it is kept short because the worker is blocked meanwhile.
pub fn jitter() -> Duration {
    use std::hash::{BuildHasher, Hasher};
    // RandomState is seeded from the OS per thread and stepped per
    // instance: random enough for spreading retries, with no extra crate.
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u128(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos()),
    );
    Duration::from_millis(h.finish() % 201)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn classification() {
        assert!(is_retryable(503, "ServerBusy"));
        assert!(is_retryable(500, "InternalServerError"));
        assert!(is_retryable(502, ""));
        assert!(is_retryable(429, ""));
        assert!(is_retryable(403, "WriteQuotaExceed"));
        assert!(is_retryable(403, "ShardWriteQuotaExceed"));
        for code in [
            "SignatureNotMatch",
            "Unauthorized",
            "InvalidAccessKeyId",
            "ProjectNotExist",
            "LogStoreNotExist",
            "PostBodyInvalid",
        ] {
            assert!(!is_retryable(401, code), "{code}");
            assert!(!is_retryable(400, code), "{code}");
        }
    }

    #[test]
    fn error_bodies() {
        assert_eq!(
            error_of(
                br#"{"errorCode":"SignatureNotMatch","errorMessage":"signature x not match"}"#
            ),
            (
                "SignatureNotMatch".to_owned(),
                "signature x not match".to_owned()
            )
        );
        assert_eq!(
            error_of(b"<html>\r\nBad Gateway</html>"),
            (String::new(), "<html>  Bad Gateway</html>".to_owned())
        );
    }

    /// What the jitter is for: retries that hit a quota together come
    /// apart. 400 draws over 201 values: a constant, a few values, or
    /// draws stuck in one part of the range (a seed reused per call, a
    /// clock with coarse ticks) fail; a uniform draw fails these with
    /// odds below 1e-40.
    #[test]
    fn jitter_spreads_retries_over_0_to_200_ms() {
        const DRAWS: usize = 400;
        let ms: Vec<u128> = (0..DRAWS).map(|_| jitter().as_millis()).collect();
        assert_eq!(ms.len(), DRAWS);
        assert!(ms.iter().all(|&m| m <= 200), "{ms:?}");
        let distinct: std::collections::BTreeSet<u128> = ms.iter().copied().collect();
        // Expected about 174 distinct values.
        assert!(distinct.len() >= 100, "{} distinct: {ms:?}", distinct.len());
        // Each quarter of the range is hit: P(miss one) < 4 * (3/4)^400.
        for quarter in 0..4 {
            let (lo, hi) = (quarter * 50, quarter * 50 + 50);
            assert!(
                ms.iter().any(|&m| (lo..hi).contains(&m)),
                "no draw in {lo}..{hi} ms: {ms:?}"
            );
        }
    }
}

//! Reading and classifying a vendor's HTTP answer: bounded bodies,
//! problem+json (RFC 7807), `Retry-After`, `X-RateLimit-*`.

use crate::adapter::{DeliveryError, FailureClass};
use reqwest::header::HeaderMap;
use serde_json::Value;
use std::time::{Duration, SystemTime};

/// Classifies a non-2xx reply: 408, 429 and 5xx are transient, other 4xx
/// permanent. Problem details (or the `{code, message}` shape of the SUAP
/// specifications) become the reason and the vendor code.
pub fn classify_failure(status: u16, retry_after: Option<Duration>, body: &[u8]) -> DeliveryError {
    let class = if status == 408 || status == 429 || status >= 500 {
        FailureClass::Transient
    } else {
        FailureClass::Permanent
    };
    let (detail, code) = problem_details(body);
    let reason = match detail {
        Some(d) => format!("HTTP {status}: {d}"),
        None => format!("HTTP {status}"),
    };
    DeliveryError {
        class,
        reason,
        vendor_code: code,
        retry_after,
    }
}

/// A readable summary and an error code from a problem+json body.
pub fn problem_details(body: &[u8]) -> (Option<String>, Option<String>) {
    let Ok(Value::Object(obj)) = serde_json::from_slice::<Value>(body) else {
        return (None, None);
    };
    let text = |k: &str| obj.get(k).and_then(scalar_text);
    let summary: Vec<String> = ["title", "detail", "message"]
        .iter()
        .filter_map(|k| text(k))
        .collect();
    let summary = (!summary.is_empty()).then(|| truncate(&summary.join(": "), 500));
    (summary, text("code").or_else(|| text("type")))
}

/// A JSON scalar as text (non-empty strings, numbers, booleans).
pub fn scalar_text(v: &Value) -> Option<String> {
    match v {
        Value::String(s) if !s.is_empty() => Some(s.clone()),
        Value::Number(n) => Some(n.to_string()),
        Value::Bool(b) => Some(b.to_string()),
        _ => None,
    }
}

/// Cuts `s` to at most `max` bytes on a character boundary.
pub fn truncate(s: &str, max: usize) -> String {
    if s.len() <= max {
        return s.to_string();
    }
    let mut end = max;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}…", &s[..end])
}

/// Parses `Retry-After`: delay-seconds or an HTTP date.
pub fn parse_retry_after(value: &str, now: SystemTime) -> Option<Duration> {
    let value = value.trim();
    if let Ok(secs) = value.parse::<u64>() {
        return Some(Duration::from_secs(secs));
    }
    let when = httpdate::parse_http_date(value).ok()?;
    Some(when.duration_since(now).unwrap_or(Duration::ZERO))
}

/// How long the vendor asks us to stay away, from its headers:
/// `Retry-After`, or `X-RateLimit-Remaining: 0` with `X-RateLimit-Reset`
/// (seconds to wait, or a Unix time when larger than a year of seconds).
pub fn requested_pause(headers: &HeaderMap, now: SystemTime) -> Option<Duration> {
    let text = |name: &str| headers.get(name).and_then(|v| v.to_str().ok());
    if let Some(d) = text("retry-after").and_then(|v| parse_retry_after(v, now)) {
        return Some(d);
    }
    let remaining = text("x-ratelimit-remaining")?.trim().parse::<u64>().ok()?;
    if remaining > 0 {
        return None;
    }
    let reset = text("x-ratelimit-reset")?.trim().parse::<u64>().ok()?;
    const YEAR: u64 = 365 * 24 * 3600;
    if reset > YEAR {
        let at = SystemTime::UNIX_EPOCH + Duration::from_secs(reset);
        Some(at.duration_since(now).unwrap_or(Duration::ZERO))
    } else {
        Some(Duration::from_secs(reset))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn retry_after_seconds_and_dates() {
        let now = SystemTime::UNIX_EPOCH + Duration::from_secs(1_000_000_000);
        assert_eq!(parse_retry_after("7", now), Some(Duration::from_secs(7)));
        let later = httpdate::fmt_http_date(now + Duration::from_secs(30));
        assert_eq!(
            parse_retry_after(&later, now),
            Some(Duration::from_secs(30))
        );
        assert_eq!(parse_retry_after("soon", now), None);
    }

    #[test]
    fn rate_limit_headers_pause_only_when_exhausted() {
        let now = SystemTime::UNIX_EPOCH + Duration::from_secs(1_000_000_000);
        let mut h = HeaderMap::new();
        h.insert("x-ratelimit-remaining", "3".parse().unwrap());
        h.insert("x-ratelimit-reset", "20".parse().unwrap());
        assert_eq!(requested_pause(&h, now), None);
        h.insert("x-ratelimit-remaining", "0".parse().unwrap());
        assert_eq!(requested_pause(&h, now), Some(Duration::from_secs(20)));
        h.insert("x-ratelimit-reset", "1000000045".parse().unwrap());
        assert_eq!(requested_pause(&h, now), Some(Duration::from_secs(45)));
        h.insert("retry-after", "2".parse().unwrap());
        assert_eq!(requested_pause(&h, now), Some(Duration::from_secs(2)));
    }
}

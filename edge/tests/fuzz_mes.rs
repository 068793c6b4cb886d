//! Fuzzing the MES connector's reading of answers (issue 9):
//! `mes::classify` (status, headers, first bytes of the body, URL, now) and
//! `mes::retry_after`.
//!
//! Seeds in `fuzz/corpus/mes/` are raw HTTP answers (status line, headers,
//! body) named after their status; an `X-Fuzz-Url` header, not passed on,
//! sets the URL that answered (default `http://mes.example:8080/api/workorders`).
//!
//! - `any_answer_is_classified_without_losing_the_order`: mutated answers.
//!   `classify` never panics and keeps the module's table: only a 2xx is an
//!   acceptance (so a 301/302/303 never is, whatever follows it); a repost
//!   goes only to http(s), never from https down to http, and only for
//!   307/308; 429/503 and 408/409/425/5xx are retried, a `Retry-After` wait
//!   is at most `RETRY_AFTER_MAX`; other 4xx are refused (dead letter);
//!   anything else is not accepted. Every message is bounded in length,
//!   however long the body or headers.
//! - `corpus_replays`: each seed under the same checks; the 301 seed names
//!   its `Location`, the 1.5 GB-declared 200 is accepted on its status.
//!
//! `cargo test --workspace --test fuzz_mes` runs 2 s; `scripts/fuzz.sh`
//! runs it longer.

#[path = "../../fuzz/support.rs"]
mod support;

use reqwest::Url;
use reqwest::header::{HeaderMap, HeaderName, HeaderValue};
use support::{Stats, budget, corpus, mutate};
use triad_edge::mes::{BODY_SNIPPET_MAX, Decision, RETRY_AFTER_MAX, classify, retry_after};

/// 2025-11-24T16:00:00Z, in ns.
const NOW_NS: i64 = 1_764_000_000_000_000_000;
const DEFAULT_URL: &str = "http://mes.example:8080/api/workorders";
/// Longest message a decision may carry (the log line, the dead letter).
const WHY_MAX: usize = 2048;

/// An answer read from raw bytes.
struct Answer {
    status: u16,
    headers: HeaderMap,
    body: Vec<u8>,
    url: Url,
}

fn parse(raw: &[u8]) -> Answer {
    let split = raw.windows(4).position(|w| w == b"\r\n\r\n");
    let (head, body) = match split {
        Some(i) => (&raw[..i], raw[i + 4..].to_vec()),
        None => (raw, Vec::new()),
    };
    let mut lines = head.split(|b| *b == b'\n').map(|l| l.strip_suffix(b"\r").unwrap_or(l));
    let status_line = lines.next().unwrap_or_default();
    // `HTTP/1.1 301 ...`: any three digits after the first space; else the
    // first two bytes as a number, so that every status gets tried.
    let status = status_line
        .splitn(3, |b| *b == b' ')
        .nth(1)
        .and_then(|s| std::str::from_utf8(s).ok())
        .and_then(|s| s.parse::<u16>().ok())
        .unwrap_or_else(|| u16::from_le_bytes([*raw.first().unwrap_or(&0), *raw.get(1).unwrap_or(&0)]));
    let mut headers = HeaderMap::new();
    let mut url = Url::parse(DEFAULT_URL).unwrap();
    for line in lines {
        let Some(colon) = line.iter().position(|b| *b == b':') else {
            continue;
        };
        let (name, value) = (&line[..colon], line[colon + 1..].trim_ascii());
        if name.eq_ignore_ascii_case(b"x-fuzz-url") {
            if let Some(u) = std::str::from_utf8(value).ok().and_then(|v| Url::parse(v).ok()) {
                url = u;
            }
            continue;
        }
        if let (Ok(n), Ok(v)) = (HeaderName::from_bytes(name), HeaderValue::from_bytes(value)) {
            headers.append(n, v);
        }
    }
    Answer {
        status,
        headers,
        body,
        url,
    }
}

/// The module table, as assertions; returns the decision.
fn check(a: &Answer) -> Decision {
    // The connector passes at most BODY_SNIPPET_MAX bytes.
    let body = &a.body[..a.body.len().min(BODY_SNIPPET_MAX)];
    let d = classify(a.status, &a.headers, body, &a.url, NOW_NS);
    let s = a.status;
    let context = || format!("status {s}, headers {:?}, url {} -> {d:?}", a.headers, a.url);
    match &d {
        Decision::Accepted { status } => {
            assert!((200..=299).contains(&s) && *status == s, "accepted: {}", context())
        }
        Decision::Repost { to, permanent, status } => {
            assert!(matches!(s, 307 | 308) && *status == s, "reposted: {}", context());
            assert_eq!(*permanent, s == 308, "{}", context());
            assert!(matches!(to.scheme(), "http" | "https"), "repost to {to}: {}", context());
            assert!(
                !(a.url.scheme() == "https" && to.scheme() == "http"),
                "downgrade: {}",
                context()
            );
        }
        Decision::Retry { why, after } => {
            assert!(matches!(s, 408 | 409 | 425 | 429 | 500..=599), "retried: {}", context());
            if let Some(wait) = after {
                assert!(*wait <= RETRY_AFTER_MAX, "waits {wait:?}: {}", context());
                assert!(matches!(s, 429 | 503), "a wait for {s}: {}", context());
            }
            assert!(why.len() <= WHY_MAX, "a {}-byte message: {}", why.len(), context());
        }
        Decision::NotAccepted { why } => {
            assert!(!(200..=299).contains(&s), "{}", context());
            assert!(
                matches!(s, 300..=399) || !(200..=599).contains(&s),
                "not accepted: {}",
                context()
            );
            assert!(why.len() <= WHY_MAX, "a {}-byte message: {}", why.len(), context());
        }
        Decision::Refused { why } => {
            assert!(
                (400..=499).contains(&s) && !matches!(s, 408 | 409 | 425 | 429),
                "refused: {}",
                context()
            );
            assert!(why.len() <= WHY_MAX, "a {}-byte message: {}", why.len(), context());
        }
    }
    if matches!(s, 301..=303) {
        assert!(matches!(d, Decision::NotAccepted { .. }), "{}", context());
    }
    d
}

#[test]
fn any_answer_is_classified_without_losing_the_order() {
    let seeds: Vec<Vec<u8>> = corpus("mes").into_iter().map(|(_, b)| b).collect();
    let stats = Stats::new("mes");
    bolero::check!().with_test_time(budget()).for_each(|input: &[u8]| {
        stats.count();
        let raw = mutate(&seeds, input);
        check(&parse(&raw));
        // Retry-After alone, at any time.
        let now = i64::from_le_bytes(std::array::from_fn(|i| *input.get(i).unwrap_or(&0)));
        let _ = retry_after(&String::from_utf8_lossy(&raw), now);
    });
}

#[test]
fn corpus_replays() {
    for (name, raw) in corpus("mes") {
        let a = parse(&raw);
        let prefix: u16 = name[..3].parse().unwrap();
        assert_eq!(a.status, prefix, "{name}");
        let d = check(&a);
        match name.as_str() {
            "301-moved-post-becomes-get.http" => match &d {
                Decision::NotAccepted { why } => {
                    assert!(why.contains("http://mes.example:8080/api/v2/workorders"), "{why}")
                }
                other => panic!("{name}: {other:?}"),
            },
            "200-declares-1.5gb-body.http" => assert_eq!(d, Decision::Accepted { status: 200 }),
            "307-repost-relative.http" => match &d {
                Decision::Repost { to, .. } => assert_eq!(to.as_str(), "http://mes.example:8080/api/v2/workorders"),
                other => panic!("{name}: {other:?}"),
            },
            "307-https-down-to-http.http" | "307-ftp-location.http" | "308-javascript-location.http" => {
                assert!(matches!(d, Decision::NotAccepted { .. }), "{name}: {d:?}")
            }
            "429-retry-after-120.http" => {
                assert!(
                    matches!(d, Decision::Retry { after: Some(w), .. } if w.as_secs() == 120),
                    "{d:?}"
                )
            }
            "429-retry-after-huge.http" | "429-retry-after-future-date.http" => {
                assert!(
                    matches!(d, Decision::Retry { after: Some(w), .. } if w == RETRY_AFTER_MAX),
                    "{d:?}"
                )
            }
            _ => {}
        }
    }
}

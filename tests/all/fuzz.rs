//! Fuzzing the request decoder: everything that touches untrusted bytes before a plugin runs
//! (the parser with its shape limits, the JSON → WIT mapping) and the mapping back.
//!
//! Inputs are the contract's examples mutated at two levels: bytes (flips, insertions of
//! JSON punctuation, deletions, splices, repetition) and JSON values (a value replaced by
//! one of another type, keys renamed or duplicated, deep nesting, long strings). The
//! properties: nothing panics; a refusal names JSON paths under `$`; an accepted body maps
//! back to JSON that decodes to the same record.
//!
//! CI runs a few seconds. A long run (the command in docs/security.md):
//! `FOLLOWUP_FUZZ_SECONDS=600 cargo test --release -p followup-tests --test all fuzz -- --nocapture`

use crate::support::example;
use followup_host::config::InputLimits;
use followup_host::contract::types::{AppointmentSearchResponse, BookJob, BookJobResponse};
use followup_host::contract::{decode, encode};
use followup_host::http::json::parse_body;
use serde_json::{Value, json};
use std::time::{Duration, Instant};

/// xorshift64*: deterministic, seedable, no dependencies.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }
    fn below(&mut self, n: usize) -> usize {
        (self.next() % n.max(1) as u64) as usize
    }
    fn pick<'a, T>(&mut self, items: &'a [T]) -> &'a T {
        &items[self.below(items.len())]
    }
}

const TOKENS: &[&str] = &[
    "{",
    "}",
    "[",
    "]",
    "\"",
    ":",
    ",",
    "\\",
    "\\u0000",
    "\\ud800",
    "null",
    "true",
    "-0",
    "1e999",
    "0.1",
    "\"Qty:\"",
    "\"Lat\"",
    "é",
    "\u{10ffff}",
    "\0",
    "9999999999999999999999",
];

fn random_value(rng: &mut Rng, depth: usize) -> Value {
    match rng.below(if depth > 3 { 6 } else { 8 }) {
        0 => Value::Null,
        1 => json!(rng.below(2) == 0),
        2 => json!(rng.next() as i64),
        3 => json!((rng.next() as f64) / 7.0),
        4 => json!(rng.pick(&[
            "",
            "2024-06-18T17:00:00Z",
            "2024-02-30T00:00:00Z",
            "x",
            "38.9"
        ])),
        5 => json!("y".repeat(rng.below(300))),
        6 => Value::Array(
            (0..rng.below(4))
                .map(|_| random_value(rng, depth + 1))
                .collect(),
        ),
        _ => {
            let mut map = serde_json::Map::new();
            for _ in 0..rng.below(4) {
                let key = rng
                    .pick(&["Start", "End", "Qty", "Period", "X", "Items", ""])
                    .to_string();
                map.insert(key, random_value(rng, depth + 1));
            }
            Value::Object(map)
        }
    }
}

/// Replaces, renames or nests one randomly chosen value of `doc`.
fn mutate_tree(rng: &mut Rng, doc: &mut Value, depth: usize) {
    match doc {
        Value::Object(map) if !map.is_empty() && rng.below(3) != 0 => {
            let keys: Vec<String> = map.keys().cloned().collect();
            let key = rng.pick(&keys).clone();
            match rng.below(6) {
                0 => {
                    map.insert(key, random_value(rng, depth));
                }
                1 => {
                    if let Some(v) = map.remove(&key) {
                        map.insert(format!("{key}{}", rng.pick(&[":", " ", "x", ""])), v);
                    }
                }
                _ => {
                    if let Some(v) = map.get_mut(&key) {
                        mutate_tree(rng, v, depth + 1);
                    }
                }
            }
        }
        Value::Array(items) if !items.is_empty() && rng.below(3) != 0 => {
            let i = rng.below(items.len());
            mutate_tree(rng, &mut items[i], depth + 1);
        }
        other => {
            *other = match rng.below(3) {
                0 => random_value(rng, depth),
                1 => {
                    serde_json::from_str(&format!("{}1{}", "[".repeat(40), "]".repeat(40))).unwrap()
                }
                _ => json!("z".repeat(70_000)),
            };
        }
    }
}

fn mutate_bytes(rng: &mut Rng, bytes: &mut Vec<u8>, corpus: &[Vec<u8>]) {
    for _ in 0..1 + rng.below(4) {
        let at = rng.below(bytes.len() + 1);
        match rng.below(6) {
            0 if !bytes.is_empty() => {
                let i = rng.below(bytes.len());
                bytes[i] ^= 1 << rng.below(8);
            }
            1 => {
                let token = rng.pick(TOKENS).as_bytes().to_vec();
                bytes.splice(at..at, token);
            }
            2 if !bytes.is_empty() => {
                let end = (at + rng.below(16)).min(bytes.len());
                bytes.drain(at.min(end)..end);
            }
            3 => {
                let other = rng.pick(corpus);
                let from = rng.below(other.len());
                let to = (from + rng.below(64)).min(other.len());
                bytes.splice(at..at, other[from..to].iter().copied());
            }
            4 if !bytes.is_empty() => {
                let end = (at + rng.below(8)).min(bytes.len());
                let chunk = bytes[at.min(end)..end].repeat(1 + rng.below(50));
                bytes.splice(at..at, chunk);
            }
            _ => bytes.truncate(at),
        }
    }
}

/// One input through the decoder; panics (the failure a fuzzer reports) on a broken
/// property.
fn check(bytes: &[u8], limits: &InputLimits) {
    let Ok(value) = parse_body(bytes, limits) else {
        return;
    };
    match decode::<BookJob>(&value) {
        Ok(job) => {
            let back = encode::<BookJob>(&job).expect("a decoded job encodes");
            let again = decode::<BookJob>(&back).expect("an encoded job decodes");
            assert_eq!(
                encode::<BookJob>(&again).unwrap(),
                back,
                "the mapping is stable"
            );
        }
        Err(problems) => {
            assert!(!problems.is_empty());
            for p in problems {
                assert!(p.path.starts_with('$'), "{p:?}");
                assert!(!p.reason.is_empty(), "{p:?}");
            }
        }
    }
    // The response decoders the SDK offers to plugins see untrusted JSON too.
    if let Ok(r) = decode::<BookJobResponse>(&value) {
        let _ = encode::<BookJobResponse>(&r);
    }
    if let Ok(r) = decode::<AppointmentSearchResponse>(&value) {
        let _ = encode::<AppointmentSearchResponse>(&r);
    }
}

#[test]
fn fuzz_the_request_decoder() {
    let seconds: u64 = std::env::var("FOLLOWUP_FUZZ_SECONDS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(3);
    let seed: u64 = std::env::var("FOLLOWUP_FUZZ_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(0x5eed_f011_0c0d_e5e5);
    let corpus: Vec<Vec<u8>> = [
        "book-job.full.json",
        "book-job.minimal.json",
        "appointment-search.request.json",
        "appointment-search.response.json",
        "book-job.response.json",
    ]
    .iter()
    .map(|name| example(name).into_bytes())
    .collect();
    let trees: Vec<Value> = corpus
        .iter()
        .map(|b| serde_json::from_slice(b).unwrap())
        .collect();
    let limits = InputLimits::default();
    let mut rng = Rng(seed);
    let until = Instant::now() + Duration::from_secs(seconds);
    let mut executions = 0u64;
    while Instant::now() < until {
        for _ in 0..64 {
            let input = if rng.below(2) == 0 {
                let mut tree = rng.pick(&trees).clone();
                for _ in 0..1 + rng.below(3) {
                    mutate_tree(&mut rng, &mut tree, 0);
                }
                tree.to_string().into_bytes()
            } else {
                let mut bytes = rng.pick(&corpus).clone();
                mutate_bytes(&mut rng, &mut bytes, &corpus);
                bytes
            };
            check(&input, &limits);
            executions += 1;
        }
    }
    println!("fuzz: {executions} executions in {seconds} s (seed {seed}), no failure");
    assert!(executions > 0);
}

//! Arbitrary bytes into the GGUF header reader: it must return Ok or a
//! GgufError, never panic, and never allocate more than libFuzzer's
//! `-malloc_limit_mb` (inputs are a few KB, so any large allocation is a
//! lying length trusted).
#![no_main]

use std::io::BufReader;

use ggplan::gguf::{read_header, Options, Value};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let len = data.len() as u64;
    // As a local file: every length is checked against the file size; arrays
    // longer than 8 are skipped (the tokenizer path).
    let known = Options {
        file_len: Some(len),
        max_array_len: 8,
        ..Options::default()
    };
    if let Ok(h) = read_header(data, &known) {
        assert!(h.bytes_read <= len);
        assert!(h.data_offset >= h.bytes_read);
        assert!(h.alignment.is_power_of_two());
        for t in &h.tensors {
            // Known sizes end inside the file (check_tensor_bounds).
            if let Some(n) = t.n_bytes() {
                assert!(h.data_offset + t.offset + n <= len);
            }
        }
    }
    // As a prefix of unknown length (an HTTP range read before the first
    // Content-Range), materialising every array: the bounded-read path.
    let unknown = Options {
        max_array_len: u64::MAX,
        ..Options::default()
    };
    let whole = read_header(data, &unknown);
    if let Ok(h) = &whole {
        assert!(h.bytes_read <= len);
        for (_, v) in &h.metadata {
            assert!(!matches!(v, Value::SkippedArray { .. }));
        }
    }
    // The same bytes handed out a few at a time (a socket, a range reader):
    // every loop that crosses a buffer boundary runs, and the answer (or
    // the kind of error) must not change.
    let cap = 1 + data.first().map_or(0, |b| usize::from(b % 16));
    let trickle = BufReader::with_capacity(cap, data);
    match (read_header(trickle, &unknown), &whole) {
        // Compared through Debug: a NaN value is not == to itself.
        (Ok(a), Ok(b)) => assert_eq!(format!("{a:?}"), format!("{b:?}")),
        (Err(a), Err(b)) => assert_eq!(a.to_string(), b.to_string()),
        (a, b) => panic!("buffering changed the result: {a:?} vs {b:?}"),
    }
});

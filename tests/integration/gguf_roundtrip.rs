//! Property tests of the GGUF header reader against the crate's writer:
//! arbitrary metadata (every value type, nested arrays) and tensor tables
//! in both byte orders and v2/v3 read back exactly; random truncations and
//! mutations of a valid header are errors, never panics.

use proptest::prelude::*;

use ggplan::gguf::write::Writer;
use ggplan::gguf::{read_header, GgmlType, Header, Options, Value, ValueType, KEY_ALIGNMENT};
use ggplan::units::pad;

/// Scalars of the on-disk type number `ty` (0..12, strings included).
fn scalar_of(ty: usize) -> BoxedStrategy<Value> {
    match ty {
        0 => any::<u8>().prop_map(Value::U8).boxed(),
        1 => any::<i8>().prop_map(Value::I8).boxed(),
        2 => any::<u16>().prop_map(Value::U16).boxed(),
        3 => any::<i16>().prop_map(Value::I16).boxed(),
        4 => any::<u32>().prop_map(Value::U32).boxed(),
        5 => any::<i32>().prop_map(Value::I32).boxed(),
        6 => any::<u32>()
            .prop_map(|b| Value::F32(f32::from_bits(b)))
            .boxed(),
        7 => any::<bool>().prop_map(Value::Bool).boxed(),
        8 => "\\PC{0,12}".prop_map(Value::String).boxed(),
        9 => any::<u64>().prop_map(Value::U64).boxed(),
        10 => any::<i64>().prop_map(Value::I64).boxed(),
        _ => any::<u64>()
            .prop_map(|b| Value::F64(f64::from_bits(b)))
            .boxed(),
    }
}

/// Arrays are homogeneous on disk: one element type, then the elements. An
/// array of arrays is allowed by the spec (each inner array has its own type).
fn array(depth: u32) -> BoxedStrategy<Value> {
    let flat = (0..12usize)
        .prop_flat_map(|ty| prop::collection::vec(scalar_of(ty), 0..7))
        .prop_map(Value::Array);
    if depth == 0 {
        return flat.boxed();
    }
    prop_oneof![
        3 => flat,
        1 => prop::collection::vec(array(depth - 1), 0..4).prop_map(Value::Array),
    ]
    .boxed()
}

fn value() -> impl Strategy<Value = Value> {
    prop_oneof![(0..12usize).prop_flat_map(scalar_of), array(2)]
}

/// Floats compared by bits (NaN payloads must survive too).
fn same(a: &Value, b: &Value) -> bool {
    match (a, b) {
        (Value::F32(x), Value::F32(y)) => x.to_bits() == y.to_bits(),
        (Value::F64(x), Value::F64(y)) => x.to_bits() == y.to_bits(),
        (Value::Array(x), Value::Array(y)) => {
            x.len() == y.len() && x.iter().zip(y).all(|(a, b)| same(a, b))
        }
        _ => a == b,
    }
}

/// What the reader should return for `v` with this `max_array_len`.
fn expected(v: &Value, max_array_len: u64) -> Value {
    match v {
        Value::Array(items) if items.len() as u64 > max_array_len => Value::SkippedArray {
            elem: items.first().map_or(ValueType::U8, Value::value_type),
            len: items.len() as u64,
        },
        Value::Array(items) => {
            Value::Array(items.iter().map(|i| expected(i, max_array_len)).collect())
        }
        other => other.clone(),
    }
}

const TYPES: &[GgmlType] = &[
    GgmlType::F32,
    GgmlType::F16,
    GgmlType::BF16,
    GgmlType::Q4_0,
    GgmlType::Q8_0,
    GgmlType::Q4_K,
    GgmlType::Q6_K,
    GgmlType::IQ4_NL,
    GgmlType::MXFP4,
    GgmlType(40),
    GgmlType(41),
    GgmlType(99),
];

#[derive(Clone, Debug)]
struct Model {
    version: u32,
    big_endian: bool,
    alignment: Option<u32>,
    kvs: Vec<(String, Value)>,
    tensors: Vec<(String, Vec<u64>, GgmlType)>,
}

fn tensor() -> impl Strategy<Value = (Vec<u64>, GgmlType)> {
    (
        prop::sample::select(TYPES),
        1u64..4,
        prop::collection::vec(1u64..9, 0..4),
    )
        .prop_map(|(ty, blocks, rest)| {
            let block = ty.traits().map_or(1, |t| t.block_elems);
            let mut dims = vec![blocks * block];
            dims.extend(rest);
            (dims, ty)
        })
}

fn model() -> impl Strategy<Value = Model> {
    (
        prop::sample::select(&[2u32, 3][..]),
        any::<bool>(),
        prop::option::of(prop::sample::select(&[1u32, 8, 32, 64, 4096][..])),
        prop::collection::btree_map("[a-z]{1,6}(\\.[a-z_]{1,8}){0,2}", value(), 0..8),
        prop::collection::btree_map("[a-z0-9_.]{1,16}", tensor(), 0..8),
    )
        .prop_map(|(version, big_endian, alignment, kvs, tensors)| Model {
            version,
            big_endian,
            alignment,
            kvs: kvs.into_iter().collect(),
            tensors: tensors.into_iter().map(|(n, (d, t))| (n, d, t)).collect(),
        })
}

fn writer(m: &Model) -> Writer {
    let mut w = Writer::new();
    w.version = m.version;
    w.big_endian = m.big_endian;
    if let Some(a) = m.alignment {
        w.kv(KEY_ALIGNMENT, Value::U32(a));
    }
    for (k, v) in &m.kvs {
        w.kv(k, v.clone());
    }
    for (name, dims, ty) in &m.tensors {
        w.tensor(name, dims, *ty);
    }
    w
}

fn check(m: &Model, h: &Header, max_array_len: u64) -> Result<(), TestCaseError> {
    prop_assert_eq!(h.version, m.version);
    prop_assert_eq!(h.big_endian, m.big_endian);
    let alignment = u64::from(m.alignment.unwrap_or(32));
    prop_assert_eq!(h.alignment, alignment);
    let mut want: Vec<(String, Value)> = Vec::new();
    if let Some(a) = m.alignment {
        want.push((KEY_ALIGNMENT.into(), Value::U32(a)));
    }
    want.extend(
        m.kvs
            .iter()
            .map(|(k, v)| (k.clone(), expected(v, max_array_len))),
    );
    prop_assert_eq!(h.metadata.len(), want.len());
    for ((gk, gv), (wk, wv)) in h.metadata.iter().zip(&want) {
        prop_assert_eq!(gk, wk);
        prop_assert!(same(gv, wv), "{}: {:?} != {:?}", gk, gv, wv);
    }
    // The layout rule: each tensor at the running offset, padded to the
    // alignment (unknown types count 1 byte per element in the writer).
    prop_assert_eq!(h.tensors.len(), m.tensors.len());
    let mut offset = 0u64;
    for (t, (name, dims, ty)) in h.tensors.iter().zip(&m.tensors) {
        prop_assert_eq!(&t.name, name);
        prop_assert_eq!(&t.dims, dims);
        prop_assert_eq!(t.ty, *ty);
        prop_assert_eq!(t.offset, offset);
        let n = ty
            .nbytes(dims)
            .unwrap_or_else(|| dims.iter().product::<u64>());
        offset += pad(n, alignment);
    }
    Ok(())
}

fn no_key_clash(m: &Model) -> bool {
    m.kvs.iter().all(|(k, _)| k != KEY_ALIGNMENT)
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 96, ..ProptestConfig::default() })]

    #[test]
    fn writer_reader_round_trip(m in model().prop_filter("alignment key", no_key_clash),
                                max_array_len in 0u64..8) {
        let w = writer(&m);
        let bytes = w.finish();
        let opts = Options { max_array_len, ..Options::default() };
        let h = read_header(&bytes[..], &opts).unwrap();
        check(&m, &h, max_array_len)?;
        // Header proper, then zero padding up to the data region.
        prop_assert_eq!(h.data_offset, bytes.len() as u64);
        prop_assert_eq!(h.data_offset, pad(h.bytes_read, h.alignment));
        prop_assert!(bytes[h.bytes_read as usize..].iter().all(|&b| b == 0));
        // With the full (sparse) file length every bound check passes, and
        // the answer is the same.
        let full = Options { file_len: Some(bytes.len() as u64 + w.data_len()), ..opts.clone() };
        // (Headers compared through Debug: a NaN value is not == to itself.)
        let dbg = format!("{h:?}");
        prop_assert_eq!(format!("{:?}", read_header(&bytes[..], &full).unwrap()), dbg.clone());
        // A reader that hands out a few bytes at a time (as a socket or a
        // small buffer does) must give the same answer.
        let trickle = std::io::BufReader::with_capacity(1 + (bytes.len() % 13), &bytes[..]);
        prop_assert_eq!(format!("{:?}", read_header(trickle, &opts).unwrap()), dbg);
    }

    #[test]
    fn truncations_and_mutations_never_panic(
        m in model().prop_filter("alignment key", no_key_clash),
        cut in any::<prop::sample::Index>(),
        flips in prop::collection::vec((any::<prop::sample::Index>(), any::<u8>()), 0..4),
        lie in prop::option::of((any::<prop::sample::Index>(), prop::sample::select(
            &[u64::MAX, 1 << 63, 1 << 40, 1 << 32, 0xFFFF_FFFF, 4097][..]))),
        known_len in any::<bool>(),
        max_array_len in prop::sample::select(&[0u64, 4, 4096, u64::MAX][..]),
    ) {
        let mut bytes = writer(&m).finish();
        for (at, v) in flips {
            let i = at.index(bytes.len());
            bytes[i] = v;
        }
        // A lying 64-bit length or count written over any 8 bytes.
        if let Some((at, v)) = lie {
            let i = at.index(bytes.len().saturating_sub(7).max(1));
            if i + 8 <= bytes.len() {
                bytes[i..i + 8].copy_from_slice(&v.to_le_bytes());
            }
        }
        let cut = cut.index(bytes.len() + 1);
        let b = &bytes[..cut];
        let opts = Options {
            max_array_len,
            file_len: known_len.then_some(b.len() as u64),
            ..Options::default()
        };
        match read_header(b, &opts) {
            Ok(h) => prop_assert!(h.bytes_read <= b.len() as u64),
            Err(e) => prop_assert!(!e.to_string().is_empty()),
        }
    }
}

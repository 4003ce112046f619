//! Seed corpus for `read_header`, built with the crate's own writer:
//! every value type, nested arrays, both byte orders, v2 and v3, unknown
//! tensor types, a skipped long array. Run from `fuzz/`.

use std::fs;

use ggplan::gguf::write::{tiny_example, Writer};
use ggplan::gguf::{GgmlType, Value};

fn main() -> std::io::Result<()> {
    let dir = std::path::Path::new("corpus/read_header");
    fs::create_dir_all(dir)?;
    let mut seeds = vec![tiny_example()];
    for (version, big_endian) in [(3, false), (3, true), (2, false), (2, true)] {
        let mut w = Writer::new();
        w.version = version;
        w.big_endian = big_endian;
        w.kv("general.architecture", Value::String("llama".into()))
            .kv("general.alignment", Value::U32(64))
            .kv("u8", Value::U8(1))
            .kv("i8", Value::I8(-1))
            .kv("u16", Value::U16(2))
            .kv("i16", Value::I16(-2))
            .kv("u32", Value::U32(3))
            .kv("i32", Value::I32(-3))
            .kv("f32", Value::F32(0.5))
            .kv("bool", Value::Bool(true))
            .kv("u64", Value::U64(4))
            .kv("i64", Value::I64(-4))
            .kv("f64", Value::F64(0.25))
            .kv(
                "nested",
                Value::Array(vec![
                    Value::Array(vec![Value::String("a".into())]),
                    Value::Array(vec![Value::U16(7), Value::U16(8)]),
                ]),
            )
            .kv(
                "tokenizer.ggml.scores",
                Value::Array(vec![Value::F32(0.0); 20]),
            )
            .kv(
                "tokenizer.ggml.tokens",
                Value::Array((0..12).map(|i| Value::String(format!("t{i}"))).collect()),
            )
            .kv_raw_string("bad.utf8", &[0x61, 0xff])
            .tensor("token_embd.weight", &[64, 4], GgmlType::Q8_0)
            .tensor("blk.0.ffn_up_exps.weight", &[64, 8, 2], GgmlType::MXFP4)
            .tensor("future", &[3, 3], GgmlType(99));
        seeds.push(w.finish());
    }
    for (i, s) in seeds.iter().enumerate() {
        fs::write(dir.join(format!("seed-{i}")), s)?;
    }
    println!("{} seeds in {}", seeds.len(), dir.display());
    Ok(())
}

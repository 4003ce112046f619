//! Profile loading and analysis speed on the largest shipped profile
//! (GLM-4.7-Flash, 866 tensors): what every `ggplan inspect/plan` pays up front.

use std::path::Path;

use ggplan::model::{Model, ModelProfile};

fn main() {
    divan::main();
}

const GLM: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/models/glm-4.7-flash-q4_k_m.toml"
);

#[divan::bench]
fn parse_profile_toml(b: divan::Bencher) {
    let text = std::fs::read_to_string(GLM).unwrap();
    b.bench(|| ModelProfile::from_toml_str(divan::black_box(&text), Path::new(GLM)).unwrap());
}

#[divan::bench]
fn analyse_profile(b: divan::Bencher) {
    let p = ModelProfile::load_toml(Path::new(GLM)).unwrap();
    b.bench(|| Model::from_profile(divan::black_box(p.clone())).unwrap());
}

#[divan::bench]
fn write_profile_toml(b: divan::Bencher) {
    let p = ModelProfile::load_toml(Path::new(GLM)).unwrap();
    b.bench(|| divan::black_box(&p).to_toml());
}

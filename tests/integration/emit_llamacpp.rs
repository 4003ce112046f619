//! The four formats read back by llama.cpp itself: a POSIX shell runs the
//! shell line, the llama-swap `cmd` and the models.conf launcher expansion,
//! and llama-server's own option table (`tests/tools/preset_check.cpp`,
//! `common_params_to_map` / `common_preset_context::load_from_ini`) reads
//! the argv and the preset. All four must give llama-server the same
//! options.
//!
//! Needs a llama.cpp build, so it is ignored by default:
//! ```sh
//! L=/path/to/llama.cpp   # built with llama-common (b11434 was used)
//! g++ -std=c++17 -I$L/common -I$L/include -I$L/ggml/include -I$L/vendor \
//!     tests/tools/preset_check.cpp -o /tmp/preset_check -L$L/build/bin \
//!     -lllama-common -lllama -lggml -lggml-base -Wl,-rpath,$L/build/bin
//! GGPLAN_PRESET_CHECK=/tmp/preset_check cargo test --test integration -- --ignored emit_llamacpp
//! ```

use std::process::Command;

use ggplan::emit::{self, Deployment, Format};

fn checker() -> String {
    std::env::var("GGPLAN_PRESET_CHECK")
        .expect("set GGPLAN_PRESET_CHECK to a built tests/tools/preset_check.cpp")
}

/// Run `script` with sh, `$CHECK` being the checker; return its one output line.
fn sh(script: &str, env: &[(&str, &str)]) -> String {
    let out = Command::new("sh")
        .arg("-c")
        .arg(script)
        .env("CHECK", checker())
        .envs(env.iter().copied())
        .output()
        .unwrap();
    let stdout = String::from_utf8(out.stdout).unwrap();
    assert!(out.status.success(), "{script}\n{stdout}");
    stdout.trim_end().to_string()
}

/// The options after the `[name]` tag of a checker line.
fn options(line: &str) -> &str {
    line.split_once("] ").map_or("", |(_, rest)| rest)
}

fn deployment() -> Deployment {
    let argv = "-c 131072 -np 1 -kvu -fit off -ngl 99 -fa on -ctk q8_0 -ctv q8_0 -b 2048 -ub 512 \
                -ot blk\\.([0-9]|1[0-4])\\.=CUDA0 -ot blk\\.(1[5-9]|2[0-1])\\.=CUDA1,exps=CPU \
                -ts 3,1 -sm layer -dev CUDA0,CUDA1 -mg 0 --swa-full -lm none -nr --no-host \
                --no-op-offload -nkvo -ncmoe 2 -md /models/draft.gguf --spec-type draft-simple \
                --spec-draft-n-max 3 -ngld all -devd CUDA0 -ctkd q8_0 -ctvd q8_0";
    // The model path needs quoting in every shell-like format.
    Deployment::new(
        "qwen3-coder-q5",
        "/models/My Models/q5.gguf",
        argv.split_whitespace().map(String::from).collect(),
    )
}

#[test]
#[ignore = "needs GGPLAN_PRESET_CHECK (tests/tools/preset_check.cpp built against llama.cpp)"]
fn every_format_gives_llama_server_the_same_options() {
    let d = deployment();
    let dir = tempfile::tempdir().unwrap();

    // Preset: the router's own INI reader.
    let ini = dir.path().join("presets.ini");
    std::fs::write(&ini, emit::render(Format::Preset, &d).unwrap()).unwrap();
    let out = Command::new(checker())
        .arg("ini")
        .arg(&ini)
        .output()
        .unwrap();
    let preset = String::from_utf8(out.stdout)
        .unwrap()
        .trim_end()
        .to_string();
    assert!(preset.starts_with("[qwen3-coder-q5] "), "{preset}");
    let want = options(&preset).to_string();
    assert!(want.contains("--model /models/My Models/q5.gguf"), "{want}");
    // -ot flags merged into one override-tensor value, order kept.
    assert!(
        want.contains("--override-tensor blk\\.([0-9]|1[0-4])\\.=CUDA0,blk\\.(1[5-9]|2[0-1])\\.=CUDA1,exps=CPU"),
        "{want}"
    );

    // Shell: sh parses the quoting, llama-server's option table the argv.
    let line = emit::render(Format::Shell, &d).unwrap();
    let script = line
        .trim_end()
        .replacen("llama-server", "exec \"$CHECK\" args", 1);
    let shell = sh(&script, &[]);
    // Repeated -ot flags accumulate on the command line; the checker's
    // map keeps the last, so compare everything else and the -ot list apart.
    let drop_ot = |s: &str| {
        let mut words: Vec<&str> = s.split(' ').collect();
        if let Some(i) = words.iter().position(|w| *w == "--override-tensor") {
            words.drain(i..i + 2);
        }
        words.join(" ")
    };
    assert_eq!(drop_ot(options(&shell)), drop_ot(&want));

    // llama-swap: cmd lines joined (SanitizeCommand drops only # lines),
    // ${PORT} substituted, split by sh as llama-swap's POSIX shlex would.
    let yaml = emit::render(Format::LlamaSwap, &d).unwrap();
    let doc: yaml_serde::Value = yaml_serde::from_str(&yaml).unwrap();
    let cmd = doc["models"]["qwen3-coder-q5"]["cmd"].as_str().unwrap();
    let joined = cmd
        .lines()
        .collect::<Vec<_>>()
        .join(" ")
        .replace("${PORT}", "8080");
    let swap = sh(
        &joined.replacen("llama-server", "exec \"$CHECK\" args", 1),
        &[],
    );
    let swap = options(&swap).replace(" --port 8080", "");
    assert_eq!(drop_ot(&swap), drop_ot(&want));

    // models.conf: a launcher that expands EXTRA_ARGS unquoted.
    let conf = emit::render(Format::ModelsConf, &d).unwrap();
    let get = |k: &str| {
        conf.lines()
            .find_map(|l| l.strip_prefix(k).and_then(|r| r.strip_prefix('=')))
            .unwrap_or_default()
            .to_string()
    };
    let (c, ngl, fit, extra) = (
        get("CTX_SIZE"),
        get("N_GPU_LAYERS"),
        get("FIT"),
        get("EXTRA_ARGS"),
    );
    let launched = sh(
        r#"exec "$CHECK" args -m "$MODEL" -c "$CTX_SIZE" -ngl "$N_GPU_LAYERS" -fit "$FIT" $EXTRA_ARGS"#,
        &[
            ("MODEL", d.model_path.as_str()),
            ("CTX_SIZE", &c),
            ("N_GPU_LAYERS", &ngl),
            ("FIT", &fit),
            ("EXTRA_ARGS", &extra),
        ],
    );
    assert_eq!(drop_ot(options(&launched)), drop_ot(&want));
}

//! The `vllm serve` command line for a chosen plan.

use super::memory::KvDtype;

/// What goes on the command line.
#[derive(Clone, Debug, PartialEq)]
pub struct ServeArgs {
    /// HF model id or local path.
    pub model: String,
    pub tp: u64,
    pub pp: u64,
    pub max_model_len: Option<u64>,
    pub max_num_seqs: Option<u64>,
    pub gpu_memory_utilization: f64,
    pub kv_cache_dtype: KvDtype,
    pub expert_parallel: bool,
}

/// Quote a shell word only when it needs it.
fn shell_word(s: &str) -> String {
    if !s.is_empty()
        && s.chars()
            .all(|c| c.is_ascii_alphanumeric() || "-_./:=@+,".contains(c))
    {
        s.to_string()
    } else {
        format!("'{}'", s.replace('\'', r"'\''"))
    }
}

/// `vllm serve MODEL --tensor-parallel-size … --pipeline-parallel-size … …`.
/// Every value is spelled out, defaults included, so the line means the same
/// under any vLLM version's defaults.
pub fn command(a: &ServeArgs) -> String {
    let mut parts = vec![
        "vllm".to_string(),
        "serve".to_string(),
        shell_word(&a.model),
        format!("--tensor-parallel-size {}", a.tp),
        format!("--pipeline-parallel-size {}", a.pp),
    ];
    if let Some(l) = a.max_model_len {
        parts.push(format!("--max-model-len {l}"));
    }
    if let Some(s) = a.max_num_seqs {
        parts.push(format!("--max-num-seqs {s}"));
    }
    parts.push(format!(
        "--gpu-memory-utilization {}",
        a.gpu_memory_utilization
    ));
    parts.push(format!("--kv-cache-dtype {}", a.kv_cache_dtype.flag()));
    if a.expert_parallel {
        parts.push("--enable-expert-parallel".into());
    }
    parts.join(" ")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn serve_line() {
        let a = ServeArgs {
            model: "Qwen/Qwen3-32B".into(),
            tp: 8,
            pp: 1,
            max_model_len: Some(40960),
            max_num_seqs: Some(12),
            gpu_memory_utilization: 0.9,
            kv_cache_dtype: KvDtype::Fp8,
            expert_parallel: false,
        };
        insta::assert_snapshot!(command(&a), @"vllm serve Qwen/Qwen3-32B --tensor-parallel-size 8 --pipeline-parallel-size 1 --max-model-len 40960 --max-num-seqs 12 --gpu-memory-utilization 0.9 --kv-cache-dtype fp8");
        let b = ServeArgs {
            model: "my model".into(),
            max_model_len: None,
            max_num_seqs: None,
            expert_parallel: true,
            kv_cache_dtype: KvDtype::Auto,
            ..a
        };
        assert_eq!(
            command(&b),
            "vllm serve 'my model' --tensor-parallel-size 8 --pipeline-parallel-size 1 --gpu-memory-utilization 0.9 --kv-cache-dtype auto --enable-expert-parallel"
        );
    }
}

//! `yingshi bench`: our pipeline and the Python `transformers` reference
//! (`tools/reference.py`), timed in the same run on the same machine.

use std::path::Path;
use std::process::Command;
use std::time::Instant;

use serde::Serialize;

use crate::error::Error;
use crate::poem::{Form, PoemRequest, Poet, Sampling};

#[derive(Debug, Serialize)]
pub struct PoemTiming {
    pub ms_per_poem: f64,
    pub tokens_per_s: f64,
}

pub struct PoemBench<'a> {
    pub model_dir: &'a Path,
    pub form: Form,
    pub keywords: Vec<String>,
    pub poems: usize,
    pub candidates: usize,
    pub sampling: Sampling,
}

impl PoemBench<'_> {
    fn tokens(&self) -> f64 {
        (self.poems * self.candidates * self.form.lines() * self.form.chars_per_line()) as f64
    }

    /// Writes `poems` poems of `candidates` candidates each, after one warm-up poem.
    pub fn run_rust(&self, poet: &mut Poet) -> Result<PoemTiming, Error> {
        let request = |seed| PoemRequest {
            form: self.form,
            keywords: self.keywords.clone(),
            acrostic: None,
            candidates: self.candidates,
            seed,
        };
        poet.write(&request(0), self.sampling, 0.0)?;
        let start = Instant::now();
        for seed in 0..self.poems {
            poet.write(&request(seed as u64 + 1), self.sampling, 0.0)?;
        }
        let seconds = start.elapsed().as_secs_f64();
        Ok(PoemTiming {
            ms_per_poem: seconds * 1000.0 / self.poems as f64,
            tokens_per_s: self.tokens() / seconds,
        })
    }

    /// The same work in Python `transformers`, or why it could not run.
    pub fn run_python(&self, python: &str) -> Result<PoemTiming, String> {
        let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tools/reference.py");
        let mut cmd = Command::new(python);
        cmd.arg(&script)
            .arg("poem")
            .arg("--model")
            .arg(self.model_dir)
            .args(["--poems", &self.poems.to_string()])
            .args(["--candidates", &self.candidates.to_string()])
            .args(["--form", self.form.name()])
            .arg("--keywords")
            .args(&self.keywords);
        run_reference(cmd)
    }
}

/// Runs a reference script and reads the JSON line it prints last.
fn run_reference(mut cmd: Command) -> Result<PoemTiming, String> {
    let out = cmd
        .output()
        .map_err(|e| format!("cannot start {:?}: {e}", cmd.get_program()))?;
    if !out.status.success() {
        let err = String::from_utf8_lossy(&out.stderr);
        let last = err.lines().last().unwrap_or("no output");
        return Err(format!("the Python reference failed: {last}"));
    }
    let stdout = String::from_utf8_lossy(&out.stdout);
    let line = stdout.lines().last().unwrap_or_default();
    let v: serde_json::Value = serde_json::from_str(line)
        .map_err(|e| format!("unreadable reference output ({e}): {line}"))?;
    let get = |k: &str| {
        v[k].as_f64()
            .ok_or_else(|| format!("reference output lacks {k}: {line}"))
    };
    Ok(PoemTiming {
        ms_per_poem: get("ms_per_poem")?,
        tokens_per_s: get("tokens_per_s")?,
    })
}

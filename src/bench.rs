//! `yingshi bench`: our pipeline and the Python `transformers` reference
//! (`tools/reference.py`), timed in the same run on the same machine.

use std::path::Path;
use std::process::Command;
use std::time::Instant;

use serde::Serialize;

use crate::embedding::ClipModel;
use crate::error::Error;
use crate::keywords::Vocabulary;
use crate::photo::{self, PhotoLimits};
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
        let mut cmd = Command::new(python);
        cmd.arg(reference_script())
            .arg("poem")
            .arg("--model")
            .arg(self.model_dir)
            .args(["--poems", &self.poems.to_string()])
            .args(["--candidates", &self.candidates.to_string()])
            .args(["--form", self.form.name()])
            .arg("--keywords")
            .args(&self.keywords);
        let v = run_reference(cmd)?;
        Ok(PoemTiming {
            ms_per_poem: field(&v, "ms_per_poem")?,
            tokens_per_s: field(&v, "tokens_per_s")?,
        })
    }
}

#[derive(Debug, Serialize)]
pub struct ClipTiming {
    /// Decode, preprocess and embed one photo (batch 1).
    pub image_ms: f64,
    /// Embed every prompt of the vocabulary, no cache.
    pub vocabulary_s: f64,
}

pub struct ClipBench<'a> {
    pub model_dir: &'a Path,
    pub photos_dir: &'a Path,
    pub vocabulary: &'a Path,
    pub images: usize,
}

impl ClipBench<'_> {
    fn photos(&self) -> Result<Vec<Vec<u8>>, Error> {
        let mut paths: Vec<_> = std::fs::read_dir(self.photos_dir)
            .map_err(|e| Error::Input(format!("{}: {e}", self.photos_dir.display())))?
            .filter_map(|e| e.ok().map(|e| e.path()))
            .collect();
        paths.sort();
        paths
            .iter()
            .map(|p| std::fs::read(p).map_err(|e| Error::Input(format!("{}: {e}", p.display()))))
            .collect()
    }

    pub fn run_rust(&self, clip: &ClipModel) -> Result<ClipTiming, Error> {
        let photos = self.photos()?;
        let limits = PhotoLimits {
            max_bytes: 25 << 20,
            max_megapixels: 40.0,
        };
        let embed = |bytes: &[u8]| -> Result<(), Error> {
            let img = photo::decode(bytes, limits)?;
            clip.embed_image(&img)
                .map_err(|e| Error::Input(e.to_string()))?;
            Ok(())
        };
        embed(&photos[0])?;
        let start = Instant::now();
        for i in 0..self.images {
            embed(&photos[i % photos.len()])?;
        }
        let image_ms = start.elapsed().as_secs_f64() * 1000.0 / self.images as f64;
        let vocabulary = Vocabulary::load(self.vocabulary)?;
        let mut prompts: Vec<String> = vocabulary
            .keywords
            .into_iter()
            .flat_map(|k| k.prompts)
            .collect();
        prompts.sort();
        prompts.dedup();
        let start = Instant::now();
        clip.embed_texts(&prompts)?;
        Ok(ClipTiming {
            image_ms,
            vocabulary_s: start.elapsed().as_secs_f64(),
        })
    }

    pub fn run_python(&self, python: &str) -> Result<ClipTiming, String> {
        let mut cmd = Command::new(python);
        cmd.arg(reference_script())
            .arg("clip")
            .arg("--model")
            .arg(self.model_dir)
            .arg("--photos")
            .arg(self.photos_dir)
            .arg("--vocabulary")
            .arg(self.vocabulary)
            .args(["--images", &self.images.to_string()]);
        let v = run_reference(cmd)?;
        Ok(ClipTiming {
            image_ms: field(&v, "image_ms")?,
            vocabulary_s: field(&v, "vocabulary_s")?,
        })
    }
}

fn reference_script() -> std::path::PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tools/reference.py")
}

fn field(v: &serde_json::Value, key: &str) -> Result<f64, String> {
    v[key]
        .as_f64()
        .ok_or_else(|| format!("reference output lacks {key}: {v}"))
}

/// Runs a reference script and reads the JSON line it prints last.
fn run_reference(mut cmd: Command) -> Result<serde_json::Value, String> {
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
    serde_json::from_str(line).map_err(|e| format!("unreadable reference output ({e}): {line}"))
}

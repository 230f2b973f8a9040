//! `yingshi bench`: our pipeline and the Python `transformers` reference
//! (`tools/reference.py`), timed in the same run on the same machine.

use std::path::Path;
use std::process::Command;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Mutex;
use std::time::Instant;

use serde::Serialize;

use candle_core::DType;

use crate::cpu_kernels;
use crate::device::{on_cpu_pool, Placement};
use crate::embedding::{ClipModel, ProductPrecision};
use crate::error::Error;
use crate::keywords::{KeywordList, Vocabulary};
use crate::photo::{self, PhotoLimits};
use crate::pipeline::{Pipeline, PoemOptions, Request};
use crate::poem::{Form, JijuPoet, PoemRequest, Poet, PoetChoice, Sampling, Style};
use crate::worker::{Batching, Worker};

#[derive(Debug, Serialize)]
pub struct PoemTiming {
    pub(crate) ms_per_poem: f64,
    pub(crate) tokens_per_s: f64,
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
        let request = |seed| timed_request(self.form, &self.keywords, self.candidates, seed);
        poet.write(&request(0), self.sampling)?;
        let start = Instant::now();
        for seed in 0..self.poems {
            poet.write(&request(seed as u64 + 1), self.sampling)?;
        }
        let seconds = start.elapsed().as_secs_f64();
        Ok(PoemTiming {
            ms_per_poem: seconds * 1000.0 / self.poems as f64,
            tokens_per_s: self.tokens() / seconds,
        })
    }

    /// The same work in Python `transformers`, or why it could not run.
    pub fn run_python(&self, reference: &Reference) -> Result<PoemTiming, ReferenceError> {
        let mut cmd = reference.command("poem");
        cmd.arg("--model")
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

/// A poem request of the timed runs.
fn timed_request(form: Form, keywords: &[String], candidates: usize, seed: u64) -> PoemRequest {
    PoemRequest {
        form,
        keywords: keywords.to_vec(),
        acrostic: None,
        candidates,
        seed,
    }
}

/// The 集句 poet's poems, warm (it has no Python reference).
pub struct JijuBench {
    pub form: Form,
    pub keywords: Vec<String>,
    pub poems: usize,
    pub candidates: usize,
}

impl JijuBench {
    /// Milliseconds a poem, after one warm-up poem, on the models' thread pool as served.
    pub fn run(&self, jiju: &JijuPoet) -> Result<f64, Error> {
        let request = |seed| timed_request(self.form, &self.keywords, self.candidates, seed);
        let write = |seed| on_cpu_pool(|| jiju.write(&request(seed)));
        write(0)?;
        let start = Instant::now();
        for seed in 0..self.poems {
            write(seed as u64 + 1)?;
        }
        Ok(start.elapsed().as_secs_f64() * 1000.0 / self.poems as f64)
    }
}

#[derive(Debug, Serialize)]
pub struct ClipTiming {
    /// Decode, preprocess and embed one photo (batch 1).
    pub(crate) image_ms: f64,
    /// Embed every prompt of the vocabulary, no cache.
    pub(crate) vocabulary_s: f64,
}

pub struct ClipBench<'a> {
    pub model_dir: &'a Path,
    pub photos_dir: &'a Path,
    pub vocabulary: &'a Path,
    pub images: usize,
    /// The photo limits as configured.
    pub limits: PhotoLimits,
    /// The vision tower's products, as configured (`keywords.photo_bf16`).
    pub precision: ProductPrecision,
}

/// The photos of a directory, in name order.
fn read_photos(dir: &Path) -> Result<Vec<Vec<u8>>, Error> {
    let mut paths: Vec<_> = std::fs::read_dir(dir)
        .map_err(|e| Error::Input(format!("{}: {e}", dir.display())))?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .collect();
    paths.sort();
    paths
        .iter()
        .map(|p| std::fs::read(p).map_err(|e| Error::Input(format!("{}: {e}", p.display()))))
        .collect()
}

impl ClipBench<'_> {
    pub fn run_rust(&self, clip: &ClipModel) -> Result<ClipTiming, Error> {
        let photos = read_photos(self.photos_dir)?;
        let limits = self.limits;
        let embed = |bytes: &[u8]| -> Result<(), Error> {
            let img = photo::decode(bytes, limits)?;
            clip.embed_image_in(&img, self.precision)?;
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

    pub fn run_python(&self, reference: &Reference) -> Result<ClipTiming, ReferenceError> {
        let mut cmd = reference.command("clip");
        cmd.arg("--model")
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

/// One concurrency level of the serving benchmark.
#[derive(Debug, Serialize)]
pub struct ServeTiming {
    pub(crate) concurrency: usize,
    pub(crate) p50_ms: f64,
    pub(crate) p95_ms: f64,
    pub(crate) photos_per_s: f64,
}

/// Photo → poem as the bot serves it: `requests` photo requests from
/// `concurrency` clients that each send the next as soon as theirs is
/// answered, through the model thread and its batching.
pub struct ServeBench<'a> {
    pub clip_dir: &'a Path,
    pub poet_dir: &'a Path,
    pub photos_dir: &'a Path,
    pub vocabulary: &'a Path,
    pub form: Form,
    /// Written by the T5, or 集句 (the Python reference always writes).
    pub style: Style,
    pub candidates: usize,
    pub top_k: usize,
    pub requests: usize,
    pub concurrency: Vec<usize>,
    /// Where both pipelines run: ours and Python's on the same device and dtype.
    pub placement: Placement,
}

impl ServeBench<'_> {
    pub fn run_rust(
        &self,
        pipeline: Pipeline,
        batching: Batching,
    ) -> Result<Vec<ServeTiming>, Error> {
        let photos = read_photos(self.photos_dir)?;
        let most = self.concurrency.iter().copied().max().unwrap_or(1);
        let worker = Worker::spawn(pipeline, most, batching);
        let request = |i: usize| Request::Photo {
            bytes: photos[i % photos.len()].clone(),
            keywords: Vec::new(),
            vocabulary: KeywordList::BuiltIn,
            top_k: Some(self.top_k),
            options: PoemOptions {
                style: self.style,
                poet: PoetChoice::T5,
                form: self.form,
                acrostic: None,
                candidates: self.candidates,
                seed: i as u64,
            },
        };
        let runtime = tokio::runtime::Builder::new_current_thread()
            .build()
            .map_err(|e| Error::Service(format!("cannot start the runtime: {e}")))?;
        runtime.block_on(async {
            let ask = |i: usize| {
                let request = request(i);
                let worker = &worker;
                async move {
                    let start = Instant::now();
                    worker
                        .submit(request)
                        .map_err(|e| Error::Service(e.to_string()))?
                        .result()
                        .await
                        .map_err(|e| Error::Service(e.to_string()))?;
                    Ok::<_, Error>(start.elapsed())
                }
            };
            ask(0).await?; // warm-up
            let mut timings = Vec::new();
            for &clients in &self.concurrency {
                let next = AtomicUsize::new(0);
                let latencies = Mutex::new(Vec::with_capacity(self.requests));
                let client = || async {
                    loop {
                        let i = next.fetch_add(1, Ordering::SeqCst);
                        if i >= self.requests {
                            return Ok::<_, Error>(());
                        }
                        let took = ask(i).await?;
                        latencies.lock().expect("not poisoned").push(took);
                    }
                };
                let start = Instant::now();
                for done in futures_util::future::join_all((0..clients).map(|_| client())).await {
                    done?;
                }
                let seconds = start.elapsed().as_secs_f64();
                let mut latencies = latencies.into_inner().expect("not poisoned");
                latencies.sort();
                let at = |q: f64| {
                    let i = ((latencies.len() as f64 * q) as usize).min(latencies.len() - 1);
                    latencies[i].as_secs_f64() * 1000.0
                };
                timings.push(ServeTiming {
                    concurrency: clients,
                    p50_ms: at(0.5),
                    p95_ms: at(0.95),
                    photos_per_s: self.requests as f64 / seconds,
                });
            }
            Ok(timings)
        })
    }

    pub fn run_python(&self, reference: &Reference) -> Result<Vec<ServeTiming>, ReferenceError> {
        let mut cmd = reference.command("serve");
        cmd.arg("--clip-model")
            .arg(self.clip_dir)
            .arg("--poet-model")
            .arg(self.poet_dir)
            .arg("--photos")
            .arg(self.photos_dir)
            .arg("--vocabulary")
            .arg(self.vocabulary)
            .args(["--form", self.form.name()])
            .args(["--candidates", &self.candidates.to_string()])
            .args(["--top-k", &self.top_k.to_string()])
            .args(["--requests", &self.requests.to_string()])
            .arg("--concurrency")
            .args(self.concurrency.iter().map(|c| c.to_string()))
            .args([
                "--device",
                if self.placement.device.is_cuda() {
                    "cuda"
                } else {
                    "cpu"
                },
            ])
            .args([
                "--dtype",
                if self.placement.dtype == DType::BF16 {
                    "bf16"
                } else {
                    "f32"
                },
            ]);
        let v = run_reference(cmd)?;
        v["levels"]
            .as_array()
            .ok_or_else(|| ReferenceError::lacks("levels", &v))?
            .iter()
            .map(|level| {
                Ok(ServeTiming {
                    concurrency: field(level, "concurrency")? as usize,
                    p50_ms: field(level, "p50_ms")?,
                    p95_ms: field(level, "p95_ms")?,
                    photos_per_s: field(level, "photos_per_s")?,
                })
            })
            .collect()
    }
}

/// The Python reference: an interpreter with torch and transformers, and the
/// script (`tools/reference.py`).
pub struct Reference<'a> {
    pub python: &'a str,
    pub script: &'a Path,
}

impl Reference<'_> {
    /// The torch and transformers versions the reference runs on.
    pub fn versions(&self) -> Result<String, ReferenceError> {
        let v = run_reference(self.command("versions"))?;
        let version = |key: &'static str| {
            v[key]
                .as_str()
                .map(str::to_owned)
                .ok_or_else(|| ReferenceError::lacks(key, &v))
        };
        Ok(format!(
            "torch {}, transformers {}",
            version("torch")?,
            version("transformers")?
        ))
    }

    /// The line `bench` prints first: the CPU by name, the threads each side
    /// uses, and the reference's versions, so that a table names its machine.
    pub fn machine_line(&self) -> String {
        let python = match self.versions() {
            Ok(versions) => versions,
            Err(why) => format!("not run: {why}"),
        };
        // Which products the bf16 settings (keywords.photo_bf16,
        // poem.rerank_bf16) get here, as they change the figures.
        let tiles = if ProductPrecision::Bf16OnTiles.runs_here() {
            "AMX tiles for the bf16 settings"
        } else {
            "no AMX tiles: f32 products only"
        };
        let kernels = if cpu_kernels::avx512_held_back() {
            "AVX2 kernels: AVX-512 held back by YINGSHI_CPU_CAPABILITY=avx2, for the reference too"
        } else if cpu_kernels::avx512f() {
            "AVX-512 kernels"
        } else if cpu_kernels::avx2_fma() {
            "AVX2 kernels"
        } else {
            "no kernels of our own: gemm"
        };
        format!(
            "machine: {}, {} CPU threads, {kernels}, {tiles}; python reference: {python}",
            cpu_name(),
            crate::device::cpu_threads()
        )
    }

    /// The script's subcommand `what`, on as many CPU threads as ours.
    fn command(&self, what: &str) -> Command {
        let mut cmd = Command::new(self.python);
        cmd.arg(self.script)
            .arg(what)
            .args(["--threads", &crate::device::cpu_threads().to_string()]);
        if cpu_kernels::avx512_held_back() {
            // PyTorch's own kernels, MKL's and oneDNN's, each by its switch.
            cmd.env("ATEN_CPU_CAPABILITY", "avx2")
                .env("MKL_ENABLE_INSTRUCTIONS", "AVX2")
                .env("ONEDNN_MAX_CPU_ISA", "AVX2");
        }
        cmd
    }
}

/// Why the Python reference gave no timing (shown in the table, in its place).
#[derive(Debug, thiserror::Error)]
pub enum ReferenceError {
    #[error("cannot start {program}: {cause}")]
    Start {
        program: String,
        cause: std::io::Error,
    },
    #[error("the Python reference failed: {last_line}")]
    Failed { last_line: String },
    #[error("unreadable reference output ({cause}): {line}")]
    Unreadable {
        line: String,
        cause: serde_json::Error,
    },
    #[error("reference output lacks {key}: {output}")]
    Lacks { key: &'static str, output: String },
}

impl ReferenceError {
    fn lacks(key: &'static str, output: &serde_json::Value) -> Self {
        ReferenceError::Lacks {
            key,
            output: output.to_string(),
        }
    }
}

/// The CPU's model name as `/proc/cpuinfo` gives it (Linux), else the architecture.
fn cpu_name() -> String {
    std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|info| {
            info.lines()
                .find(|l| l.starts_with("model name"))
                .and_then(|l| l.split_once(':'))
                .map(|(_, name)| name.trim().to_owned())
        })
        .unwrap_or_else(|| format!("a {} CPU", std::env::consts::ARCH))
}

fn field(v: &serde_json::Value, key: &'static str) -> Result<f64, ReferenceError> {
    v[key].as_f64().ok_or_else(|| ReferenceError::lacks(key, v))
}

/// Runs a reference script and reads the JSON line it prints last.
fn run_reference(mut cmd: Command) -> Result<serde_json::Value, ReferenceError> {
    let out = cmd.output().map_err(|cause| ReferenceError::Start {
        program: cmd.get_program().to_string_lossy().into_owned(),
        cause,
    })?;
    if !out.status.success() {
        let err = String::from_utf8_lossy(&out.stderr);
        return Err(ReferenceError::Failed {
            last_line: err.lines().last().unwrap_or("no output").to_owned(),
        });
    }
    let stdout = String::from_utf8_lossy(&out.stdout);
    let line = stdout.lines().last().unwrap_or_default();
    serde_json::from_str(line).map_err(|cause| ReferenceError::Unreadable {
        line: line.to_owned(),
        cause,
    })
}

impl PoemTiming {
    /// Ours beside the reference's (or why it did not run), as `bench` prints it.
    pub fn report(rust: &PoemTiming, python: &Result<PoemTiming, ReferenceError>) -> String {
        let mut out = format!(
            "  rust (constrained)     {:>9.1} ms/poem {:>9.0} tokens/s\n",
            rust.ms_per_poem, rust.tokens_per_s
        );
        match python {
            Ok(py) => {
                out += &format!(
                    "  python transformers    {:>9.1} ms/poem {:>9.0} tokens/s\n",
                    py.ms_per_poem, py.tokens_per_s
                );
                out += &format!(
                    "  time ratio rust/python {:>9.2}×\n",
                    rust.ms_per_poem / py.ms_per_poem
                );
            }
            Err(why) => out += &format!("  python transformers    not run: {why}\n"),
        }
        out
    }
}

impl ClipTiming {
    /// Ours beside the reference's (or why it did not run), as `bench` prints it.
    pub fn report(rust: &ClipTiming, python: &Result<ClipTiming, ReferenceError>) -> String {
        let mut out = format!(
            "  rust                   {:>9.1} ms/photo {:>8.2} s vocabulary\n",
            rust.image_ms, rust.vocabulary_s
        );
        match python {
            Ok(py) => {
                out += &format!(
                    "  python transformers    {:>9.1} ms/photo {:>8.2} s vocabulary\n",
                    py.image_ms, py.vocabulary_s
                );
                out += &format!(
                    "  time ratio rust/python {:>9.2}× photo {:>8.2}× vocabulary\n",
                    rust.image_ms / py.image_ms,
                    rust.vocabulary_s / py.vocabulary_s
                );
            }
            Err(why) => out += &format!("  python transformers    not run: {why}\n"),
        }
        out
    }
}

impl ServeTiming {
    /// A row per concurrency level, ours beside the reference's, as `bench --serve` prints it.
    pub fn report(
        rust: &[ServeTiming],
        python: &Result<Vec<ServeTiming>, ReferenceError>,
    ) -> String {
        let mut out = String::from(
            "  concurrency  rust p50/p95 ms   photos/s | python p50/p95 ms   photos/s | time ratio\n",
        );
        for (i, r) in rust.iter().enumerate() {
            let py = python.as_ref().ok().and_then(|p| p.get(i));
            let (py_text, ratio) = match py {
                Some(p) => (
                    format!(
                        "{:>8.0}/{:<8.0} {:>8.2}",
                        p.p50_ms, p.p95_ms, p.photos_per_s
                    ),
                    format!("{:.2}×", p.photos_per_s / r.photos_per_s),
                ),
                None => ("not run".to_owned(), "-".to_owned()),
            };
            out += &format!(
                "  {:>11}  {:>8.0}/{:<8.0} {:>8.2} | {py_text} | {ratio}\n",
                r.concurrency, r.p50_ms, r.p95_ms, r.photos_per_s
            );
        }
        if let Err(why) = python {
            out += &format!("  python transformers not run: {why}\n");
        }
        out
    }
}

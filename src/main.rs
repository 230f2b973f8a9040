//! The `yingshi` command: parse the CLI, load settings, start logging, dispatch.
//! Errors print with their causes and map to exit codes (2: bad input).

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use tracing_subscriber::EnvFilter;
use yingshi::bench::{
    ClipBench, ClipTiming, JijuBench, PoemBench, PoemTiming, Reference, ServeBench, ServeTiming,
};
use yingshi::config::{bounds, out_of, Config};
use yingshi::device::Placement;
use yingshi::error::{Error, LlmError, PoemError};
use yingshi::keywords::{split_keywords, KeywordList};
use yingshi::photo::PhotoLimits;
use yingshi::pipeline::{Matcher, Pipeline, PoemOptions, Request};
use yingshi::poem::blind;
use yingshi::poem::eval::{best_jiju_poems, best_poems, evaluate, evaluate_jiju, EvalCase};
use yingshi::poem::{checker, Form, JijuPoet, Poet, PoetChoice, Style};
#[cfg(feature = "llm")]
use yingshi::poem::{LlmPoet, LlmSpec};

#[derive(Parser)]
#[command(
    name = "yingshi",
    version,
    about = "影诗 — a photo in, a classical Chinese poem out"
)]
struct Cli {
    /// A settings file; its keys override config/default.toml.
    #[arg(long, global = true, value_name = "PATH")]
    config: Option<PathBuf>,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the Discord bot (token from DISCORD_TOKEN).
    Bot(BotArgs),
    /// Write a poem from keywords or a photo.
    Poem(PoemArgs),
    /// Match a photo against the keyword vocabulary (Chinese-CLIP).
    Keywords(KeywordsArgs),
    /// Check a poem against the strict rules of 近体诗 (exit 0 when it passes).
    Check {
        /// The poem: lines separated by newlines, spaces or punctuation.
        poem: String,
        /// Print the verdict as JSON.
        #[arg(long)]
        json: bool,
    },
    /// Time our pipeline against the Python transformers reference, same run.
    Bench(BenchArgs),
    /// Measure poem quality on held-out keyword sets (the README's table).
    Eval(EvalArgs),
    /// Write a blind-reading sheet: held-out keyword sets, the corpus poem
    /// beside ours and each variant's, shuffled under random ids, and its key.
    Sheet(SheetArgs),
    /// Read blind readers' score files against a sheet's key: each source's
    /// mean per axis, per reader and over all.
    Scores(ScoresArgs),
}

/// Where the photo matcher's model and vocabulary come from.
#[derive(clap::Args)]
struct MatcherArgs {
    /// A Chinese-CLIP directory in the Hugging Face layout (default: models.clip_dir, else the hub).
    #[arg(long, value_name = "DIR")]
    clip_model: Option<PathBuf>,
    /// A keyword vocabulary (keywords/default.txt's format, or one keyword a line).
    #[arg(long, value_name = "FILE")]
    keywords_file: Option<PathBuf>,
}

#[derive(clap::Args)]
struct BotArgs {
    #[command(flatten)]
    matcher: MatcherArgs,
}

#[derive(clap::Args)]
struct KeywordsArgs {
    /// The photo.
    #[arg(long, value_name = "PATH")]
    image: PathBuf,
    /// How many keywords, up to the vocabulary's size (default: keywords.top_k).
    #[arg(long)]
    top_k: Option<usize>,
    #[command(flatten)]
    matcher: MatcherArgs,
    /// Print {"keywords":[{"keyword":…,"score":…},…]}, best first.
    #[arg(long)]
    json: bool,
}

#[derive(clap::Args)]
struct PoemArgs {
    /// Keywords the poem should use (classical imagery: 春风 明月 孤舟 …).
    #[arg(long, num_args = 1..)]
    keywords: Vec<String>,
    /// Take the keywords from a photo (Chinese-CLIP).
    #[arg(long, value_name = "PATH")]
    image: Option<PathBuf>,
    /// 五绝, 七绝, 五律 or 七律 (default: poem.form).
    #[arg(long)]
    form: Option<Form>,
    /// 藏头诗: line i starts with the i-th character.
    #[arg(long)]
    acrostic: Option<String>,
    /// How many candidates to sample before choosing (default: poem.candidates).
    #[arg(long)]
    candidates: Option<usize>,
    /// Random seed; the same seed gives the same poem.
    #[arg(long)]
    seed: Option<u64>,
    /// 换一句: write line N (1 = the first) of `--poem` anew, the others kept.
    #[arg(long, value_name = "N", requires = "poem", conflicts_with = "image")]
    rewrite: Option<usize>,
    /// The poem whose line `--rewrite` writes anew or `--my-line` replaces,
    /// lines split at punctuation or spaces.
    #[arg(long, value_name = "TEXT")]
    poem: Option<String>,
    /// Your own line: TEXT becomes line N (1 = the first) of `--poem`, and the
    /// lines after it are written on so that the poem still scans and rhymes.
    #[arg(long, num_args = 2, value_names = ["N", "TEXT"], requires = "poem", conflicts_with_all = ["image", "rewrite"])]
    my_line: Option<Vec<String>>,
    /// With `--my-line`: the lines before yours are written anew too.
    #[arg(long, requires = "my_line")]
    rewrite_before: bool,
    /// A poem model directory (default: models.poet_dir, the shipped model).
    #[arg(long, value_name = "DIR")]
    poet_model: Option<PathBuf>,
    /// Who writes: t5 (the embedded poet) or llm (a chat LLM; default: poem.poet).
    #[arg(long)]
    poet: Option<PoetChoice>,
    /// generate (written by the poet) or jiju (集句: real lines of the corpus,
    /// each credited; default: poem.style).
    #[arg(long)]
    style: Option<Style>,
    /// The LLM for `--poet llm`: a hub id (Qwen/Qwen3-1.7B) or a local directory
    /// (default: models.llm).
    #[arg(long, value_name = "ID|DIR")]
    llm_model: Option<String>,
    #[command(flatten)]
    matcher: MatcherArgs,
    /// Print the result as JSON.
    #[arg(long)]
    json: bool,
}

#[derive(clap::Args)]
struct EvalArgs {
    /// Keyword sets, one JSON object a line: {"form":"七绝","keywords":[…]}.
    #[arg(long, default_value = HELDOUT)]
    set: PathBuf,
    /// How many poems (the first N of the set).
    #[arg(long, default_value_t = 1000)]
    limit: usize,
    /// Candidates per poem (default: poem.candidates).
    #[arg(long)]
    candidates: Option<usize>,
    /// The corpus's lines, one a line, for an exact count of copies
    /// (training/prepare.py writes corpus_lines.txt); else the line filter.
    #[arg(long, value_name = "FILE")]
    corpus_lines: Option<PathBuf>,
    #[arg(long, value_name = "DIR")]
    poet_model: Option<PathBuf>,
    /// generate (the poet's table) or jiju (the 集句 poet's; default: poem.style).
    #[arg(long)]
    style: Option<Style>,
}

/// The held-out corpus poems: form, keyword set and lines, one JSON object a line.
const HELDOUT: &str = "training/heldout_poems.jsonl";

#[derive(clap::Args)]
struct SheetArgs {
    /// The folder for sheet.txt (for the readers) and key.tsv (not for them).
    #[arg(long, value_name = "DIR")]
    out: PathBuf,
    /// Overwrite the folder's sheet and key if they exist.
    #[arg(long)]
    force: bool,
    /// Held-out poems with their keyword sets.
    #[arg(long, default_value = HELDOUT)]
    set: PathBuf,
    /// How many keyword sets.
    #[arg(long, default_value_t = 24)]
    sets: usize,
    /// Sets to pass over first (to read sets not tuned on).
    #[arg(long, default_value_t = 0)]
    skip: usize,
    /// A poet to read: NAME, or NAME:section.key=value,… over the settings,
    /// e.g. `cold:poem.temperature=0.3` or `new:models.poet_dir=models/poet-new`.
    /// Repeat for several; default one named `ours` with the settings as they are.
    #[arg(long, value_name = "SPEC")]
    variant: Vec<String>,
    /// Poems written elsewhere (another build, another tool), read as they
    /// are: NAME=FILE, one JSON object a line with its "lines" (as `yingshi
    /// poem --json` prints), one for each set read, in order.
    #[arg(long, value_name = "NAME=FILE")]
    poems: Vec<String>,
    /// Seed of the shuffle, the ids and the poems.
    #[arg(long, default_value_t = 0)]
    seed: u64,
}

#[derive(clap::Args)]
struct ScoresArgs {
    /// The sheet's key.tsv, or the folder holding it.
    key: PathBuf,
    /// One score file per reader: id, fluency, coherence, relevance, overall
    /// (1–5), optionally H|M and a comment, tab-separated.
    #[arg(required = true)]
    readers: Vec<PathBuf>,
    /// Print the means as JSON.
    #[arg(long)]
    json: bool,
}

#[derive(clap::Args)]
struct BenchArgs {
    /// Poems to time (after one warm-up).
    #[arg(long, default_value_t = 10)]
    poems: usize,
    /// Candidates per poem.
    #[arg(long, default_value_t = 8)]
    candidates: usize,
    #[arg(long, default_value = "七绝")]
    form: Form,
    /// The Python with torch and transformers for the reference (tools/requirements.txt).
    #[arg(long, env = "YINGSHI_PYTHON", default_value = "python3")]
    python: String,
    /// The reference script.
    #[arg(long, value_name = "PATH", default_value = "tools/reference.py")]
    reference: PathBuf,
    #[arg(long, value_name = "DIR")]
    poet_model: Option<PathBuf>,
    /// Also time Chinese-CLIP from this directory (tools/make_bench_models.py
    /// writes a full-size random ViT-B/16).
    #[arg(long, value_name = "DIR")]
    clip_model: Option<PathBuf>,
    /// Photos embedded one at a time in the CLIP timing.
    #[arg(long, default_value_t = 10)]
    images: usize,
    /// Time only photo → poem as served (needs --clip-model): latency and
    /// throughput at each --concurrency, batching as configured.
    #[arg(long, requires = "clip_model")]
    serve: bool,
    /// Photo requests per concurrency level in --serve.
    #[arg(long, default_value_t = 64)]
    requests: usize,
    /// Clients sending at once in --serve, one level each.
    #[arg(long, num_args = 1.., default_values_t = [1, 8, 64])]
    concurrency: Vec<usize>,
    /// The poems --serve answers with: generate (the T5) or jiju (集句); the
    /// Python reference always writes with the T5.
    #[arg(long, default_value = "generate")]
    style: Style,
}

fn main() -> ExitCode {
    tracing_subscriber::fmt()
        .with_env_filter(
            EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("yingshi=info")),
        )
        .with_writer(std::io::stderr)
        .init();
    let cli = Cli::parse();
    match run(cli) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {e}");
            let mut source = std::error::Error::source(&e);
            while let Some(cause) = source {
                eprintln!("  caused by: {cause}");
                source = cause.source();
            }
            ExitCode::from(e.exit_code() as u8)
        }
    }
}

fn run(cli: Cli) -> Result<ExitCode, Error> {
    let config = Config::load(cli.config.as_deref())?;
    // SAFETY: no thread but this one has started yet (the runtime, the
    // models and their pool come later).
    unsafe { yingshi::device::pin_cpu_threads(config.models.cpu_threads) };
    yingshi::device::tune_malloc();
    // One device for all the models of a run, so that a GPU's context and
    // kernels are set up once.
    let placement = || config.placement();
    match cli.command {
        Command::Bot(args) => {
            let placement = placement()?;
            bot(config, &placement, args)
        }
        Command::Poem(args) => poem(&config, &placement()?, args),
        Command::Keywords(args) => keywords(&config, &placement()?, args),
        Command::Check { poem, json } => Ok(check(&poem, json)),
        Command::Bench(args) => bench(&config, &placement()?, args),
        Command::Eval(args) => eval(&config, &placement()?, args),
        Command::Sheet(args) => sheet(cli.config.as_deref(), &placement()?, args),
        Command::Scores(args) => scores(args),
    }
}

fn read_photo(path: &Path) -> Result<Vec<u8>, Error> {
    std::fs::read(path)
        .map_err(|e| Error::Input(format!("cannot read the photo {}: {e}", path.display())))
}

fn load_matcher(
    config: &Config,
    placement: &Placement,
    args: &MatcherArgs,
) -> Result<Matcher, Error> {
    Matcher::load(
        config,
        args.clip_model.as_deref(),
        args.keywords_file.as_deref(),
        placement,
    )
}

fn bot(config: Config, placement: &Placement, args: BotArgs) -> Result<ExitCode, Error> {
    // Once at start, so that a log says which kernels served it (and why
    // not AMX tiles, where the `*_bf16` settings asked for them).
    tracing::info!("CPU kernels: {}", yingshi::kernels_in_use());
    let poet = load_poet(&config, placement, None)?;
    let matcher = load_matcher(&config, placement, &args.matcher)?;
    #[cfg_attr(not(feature = "llm"), allow(unused_mut))]
    let mut pipeline = Pipeline::new(&config, poet, Some(matcher));
    // The 集句 poet loads when its files are there; without them the bot
    // writes as before, and channels that ask for 集句 are told why not.
    match load_jiju(&config) {
        Ok(jiju) => pipeline.attach_jiju(jiju),
        Err(e) => tracing::warn!("集句 is off: {e}"),
    }
    // The LLM loads when one is named, so channels may choose it.
    if !config.models.llm.is_empty() || config.poem.poet == PoetChoice::Llm {
        attach_llm(&mut pipeline, &config, placement, config.models.llm.clone())?;
    }
    let runtime = tokio::runtime::Runtime::new()
        .map_err(|e| Error::Service(format!("cannot start the runtime: {e}")))?;
    runtime.block_on(yingshi::bot::run(config, pipeline))?;
    Ok(ExitCode::SUCCESS)
}

fn keywords(config: &Config, placement: &Placement, args: KeywordsArgs) -> Result<ExitCode, Error> {
    // Any number up to the vocabulary's size: the bot's `top_k` stays in
    // bounds::TOP_K, what fits a poem.
    let top_k = args.top_k.unwrap_or(config.keywords.top_k);
    if top_k == 0 {
        return Err(Error::Input("--top-k takes 1 or more".into()));
    }
    let bytes = read_photo(&args.image)?;
    let mut matcher = load_matcher(config, placement, &args.matcher)?;
    let size = matcher.vocabulary_size();
    if top_k > size {
        return Err(Error::Input(format!(
            "--top-k takes at most {size}, the vocabulary's size; got {top_k}"
        )));
    }
    let found = matcher.match_photo(
        &bytes,
        top_k,
        config.keywords.diverse,
        &KeywordList::BuiltIn,
    )?;
    if args.json {
        println!("{}", serde_json::json!({ "keywords": found }));
    } else {
        for s in &found {
            println!("{}\t{:.4}", s.keyword, s.score);
        }
    }
    if found.len() < top_k {
        eprintln!(
            "({} keywords: one per topic, as keywords.diverse asks; YINGSHI_KEYWORDS__DIVERSE=false gives {top_k})",
            found.len()
        );
    }
    Ok(ExitCode::SUCCESS)
}

fn poem(config: &Config, placement: &Placement, args: PoemArgs) -> Result<ExitCode, Error> {
    let candidates = args.candidates.unwrap_or(config.poem.candidates);
    if let Some(message) = out_of(&bounds::CANDIDATES, candidates) {
        return Err(Error::Input(format!("--candidates {message}")));
    }
    let keywords = split_keywords(&args.keywords.join(" "));
    let lines = args.poem.as_deref().map(checker::split_lines);
    // A poem to rewrite tells its own form.
    let form_of_poem = lines.as_deref().and_then(|l| checker::check_lines(l).form);
    let poet_choice = args.poet.unwrap_or(config.poem.poet);
    let style = args.style.unwrap_or(config.poem.style);
    let options = PoemOptions {
        style,
        poet: poet_choice,
        form: args.form.or(form_of_poem).unwrap_or(config.poem.form),
        acrostic: args.acrostic,
        candidates,
        seed: args.seed.unwrap_or_else(rand::random),
    };
    let photo = args.image.as_deref().map(read_photo).transpose()?;
    let poet = load_poet(config, placement, args.poet_model)?;
    let matcher = match photo {
        Some(_) => Some(load_matcher(config, placement, &args.matcher)?),
        None => None,
    };
    #[cfg_attr(not(feature = "llm"), allow(unused_mut))]
    let mut pipeline = Pipeline::new(config, poet, matcher);
    if style == Style::Jiju {
        pipeline.attach_jiju(load_jiju(config)?);
    } else if poet_choice == PoetChoice::Llm {
        let model = args.llm_model.unwrap_or_else(|| config.models.llm.clone());
        attach_llm(&mut pipeline, config, placement, model)?;
    }
    let request = match (photo, args.rewrite, args.my_line, lines) {
        (Some(bytes), _, _, _) => Request::Photo {
            bytes,
            keywords,
            vocabulary: KeywordList::BuiltIn,
            top_k: None,
            options: options.clone(),
        },
        (None, Some(line), _, Some(lines)) => Request::Line {
            keywords,
            lines,
            line: line
                .checked_sub(1)
                .ok_or_else(|| Error::Input("--rewrite counts lines from 1".into()))?,
            options: options.clone(),
        },
        (None, None, Some(mine), Some(lines)) => {
            let [line, text] = <[String; 2]>::try_from(mine).expect("clap takes two values");
            let line = line
                .parse::<usize>()
                .ok()
                .and_then(|n| n.checked_sub(1))
                .ok_or_else(|| {
                    Error::Input(format!(
                        "--my-line takes the line's number first (1 = the first), then your line; got '{line}'"
                    ))
                })?;
            Request::OwnLine {
                keywords,
                lines,
                line,
                text,
                rewrite_before: args.rewrite_before,
                options: options.clone(),
            }
        }
        (None, None, None, Some(_)) => {
            return Err(Error::Input(
                "--poem goes with --rewrite N (write line N anew) or --my-line N TEXT (put your own line in)".into(),
            ))
        }
        _ => Request::Keywords {
            keywords,
            options: options.clone(),
        },
    };
    let result = pipeline.run(&request)?;
    let best = &result.candidates[0];
    if args.json {
        let alternatives: Vec<_> = result.candidates[1..]
            .iter()
            .map(|c| serde_json::json!({"lines": c.lines, "score": c.score}))
            .collect();
        let mut out = serde_json::json!({
            "form": result.form.name(),
            "keywords": result.keywords,
            "lines": best.lines,
            "score": best.score,
            "keywords_used": best.keywords_used,
            "matched": result.matched,
            "seed": options.seed,
            "alternatives": alternatives,
        });
        if !best.sources.is_empty() {
            out["sources"] = serde_json::json!(best.sources);
        }
        println!("{out}");
    } else {
        if !result.matched.is_empty() {
            let shown: Vec<String> = result
                .matched
                .iter()
                .map(|s| format!("{} {:.3}", s.keyword, s.score))
                .collect();
            println!("（{}）", shown.join("  "));
        }
        if !result.keywords.is_empty() {
            println!("【{}】{}", result.form, result.keywords.join(" "));
        }
        if best.sources.is_empty() {
            for line in &best.lines {
                println!("{line}");
            }
        } else {
            for (line, source) in best.lines.iter().zip(&best.sources) {
                println!("{line}　{}《{}》", source.poet, source.title);
            }
        }
        let unused: Vec<&str> = result
            .keywords
            .iter()
            .filter(|k| !best.keywords_used.contains(k))
            .map(String::as_str)
            .collect();
        if !unused.is_empty() {
            eprintln!("(not used: {})", unused.join(" "));
        }
        eprintln!(
            "(score {:.3}, seed {}; {} candidates)",
            best.score,
            options.seed,
            result.candidates.len()
        );
    }
    Ok(ExitCode::SUCCESS)
}

fn bench(config: &Config, placement: &Placement, args: BenchArgs) -> Result<ExitCode, Error> {
    let dir = args
        .poet_model
        .clone()
        .unwrap_or_else(|| Config::resolve(&config.models.poet_dir));
    let script = Config::resolve(&args.reference.to_string_lossy());
    let reference = Reference {
        python: &args.python,
        script: &script,
    };
    println!("{}", reference.machine_line());
    if args.serve {
        return bench_serve(config, placement, &args, &dir, &reference);
    }
    let mut poet = load_poet(config, placement, Some(dir.clone()))?;
    let bench = PoemBench {
        model_dir: &dir,
        form: args.form,
        keywords: vec!["春风".into(), "明月".into()],
        poems: args.poems,
        candidates: args.candidates,
        sampling: config.sampling(),
    };
    println!(
        "poem generation: {} poems × {} candidates, {}, CPU threads {}",
        args.poems,
        args.candidates,
        args.form,
        yingshi::device::cpu_threads()
    );
    let rust = bench.run_rust(&mut poet)?;
    print!(
        "{}",
        PoemTiming::report(&rust, &bench.run_python(&reference))
    );
    let jiju = JijuBench {
        form: args.form,
        keywords: bench.keywords.clone(),
        poems: args.poems,
        candidates: args.candidates,
    };
    let loading = std::time::Instant::now();
    let jiju_poet = load_jiju(config)?;
    let loaded_s = loading.elapsed().as_secs_f64();
    println!(
        "集句 {}: {:.0} ms a poem, warm ({} poems × {} candidates; the line index and judge \
         loaded in {loaded_s:.2} s; no Python reference)",
        args.form,
        jiju.run(&jiju_poet)?,
        args.poems,
        args.candidates
    );
    let Some(clip_dir) = &args.clip_model else {
        println!("chinese-clip: not timed (pass --clip-model DIR)");
        return Ok(ExitCode::SUCCESS);
    };
    let clip = yingshi::embedding::ClipModel::load(clip_dir, &placement.device, placement.dtype)?;
    let photos = Config::resolve("tests/fixtures/photos");
    let vocabulary = Config::resolve(&config.keywords.vocabulary);
    let clip_bench = ClipBench {
        model_dir: clip_dir,
        photos_dir: &photos,
        vocabulary: &vocabulary,
        images: args.images,
        limits: PhotoLimits {
            max_bytes: config.photo.max_bytes,
            max_megapixels: config.photo.max_megapixels,
        },
        precision: config.keywords.photo_precision(),
    };
    println!(
        "chinese-clip {}: {} photos one at a time; the keyword vocabulary",
        clip_dir.display(),
        args.images
    );
    let rust = clip_bench.run_rust(&clip)?;
    print!(
        "{}",
        ClipTiming::report(&rust, &clip_bench.run_python(&reference))
    );
    Ok(ExitCode::SUCCESS)
}

fn bench_serve(
    config: &Config,
    placement: &Placement,
    args: &BenchArgs,
    poet_dir: &Path,
    reference: &Reference,
) -> Result<ExitCode, Error> {
    let clip_dir = args
        .clip_model
        .as_deref()
        .expect("clap requires --clip-model");
    if args.concurrency.contains(&0) || args.requests == 0 {
        return Err(Error::Input(
            "--concurrency and --requests must be at least 1".into(),
        ));
    }
    let photos = Config::resolve("tests/fixtures/photos");
    let vocabulary = Config::resolve(&config.keywords.vocabulary);
    let serve = ServeBench {
        clip_dir,
        poet_dir,
        photos_dir: &photos,
        vocabulary: &vocabulary,
        form: args.form,
        style: args.style,
        candidates: args.candidates,
        top_k: config.keywords.top_k,
        requests: args.requests,
        concurrency: args.concurrency.clone(),
        placement: placement.clone(),
    };
    println!(
        "photo → {} ({}) served: {} photo requests per level, {} candidates, batches of up to {} \
         requests and {} rows (wait {} ms), {:?} {:?}",
        args.form,
        args.style,
        args.requests,
        args.candidates,
        config.batch.max_requests,
        config.batch.max_rows,
        config.batch.wait_ms,
        placement.device,
        placement.dtype
    );
    let poet = load_poet(config, placement, Some(poet_dir.to_owned()))?;
    let matcher = Matcher::load(config, Some(clip_dir), None, placement)?;
    let batching = yingshi::worker::Batching {
        max_requests: config.batch.max_requests,
        max_rows: config.batch.max_rows,
        wait: std::time::Duration::from_millis(config.batch.wait_ms),
    };
    let mut pipeline = Pipeline::new(config, poet, Some(matcher));
    if args.style == Style::Jiju {
        pipeline.attach_jiju(load_jiju(config)?);
    }
    let rust = serve.run_rust(pipeline, batching)?;
    print!(
        "{}",
        ServeTiming::report(&rust, &serve.run_python(reference))
    );
    Ok(ExitCode::SUCCESS)
}

fn load_poet(config: &Config, placement: &Placement, dir: Option<PathBuf>) -> Result<Poet, Error> {
    let dir = dir.unwrap_or_else(|| Config::resolve(&config.models.poet_dir));
    Ok(Poet::load(&dir, &placement.device, placement.dtype)?)
}

fn load_jiju(config: &Config) -> Result<JijuPoet, Error> {
    let dir = Config::resolve(&config.models.jiju_dir);
    Ok(JijuPoet::load(&dir).map_err(PoemError::from)?)
}

/// Loads the chat LLM (`model`: a hub id or a directory) beside the T5.
#[cfg(feature = "llm")]
fn attach_llm(
    pipeline: &mut Pipeline,
    config: &Config,
    placement: &Placement,
    model: String,
) -> Result<(), Error> {
    if model.is_empty() {
        return Err(PoemError::from(LlmError::NotLoaded).into());
    }
    let local = Config::resolve(&model);
    let spec = LlmSpec {
        model: if local.is_dir() {
            local.to_string_lossy().into_owned()
        } else {
            model
        },
        isq: (!config.models.llm_isq.is_empty()).then(|| config.models.llm_isq.clone()),
        cpu: placement.device.is_cpu(),
        corpus_lines: Some(
            Config::resolve(&config.models.poet_dir).join(yingshi::poem::LINE_FILTER_FILE),
        )
        .filter(|path| path.exists()),
    };
    pipeline.attach_llm(LlmPoet::load(&spec).map_err(PoemError::from)?);
    Ok(())
}

#[cfg(not(feature = "llm"))]
fn attach_llm(_: &mut Pipeline, _: &Config, _: &Placement, _: String) -> Result<(), Error> {
    Err(PoemError::from(LlmError::NotBuilt).into())
}

fn read_text(path: &Path) -> Result<String, Error> {
    std::fs::read_to_string(Config::resolve(&path.to_string_lossy()))
        .map_err(|e| Error::Input(format!("cannot read {}: {e}", path.display())))
}

/// Cases `skip..skip + limit` of a held-out set file.
fn read_cases(path: &Path, skip: usize, limit: usize) -> Result<Vec<EvalCase>, Error> {
    let text = read_text(path)?;
    Ok(EvalCase::parse_set(
        &path.display().to_string(),
        &text,
        skip,
        limit,
    )?)
}

fn eval(config: &Config, placement: &Placement, args: EvalArgs) -> Result<ExitCode, Error> {
    let cases = read_cases(&args.set, 0, args.limit)?;
    let candidates = args.candidates.unwrap_or(config.poem.candidates);
    if args.style.unwrap_or(config.poem.style) == Style::Jiju {
        let report = evaluate_jiju(&load_jiju(config)?, &cases, config.sampling(), candidates)?;
        println!(
            "{}",
            serde_json::to_string_pretty(&report).expect("a report serialises")
        );
        return Ok(ExitCode::SUCCESS);
    }
    let corpus: Option<std::collections::HashSet<String>> = match &args.corpus_lines {
        Some(path) => Some(read_text(path)?.lines().map(str::to_owned).collect()),
        None => None,
    };
    let mut poet = load_poet(config, placement, args.poet_model)?;
    let report = evaluate(
        &mut poet,
        &cases,
        config.sampling(),
        candidates,
        corpus.as_ref(),
    )?;
    println!(
        "{}",
        serde_json::to_string_pretty(&report).expect("a report serialises")
    );
    Ok(ExitCode::SUCCESS)
}

fn sheet(
    user_file: Option<&Path>,
    placement: &Placement,
    args: SheetArgs,
) -> Result<ExitCode, Error> {
    let (sheet_path, key_path) = (args.out.join("sheet.txt"), args.out.join("key.tsv"));
    if !args.force && (sheet_path.exists() || key_path.exists()) {
        return Err(Error::Input(format!(
            "{} already holds a sheet; pass --force to overwrite it",
            args.out.display()
        )));
    }
    let cases = read_cases(&args.set, args.skip, args.sets)?;
    if cases.len() < args.sets {
        return Err(Error::Input(format!(
            "{} has {} sets after the first {}; asked for {}",
            args.set.display(),
            cases.len(),
            args.skip,
            args.sets
        )));
    }
    let specs = if args.variant.is_empty() && args.poems.is_empty() {
        vec!["ours".to_owned()]
    } else {
        args.variant
    };
    let mut variants = Vec::new();
    let mut described = String::new();
    for given in &args.poems {
        let (name, path) = given
            .split_once('=')
            .ok_or_else(|| Error::Input(format!("--poems {given}: expected NAME=FILE")))?;
        let poems = blind::parse_poems(path, &read_text(Path::new(path))?, &cases)?;
        variants.push((name.to_owned(), poems));
        described.push_str(&format!("# variant {name}: poems from {path}\n"));
    }
    for spec in &specs {
        let (name, settings) = match spec.split_once(':') {
            Some((name, settings)) => (name, settings.split(',').map(str::to_owned).collect()),
            None => (spec.as_str(), Vec::new()),
        };
        let config = Config::load_with_settings(user_file, &settings)?;
        tracing::info!(variant = name, "writing {} poems", cases.len());
        let best = if config.poem.style == Style::Jiju {
            best_jiju_poems(
                &load_jiju(&config)?,
                &cases,
                config.sampling(),
                config.poem.candidates,
                args.seed,
            )?
        } else {
            best_poems(
                &mut load_poet(&config, placement, None)?,
                &cases,
                config.sampling(),
                config.poem.candidates,
                args.seed,
            )?
        };
        variants.push((name.to_owned(), best.into_iter().map(|c| c.lines).collect()));
        described.push_str(&format!("# variant {name}: {}\n", settings.join(" ")));
    }
    let sheet = blind::make_sheet(&cases, args.skip, &variants, args.seed)?;
    let written = std::fs::create_dir_all(&args.out)
        .and_then(|()| std::fs::write(&sheet_path, &sheet.text))
        .and_then(|()| std::fs::write(&key_path, described + &sheet.key));
    written.map_err(|e| Error::Input(format!("cannot write to {}: {e}", args.out.display())))?;
    println!(
        "{} (for the readers) and {} (not for them): sets {}–{} of {}",
        sheet_path.display(),
        key_path.display(),
        args.skip + 1,
        args.skip + args.sets,
        args.set.display()
    );
    Ok(ExitCode::SUCCESS)
}

fn scores(args: ScoresArgs) -> Result<ExitCode, Error> {
    let key_path = if args.key.is_dir() {
        args.key.join("key.tsv")
    } else {
        args.key
    };
    let key = blind::Key::parse(&key_path.display().to_string(), &read_text(&key_path)?)?;
    let mut readers = Vec::new();
    for path in &args.readers {
        let name = path
            .file_stem()
            .unwrap_or_default()
            .to_string_lossy()
            .into_owned();
        let scores = blind::parse_scores(&path.display().to_string(), &read_text(path)?, &key)?;
        readers.push((name, scores));
    }
    let rows = blind::summarize(&key, &readers);
    if args.json {
        println!("{}", blind::json(&rows));
    } else {
        print!("{}", blind::table(&rows));
    }
    Ok(ExitCode::SUCCESS)
}

fn check(poem: &str, json: bool) -> ExitCode {
    let report = checker::check(poem);
    if json {
        println!(
            "{}",
            serde_json::to_string(&report).expect("a report serialises")
        );
    } else {
        match report.form {
            Some(form) => println!(
                "体裁 {form}  韵部 {}",
                report.rhyme_group.as_deref().unwrap_or("—")
            ),
            None => println!("不是五绝、七绝、五律或七律：需 4 或 8 句，每句 5 或 7 个汉字"),
        }
        for (i, line) in report.lines.iter().enumerate() {
            let rhyme = line
                .rhyme
                .as_deref()
                .map(|g| format!("  韵 {g}"))
                .unwrap_or_default();
            println!("{:>2}  {}  {}{rhyme}", i + 1, line.text, line.tones);
        }
        if report.pass {
            println!("合律");
        }
        for v in &report.violations {
            if v.line == 0 {
                println!("✗ {}", v.rule.name());
            } else {
                println!("✗ 第{}句第{}字  {}", v.line, v.char_index, v.rule.name());
            }
        }
    }
    if report.pass {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    }
}

//! Errors, one enum per layer, joined in [`Error`]; each says what went wrong
//! in words a user can act on. `main` maps them to exit codes and prints each
//! error's chain of sources, so a message does not repeat its source.

use std::path::PathBuf;

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read the config file {path}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("the config file {path} is not valid TOML: {message}")]
    Syntax { path: PathBuf, message: String },
    #[error("config key `{key}`: {message}")]
    Invalid { key: String, message: String },
    #[error("config key `{key}`: {problem}")]
    Placement {
        key: &'static str,
        problem: PlacementError,
    },
}

/// A `models.device` or `models.dtype` that cannot be had.
#[derive(Debug, thiserror::Error)]
pub enum PlacementError {
    #[error("'{0}': expected cpu, auto or cuda:N")]
    Device(String),
    #[error("'{setting}': no usable GPU ({cause}); build with --features cuda, or use cpu")]
    NoGpu {
        setting: String,
        cause: Box<candle_core::Error>,
    },
    #[error("'bf16' is for a GPU; use f32 (or auto) on the CPU")]
    Bf16OnCpu,
    #[error("'{0}': expected auto, f32 or bf16")]
    Dtype(String),
}

/// The saved settings cannot be read back at start.
#[derive(Debug, thiserror::Error)]
pub enum StateError {
    #[error("cannot read the settings file {path}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("the settings file {path} is damaged; move it away to start afresh")]
    Damaged {
        path: PathBuf,
        source: serde_json::Error,
    },
}

#[derive(Debug, thiserror::Error)]
pub enum PhotoError {
    #[error("the photo is empty (0 bytes)")]
    Empty,
    #[error("the photo is {bytes} bytes; the limit is {max}")]
    TooLarge { bytes: u64, max: u64 },
    #[error("that is not an image (PNG, JPEG, GIF, WebP, BMP and TIFF work)")]
    NotAnImage,
    #[error("this image format is not supported: {0}")]
    Unsupported(String),
    #[error("the photo is {width}×{height}, over the {max_megapixels} megapixel limit")]
    TooManyPixels {
        width: u32,
        height: u32,
        max_megapixels: f64,
    },
    #[error("the photo cannot be read (damaged or cut short?): {0}")]
    Unreadable(String),
}

#[derive(Debug, thiserror::Error)]
pub enum ModelError {
    #[error("the model file {path} is missing or unreadable")]
    MissingFile {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("the model file {path} is not valid JSON of its kind")]
    Json {
        path: PathBuf,
        source: serde_json::Error,
    },
    #[error("the tokenizer {path} cannot be loaded")]
    TokenizerFile {
        path: PathBuf,
        source: tokenizers::Error,
    },
    #[error("the tokenizer failed: {0}")]
    Tokenize(tokenizers::Error),
    /// A file that reads but describes something this program cannot run.
    #[error("the model file {path} is not usable: {problem}")]
    Unsupported { path: PathBuf, problem: String },
    #[error("Chinese-CLIP runs in f32 or bf16, not f16 (it is not checked against the reference in f16)")]
    ClipF16,
    /// `needed`: the files a Chinese-CLIP directory holds, in words.
    #[error("{dir} is not a Chinese-CLIP directory: it needs {needed}")]
    NotClipDir { dir: PathBuf, needed: &'static str },
    #[error("cannot download {repo} from the Hugging Face hub. Offline, download it elsewhere and point --clip-model (or models.clip_dir) at a directory with {needed}")]
    ClipDownload {
        repo: String,
        needed: &'static str,
        source: hf_hub::api::sync::ApiError,
    },
    #[error("{repo} is not in the Hugging Face cache and HF_HUB_OFFLINE=1; download it elsewhere and point --clip-model (or models.clip_dir) at a directory with {needed}")]
    ClipOffline { repo: String, needed: &'static str },
    #[error("cannot load the weights in {0}: {1}")]
    Weights(PathBuf, Box<candle_core::Error>),
    #[error("the model failed while computing: {0}")]
    Compute(Box<candle_core::Error>),
    /// One failure of a batch, the answer of every request in it.
    #[error(transparent)]
    Batch(std::sync::Arc<ModelError>),
}

impl From<candle_core::Error> for ModelError {
    fn from(e: candle_core::Error) -> Self {
        ModelError::Compute(Box::new(e))
    }
}

#[derive(Debug, thiserror::Error)]
pub enum KeywordError {
    #[error("cannot read the keyword file {path}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("the keyword file {path} is not in a known format: {problem}")]
    Format {
        path: PathBuf,
        problem: VocabularyError,
    },
}

/// What is wrong with a keyword file's text.
#[derive(Debug, PartialEq, thiserror::Error)]
pub enum VocabularyError {
    #[error("line {0}: expected `[主题] 关键词:提示语 | …`")]
    NotAnEntry(usize),
    #[error("line {0}: a keyword is empty")]
    EmptyKeyword(usize),
    #[error("no keywords in the file")]
    NoKeywords,
    #[error("the keyword {0} is listed twice")]
    Twice(String),
}

/// The 集句 poet's files (the line index, the judge) cannot be read.
#[derive(Debug, thiserror::Error)]
pub enum LineIndexError {
    #[error("the 集句 poet's file {path} is missing or unreadable")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("the 集句 poet's file {path} is damaged ({problem}); rebuild it with training/prepare.py and training/train_judge.py, or restore it from the repository")]
    Corrupt { path: PathBuf, problem: String },
}

#[derive(Debug, thiserror::Error)]
pub enum PoemError {
    #[error("{0}")]
    Acrostic(String),
    /// A poem given for 换一句 that the rules cannot work with.
    #[error("{0}")]
    Lines(String),
    #[error(
        "no candidate could finish the poem under the rules; try other keywords or another seed"
    )]
    NoPoem,
    /// A person's own line that the lines before it leave no room for: the
    /// strict check's faults, in a sentence.
    #[error("{0}")]
    OwnLine(String),
    /// Your own line asked of a poet that cannot write on from it.
    #[error("writing on from your own line is for written poems by the T5 poet; {0}")]
    OwnLineUnsupported(&'static str),
    #[error(transparent)]
    Model(#[from] ModelError),
    #[error(transparent)]
    Llm(#[from] LlmError),
    #[error(transparent)]
    Jiju(#[from] LineIndexError),
    /// The 集句 poet was asked for but its files could not be loaded at start.
    #[error("the 集句 poet is not available here (its line index could not be loaded); the generated poems still work")]
    NoJiju,
}

/// Either side of embedding a photo can fail.
#[derive(Debug, thiserror::Error)]
pub enum EmbedError {
    #[error(transparent)]
    Photo(#[from] PhotoError),
    #[error(transparent)]
    Model(#[from] ModelError),
}

/// The LLM poet's model cannot be had or run.
#[derive(Debug, thiserror::Error)]
pub enum LlmError {
    #[error("the LLM {model} has no {what}; a model directory needs config.json, tokenizer.json and *.safetensors weights")]
    Missing { model: String, what: &'static str },
    /// (`cause` is shown in the message, not chained as a source: it is one
    /// line, and `main` prints sources again.)
    #[error("the LLM {model} could not be loaded: {cause:#}")]
    Load { model: String, cause: anyhow::Error },
    #[error("the LLM {model} knows only {found} Chinese characters; choose a model that writes Chinese, such as Qwen/Qwen3-1.7B")]
    NoChinese { model: String, found: usize },
    #[error("this yingshi was built without the LLM poet; build it with `--features llm`")]
    NotBuilt,
    #[error("no LLM is loaded: set models.llm, or pass --llm-model")]
    NotLoaded,
    #[error("the LLM failed while writing: {0:#}")]
    Generate(anyhow::Error),
}

/// A blind-reading sheet that cannot be written, or a key or score file that
/// cannot be read.
#[derive(Debug, thiserror::Error)]
pub enum ReadingError {
    #[error("{path} line {line}: {message}")]
    Line {
        path: String,
        line: usize,
        message: String,
    },
    #[error("{path} has {poems} poems for {sets} sets")]
    Short {
        path: String,
        poems: usize,
        sets: usize,
    },
    #[error("{path} has no score for {count} poem(s) of the sheet: {ids}")]
    Missing {
        path: String,
        count: usize,
        ids: String,
    },
    #[error("{0}")]
    Sheet(String),
}

impl ReadingError {
    pub(crate) fn line(path: &str, line: usize, message: &str) -> Self {
        ReadingError::Line {
            path: path.to_owned(),
            line,
            message: message.to_owned(),
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error(transparent)]
    Config(#[from] ConfigError),
    #[error(transparent)]
    Photo(#[from] PhotoError),
    #[error(transparent)]
    Keywords(#[from] KeywordError),
    #[error(transparent)]
    Model(#[from] ModelError),
    #[error(transparent)]
    Poem(#[from] PoemError),
    #[error(transparent)]
    Reading(#[from] ReadingError),
    /// The user's input is wrong (bad arguments, a poem that fails the check…).
    #[error("{0}")]
    Input(String),
    /// The bot's saved settings cannot be read.
    #[error(transparent)]
    State(#[from] StateError),
    /// The bot could not start or lost its connection.
    #[error("{0}")]
    Service(String),
    /// Embedding a photo failed: the photo, or the model.
    #[error(transparent)]
    Embed(#[from] EmbedError),
    /// One failure of a batch, the answer of every request in it.
    #[error(transparent)]
    Batch(std::sync::Arc<Error>),
    /// A fault of the program itself, not of what it was given.
    #[error("internal error: {0}")]
    Internal(&'static str),
}

impl Error {
    /// 2 for problems with what the user gave us, 3 for faults of the
    /// program itself, 1 for everything else (a model or the network failed).
    pub fn exit_code(&self) -> i32 {
        match self {
            Error::Config(_)
            | Error::Input(_)
            | Error::Photo(_)
            | Error::Keywords(_)
            | Error::Reading(_)
            | Error::State(_)
            | Error::Poem(
                PoemError::Acrostic(_)
                | PoemError::Lines(_)
                | PoemError::OwnLine(_)
                | PoemError::OwnLineUnsupported(_)
                | PoemError::Jiju(_)
                | PoemError::NoJiju
                | PoemError::Llm(
                    LlmError::Missing { .. }
                    | LlmError::Load { .. }
                    | LlmError::NoChinese { .. }
                    | LlmError::NotBuilt
                    | LlmError::NotLoaded,
                ),
            ) => 2,
            Error::Embed(EmbedError::Photo(_)) => 2,
            Error::Batch(inner) => inner.exit_code(),
            Error::Internal(_) => 3,
            Error::Model(_) | Error::Poem(_) | Error::Service(_) | Error::Embed(_) => 1,
        }
    }
}

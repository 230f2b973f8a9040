//! Settings: `config/default.toml` (compiled in), then the user's file, then
//! `YINGSHI_<SECTION>__<KEY>` environment variables and `DISCORD_TOKEN`.
//!
//! The layers are merged as TOML values and deserialised once into [`Config`],
//! so an error names the key path whatever layer it came from; unknown keys are
//! errors. Values are then checked against their ranges in [`Config::validate`].

use std::fmt;
use std::path::{Path, PathBuf};

use serde::Deserialize;

use crate::device::DeviceSetting;
use crate::error::{ConfigError, PlacementError};
use crate::linear::ProductPrecision;
use crate::poem::{Form, PoetChoice, Style};

pub(crate) mod shards;
use shards::Shards;

/// The default settings, every key with a comment.
pub(crate) const DEFAULT_TOML: &str = include_str!("../config/default.toml");

const ENV_PREFIX: &str = "YINGSHI_";

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    pub models: Models,
    pub keywords: Keywords,
    pub photo: Photo,
    pub poem: Poem,
    pub(crate) download: Download,
    pub(crate) limits: Limits,
    pub batch: Batch,
    pub(crate) discord: Discord,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Models {
    pub(crate) clip_dir: String,
    pub(crate) clip_repo: String,
    pub(crate) clip_revision: String,
    pub poet_dir: String,
    pub jiju_dir: String,
    pub llm: String,
    pub llm_isq: String,
    pub(crate) cache_dir: String,
    pub(crate) device: String,
    pub(crate) dtype: String,
    pub cpu_threads: usize,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Keywords {
    pub vocabulary: String,
    pub top_k: usize,
    pub diverse: bool,
    pub(crate) photo_bf16: bool,
}

impl Keywords {
    /// How the vision tower takes its products (`keywords.photo_bf16`).
    pub fn photo_precision(&self) -> ProductPrecision {
        bf16_on_tiles_if(self.photo_bf16)
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Photo {
    pub max_megapixels: f64,
    pub max_bytes: u64,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Poem {
    pub style: Style,
    pub poet: PoetChoice,
    pub form: Form,
    pub candidates: usize,
    pub(crate) temperature: f64,
    pub(crate) top_p: f64,
    pub(crate) keyword_bonus: f32,
    pub(crate) keyword_weight: f64,
    pub(crate) clip_weight: f64,
    pub(crate) rerank_bf16: bool,
    pub(crate) ngram_weight: f32,
}

impl Poem {
    /// How the poems' side of the rerank takes its products
    /// (`poem.rerank_bf16`).
    pub(crate) fn rerank_precision(&self) -> ProductPrecision {
        bf16_on_tiles_if(self.rerank_bf16)
    }
}

/// A `*_bf16` setting's precision: bf16 on AMX tiles where asked (and the
/// CPU has them), else f32.
fn bf16_on_tiles_if(bf16: bool) -> ProductPrecision {
    if bf16 {
        ProductPrecision::Bf16OnTiles
    } else {
        ProductPrecision::F32
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct Download {
    pub(crate) connect_timeout_secs: u64,
    pub(crate) total_timeout_secs: u64,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct Limits {
    pub(crate) user_per_minute: u32,
    pub(crate) channel_per_minute: u32,
    pub(crate) queue_size: usize,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Batch {
    pub max_requests: usize,
    pub max_rows: usize,
    pub wait_ms: u64,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct Discord {
    pub(crate) token: Secret,
    pub(crate) proxy: String,
    pub(crate) state_file: String,
    pub(crate) shards: Shards,
}

/// A string that never shows in a log line or a Debug print.
#[derive(Clone, Default, Deserialize)]
#[serde(transparent)]
pub(crate) struct Secret(String);

impl Secret {
    pub(crate) fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(if self.0.is_empty() {
            "<unset>"
        } else {
            "<redacted>"
        })
    }
}

impl Config {
    /// Loads the defaults, the optional user file and the environment.
    pub fn load(user_file: Option<&Path>) -> Result<Self, ConfigError> {
        Self::load_with_env(user_file, std::env::vars())
    }

    /// As [`Config::load`], with the environment given (tests pass their own).
    pub fn load_with_env(
        user_file: Option<&Path>,
        env: impl IntoIterator<Item = (String, String)>,
    ) -> Result<Self, ConfigError> {
        Self::load_layers(user_file, env, &[])
    }

    /// As [`Config::load`], then `section.key=value` settings over every
    /// other layer (a blind sheet's variants: `poem.temperature=0.3`).
    pub fn load_with_settings(
        user_file: Option<&Path>,
        settings: &[String],
    ) -> Result<Self, ConfigError> {
        Self::load_layers(user_file, std::env::vars(), settings)
    }

    fn load_layers(
        user_file: Option<&Path>,
        env: impl IntoIterator<Item = (String, String)>,
        settings: &[String],
    ) -> Result<Self, ConfigError> {
        let mut merged: toml::Table = DEFAULT_TOML
            .parse()
            .expect("config/default.toml is valid TOML");
        if let Some(path) = user_file {
            let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
                path: path.to_owned(),
                source,
            })?;
            let user: toml::Table =
                text.parse()
                    .map_err(|e: toml::de::Error| ConfigError::Syntax {
                        path: path.to_owned(),
                        message: e.to_string(),
                    })?;
            merge(&mut merged, user);
        }
        let from_env = env
            .into_iter()
            .filter_map(|(name, value)| env_key(&name).map(|(section, key)| (section, key, value)));
        let given = settings
            .iter()
            .map(|s| setting(s))
            .collect::<Result<Vec<_>, _>>()?;
        for (section, key, value) in from_env.chain(given) {
            let table = merged
                .entry(section)
                .or_insert_with(|| toml::Value::Table(Default::default()));
            if let toml::Value::Table(table) = table {
                table.insert(key, env_value(&value));
            }
        }
        let config: Config =
            serde_path_to_error::deserialize(toml::Value::Table(merged)).map_err(|e| {
                ConfigError::Invalid {
                    key: e.path().to_string(),
                    message: e.inner().to_string(),
                }
            })?;
        config.validate()?;
        Ok(config)
    }

    fn validate(&self) -> Result<(), ConfigError> {
        let p = &self.poem;
        for (key, range, value) in [
            ("keywords.top_k", bounds::TOP_K, self.keywords.top_k),
            ("poem.candidates", bounds::CANDIDATES, p.candidates),
        ] {
            if let Some(message) = out_of(&range, value) {
                return Err(ConfigError::Invalid {
                    key: key.into(),
                    message,
                });
            }
        }
        check_range("poem.top_p", p.top_p, f64::MIN_POSITIVE, 1.0)?;
        check_range("poem.temperature", p.temperature, f64::MIN_POSITIVE, 10.0)?;
        check_range("poem.ngram_weight", p.ngram_weight as f64, 0.0, 1.0)?;
        check_range(
            "photo.max_megapixels",
            self.photo.max_megapixels,
            0.01,
            400.0,
        )?;
        check_range(
            "photo.max_bytes",
            self.photo.max_bytes as f64,
            1.0,
            25.0 * 1024.0 * 1024.0,
        )?;
        check_range(
            "limits.queue_size",
            self.limits.queue_size as f64,
            1.0,
            100_000.0,
        )?;
        self.check_placement()?;
        check_range(
            "batch.max_requests",
            self.batch.max_requests as f64,
            1.0,
            256.0,
        )?;
        check_range("batch.max_rows", self.batch.max_rows as f64, 1.0, 8192.0)?;
        check_range("batch.wait_ms", self.batch.wait_ms as f64, 0.0, 1000.0)?;
        Ok(())
    }

    /// The poet's sampling settings.
    pub fn sampling(&self) -> crate::poem::Sampling {
        crate::poem::Sampling {
            temperature: self.poem.temperature,
            top_p: self.poem.top_p,
            keyword_bonus: self.poem.keyword_bonus,
            keyword_weight: self.poem.keyword_weight,
            ngram_weight: self.poem.ngram_weight,
        }
    }

    /// `models.device` and `models.dtype` as written, without setting up a
    /// device: [`Config::placement`] does that once, after the CPU threads are pinned.
    fn check_placement(&self) -> Result<(), ConfigError> {
        let device = DeviceSetting::parse(&self.models.device).map_err(|problem| {
            ConfigError::Placement {
                key: "models.device",
                problem,
            }
        })?;
        let dtype = &self.models.dtype;
        let dtype_problem = if device == DeviceSetting::Cpu {
            crate::device::parse_dtype(dtype, &candle_core::Device::Cpu).err()
        } else {
            (!["auto", "f32", "bf16"].contains(&dtype.as_str()))
                .then(|| PlacementError::Dtype(dtype.clone()))
        };
        match dtype_problem {
            Some(problem) => Err(ConfigError::Placement {
                key: "models.dtype",
                problem,
            }),
            None => Ok(()),
        }
    }

    /// The device and dtype the models run on, from `models.device` and `models.dtype`.
    pub fn placement(&self) -> Result<crate::device::Placement, ConfigError> {
        let device = crate::device::parse_device(&self.models.device).map_err(|problem| {
            ConfigError::Placement {
                key: "models.device",
                problem,
            }
        })?;
        let dtype = crate::device::parse_dtype(&self.models.dtype, &device).map_err(|problem| {
            ConfigError::Placement {
                key: "models.dtype",
                problem,
            }
        })?;
        Ok(crate::device::Placement { device, dtype })
    }

    /// Resolves a configured path: as given if it exists (or is absolute), else
    /// relative to the source tree the binary was built from, where the shipped
    /// model and vocabulary live.
    pub fn resolve(path: &str) -> PathBuf {
        let given = PathBuf::from(path);
        if given.is_absolute() || given.exists() {
            return given;
        }
        let in_tree = Path::new(env!("CARGO_MANIFEST_DIR")).join(path);
        if in_tree.exists() {
            in_tree
        } else {
            given
        }
    }
}

/// The one table of bounds: the settings, the CLI and the bot's commands all
/// check what they are given against these.
pub mod bounds {
    use std::ops::RangeInclusive;

    /// Candidates written per poem.
    pub const CANDIDATES: RangeInclusive<usize> = 1..=32;
    /// Keywords a photo gives.
    pub const TOP_K: RangeInclusive<usize> = 1..=16;
    /// Seconds a user waits between requests in a channel.
    pub(crate) const USER_COOLDOWN_SECS: RangeInclusive<usize> = 0..=3600;
    /// Characters in one keyword.
    pub(crate) const KEYWORD_CHARS: usize = 8;
}

/// Checks a count against one of [`bounds`]: `None` when it is inside.
pub fn out_of(range: &std::ops::RangeInclusive<usize>, value: usize) -> Option<String> {
    (!range.contains(&value)).then(|| {
        format!(
            "{value} is out of range: expected {} to {}",
            range.start(),
            range.end()
        )
    })
}

fn check_range(key: &str, value: f64, min: f64, max: f64) -> Result<(), ConfigError> {
    if value.is_nan() || value < min || value > max {
        return Err(ConfigError::Invalid {
            key: key.into(),
            message: format!("{value} is out of range: expected {min} to {max}"),
        });
    }
    Ok(())
}

/// Deep-merges `over` into `base`: tables merge key by key, other values replace.
fn merge(base: &mut toml::Table, over: toml::Table) {
    for (key, value) in over {
        match (base.get_mut(&key), value) {
            (Some(toml::Value::Table(b)), toml::Value::Table(o)) => merge(b, o),
            (_, value) => {
                base.insert(key, value);
            }
        }
    }
}

/// `YINGSHI_POEM__CANDIDATES` → (`poem`, `candidates`); `DISCORD_TOKEN` → (`discord`, `token`).
fn env_key(name: &str) -> Option<(String, String)> {
    if name == "DISCORD_TOKEN" {
        return Some(("discord".into(), "token".into()));
    }
    let rest = name.strip_prefix(ENV_PREFIX)?;
    let (section, key) = rest.split_once("__")?;
    Some((section.to_lowercase(), key.to_lowercase()))
}

/// `poem.temperature=0.3` → (`poem`, `temperature`, `0.3`).
fn setting(text: &str) -> Result<(String, String, String), ConfigError> {
    let malformed = || ConfigError::Invalid {
        key: text.to_owned(),
        message: "expected section.key=value, e.g. poem.temperature=0.3".into(),
    };
    let (path, value) = text.split_once('=').ok_or_else(malformed)?;
    let (section, key) = path.trim().split_once('.').ok_or_else(malformed)?;
    if section.is_empty() || key.is_empty() {
        return Err(malformed());
    }
    Ok((section.to_owned(), key.to_owned(), value.trim().to_owned()))
}

/// An environment value (or a setting's) is read as a TOML value when it is one (`8`, `true`,
/// `0.5`), else as a string, so `YINGSHI_POEM__FORM=五绝` needs no quotes.
fn env_value(raw: &str) -> toml::Value {
    format!("v = {raw}")
        .parse::<toml::Table>()
        .ok()
        .and_then(|mut t| t.remove("v"))
        .unwrap_or_else(|| toml::Value::String(raw.to_owned()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn load(file: Option<&str>, env: &[(&str, &str)]) -> Result<Config, ConfigError> {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("user.toml");
        if let Some(text) = file {
            std::fs::write(&path, text).unwrap();
        }
        let env = env.iter().map(|(k, v)| (k.to_string(), v.to_string()));
        Config::load_with_env(file.map(|_| path.as_path()), env)
    }

    #[test]
    fn defaults_load() {
        let c = load(None, &[]).unwrap();
        assert_eq!(c.poem.form, Form::QiJue);
        assert_eq!(c.keywords.top_k, 4);
    }

    #[test]
    fn user_file_and_env_override_in_order() {
        let c = load(
            Some("[poem]\ncandidates = 3\nform = \"五律\"\n"),
            &[
                ("YINGSHI_POEM__CANDIDATES", "5"),
                ("YINGSHI_KEYWORDS__DIVERSE", "false"),
            ],
        )
        .unwrap();
        assert_eq!(c.poem.candidates, 5);
        assert_eq!(c.poem.form, Form::WuLv);
        assert!(!c.keywords.diverse);
    }

    #[test]
    fn validating_sets_up_no_device() {
        // A GPU named in the settings is set up by placement(), once, not by loading.
        let c = load(None, &[("YINGSHI_MODELS__DEVICE", "cuda:0")]).unwrap();
        if !cfg!(feature = "cuda") {
            let err = c.placement().unwrap_err().to_string();
            assert!(
                err.contains("models.device") && err.contains("cuda"),
                "{err}"
            );
        }
        for (key, value, says) in [
            ("YINGSHI_MODELS__DEVICE", "cuda:x", "cuda:N"),
            ("YINGSHI_MODELS__DTYPE", "bf16", "GPU"),
            ("YINGSHI_MODELS__DTYPE", "f8", "bf16"),
        ] {
            let err = load(None, &[(key, value)]).unwrap_err().to_string();
            assert!(err.contains(says), "{key}={value}: {err}");
        }
    }

    #[test]
    fn unknown_key_is_named() {
        let err = load(Some("[poem]\ncandidate = 3\n"), &[])
            .unwrap_err()
            .to_string();
        assert!(err.contains("poem") && err.contains("candidate"), "{err}");
    }

    #[test]
    fn bad_value_names_key_value_and_expectation() {
        let err = load(Some("[poem]\ncandidates = 0\n"), &[])
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("poem.candidates") && err.contains('0') && err.contains("32"),
            "{err}"
        );
        let err = load(None, &[("YINGSHI_POEM__FORM", "十绝")])
            .unwrap_err()
            .to_string();
        assert!(err.contains("poem.form") && err.contains("十绝"), "{err}");
        let err = load(None, &[("YINGSHI_DISCORD__SHARDS", "8/8")])
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("discord.shards") && err.contains("8/8"),
            "{err}"
        );
        let c = load(None, &[("YINGSHI_DISCORD__SHARDS", "0-3/8")]).unwrap();
        assert_eq!(c.discord.shards.to_string(), "0-3/8");
    }

    #[test]
    fn settings_override_file_and_env() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("user.toml");
        std::fs::write(&path, "[poem]\ncandidates = 3\n").unwrap();
        let settings = ["poem.candidates=12".to_string(), "poem.form = 五律".into()];
        let env = [("YINGSHI_POEM__CANDIDATES".to_string(), "5".to_string())];
        let c = Config::load_layers(Some(&path), env, &settings).unwrap();
        assert_eq!(c.poem.candidates, 12);
        assert_eq!(c.poem.form, Form::WuLv);
    }

    #[test]
    fn a_malformed_or_unknown_setting_is_named() {
        for (bad, named) in [
            ("temperature=0.3", "temperature=0.3"),
            ("poem.temperature", "poem.temperature"),
            ("poem.tempo=0.3", "tempo"),
            ("poem.temperature=-1", "poem.temperature"),
        ] {
            let err = Config::load_layers(None, Vec::new(), &[bad.to_string()])
                .unwrap_err()
                .to_string();
            assert!(err.contains(named), "{bad}: {err}");
        }
    }

    #[test]
    fn token_never_prints() {
        let c = load(None, &[("DISCORD_TOKEN", "abc.def.ghi")]).unwrap();
        assert_eq!(c.discord.token.expose(), "abc.def.ghi");
        assert!(!format!("{c:?}").contains("abc.def"));
    }
}

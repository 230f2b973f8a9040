//! Where Chinese-CLIP's files come from: a local directory, or the Hugging
//! Face hub (downloaded once into the hub's cache, with a progress bar, and
//! read from that cache offline afterwards).

use std::path::{Path, PathBuf};

use hf_hub::api::sync::ApiBuilder;
use hf_hub::{Cache, Repo, RepoType};

use crate::error::ModelError;

/// Files a model directory needs; the weights come as one of the two names.
const REQUIRED: [&str; 2] = ["config.json", "vocab.txt"];
const OPTIONAL: [&str; 1] = ["preprocessor_config.json"];
const WEIGHTS: [&str; 2] = ["model.safetensors", "pytorch_model.bin"];

#[derive(Debug, Clone)]
pub enum ClipSource {
    Dir(PathBuf),
    Hub { repo: String, revision: String },
}

/// The directory holding the model's files, downloading them if needed.
pub fn locate(source: &ClipSource) -> Result<PathBuf, ModelError> {
    match source {
        ClipSource::Dir(dir) => {
            if !dir.join("config.json").exists() {
                return Err(ModelError::ClipUnavailable(format!(
                    "{} is not a Chinese-CLIP directory: {}",
                    dir.display(),
                    needed()
                )));
            }
            Ok(dir.clone())
        }
        ClipSource::Hub { repo, revision } => {
            let hub_repo = Repo::with_revision(repo.clone(), RepoType::Model, revision.clone());
            if let Some(dir) = cached(&hub_repo) {
                return Ok(dir);
            }
            download(&hub_repo).map_err(|why| {
                ModelError::ClipUnavailable(format!(
                    "cannot download {repo} from the Hugging Face hub ({why}). Offline, download it \
                     elsewhere and point --clip-model (or models.clip_dir) at a directory with {}",
                    needed()
                ))
            })
        }
    }
}

fn needed() -> String {
    format!(
        "{} and {} or {}",
        REQUIRED.join(", "),
        WEIGHTS[0],
        WEIGHTS[1]
    )
}

/// The snapshot directory when every needed file is already in the cache.
fn cached(repo: &Repo) -> Option<PathBuf> {
    let cache = Cache::from_env().repo(repo.clone());
    let config = cache.get(REQUIRED[0])?;
    REQUIRED[1..]
        .iter()
        .all(|f| cache.get(f).is_some())
        .then_some(())?;
    WEIGHTS.iter().find_map(|f| cache.get(f))?;
    config.parent().map(Path::to_path_buf)
}

fn download(repo: &Repo) -> Result<PathBuf, String> {
    if std::env::var_os("HF_HUB_OFFLINE").is_some_and(|v| v == "1") {
        return Err("HF_HUB_OFFLINE=1 and the files are not in the cache".into());
    }
    let api = ApiBuilder::from_env()
        .with_progress(true)
        .build()
        .map_err(|e| e.to_string())?
        .repo(repo.clone());
    let mut dir = None;
    for file in REQUIRED {
        let path = api.get(file).map_err(|e| format!("{file}: {e}"))?;
        dir = path.parent().map(Path::to_path_buf);
    }
    for file in OPTIONAL {
        // Missing optional files take the defaults.
        let _ = api.get(file);
    }
    let mut last_error = String::new();
    for file in WEIGHTS {
        match api.get(file) {
            Ok(_) => return dir.ok_or_else(|| "no snapshot directory".into()),
            Err(e) => last_error = format!("{file}: {e}"),
        }
    }
    Err(last_error)
}

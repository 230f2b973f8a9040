//! Where Chinese-CLIP's files come from: a local directory, or the Hugging
//! Face hub (downloaded once into the hub's cache, with a progress bar, and
//! read from that cache offline afterwards).

use std::path::{Path, PathBuf};

use hf_hub::api::sync::{ApiBuilder, ApiError};
use hf_hub::{Cache, Repo, RepoType};

use crate::error::ModelError;

/// Files a model directory needs; the weights come as one of the two names.
const REQUIRED: [&str; 2] = ["config.json", "vocab.txt"];
const OPTIONAL: [&str; 1] = ["preprocessor_config.json"];
const WEIGHTS: [&str; 2] = ["model.safetensors", "pytorch_model.bin"];
/// What a directory needs, in the words of an error message.
pub(crate) const NEEDED_FILES: &str =
    "config.json, vocab.txt and model.safetensors or pytorch_model.bin";

#[derive(Debug, Clone)]
pub(crate) enum ClipSource {
    Dir(PathBuf),
    Hub { repo: String, revision: String },
}

/// The directory holding the model's files, downloading them if needed.
pub(crate) fn locate(source: &ClipSource) -> Result<PathBuf, ModelError> {
    match source {
        ClipSource::Dir(dir) => {
            if !dir.join("config.json").exists() {
                return Err(ModelError::NotClipDir {
                    dir: dir.clone(),
                    needed: NEEDED_FILES,
                });
            }
            Ok(dir.clone())
        }
        ClipSource::Hub { repo, revision } => {
            let hub_repo = Repo::with_revision(repo.clone(), RepoType::Model, revision.clone());
            if let Some(dir) = cached(&hub_repo) {
                return Ok(dir);
            }
            if std::env::var_os("HF_HUB_OFFLINE").is_some_and(|v| v == "1") {
                return Err(ModelError::ClipOffline {
                    repo: repo.clone(),
                    needed: NEEDED_FILES,
                });
            }
            download(&hub_repo).map_err(|source| ModelError::ClipDownload {
                needed: NEEDED_FILES,
                repo: repo.clone(),
                source,
            })
        }
    }
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

/// Downloads the model's files into the hub's cache; returns the snapshot
/// directory (where `config.json` went).
fn download(repo: &Repo) -> Result<PathBuf, ApiError> {
    let api = ApiBuilder::from_env()
        .with_progress(true)
        .build()?
        .repo(repo.clone());
    let config = api.get(REQUIRED[0])?;
    for file in &REQUIRED[1..] {
        api.get(file)?;
    }
    for file in OPTIONAL {
        // Missing optional files take the defaults.
        let _ = api.get(file);
    }
    // Either weights file will do.
    api.get(WEIGHTS[0]).or_else(|_| api.get(WEIGHTS[1]))?;
    Ok(config
        .parent()
        .expect("a downloaded file lies in a snapshot directory")
        .to_path_buf())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_message_names_every_needed_file() {
        for file in REQUIRED.iter().chain(&WEIGHTS) {
            assert!(NEEDED_FILES.contains(file), "{file}");
        }
    }
}

//! Text embeddings on disk, one file per model (named by its fingerprint),
//! so a restart reuses them and a custom list embeds only its new texts.
//!
//! File: records of `[u32 text bytes][text][u32 dim][dim × f32]`, little
//! endian, appended; a record cut short by a crash is ignored on reading.

use std::collections::HashMap;
use std::io::Write;
use std::path::{Path, PathBuf};

use crate::embedding::ClipModel;
use crate::error::ModelError;

pub struct EmbeddingCache {
    file: Option<PathBuf>,
    entries: HashMap<String, Vec<f32>>,
}

impl EmbeddingCache {
    /// The cache for `clip` under `dir`; `None` keeps it in memory only.
    pub fn open(dir: Option<&Path>, clip: &ClipModel) -> Self {
        let file = dir.map(|d| d.join(format!("text-embeddings-{}.bin", clip.fingerprint())));
        let entries = file.as_deref().map(read).unwrap_or_default();
        Self { file, entries }
    }

    pub fn len(&self) -> usize {
        self.entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// Embeddings of `texts`, in order: cached ones read, the rest computed and saved.
    pub(crate) fn embed(
        &mut self,
        clip: &ClipModel,
        texts: &[String],
    ) -> Result<Vec<Vec<f32>>, ModelError> {
        let mut missing: Vec<String> = texts
            .iter()
            .filter(|t| !self.entries.contains_key(*t))
            .cloned()
            .collect();
        missing.sort();
        missing.dedup();
        if !missing.is_empty() {
            tracing::info!(texts = missing.len(), "embedding keyword prompts");
            let computed = clip.embed_texts(&missing)?;
            if let Err(e) = self.append(&missing, &computed) {
                tracing::warn!("cannot save keyword embeddings: {e}");
            }
            self.entries.extend(missing.into_iter().zip(computed));
        }
        Ok(texts.iter().map(|t| self.entries[t].clone()).collect())
    }

    fn append(&self, texts: &[String], vectors: &[Vec<f32>]) -> std::io::Result<()> {
        let Some(path) = &self.file else {
            return Ok(());
        };
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir)?;
        }
        let mut buf = Vec::new();
        for (text, v) in texts.iter().zip(vectors) {
            buf.extend((text.len() as u32).to_le_bytes());
            buf.extend(text.as_bytes());
            buf.extend((v.len() as u32).to_le_bytes());
            v.iter().for_each(|x| buf.extend(x.to_le_bytes()));
        }
        let mut f = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(path)?;
        f.write_all(&buf)
    }
}

fn read(path: &Path) -> HashMap<String, Vec<f32>> {
    let Ok(bytes) = std::fs::read(path) else {
        return HashMap::new();
    };
    let mut entries = HashMap::new();
    let mut at = 0;
    let u32_at = |at: usize| -> Option<usize> {
        Some(u32::from_le_bytes(bytes.get(at..at + 4)?.try_into().ok()?) as usize)
    };
    while let Some(len) = u32_at(at) {
        let Some(text) = bytes
            .get(at + 4..at + 4 + len)
            .and_then(|b| std::str::from_utf8(b).ok())
        else {
            break;
        };
        let Some(dim) = u32_at(at + 4 + len) else {
            break;
        };
        let start = at + 8 + len;
        let Some(raw) = bytes.get(start..start + 4 * dim) else {
            break;
        };
        let v = raw
            .chunks_exact(4)
            .map(|c| f32::from_le_bytes(c.try_into().expect("4 bytes")))
            .collect();
        entries.insert(text.to_owned(), v);
        at = start + 4 * dim;
    }
    entries
}

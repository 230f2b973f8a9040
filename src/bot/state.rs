//! Per-channel settings and keyword lists, held in a `DashMap` and saved as a
//! JSON snapshot (written to a temporary file, then renamed over the old one)
//! on every change, so a restart — clean or not — loses nothing.
//!
//! A change that cannot be saved (a full disk, a read-only one) is undone:
//! memory keeps what the file has, the one who asked is told nothing
//! changed, and the next change saves the whole snapshot again, so the bot
//! recovers by itself once the disk has room.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use dashmap::DashMap;
use serde::{Deserialize, Serialize};

use crate::config::bounds;
use crate::error::StateError;
use crate::keywords::KeywordList;
use crate::poem::{Form, PoetChoice, Style};

/// A channel's settings; `None` means the bot's default from the config.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub(crate) struct ChannelSettings {
    /// The channel's own keywords, matched beside the built-in vocabulary, or
    /// alone with `own_keywords_only`.
    pub(crate) keywords: Option<Vec<String>>,
    #[serde(default)]
    pub(crate) own_keywords_only: bool,
    pub(crate) top_k: Option<usize>,
    pub(crate) form: Option<Form>,
    /// Who writes this channel's poems; `None`: poem.poet.
    #[serde(default)]
    pub(crate) poet: Option<PoetChoice>,
    /// Written or 集句; `None`: poem.style.
    #[serde(default)]
    pub(crate) style: Option<Style>,
    pub(crate) candidates: Option<usize>,
    /// Whether photo posts get a poem without a mention.
    pub(crate) auto_reply: bool,
    /// Seconds a user waits between requests in this channel.
    pub(crate) user_cooldown_secs: Option<u64>,
}

#[derive(Debug, thiserror::Error, PartialEq)]
pub(crate) enum SettingError {
    #[error("unknown setting `{0}`; the settings are top_k, form, poet, style, candidates, auto_reply, user_cooldown")]
    UnknownKey(String),
    #[error("`{key}` must be a whole number from {min} to {max}; `{value}` is not")]
    OutOfRange {
        key: &'static str,
        value: String,
        min: usize,
        max: usize,
    },
    #[error("`{key}` must be {expected}; `{value}` is not")]
    BadValue {
        key: &'static str,
        value: String,
        expected: &'static str,
    },
}

impl ChannelSettings {
    /// The keywords this channel's photos are matched against.
    pub(crate) fn keyword_list(&self) -> KeywordList {
        KeywordList::of_channel(self.keywords.as_deref(), self.own_keywords_only)
    }

    /// Sets one setting from its text form, as `/config set` receives it.
    pub(crate) fn set(&mut self, key: &str, value: &str) -> Result<(), SettingError> {
        let bad = |key, expected| SettingError::BadValue {
            key,
            value: value.to_owned(),
            expected,
        };
        let number = |key, range: std::ops::RangeInclusive<usize>| {
            value
                .trim()
                .parse::<usize>()
                .ok()
                .filter(|n| range.contains(n))
                .ok_or_else(|| SettingError::OutOfRange {
                    key,
                    value: value.to_owned(),
                    min: *range.start(),
                    max: *range.end(),
                })
        };
        match key {
            "top_k" => self.top_k = Some(number("top_k", bounds::TOP_K)?),
            "candidates" => self.candidates = Some(number("candidates", bounds::CANDIDATES)?),
            "user_cooldown" => {
                self.user_cooldown_secs =
                    Some(number("user_cooldown", bounds::USER_COOLDOWN_SECS)? as u64)
            }
            "form" => {
                self.form = Some(
                    value
                        .trim()
                        .parse()
                        .map_err(|_| bad("form", "one of 五绝, 七绝, 五律, 七律"))?,
                )
            }
            "poet" => self.poet = Some(value.trim().parse().map_err(|_| bad("poet", "t5 or llm"))?),
            "style" => {
                self.style = Some(
                    value
                        .trim()
                        .parse()
                        .map_err(|_| bad("style", "generate or jiju (集句)"))?,
                )
            }
            "auto_reply" => {
                self.auto_reply = match value.trim() {
                    "on" | "true" | "yes" | "开" => true,
                    "off" | "false" | "no" | "关" => false,
                    _ => return Err(bad("auto_reply", "on or off")),
                }
            }
            other => return Err(SettingError::UnknownKey(other.to_owned())),
        }
        Ok(())
    }
}

#[derive(Debug, thiserror::Error)]
#[error("没能保存设置（{path}: {cause}），所以这次什么也没改；等磁盘有空间后再试一次")]
pub(crate) struct SaveError {
    path: PathBuf,
    /// Shown in the message (it reaches a user as one line), not chained.
    cause: std::io::Error,
}

pub(crate) struct ChannelState {
    channels: DashMap<u64, ChannelSettings>,
    path: PathBuf,
    /// One change at a time, from the change to its snapshot on disk (or
    /// its undoing): an older snapshot never lands last, and none holds
    /// another change that is still to be saved or undone.
    writing: Mutex<()>,
}

impl ChannelState {
    /// Loads the snapshot; a missing file is an empty state, a damaged one an
    /// error (so that it is never overwritten by an empty state).
    pub(crate) fn load(path: &Path) -> Result<Self, StateError> {
        let mut channels = DashMap::new();
        match std::fs::read_to_string(path) {
            Ok(text) => {
                let saved: BTreeMap<u64, ChannelSettings> =
                    serde_json::from_str(&text).map_err(|source| StateError::Damaged {
                        path: path.to_owned(),
                        source,
                    })?;
                channels.extend(saved);
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(source) => {
                return Err(StateError::Read {
                    path: path.to_owned(),
                    source,
                })
            }
        }
        Ok(Self {
            channels,
            path: path.to_owned(),
            writing: Mutex::new(()),
        })
    }

    pub(crate) fn get(&self, channel: u64) -> ChannelSettings {
        self.channels
            .get(&channel)
            .map(|s| s.clone())
            .unwrap_or_default()
    }

    /// Changes a channel's settings and saves the snapshot; returns the new
    /// settings. When the snapshot cannot be written the change is undone.
    pub(crate) fn update<T>(
        &self,
        channel: u64,
        change: impl FnOnce(&mut ChannelSettings) -> T,
    ) -> Result<(T, ChannelSettings), SaveError> {
        let _one_at_a_time = self.writing.lock().unwrap_or_else(|e| e.into_inner());
        let before = self.channels.get(&channel).map(|s| s.clone());
        let (out, now) = {
            let mut entry = self.channels.entry(channel).or_default();
            let out = change(&mut entry);
            (out, entry.clone())
        };
        if let Err(e) = self.save() {
            tracing::warn!(channel, "a settings change was undone: {e}");
            match before {
                Some(before) => self.channels.insert(channel, before),
                None => self.channels.remove(&channel).map(|(_, s)| s),
            };
            return Err(e);
        }
        Ok((out, now))
    }

    /// Writes the snapshot; the caller holds `writing`.
    fn save(&self) -> Result<(), SaveError> {
        let snapshot: BTreeMap<u64, ChannelSettings> = self
            .channels
            .iter()
            .map(|e| (*e.key(), e.value().clone()))
            .collect();
        let text = serde_json::to_string_pretty(&snapshot).expect("settings serialise");
        let err = |cause| SaveError {
            path: self.path.clone(),
            cause,
        };
        if let Some(dir) = self.path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir).map_err(err)?;
        }
        let tmp = self.path.with_extension("json.tmp");
        std::fs::write(&tmp, text).map_err(err)?;
        std::fs::rename(&tmp, &self.path).map_err(err)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn settings_validate_with_the_allowed_range() {
        let mut s = ChannelSettings::default();
        s.set("top_k", "6").unwrap();
        s.set("form", "五律").unwrap();
        s.set("auto_reply", "on").unwrap();
        assert_eq!(
            (s.top_k, s.form, s.auto_reply),
            (Some(6), Some(Form::WuLv), true)
        );
        let err = s.set("top_k", "40").unwrap_err();
        assert_eq!(
            err.to_string(),
            "`top_k` must be a whole number from 1 to 16; `40` is not"
        );
        assert!(matches!(
            s.set("colour", "red"),
            Err(SettingError::UnknownKey(_))
        ));
        assert!(s.set("form", "十绝").is_err());
        assert_eq!(s.top_k, Some(6), "a bad value changes nothing");
    }

    #[test]
    fn a_restart_restores_every_channel() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("state/settings.json");
        let state = ChannelState::load(&path).unwrap();
        state
            .update(1, |s| s.keywords = Some(vec!["狸奴".into(), "渔舟".into()]))
            .unwrap();
        state
            .update(2, |s| s.set("form", "七律"))
            .unwrap()
            .0
            .unwrap();
        drop(state);
        let again = ChannelState::load(&path).unwrap();
        assert_eq!(again.get(1).keywords.unwrap(), ["狸奴", "渔舟"]);
        assert_eq!(again.get(2).form, Some(Form::QiLv));
        assert_eq!(again.get(3), ChannelSettings::default());
        assert!(!path.with_extension("json.tmp").exists());
    }

    /// A full disk (the snapshot's temporary file is `/dev/full`, where
    /// every write fails with ENOSPC): the change is refused and undone, in
    /// memory as on disk; once there is room the next change saves, and
    /// the undone one is not in it.
    #[cfg(target_os = "linux")]
    #[test]
    fn a_change_that_cannot_be_saved_is_undone() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("settings.json");
        let state = ChannelState::load(&path).unwrap();
        state
            .update(1, |s| s.set("form", "七律"))
            .unwrap()
            .0
            .unwrap();
        let saved = std::fs::read_to_string(&path).unwrap();
        let tmp = path.with_extension("json.tmp");
        std::os::unix::fs::symlink("/dev/full", &tmp).unwrap();
        for channel in [1, 2] {
            let err = state.update(channel, |s| s.set("top_k", "9")).unwrap_err();
            assert!(err.to_string().contains("什么也没改"), "{err}");
        }
        assert_eq!(state.get(1).form, Some(Form::QiLv));
        assert_eq!(state.get(1).top_k, None, "the failed change stays undone");
        assert_eq!(state.get(2), ChannelSettings::default());
        assert_eq!(std::fs::read_to_string(&path).unwrap(), saved);

        std::fs::remove_file(&tmp).unwrap();
        state
            .update(2, |s| s.set("auto_reply", "on"))
            .unwrap()
            .0
            .unwrap();
        drop(state);
        let again = ChannelState::load(&path).unwrap();
        assert_eq!(again.get(1).form, Some(Form::QiLv));
        assert_eq!(again.get(1).top_k, None);
        assert!(again.get(2).auto_reply);
        assert_eq!(again.get(2).top_k, None);
    }

    #[test]
    fn a_damaged_snapshot_is_reported_not_overwritten() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("settings.json");
        std::fs::write(&path, "{ not json").unwrap();
        let Err(error) = ChannelState::load(&path) else {
            panic!("a damaged file loaded")
        };
        assert!(matches!(error, StateError::Damaged { .. }), "{error}");
        assert_eq!(std::fs::read_to_string(&path).unwrap(), "{ not json");
    }
}

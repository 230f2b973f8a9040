//! Which of the bot's gateway shards this process runs (`discord.shards`).
//!
//! Discord sends a guild's events on shard `(guild_id >> 22) % total` only, so
//! processes that split the shards between them split the guilds: each answers
//! its own guilds and keeps their channels' settings in its own state file.

use std::fmt;
use std::path::{Path, PathBuf};
use std::str::FromStr;

use serde::Deserialize;

/// `auto`, `N/T` (shard N of T) or `A-B/T` (shards A to B of T).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(try_from = "String")]
pub(crate) enum Shards {
    /// Every shard in this process, as many as Discord recommends.
    Auto,
    /// Shards `first..=last` of `total`.
    Range { first: u32, last: u32, total: u32 },
}

#[derive(Debug, thiserror::Error, PartialEq)]
#[error("`{0}` is not a shard setting: expected auto, N/TOTAL or FIRST-LAST/TOTAL (e.g. 0-3/8), with shards counted from 0 and below TOTAL")]
pub(crate) struct ShardsError(String);

impl FromStr for Shards {
    type Err = ShardsError;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        let text = text.trim();
        if text == "auto" {
            return Ok(Shards::Auto);
        }
        let bad = || ShardsError(text.to_owned());
        let number = |s: &str| s.trim().parse::<u32>().map_err(|_| bad());
        let (range, total) = text.split_once('/').ok_or_else(bad)?;
        let (first, last) = match range.split_once('-') {
            Some((first, last)) => (number(first)?, number(last)?),
            None => (number(range)?, number(range)?),
        };
        let total = number(total)?;
        if first > last || last >= total {
            return Err(bad());
        }
        Ok(Shards::Range { first, last, total })
    }
}

impl TryFrom<String> for Shards {
    type Error = ShardsError;

    fn try_from(text: String) -> Result<Self, Self::Error> {
        text.parse()
    }
}

impl fmt::Display for Shards {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Shards::Auto => f.write_str("auto"),
            Shards::Range { first, last, total } if first == last => {
                write!(f, "{first}/{total}")
            }
            Shards::Range { first, last, total } => write!(f, "{first}-{last}/{total}"),
        }
    }
}

impl Shards {
    /// The state file of a process that runs these shards: the configured one,
    /// or, when the process runs only some of the shards, a sibling named after
    /// them (`state.json` → `state.shards-0-3-of-8.json`), so that processes
    /// sharing one config never write over each other's channels.
    pub(crate) fn state_file(&self, configured: &Path) -> PathBuf {
        match *self {
            Shards::Range { first, last, total } if first > 0 || last + 1 < total => {
                let stem = configured
                    .file_stem()
                    .map(|s| s.to_string_lossy().into_owned())
                    .unwrap_or_else(|| "state".into());
                let mut name = format!("{stem}.shards-{first}-{last}-of-{total}");
                if let Some(ext) = configured.extension() {
                    name.push('.');
                    name.push_str(&ext.to_string_lossy());
                }
                configured.with_file_name(name)
            }
            _ => configured.to_owned(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn settings_parse_and_print_back() {
        for text in ["auto", "0/1", "3/8", "0-3/8", "4-7/8"] {
            assert_eq!(text.parse::<Shards>().unwrap().to_string(), text);
        }
        assert_eq!(
            "0-3/8".parse::<Shards>(),
            Ok(Shards::Range {
                first: 0,
                last: 3,
                total: 8
            })
        );
        assert_eq!(" 2 - 2 / 4 ".parse::<Shards>().unwrap().to_string(), "2/4");
    }

    #[test]
    fn impossible_ranges_are_refused() {
        for text in [
            "",
            "3",
            "8/8",
            "4-2/8",
            "0-8/8",
            "0/0",
            "a/2",
            "-1/2",
            "0-/2",
            "automatic",
        ] {
            let err = text.parse::<Shards>().unwrap_err();
            assert!(err.to_string().contains("0-3/8"), "{text}: {err}");
        }
    }

    #[test]
    fn part_of_the_shards_keeps_its_own_state_file() {
        let file = Path::new("data/state.json");
        let of = |s: &str| s.parse::<Shards>().unwrap().state_file(file);
        assert_eq!(of("auto"), file);
        assert_eq!(of("0/1"), file);
        assert_eq!(of("0-7/8"), file, "all shards in one process");
        assert_eq!(of("0-3/8"), Path::new("data/state.shards-0-3-of-8.json"));
        assert_eq!(of("5/8"), Path::new("data/state.shards-5-5-of-8.json"));
        assert_ne!(of("0-3/8"), of("4-7/8"));
    }
}

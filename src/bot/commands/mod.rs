//! Slash commands, one file each.

pub(crate) mod check;
pub(crate) mod config;
pub(crate) mod keywords;
pub(crate) mod poem;

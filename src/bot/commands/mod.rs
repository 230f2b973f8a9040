//! Slash commands, one file each.

pub mod config;
pub mod keywords;
pub mod poem;

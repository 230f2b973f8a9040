//! The Discord side's building blocks that need no Discord connection:
//! attachment downloads, per-channel state, rate limits. (The serenity/poise
//! client that uses them is the next step: issue 5.)

pub mod download;
pub mod ratelimit;
pub mod state;

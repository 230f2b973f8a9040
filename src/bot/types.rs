//! What every handler shares, and the one error type of the Discord layer.

use std::sync::Arc;
use std::time::{Duration, Instant};

use dashmap::DashMap;

use crate::bot::download::{DownloadError, Downloader};
use crate::bot::outbox::Outbox;
use crate::bot::ratelimit::RateLimits;
use crate::bot::reply::Recipe;
use crate::bot::state::{ChannelSettings, ChannelState, SaveError, SettingError};
use crate::config::Config;
use crate::pipeline::PoemOptions;
use crate::poem::{Form, Style};
use crate::worker::{Worker, WorkerError};

pub(crate) struct Data {
    pub(crate) config: Config,
    pub(crate) worker: Worker,
    pub(crate) state: ChannelState,
    pub(crate) limits: RateLimits,
    /// When each (channel, user) last asked, for channels with a user cooldown.
    pub(crate) last_request: DashMap<(u64, u64), Instant>,
    pub(crate) downloader: Downloader,
    /// The bot's posts in channels, in turn ([`crate::bot::outbox`]).
    pub(crate) outbox: Outbox,
    /// Whether the pipeline has a chat LLM, so channels may choose `poet = llm`.
    pub(crate) llm_loaded: bool,
    /// Whether the 集句 poet's files loaded, so channels may choose `style = jiju`.
    pub(crate) jiju_loaded: bool,
}

pub(crate) type Context<'a> = poise::Context<'a, Arc<Data>, BotError>;

/// Everything a handler can fail with; each says what to tell the user.
#[derive(Debug, thiserror::Error)]
pub(crate) enum BotError {
    #[error("{0}")]
    Download(#[from] DownloadError),
    #[error("{0}")]
    Worker(#[from] WorkerError),
    #[error("{0}")]
    Setting(#[from] SettingError),
    #[error("{0}")]
    Save(#[from] SaveError),
    #[error("slow down a little: try again in {0} s")]
    RateLimited(u64),
    #[error("{0}")]
    Input(String),
    /// A whole sentence for the one who asked, shown as it is (no poem was
    /// being written: /check's answers to text that is no poem).
    #[error("{0}")]
    Said(String),
    #[error("Discord said no: {0}")]
    Discord(Box<poise::serenity_prelude::Error>),
}

impl From<poise::serenity_prelude::Error> for BotError {
    fn from(e: poise::serenity_prelude::Error) -> Self {
        BotError::Discord(Box::new(e))
    }
}

impl Data {
    /// The poem options for a channel, with the request's own choices first.
    pub(crate) fn options(
        &self,
        settings: &ChannelSettings,
        style: Option<Style>,
        form: Option<Form>,
        candidates: Option<usize>,
        acrostic: Option<String>,
    ) -> PoemOptions {
        PoemOptions {
            style: style.or(settings.style).unwrap_or(self.config.poem.style),
            poet: settings.poet.unwrap_or(self.config.poem.poet),
            form: form.or(settings.form).unwrap_or(self.config.poem.form),
            acrostic,
            candidates: candidates
                .or(settings.candidates)
                .unwrap_or(self.config.poem.candidates),
            seed: rand::random(),
        }
    }

    /// The poem options for a poem's button or modal in `channel`: its
    /// recipe's style, form and acrostic, the channel's other settings.
    pub(crate) fn recipe_options(&self, channel: u64, recipe: &Recipe) -> PoemOptions {
        let settings = self.state.get(channel);
        let (style, form) = (Some(recipe.style), Some(recipe.form));
        self.options(&settings, style, form, None, recipe.acrostic.clone())
    }

    /// Applies the channel's user cooldown, then takes one request from the
    /// user's and the channel's quotas.
    pub(crate) fn admit(&self, user: u64, channel: u64) -> Result<(), BotError> {
        let cooldown = Duration::from_secs(self.state.get(channel).user_cooldown_secs.unwrap_or(0));
        if let Some(last) = self.last_request.get(&(channel, user)) {
            let since = last.elapsed();
            if since < cooldown {
                return Err(BotError::RateLimited((cooldown - since).as_secs().max(1)));
            }
        }
        self.limits
            .check(user, channel)
            .map_err(|wait| BotError::RateLimited(wait.as_secs().max(1)))?;
        if !cooldown.is_zero() {
            self.last_request.insert((channel, user), Instant::now());
        }
        Ok(())
    }
}

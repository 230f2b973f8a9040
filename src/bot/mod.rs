//! The Discord bot: a thin poise/serenity layer over the pipeline.
//!
//! - [`types`]: `Data` shared by every handler, the `Context`, the error type.
//! - [`commands`]: `/poem`, `/check`, `/keywords`, `/config`, one file each.
//! - [`events`]: photo posts, the 换一首 and style buttons, the 换一句 menu
//!   and the own-line modal.
//! - [`reply`]: how a poem looks (embed, button ids that survive restarts).
//! - [`download`], [`state`], [`ratelimit`]: safe attachment downloads,
//!   per-channel settings saved on every change, per-user and per-channel quotas.
//! - [`outbox`]: the bot's posts in channels, one at a time per channel,
//!   beside serenity's rate limiter.
//!
//! The models run on the worker thread ([`crate::worker`]), never on the runtime.

pub(crate) mod commands;
pub mod download;
pub(crate) mod events;
pub(crate) mod outbox;
pub(crate) mod ratelimit;
pub(crate) mod reply;
pub(crate) mod state;
pub(crate) mod types;

use std::sync::Arc;
use std::time::Duration;

use poise::serenity_prelude as serenity;

use crate::config::shards::Shards;
use crate::config::Config;
use crate::error::Error;
use crate::pipeline::Pipeline;
use crate::worker::{Batching, Worker};
use types::{BotError, Data};

/// Builds the bot's state, connects, and runs until the connection ends.
pub async fn run(config: Config, pipeline: Pipeline) -> Result<(), Error> {
    run_with_client(config, pipeline, None).await
}

/// [`run`], with Discord's REST API reached through `client` where one is
/// given (a corporate proxy, another resolver or root certificate; the tests'
/// fake Discord over TLS), serenity's rate limiter on as in production.
pub async fn run_with_client(
    config: Config,
    pipeline: Pipeline,
    client: Option<reqwest::Client>,
) -> Result<(), Error> {
    let token = config.discord.token.expose().to_owned();
    if token.is_empty() {
        return Err(Error::Input(
            "no Discord token: set DISCORD_TOKEN (or discord.token)".into(),
        ));
    }
    let proxy = (!config.discord.proxy.is_empty())
        .then(|| url::Url::parse(&config.discord.proxy))
        .transpose()
        .map_err(|e| Error::Input(format!("discord.proxy: {e}")))?;
    let shards = config.discord.shards;
    let state_file = shards.state_file(&Config::resolve(&config.discord.state_file));
    let state = state::ChannelState::load(&state_file)?;
    let downloader = download::Downloader::new(
        config.photo.max_bytes,
        Duration::from_secs(config.download.connect_timeout_secs),
        Duration::from_secs(config.download.total_timeout_secs),
        proxy.clone(),
    )
    .map_err(|e| Error::Service(format!("cannot set up downloads: {e}")))?;
    let llm_loaded = pipeline.has_llm();
    let jiju_loaded = pipeline.has_jiju();
    let data = Arc::new(Data {
        outbox: Default::default(),
        llm_loaded,
        jiju_loaded,
        worker: Worker::spawn(
            pipeline,
            config.limits.queue_size,
            Batching {
                max_requests: config.batch.max_requests,
                max_rows: config.batch.max_rows,
                wait: Duration::from_millis(config.batch.wait_ms),
            },
        ),
        state,
        limits: ratelimit::RateLimits::new(
            config.limits.user_per_minute,
            config.limits.channel_per_minute,
        ),
        last_request: Default::default(),
        downloader,
        config,
    });
    // Forget quota keys that are full again, so the limiters' memory stays bounded.
    let limits_owner = data.clone();
    tokio::spawn(async move {
        let mut every = tokio::time::interval(Duration::from_secs(300));
        loop {
            every.tick().await;
            limits_owner.limits.shrink();
            limits_owner
                .last_request
                .retain(|_, at| at.elapsed() < Duration::from_secs(3600));
        }
    });
    let framework = poise::Framework::builder()
        .options(poise::FrameworkOptions {
            commands: vec![
                commands::poem::poem(),
                commands::check::check(),
                commands::keywords::keywords(),
                commands::config::config(),
            ],
            event_handler: |framework, event| {
                Box::pin(events::handle(framework.serenity_context, event, framework.user_data))
            },
            on_error: |error| Box::pin(on_error(error)),
            // The bot has slash commands only: a post that mentions it is a
            // photo to answer, not a prefix command (poise would log a
            // warning about an unknown command name for every one).
            prefix_options: poise::PrefixFrameworkOptions {
                mention_as_prefix: false,
                ..Default::default()
            },
            ..Default::default()
        })
        .setup(move |ctx, ready, framework| {
            Box::pin(async move {
                tracing::info!(user = %ready.user.name, guilds = ready.guilds.len(), %shards, state = %state_file.display(), "connected to Discord");
                poise::builtins::register_globally(ctx, &framework.options().commands).await?;
                Ok(data)
            })
        })
        .build();
    let mut http = serenity::HttpBuilder::new(&token);
    if let Some(client) = client {
        http = http.client(client);
    }
    if let Some(proxy) = &proxy {
        http = http
            .proxy(proxy.as_str().trim_end_matches('/'))
            .ratelimiter_disabled(true);
    }
    let http = http.build();
    let intents =
        serenity::GatewayIntents::GUILD_MESSAGES | serenity::GatewayIntents::MESSAGE_CONTENT;
    let mut client = serenity::ClientBuilder::new_with_http(http, intents)
        .framework(framework)
        .await
        .map_err(|e| Error::Service(format!("cannot start the Discord client: {e}")))?;
    let connected = match shards {
        Shards::Auto => client.start_autosharded().await,
        // serenity's range is inclusive of its end, unlike Rust's.
        Shards::Range { first, last, total } => client.start_shard_range(first..last, total).await,
    };
    connected.map_err(|e| Error::Service(format!("the Discord connection ended: {e}")))
}

/// One place for every error: tell the user kindly, log the rest, never fail.
async fn on_error(error: poise::FrameworkError<'_, Arc<Data>, BotError>) {
    match error {
        poise::FrameworkError::Command { error, ctx, .. } => {
            tracing::info!(command = %ctx.command().name, "{error}");
            let said = match &error {
                BotError::Said(sentence) => sentence.clone(),
                other => format!("写不成诗：{other}"),
            };
            let reply = poise::CreateReply::default().content(said).ephemeral(true);
            if let Err(e) = ctx.send(reply).await {
                tracing::warn!("could not tell the user: {e}");
            }
        }
        other => {
            if let Err(e) = poise::builtins::on_error(other).await {
                tracing::warn!("error while handling an error: {e}");
            }
        }
    }
}

//! `/poem [keywords] [image] [form] [style] [acrostic] [candidates]`.

use poise::serenity_prelude as serenity;

use crate::bot::reply::{self, Recipe};
use crate::bot::types::{BotError, Context};
use crate::config::{bounds, out_of};
use crate::pipeline::Request;
use crate::poem::{Form, Style};

#[derive(Debug, Clone, Copy, poise::ChoiceParameter)]
pub(crate) enum FormChoice {
    #[name = "五绝"]
    WuJue,
    #[name = "七绝"]
    QiJue,
    #[name = "五律"]
    WuLv,
    #[name = "七律"]
    QiLv,
}

impl From<FormChoice> for Form {
    fn from(c: FormChoice) -> Form {
        match c {
            FormChoice::WuJue => Form::WuJue,
            FormChoice::QiJue => Form::QiJue,
            FormChoice::WuLv => Form::WuLv,
            FormChoice::QiLv => Form::QiLv,
        }
    }
}

#[derive(Debug, Clone, Copy, poise::ChoiceParameter)]
pub(crate) enum StyleChoice {
    #[name = "原创"]
    Generate,
    #[name = "集句"]
    Jiju,
}

impl From<StyleChoice> for Style {
    fn from(c: StyleChoice) -> Style {
        match c {
            StyleChoice::Generate => Style::Generate,
            StyleChoice::Jiju => Style::Jiju,
        }
    }
}

/// Suggests keywords from the channel's list (or the built-in favourites).
async fn autocomplete_keyword(
    ctx: Context<'_>,
    partial: &str,
) -> serenity::CreateAutocompleteResponse {
    let settings = ctx.data().state.get(ctx.channel_id().get());
    let last = partial.rsplit([' ', '，']).next().unwrap_or("");
    let prefix = &partial[..partial.len() - last.len()];
    let words = settings.keywords.unwrap_or_else(|| {
        [
            "春风", "明月", "孤舟", "青山", "白云", "落日", "秋风", "梅花", "烟雨", "江南",
        ]
        .map(String::from)
        .to_vec()
    });
    let choices = words
        .into_iter()
        .filter(|w| w.starts_with(last))
        .take(25)
        .map(|w| serenity::AutocompleteChoice::from(format!("{prefix}{w}")))
        .collect();
    serenity::CreateAutocompleteResponse::new().set_choices(choices)
}

/// 写一首诗：用你的关键词，或一张照片
#[poise::command(slash_command)]
pub(crate) async fn poem(
    ctx: Context<'_>,
    #[description = "意象关键词，用空格分开，如：春风 明月"]
    #[autocomplete = "autocomplete_keyword"]
    keywords: Option<String>,
    #[description = "一张照片"] image: Option<serenity::Attachment>,
    #[description = "体裁"] form: Option<FormChoice>,
    #[description = "原创，或集句（集古人诗句成篇，逐句注明出处）"] style: Option<StyleChoice>,
    #[description = "藏头诗：每句开头的字，如：春江花月"] acrostic: Option<String>,
    // Discord enforces config::bounds::CANDIDATES here; the handler checks again.
    #[description = "候选首数（1–32）"]
    #[min = 1]
    #[max = 32]
    candidates: Option<u32>,
) -> Result<(), BotError> {
    let keywords = crate::keywords::split_keywords(&keywords.unwrap_or_default());
    if keywords.is_empty() && image.is_none() {
        ctx.send(
            poise::CreateReply::default()
                .content("给我几个意象关键词（如 `春风 明月`），或附上一张照片，我就为你写一首诗。")
                .ephemeral(true),
        )
        .await?;
        return Ok(());
    }
    if let Some(message) = candidates.and_then(|c| out_of(&bounds::CANDIDATES, c as usize)) {
        return Err(BotError::Input(format!("candidates {message}")));
    }
    let data = ctx.data();
    data.admit(ctx.author().id.get(), ctx.channel_id().get())?;
    // Acknowledge within Discord's 3 seconds; the poem comes as an edit.
    ctx.defer().await?;
    let settings = data.state.get(ctx.channel_id().get());
    let options = data.options(
        &settings,
        style.map(Style::from),
        form.map(Form::from),
        candidates.map(|c| c as usize),
        acrostic.clone(),
    );
    let style = options.style;
    let job = match &image {
        Some(attachment) => {
            let bytes = data
                .downloader
                .fetch(&crate::bot::download::AttachmentInfo {
                    url: &attachment.url,
                    size: attachment.size as u64,
                    content_type: attachment.content_type.as_deref(),
                })
                .await?;
            Request::Photo {
                bytes,
                keywords,
                vocabulary: settings.keyword_list(),
                top_k: settings.top_k,
                options,
            }
        }
        None => Request::Keywords { keywords, options },
    };
    let ticket = data.worker.submit(job)?;
    // After the defer, the first message replaces Discord's "thinking…".
    let waiting = if ticket.ahead > 0 {
        let notice = format!("排队中：前面还有 {} 首……", ticket.ahead);
        Some(
            ctx.send(poise::CreateReply::default().content(notice))
                .await?,
        )
    } else {
        None
    };
    let result = ticket.result().await?;
    let thumbnail = image.as_ref().map(|a| a.url.as_str());
    let reply = poise::CreateReply::default()
        .content("")
        .embed(reply::embed(&result, thumbnail))
        .components(reply::components(
            &result,
            &Recipe::of(&result, style, acrostic.as_deref()),
        ));
    match waiting {
        Some(handle) => handle.edit(ctx, reply).await?,
        None => {
            ctx.send(reply).await?;
        }
    }
    Ok(())
}

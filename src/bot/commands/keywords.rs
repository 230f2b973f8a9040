//! `/keywords list | add | remove | use | reset`: the channel's own keywords,
//! matched beside the built-in vocabulary, or alone after `/keywords use
//! custom`. Changing them needs Manage Channels.

use crate::bot::commands::config::require_manage_channels;
use crate::bot::types::{BotError, Context};
use crate::config::bounds;
use crate::keywords::KeywordList;

/// 本频道的意象词表
#[poise::command(
    slash_command,
    subcommands("list", "add", "remove", "use_list", "reset"),
    subcommand_required
)]
pub(crate) async fn keywords(_: Context<'_>) -> Result<(), BotError> {
    Ok(())
}

/// 查看本频道的词表
#[poise::command(slash_command)]
pub(crate) async fn list(ctx: Context<'_>) -> Result<(), BotError> {
    let settings = ctx.data().state.get(ctx.channel_id().get());
    let text = match settings.keyword_list() {
        KeywordList::BuiltIn => "本频道用内置词表（六百余个古典意象）。".to_owned(),
        KeywordList::Added(words) => format!(
            "本频道用内置词表，另加 {} 个：{}",
            words.len(),
            words.join("　")
        ),
        KeywordList::Only(words) => format!(
            "本频道只用自己的意象词（{} 个）：{}",
            words.len(),
            words.join("　")
        ),
    };
    ctx.send(poise::CreateReply::default().content(text).ephemeral(true))
        .await?;
    Ok(())
}

/// Keywords as the user typed them: split at spaces and commas, 1–8 characters each.
pub(crate) fn parse_words(text: &str) -> Result<Vec<String>, BotError> {
    let words = crate::keywords::split_keywords(text);
    if words.is_empty() {
        return Err(BotError::Input("请给出至少一个关键词".into()));
    }
    let most = bounds::KEYWORD_CHARS;
    if let Some(w) = words.iter().find(|w| w.chars().count() > most) {
        return Err(BotError::Input(format!(
            "「{w}」太长了：关键词最多 {most} 个字"
        )));
    }
    Ok(words)
}

/// 加入关键词（需要“管理频道”权限）
#[poise::command(slash_command, default_member_permissions = "MANAGE_CHANNELS")]
pub(crate) async fn add(
    ctx: Context<'_>,
    #[description = "关键词，用空格分开"] words: String,
) -> Result<(), BotError> {
    require_manage_channels(ctx).await?;
    let words = parse_words(&words)?;
    let (added, now) = ctx.data().state.update(ctx.channel_id().get(), |s| {
        let list = s.keywords.get_or_insert_with(Vec::new);
        let new: Vec<String> = words
            .iter()
            .filter(|w| !list.contains(w))
            .cloned()
            .collect();
        list.extend(new.iter().cloned());
        new
    })?;
    let total = now.keywords.as_ref().map_or(0, Vec::len);
    let beside = if now.own_keywords_only {
        "只用本频道的词"
    } else {
        "与内置词表一起用"
    };
    ctx.say(format!(
        "加入 {} 个：{}（本频道共 {total} 个，{beside}）",
        added.len(),
        added.join("　")
    ))
    .await?;
    Ok(())
}

/// 删除关键词（需要“管理频道”权限）
#[poise::command(slash_command, default_member_permissions = "MANAGE_CHANNELS")]
pub(crate) async fn remove(
    ctx: Context<'_>,
    #[description = "关键词，用空格分开"] words: String,
) -> Result<(), BotError> {
    require_manage_channels(ctx).await?;
    let words = parse_words(&words)?;
    let (removed, _) = ctx.data().state.update(ctx.channel_id().get(), |s| {
        let list = s.keywords.get_or_insert_with(Vec::new);
        let before = list.len();
        list.retain(|w| !words.contains(w));
        before - list.len()
    })?;
    ctx.say(format!("删除了 {removed} 个关键词")).await?;
    Ok(())
}

/// 选词表：default 内置词表加本频道的词，custom 只用本频道的词（需要“管理频道”权限）
#[poise::command(
    slash_command,
    rename = "use",
    default_member_permissions = "MANAGE_CHANNELS"
)]
pub(crate) async fn use_list(
    ctx: Context<'_>,
    #[description = "default 或 custom"] list: String,
) -> Result<(), BotError> {
    require_manage_channels(ctx).await?;
    let only = match list.trim() {
        "custom" | "自定义" => true,
        "default" | "内置" => false,
        other => {
            return Err(BotError::Input(format!(
                "「{other}」不是词表：用 default（内置词表加本频道的词）或 custom（只用本频道的词）"
            )))
        }
    };
    let channel = ctx.channel_id().get();
    if only
        && ctx
            .data()
            .state
            .get(channel)
            .keywords
            .is_none_or(|w| w.is_empty())
    {
        return Err(BotError::Input(
            "本频道还没有自己的词：先用 /keywords add 加几个".into(),
        ));
    }
    ctx.data()
        .state
        .update(channel, |s| s.own_keywords_only = only)?;
    ctx.say(if only {
        "本频道只用自己的意象词"
    } else {
        "本频道用内置词表加自己的词"
    })
    .await?;
    Ok(())
}

/// 清空本频道的词，恢复内置词表（需要“管理频道”权限）
#[poise::command(slash_command, default_member_permissions = "MANAGE_CHANNELS")]
pub(crate) async fn reset(ctx: Context<'_>) -> Result<(), BotError> {
    require_manage_channels(ctx).await?;
    ctx.data().state.update(ctx.channel_id().get(), |s| {
        s.keywords = None;
        s.own_keywords_only = false;
    })?;
    ctx.say("本频道已恢复内置词表").await?;
    Ok(())
}

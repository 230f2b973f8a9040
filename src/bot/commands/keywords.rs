//! `/keywords list | add | remove | reset`: the channel's keyword list, the
//! vocabulary its photos are matched against. Changing it needs Manage Channels.

use crate::bot::commands::config::require_manage_channels;
use crate::bot::types::{BotError, Context};

/// 本频道的意象词表
#[poise::command(
    slash_command,
    subcommands("list", "add", "remove", "reset"),
    subcommand_required
)]
pub async fn keywords(_: Context<'_>) -> Result<(), BotError> {
    Ok(())
}

/// 查看本频道的词表
#[poise::command(slash_command)]
pub async fn list(ctx: Context<'_>) -> Result<(), BotError> {
    let settings = ctx.data().state.get(ctx.channel_id().get());
    let text = match settings.keywords {
        Some(words) if !words.is_empty() => {
            format!("本频道的意象词（{} 个）：{}", words.len(), words.join("　"))
        }
        _ => "本频道用内置词表（keywords/default.txt，六百余个古典意象）。".to_owned(),
    };
    ctx.send(poise::CreateReply::default().content(text).ephemeral(true))
        .await?;
    Ok(())
}

/// Keywords as the user typed them: split at spaces and commas, 1–8 characters each.
pub fn parse_words(text: &str) -> Result<Vec<String>, BotError> {
    let words = crate::keywords::split_keywords(text);
    if words.is_empty() {
        return Err(BotError::Input("请给出至少一个关键词".into()));
    }
    if let Some(w) = words.iter().find(|w| w.chars().count() > 8) {
        return Err(BotError::Input(format!("「{w}」太长了：关键词最多 8 个字")));
    }
    Ok(words)
}

/// 加入关键词（需要“管理频道”权限）
#[poise::command(slash_command, default_member_permissions = "MANAGE_CHANNELS")]
pub async fn add(
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
    let total = now.keywords.map_or(0, |k| k.len());
    ctx.say(format!(
        "加入 {} 个：{}（共 {total} 个）",
        added.len(),
        added.join("　")
    ))
    .await?;
    Ok(())
}

/// 删除关键词（需要“管理频道”权限）
#[poise::command(slash_command, default_member_permissions = "MANAGE_CHANNELS")]
pub async fn remove(
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

/// 恢复内置词表（需要“管理频道”权限）
#[poise::command(slash_command, default_member_permissions = "MANAGE_CHANNELS")]
pub async fn reset(ctx: Context<'_>) -> Result<(), BotError> {
    require_manage_channels(ctx).await?;
    ctx.data()
        .state
        .update(ctx.channel_id().get(), |s| s.keywords = None)?;
    ctx.say("本频道已恢复内置词表").await?;
    Ok(())
}

//! `/config show | set <key> <value>`: the channel's settings, for members
//! with Manage Channels (declared to Discord, and checked again here).

use poise::serenity_prelude as serenity;

use crate::bot::types::{BotError, Context};
use crate::poem::Style;

/// Whether these permissions may change the channel's settings.
pub(crate) fn may_manage(permissions: serenity::Permissions) -> bool {
    permissions.manage_channels() || permissions.administrator()
}

/// The handler-side check behind `default_member_permissions`.
pub(crate) async fn require_manage_channels(ctx: Context<'_>) -> Result<(), BotError> {
    let allowed = match ctx {
        poise::Context::Application(app) => app
            .interaction
            .member
            .as_ref()
            .and_then(|m| m.permissions)
            .is_some_and(may_manage),
        poise::Context::Prefix(_) => false,
    };
    if allowed {
        Ok(())
    } else {
        Err(BotError::Input("这个命令需要“管理频道”权限".into()))
    }
}

/// 本频道的设置
#[poise::command(
    slash_command,
    subcommands("show", "set"),
    subcommand_required,
    default_member_permissions = "MANAGE_CHANNELS"
)]
pub(crate) async fn config(_: Context<'_>) -> Result<(), BotError> {
    Ok(())
}

/// 查看设置
#[poise::command(slash_command)]
pub(crate) async fn show(ctx: Context<'_>) -> Result<(), BotError> {
    require_manage_channels(ctx).await?;
    let data = ctx.data();
    let s = data.state.get(ctx.channel_id().get());
    let text = format!(
        "top_k = {}\nform = {}\npoet = {}\nstyle = {}\ncandidates = {}\nauto_reply = {}\nuser_cooldown = {} s",
        s.top_k.unwrap_or(data.config.keywords.top_k),
        s.form.unwrap_or(data.config.poem.form),
        s.poet.unwrap_or(data.config.poem.poet),
        s.style.unwrap_or(data.config.poem.style),
        s.candidates.unwrap_or(data.config.poem.candidates),
        if s.auto_reply { "on" } else { "off" },
        s.user_cooldown_secs.unwrap_or(0),
    );
    ctx.send(
        poise::CreateReply::default()
            .content(format!("```\n{text}\n```"))
            .ephemeral(true),
    )
    .await?;
    Ok(())
}

/// 修改设置：top_k、form、poet（t5/llm）、style（generate/jiju）、candidates、auto_reply（on/off）、user_cooldown
#[poise::command(slash_command)]
pub(crate) async fn set(
    ctx: Context<'_>,
    #[description = "top_k, form, poet, style, candidates, auto_reply, user_cooldown"] key: String,
    #[description = "新的值"] value: String,
) -> Result<(), BotError> {
    require_manage_channels(ctx).await?;
    if key == "poet" && value.trim() == "llm" && !ctx.data().llm_loaded {
        return Err(BotError::Input(
            "这个机器人没有加载大模型（models.llm），只能用 t5".into(),
        ));
    }
    if key == "style" && value.trim().parse() == Ok(Style::Jiju) && !ctx.data().jiju_loaded {
        return Err(BotError::Input(
            "这个机器人没能加载集句的句库（models.jiju_dir），暂时只能写原创诗".into(),
        ));
    }
    let (changed, _) = ctx
        .data()
        .state
        .update(ctx.channel_id().get(), |s| s.set(&key, &value))?;
    changed?;
    ctx.send(
        poise::CreateReply::default()
            .content(format!("已设置 {key} = {value}"))
            .ephemeral(true),
    )
    .await?;
    Ok(())
}

//! `/check <poem>`: the strict check as an embed, for people who write
//! regulated verse. No model is asked, so it answers at once.

use crate::bot::reply;
use crate::bot::types::{BotError, Context};
use crate::poem::checker;

/// 格律检查：平仄、粘对、押韵，逐句标出
#[poise::command(slash_command)]
pub(crate) async fn check(
    ctx: Context<'_>,
    #[description = "一首五言或七言的绝句或律诗；可带标点，可分行，繁体亦可"] poem: String,
) -> Result<(), BotError> {
    let lines = checker::split_lines(&poem);
    if let Some(problem) = checker::shape_problem(&lines) {
        return Err(BotError::Said(problem));
    }
    let report = checker::check_lines(&lines);
    ctx.send(poise::CreateReply::default().embed(reply::check_embed(&report)))
        .await?;
    Ok(())
}

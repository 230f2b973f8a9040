//! Gateway events the commands do not cover: photo posts and the 换一首 button.

use std::sync::Arc;

use poise::serenity_prelude as serenity;

use crate::bot::download::AttachmentInfo;
use crate::bot::reply;
use crate::bot::types::{BotError, Data};
use crate::pipeline::Request;

pub async fn handle(
    ctx: &serenity::Context,
    event: &serenity::FullEvent,
    data: &Arc<Data>,
) -> Result<(), BotError> {
    match event {
        serenity::FullEvent::Message { new_message } => photo_post(ctx, new_message, data).await,
        serenity::FullEvent::InteractionCreate {
            interaction: serenity::Interaction::Component(press),
        } => again(ctx, press, data).await,
        _ => Ok(()),
    }
}

/// The first image attachment of a post, where the channel has auto-reply on
/// or the bot is mentioned.
async fn photo_post(
    ctx: &serenity::Context,
    msg: &serenity::Message,
    data: &Arc<Data>,
) -> Result<(), BotError> {
    if msg.author.bot {
        return Ok(());
    }
    let settings = data.state.get(msg.channel_id.get());
    let mentioned = msg.mentions_user_id(ctx.cache.current_user().id);
    if !(settings.auto_reply || mentioned) {
        return Ok(());
    }
    let Some(photo) = msg
        .attachments
        .iter()
        .find(|a| {
            a.content_type
                .as_deref()
                .is_some_and(|t| t.starts_with("image/"))
        })
        .or(
            // Mentioned with a non-image attachment: say why nothing happens.
            if mentioned {
                msg.attachments.first()
            } else {
                None
            },
        )
    else {
        return Ok(());
    };
    let result = async {
        data.admit(msg.author.id.get(), msg.channel_id.get())?;
        let _typing = msg.channel_id.start_typing(&ctx.http);
        let bytes = data
            .downloader
            .fetch(&AttachmentInfo {
                url: &photo.url,
                size: photo.size as u64,
                content_type: photo.content_type.as_deref(),
            })
            .await?;
        let options = data.options(&settings, None, None, None);
        let ticket = data.worker.submit(Request::Photo {
            bytes,
            keywords: Vec::new(),
            vocabulary: settings.keywords.clone(),
            options,
        })?;
        Ok::<_, BotError>(ticket.result().await?)
    }
    .await;
    let message = match result {
        Ok(poem) => serenity::CreateMessage::new()
            .embed(reply::embed(&poem, Some(&photo.url)))
            .components(vec![reply::again_button(poem.form, &poem.keywords)]),
        Err(e) => {
            tracing::info!(channel = msg.channel_id.get(), "photo post refused: {e}");
            serenity::CreateMessage::new().content(format!("写不成诗：{e}"))
        }
    };
    msg.channel_id
        .send_message(&ctx.http, message.reference_message(msg))
        .await?;
    Ok(())
}

/// 换一首: a new poem from the keywords in the button, edited into the message.
async fn again(
    ctx: &serenity::Context,
    press: &serenity::ComponentInteraction,
    data: &Arc<Data>,
) -> Result<(), BotError> {
    let Some((form, keywords)) = reply::parse_again(&press.data.custom_id) else {
        return Ok(());
    };
    if let Err(e) = data.admit(press.user.id.get(), press.channel_id.get()) {
        let notice = serenity::CreateInteractionResponseMessage::new()
            .content(e.to_string())
            .ephemeral(true);
        press
            .create_response(
                &ctx.http,
                serenity::CreateInteractionResponse::Message(notice),
            )
            .await?;
        return Ok(());
    }
    press.defer(&ctx.http).await?;
    let settings = data.state.get(press.channel_id.get());
    let options = data.options(&settings, Some(form), None, None);
    let edit = match data.worker.submit(Request::Keywords { keywords, options }) {
        Ok(ticket) => match ticket.result().await {
            Ok(poem) => serenity::EditInteractionResponse::new()
                .embed(reply::embed(&poem, None))
                .components(vec![reply::again_button(poem.form, &poem.keywords)]),
            Err(e) => serenity::EditInteractionResponse::new().content(format!("写不成诗：{e}")),
        },
        Err(e) => serenity::EditInteractionResponse::new().content(format!("写不成诗：{e}")),
    };
    press.edit_response(&ctx.http, edit).await?;
    Ok(())
}

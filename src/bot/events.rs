//! Gateway events the commands do not cover: photo posts, the 换一首 and
//! style buttons, the 换一句 menu, the own-line button and its modal (and a
//! log line as each shard comes up).

use std::sync::Arc;

use poise::serenity_prelude::{self as serenity, Builder};

use crate::bot::download::AttachmentInfo;
use crate::bot::reply::{self, Action, Recipe};
use crate::bot::types::{BotError, Data};
use crate::pipeline::Request;

pub(crate) async fn handle(
    ctx: &serenity::Context,
    event: &serenity::FullEvent,
    data: &Arc<Data>,
) -> Result<(), BotError> {
    match event {
        serenity::FullEvent::Ready { data_about_bot } => {
            if let Some(shard) = data_about_bot.shard {
                tracing::info!(shard = %format!("{}/{}", shard.id, shard.total), guilds = data_about_bot.guilds.len(), "shard ready");
            }
            Ok(())
        }
        serenity::FullEvent::Message { new_message } => photo_post(ctx, new_message, data).await,
        serenity::FullEvent::InteractionCreate {
            interaction: serenity::Interaction::Component(press),
        } => component(ctx, press, data).await,
        serenity::FullEvent::InteractionCreate {
            interaction: serenity::Interaction::Modal(submit),
        } => own_line(ctx, submit, data).await,
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
        let options = data.options(&settings, None, None, None, None);
        let style = options.style;
        let ticket = data.worker.submit(Request::Photo {
            bytes,
            keywords: Vec::new(),
            vocabulary: settings.keyword_list(),
            top_k: settings.top_k,
            options,
        })?;
        Ok::<_, BotError>((ticket.result().await?, style))
    }
    .await;
    let message = match result {
        Ok((poem, style)) => serenity::CreateMessage::new()
            .embed(reply::embed(&poem, Some(&photo.url)))
            .components(reply::components(&poem, &Recipe::of(&poem, style, None))),
        Err(e) => {
            tracing::info!(channel = msg.channel_id.get(), "photo post refused: {e}");
            serenity::CreateMessage::new().content(format!("写不成诗：{e}"))
        }
    };
    let channel = msg.channel_id;
    data.outbox
        .post(
            channel.get(),
            channel.send_message(&ctx.http, message.reference_message(msg)),
        )
        .await?;
    Ok(())
}

/// 换一首, the other style and 换一句: the recipe from the component's id, the
/// poem from the message's embed; the new poem is edited into the message.
async fn component(
    ctx: &serenity::Context,
    press: &serenity::ComponentInteraction,
    data: &Arc<Data>,
) -> Result<(), BotError> {
    let Some((action, mut recipe)) = Recipe::parse(&press.data.custom_id) else {
        return Ok(());
    };
    let Some(old) = press.message.embeds.first() else {
        return Ok(());
    };
    if action == Action::Own {
        // The modal asks for the line; the quota is taken when it comes back.
        let modal = reply::own_line_modal(&recipe);
        press
            .create_response(&ctx.http, serenity::CreateInteractionResponse::Modal(modal))
            .await?;
        return Ok(());
    }
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
    if action == Action::Switch {
        recipe = recipe.switched();
    }
    let options = data.recipe_options(press.channel_id.get(), &recipe);
    let request = match action {
        Action::Own => unreachable!("answered with the modal above"),
        Action::Again | Action::Switch => Request::Keywords {
            keywords: recipe.keywords.clone(),
            options,
        },
        Action::Line => {
            let chosen = match &press.data.kind {
                serenity::ComponentInteractionDataKind::StringSelect { values } => {
                    values.first().and_then(|v| v.parse().ok())
                }
                _ => None,
            };
            let Some(line) = chosen else {
                return Ok(());
            };
            Request::Line {
                keywords: recipe.keywords.clone(),
                lines: reply::poem_lines(old.description.as_deref().unwrap_or("")),
                line,
                options,
            }
        }
    };
    edit_in_place(ctx, data, &press.token, request, old, &recipe, "写不成诗").await
}

/// Runs `request` and edits the poem's message (the interaction `token`'s)
/// with the new poem, keeping its photo and scores; when it fails, the poem
/// stays as it was and the one who asked is told why (`refused`, the reason).
async fn edit_in_place(
    ctx: &serenity::Context,
    data: &Arc<Data>,
    token: &str,
    request: Request,
    old: &serenity::Embed,
    recipe: &Recipe,
    refused: &str,
) -> Result<(), BotError> {
    let answer = match data.worker.submit(request) {
        Ok(ticket) => ticket.result().await.map_err(BotError::from),
        Err(e) => Err(e.into()),
    };
    match answer {
        Ok(poem) => {
            serenity::EditInteractionResponse::new()
                .embed(reply::embed_again(old, &poem))
                .components(reply::components(&poem, recipe))
                .execute(&ctx.http, token)
                .await?;
        }
        Err(e) => {
            serenity::CreateInteractionResponseFollowup::new()
                .content(format!("{refused}：{e}"))
                .ephemeral(true)
                .execute(&ctx.http, (None, token))
                .await?;
        }
    }
    Ok(())
}

/// Your own line, from the modal: kept at its place with the lines before
/// it, the lines after it written on, edited into the poem's message. A line
/// that cannot stand there is refused with its faults, to the writer alone,
/// and the poem stays as it was.
async fn own_line(
    ctx: &serenity::Context,
    submit: &serenity::ModalInteraction,
    data: &Arc<Data>,
) -> Result<(), BotError> {
    let Some((Action::Own, recipe)) = Recipe::parse(&submit.data.custom_id) else {
        return Ok(());
    };
    let Some(old) = submit.message.as_ref().and_then(|m| m.embeds.first()) else {
        return Ok(());
    };
    let field = |id: &str| -> String {
        submit
            .data
            .components
            .iter()
            .flat_map(|row| &row.components)
            .find_map(|c| match c {
                serenity::ActionRowComponent::InputText(input) if input.custom_id == id => {
                    input.value.clone()
                }
                _ => None,
            })
            .unwrap_or_default()
    };
    let tell = |text: String| async move {
        let notice = serenity::CreateInteractionResponseMessage::new()
            .content(text)
            .ephemeral(true);
        submit
            .create_response(
                &ctx.http,
                serenity::CreateInteractionResponse::Message(notice),
            )
            .await
    };
    let count = recipe.form.lines();
    let line = match field(reply::OWN_LINE_NUMBER).trim().parse::<usize>() {
        Ok(n) if (1..=count).contains(&n) => n - 1,
        _ => {
            tell(format!("第几句：请填 1 到 {count} 之间的数字。")).await?;
            return Ok(());
        }
    };
    if let Err(e) = data.admit(submit.user.id.get(), submit.channel_id.get()) {
        tell(e.to_string()).await?;
        return Ok(());
    }
    submit
        .create_response(&ctx.http, serenity::CreateInteractionResponse::Acknowledge)
        .await?;
    let options = data.recipe_options(submit.channel_id.get(), &recipe);
    let before = field(reply::OWN_LINE_BEFORE);
    let request = Request::OwnLine {
        keywords: recipe.keywords.clone(),
        lines: reply::poem_lines(old.description.as_deref().unwrap_or("")),
        line,
        text: field(reply::OWN_LINE_TEXT),
        rewrite_before: reply::YES.contains(&before.trim().to_lowercase().as_str()),
        options,
    };
    let refused = "这一句没有放进去，诗保持原样";
    edit_in_place(ctx, data, &submit.token, request, old, &recipe, refused).await
}

//! How a poem looks in Discord: an embed (photo thumbnail, keywords with
//! scores, the poem line by line, the form) and a 换一首 button whose custom
//! id carries all it needs, so it works after a restart.

use poise::serenity_prelude as serenity;

use crate::pipeline::PoemResult;
use crate::poem::Form;

const AGAIN: &str = "yingshi:again";

/// The text of the embed's body: keywords with scores (photo requests), then the poem.
pub fn poem_text(result: &PoemResult) -> String {
    let best = &result.candidates[0];
    let mut text = String::new();
    if !result.matched.is_empty() {
        let shown: Vec<String> = result
            .matched
            .iter()
            .map(|s| format!("{} `{:.2}`", s.keyword, s.score))
            .collect();
        text.push_str(&format!("意象：{}\n\n", shown.join("　")));
    } else if !result.keywords.is_empty() {
        text.push_str(&format!("意象：{}\n\n", result.keywords.join("　")));
    }
    for line in &best.lines {
        text.push_str(&format!("**{line}**\n"));
    }
    text
}

pub fn embed(result: &PoemResult, thumbnail: Option<&str>) -> serenity::CreateEmbed {
    let mut embed = serenity::CreateEmbed::new()
        .title(format!("影诗 · {}", result.form))
        .description(poem_text(result))
        .footer(serenity::CreateEmbedFooter::new(format!(
            "{} 首候选，择其一",
            result.candidates.len()
        )));
    if let Some(url) = thumbnail {
        embed = embed.thumbnail(url);
    }
    embed
}

/// The 换一首 button: same keywords and form, a new poem.
pub fn again_button(form: Form, keywords: &[String]) -> serenity::CreateActionRow {
    serenity::CreateActionRow::Buttons(vec![serenity::CreateButton::new(again_id(form, keywords))
        .label("换一首")
        .style(serenity::ButtonStyle::Secondary)])
}

/// `yingshi:again:{form}:{kw1 kw2 …}`, cut to Discord's 100 characters.
pub fn again_id(form: Form, keywords: &[String]) -> String {
    let mut id = format!("{AGAIN}:{}:", form.name());
    for k in keywords {
        if id.chars().count() + k.chars().count() + 1 > 100 {
            break;
        }
        if !id.ends_with(':') {
            id.push(' ');
        }
        id.push_str(k);
    }
    id
}

/// Reads a 换一首 custom id back.
pub fn parse_again(id: &str) -> Option<(Form, Vec<String>)> {
    let rest = id.strip_prefix(AGAIN)?.strip_prefix(':')?;
    let (form, keywords) = rest.split_once(':')?;
    Some((
        form.parse().ok()?,
        keywords
            .split(' ')
            .filter(|k| !k.is_empty())
            .map(str::to_owned)
            .collect(),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn again_ids_round_trip_and_fit() {
        let kws = vec!["春风".to_string(), "明月".to_string()];
        let id = again_id(Form::QiJue, &kws);
        assert_eq!(parse_again(&id), Some((Form::QiJue, kws)));
        let many: Vec<String> = (0..60).map(|i| format!("词{i}")).collect();
        let id = again_id(Form::WuLv, &many);
        assert!(id.chars().count() <= 100);
        assert!(parse_again(&id).unwrap().1.len() > 10);
        assert_eq!(parse_again("other:button"), None);
    }
}

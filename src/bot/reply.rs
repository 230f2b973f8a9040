//! How a poem looks in Discord: an embed (photo thumbnail, keywords with
//! scores, the poem line by line, each 集句 line with its poet and poem, the
//! form), a 换一首 button, a button for the other style (集句 under a written
//! poem, 原创 under a 集句) and a 换一句 menu. The components' custom ids carry
//! the [`Recipe`] (style, form, acrostic, keywords) and the poem's lines are in
//! the embed, so all work after a restart.

use poise::serenity_prelude as serenity;

use crate::pipeline::PoemResult;
use crate::poem::checker::Report;
use crate::poem::{Candidate, Form, Style};

const PREFIX: &str = "yingshi";
const AGAIN: &str = "again";
const LINE: &str = "line";
const SWITCH: &str = "switch";
const OWN: &str = "own";
/// After the action, for a 集句 poem's components (ids without it: a written poem's).
const JIJU_SUFFIX: &str = ".jiju";
/// A credit's title is cut to this many characters, so that a 七律 and its
/// credits stay well inside an embed's 4,096.
const MAX_TITLE_CHARS: usize = 24;
/// Discord's limit on a custom id.
const MAX_ID_CHARS: usize = 100;
const NUMERALS: [&str; 8] = ["一", "二", "三", "四", "五", "六", "七", "八"];

/// What a component under a poem asks for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Action {
    /// 换一首: a new poem from the same recipe.
    Again,
    /// 换一句: one line, chosen in the menu, written anew.
    Line,
    /// A new poem from the same recipe in the other style.
    Switch,
    /// Your own line: a modal takes it, the lines after it are written on.
    Own,
}

/// What it takes to write a poem again: style, form, acrostic, keywords.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Recipe {
    pub(crate) style: Style,
    pub(crate) form: Form,
    pub(crate) acrostic: Option<String>,
    pub(crate) keywords: Vec<String>,
}

impl Recipe {
    pub(crate) fn of(result: &PoemResult, style: Style, acrostic: Option<&str>) -> Self {
        Self {
            style,
            form: result.form,
            acrostic: acrostic.map(str::to_owned),
            keywords: result.keywords.clone(),
        }
    }

    /// The same recipe in the other style.
    pub(crate) fn switched(&self) -> Self {
        Self {
            style: match self.style {
                Style::Generate => Style::Jiju,
                Style::Jiju => Style::Generate,
            },
            ..self.clone()
        }
    }

    /// `yingshi:{action}[.jiju]:{form}:{acrostic}:{kw1 kw2 …}`, keywords cut
    /// to fit Discord's 100 characters.
    pub(crate) fn id(&self, action: Action) -> String {
        let action = match action {
            Action::Again => AGAIN,
            Action::Line => LINE,
            Action::Switch => SWITCH,
            Action::Own => OWN,
        };
        let style = match self.style {
            Style::Generate => "",
            Style::Jiju => JIJU_SUFFIX,
        };
        let mut id = format!(
            "{PREFIX}:{action}{style}:{}:{}:",
            self.form.name(),
            self.acrostic.as_deref().unwrap_or("")
        );
        let mut first = true;
        for k in &self.keywords {
            if id.chars().count() + k.chars().count() + 1 > MAX_ID_CHARS {
                break;
            }
            if !first {
                id.push(' ');
            }
            id.push_str(k);
            first = false;
        }
        id
    }

    /// Reads a custom id back; `None` for ids that are not ours.
    pub(crate) fn parse(id: &str) -> Option<(Action, Recipe)> {
        let mut parts = id.splitn(5, ':');
        if parts.next()? != PREFIX {
            return None;
        }
        let action = parts.next()?;
        let (action, style) = match action.strip_suffix(JIJU_SUFFIX) {
            Some(action) => (action, Style::Jiju),
            None => (action, Style::Generate),
        };
        let action = match action {
            AGAIN => Action::Again,
            LINE => Action::Line,
            SWITCH => Action::Switch,
            OWN => Action::Own,
            _ => return None,
        };
        let form = parts.next()?.parse().ok()?;
        let acrostic = Some(parts.next()?)
            .filter(|a| !a.is_empty())
            .map(str::to_owned);
        let keywords = parts
            .next()?
            .split(' ')
            .filter(|k| !k.is_empty())
            .map(str::to_owned)
            .collect();
        Some((
            action,
            Recipe {
                style,
                form,
                acrostic,
                keywords,
            },
        ))
    }
}

/// The embed's text above the poem: the keywords, with scores for a photo.
fn header(result: &PoemResult) -> String {
    if !result.matched.is_empty() {
        let shown: Vec<String> = result
            .matched
            .iter()
            .map(|s| format!("{} `{:.2}`", s.keyword, s.score))
            .collect();
        format!("意象：{}\n\n", shown.join("　"))
    } else if !result.keywords.is_empty() {
        format!("意象：{}\n\n", result.keywords.join("　"))
    } else {
        String::new()
    }
}

/// The poem, a bold line each; a 集句 line with its poet and poem in italics.
fn verse(poem: &Candidate) -> String {
    poem.lines
        .iter()
        .enumerate()
        .map(|(i, line)| match poem.sources.get(i) {
            Some(source) if !source.poet.is_empty() => {
                let mut title: String = source.title.chars().take(MAX_TITLE_CHARS).collect();
                if source.title.chars().count() > MAX_TITLE_CHARS {
                    title.push('…');
                }
                format!("**{line}**　*{}《{title}》*\n", source.poet)
            }
            _ => format!("**{line}**\n"),
        })
        .collect()
}

/// The poem's lines back from an embed's text (credits left aside).
pub(crate) fn poem_lines(description: &str) -> Vec<String> {
    description
        .lines()
        .filter_map(|l| Some(l.strip_prefix("**")?.split_once("**")?.0))
        .map(str::to_owned)
        .collect()
}

fn footer(result: &PoemResult) -> serenity::CreateEmbedFooter {
    let style = if result.candidates[0].sources.is_empty() {
        ""
    } else {
        "集句 · "
    };
    serenity::CreateEmbedFooter::new(format!("{style}{} 首候选，择其一", result.candidates.len()))
}

pub(crate) fn embed(result: &PoemResult, thumbnail: Option<&str>) -> serenity::CreateEmbed {
    let mut embed = serenity::CreateEmbed::new()
        .title(format!("影诗 · {}", result.form))
        .description(header(result) + &verse(&result.candidates[0]))
        .footer(footer(result));
    if let Some(url) = thumbnail {
        embed = embed.thumbnail(url);
    }
    embed
}

/// The embed of a poem written again: the old one (thumbnail, keywords with
/// scores) with the new poem in place of the old.
pub(crate) fn embed_again(old: &serenity::Embed, result: &PoemResult) -> serenity::CreateEmbed {
    let description = old.description.as_deref().unwrap_or("");
    let kept: String = description
        .split_inclusive('\n')
        .take_while(|l| !l.starts_with("**"))
        .collect();
    serenity::CreateEmbed::from(old.clone())
        .description(kept + &verse(&result.candidates[0]))
        .footer(footer(result))
}

/// The ids of the own-line modal's fields.
pub(crate) const OWN_LINE_NUMBER: &str = "line";
pub(crate) const OWN_LINE_TEXT: &str = "text";
pub(crate) const OWN_LINE_BEFORE: &str = "before";
/// What the third field takes to rewrite the lines before yours too.
pub(crate) const YES: [&str; 4] = ["是", "好", "y", "yes"];

/// The modal that takes your own line: which line, the line, and whether
/// the lines before it are to be written anew too. Its id is the recipe's,
/// so the submission knows the poem's keywords and form.
pub(crate) fn own_line_modal(recipe: &Recipe) -> serenity::CreateModal {
    let count = recipe.form.lines();
    let n = recipe.form.chars_per_line();
    let field = |id: &str, label: String, placeholder: String| {
        serenity::CreateActionRow::InputText(
            serenity::CreateInputText::new(serenity::InputTextStyle::Short, label, id)
                .placeholder(placeholder),
        )
    };
    serenity::CreateModal::new(recipe.id(Action::Own), "自己写一句").components(vec![
        field(
            OWN_LINE_NUMBER,
            format!("第几句（1–{count}）"),
            "如：3".into(),
        ),
        field(
            OWN_LINE_TEXT,
            format!("你的句子（{n} 字，合这首诗的平仄和韵）"),
            "后面的句子会接着你的句子重写".into(),
        ),
        serenity::CreateActionRow::InputText(
            serenity::CreateInputText::new(
                serenity::InputTextStyle::Short,
                "前面的句子也重写吗？（填“是”；留空则保留）",
                OWN_LINE_BEFORE,
            )
            .required(false)
            .max_length(3),
        ),
    ])
}

/// The strict check as an embed: each line with its 平仄 (a rhyming line
/// marked 韵), the rhyme group, each fault by name at its place, the verdict.
pub(crate) fn check_embed(report: &Report) -> serenity::CreateEmbed {
    let mut text = String::new();
    for (i, line) in report.lines.iter().enumerate() {
        let rhyme = if line.rhyme.is_some() { "　韵" } else { "" };
        let marks = if report.violations.iter().any(|v| v.line == i + 1) {
            "　✗"
        } else {
            ""
        };
        text.push_str(&format!(
            "**{}**　`{}`{rhyme}{marks}
",
            line.text, line.tones
        ));
    }
    if let Some(group) = &report.rhyme_group {
        text.push_str(&format!(
            "
韵部：{group}
"
        ));
    }
    let title = match report.form {
        Some(form) => format!("格律检查 · {form}"),
        None => "格律检查".to_owned(),
    };
    let mut embed = serenity::CreateEmbed::new().title(title).description(text);
    if report.pass {
        embed = embed
            .field("结论", "合律 ✓", false)
            .colour(serenity::Colour::DARK_GREEN);
    } else {
        let faults: Vec<String> = report.violations.iter().map(|v| v.to_string()).collect();
        embed = embed
            .field(
                format!("不合之处（{} 处）", faults.len()),
                faults.join("\n"),
                false,
            )
            .field("结论", "不合律", false)
            .colour(serenity::Colour::DARK_RED);
    }
    embed.footer(serenity::CreateEmbedFooter::new(
        "中：此字平仄两读，或不在平水韵表中，两可",
    ))
}

/// 换一首, the other style's button, 自己写一句 under a written poem (a 集句
/// is old poets' lines only) and the 换一句 menu, one option a line.
pub(crate) fn components(result: &PoemResult, recipe: &Recipe) -> Vec<serenity::CreateActionRow> {
    let again = serenity::CreateButton::new(recipe.id(Action::Again))
        .label("换一首")
        .style(serenity::ButtonStyle::Secondary);
    let other = serenity::CreateButton::new(recipe.id(Action::Switch))
        .label(match recipe.style {
            Style::Generate => "集句",
            Style::Jiju => "原创",
        })
        .style(serenity::ButtonStyle::Secondary);
    let options = result.candidates[0]
        .lines
        .iter()
        .zip(NUMERALS)
        .enumerate()
        .map(|(i, (line, numeral))| {
            serenity::CreateSelectMenuOption::new(format!("第{numeral}句：{line}"), i.to_string())
        })
        .collect();
    let menu = serenity::CreateSelectMenu::new(
        recipe.id(Action::Line),
        serenity::CreateSelectMenuKind::String { options },
    )
    .placeholder("换一句……");
    let mut buttons = vec![again, other];
    if recipe.style == Style::Generate {
        buttons.push(
            serenity::CreateButton::new(recipe.id(Action::Own))
                .label("自己写一句")
                .style(serenity::ButtonStyle::Secondary),
        );
    }
    vec![
        serenity::CreateActionRow::Buttons(buttons),
        serenity::CreateActionRow::SelectMenu(menu),
    ]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_round_trip_and_fit() {
        let recipe = Recipe {
            style: Style::Generate,
            form: Form::QiJue,
            acrostic: Some("春江花月".into()),
            keywords: vec!["春风".into(), "明月".into()],
        };
        for recipe in [recipe.clone(), recipe.switched()] {
            for action in [Action::Again, Action::Line, Action::Switch, Action::Own] {
                assert_eq!(
                    Recipe::parse(&recipe.id(action)),
                    Some((action, recipe.clone()))
                );
            }
        }
        assert_eq!(recipe.switched().style, Style::Jiju);
        assert_eq!(recipe.switched().switched(), recipe);
        // Ids written before the styles came read as a written poem's.
        assert_eq!(
            Recipe::parse("yingshi:again:七绝:春江花月:春风 明月"),
            Some((Action::Again, recipe.clone()))
        );
        let many = Recipe {
            style: Style::Jiju,
            form: Form::WuLv,
            acrostic: None,
            keywords: (0..60).map(|i| format!("词{i}")).collect(),
        };
        let id = many.id(Action::Again);
        assert!(id.chars().count() <= MAX_ID_CHARS);
        let (_, back) = Recipe::parse(&id).unwrap();
        assert!(back.keywords.len() > 10 && back.acrostic.is_none());
        assert_eq!(Recipe::parse("other:button"), None);
        assert_eq!(Recipe::parse("yingshi:dance:七绝::春风"), None);
    }

    #[test]
    fn poem_lines_read_back_what_the_embed_shows() {
        let lines = vec!["白日依山尽".to_string(), "黄河入海流".to_string()];
        let mut poem = Candidate::new(lines.clone(), 0.0, Vec::new(), 0);
        let text = format!("意象：春风 `0.31`\n\n{}", verse(&poem));
        assert_eq!(poem_lines(&text), lines);
        let source = |poet: &str, title: &str| crate::poem::LineSource {
            poet: poet.into(),
            title: title.into(),
            dynasty: "唐".into(),
        };
        poem.sources = vec![
            source("王之涣", "登鹳雀楼"),
            source("佚名", &"长".repeat(40)),
        ];
        let text = verse(&poem);
        assert!(
            text.contains("**白日依山尽**　*王之涣《登鹳雀楼》*"),
            "{text}"
        );
        assert!(
            text.contains(&format!("《{}…》", "长".repeat(MAX_TITLE_CHARS))),
            "{text}"
        );
        assert_eq!(poem_lines(&text), lines);
    }
}

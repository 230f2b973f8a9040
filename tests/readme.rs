//! The README shows what the commands print: every code block that opens
//! with `$ yingshi …` is run as written and its output compared with the
//! rest of the block, and the "Try it" command is the first of them, so a
//! changed default poem fails here instead of misleading a newcomer.

use assert_cmd::Command;

/// The README's code blocks, each as its lines.
fn code_blocks(readme: &str) -> Vec<Vec<&str>> {
    let mut blocks = Vec::new();
    let mut open: Option<Vec<&str>> = None;
    for line in readme.lines() {
        match (&mut open, line.starts_with("```")) {
            (None, true) => open = Some(Vec::new()),
            (Some(_), true) => blocks.push(open.take().unwrap()),
            (Some(block), false) => block.push(line),
            (None, false) => {}
        }
    }
    blocks
}

/// A command line's words, as a shell splits them (plain and "double-quoted" words).
fn words(command: &str) -> Vec<String> {
    let mut words = Vec::new();
    let mut word: Option<String> = None;
    let mut quoted = false;
    for c in command.chars() {
        match c {
            '"' => {
                quoted = !quoted;
                word.get_or_insert_with(String::new);
            }
            c if c.is_whitespace() && !quoted => words.extend(word.take()),
            c => word.get_or_insert_with(String::new).push(c),
        }
    }
    assert!(!quoted, "an unclosed quote in {command}");
    words.extend(word);
    words
}

fn readme() -> String {
    std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/README.md")).unwrap()
}

/// Each `$ yingshi …` block: the command's arguments and the output shown.
fn shown_commands(readme: &str) -> Vec<(Vec<String>, String)> {
    code_blocks(readme)
        .into_iter()
        .filter_map(|block| {
            let (first, shown) = block.split_first()?;
            let args = words(first.strip_prefix("$ yingshi ")?);
            Some((args, shown.iter().map(|l| format!("{l}\n")).collect()))
        })
        .collect()
}

#[test]
fn the_readme_shows_what_its_commands_print() {
    let readme = readme();
    let shown = shown_commands(&readme);
    assert!(shown.len() >= 3, "{} shown commands", shown.len());
    for (args, expected) in &shown {
        let mut command = Command::cargo_bin("yingshi").unwrap();
        // The defaults, as a newcomer has them: no settings from this shell.
        for (key, _) in std::env::vars().filter(|(k, _)| k.starts_with("YINGSHI_")) {
            command.env_remove(key);
        }
        let out = command
            .current_dir(env!("CARGO_MANIFEST_DIR"))
            .args(args)
            .output()
            .unwrap();
        let printed = String::from_utf8(out.stdout).unwrap();
        assert_eq!(
            printed,
            *expected,
            "`yingshi {}` prints something else than the README shows",
            args.join(" ")
        );
    }
}

#[test]
fn the_try_it_command_is_the_first_shown() {
    let readme = readme();
    let try_it = readme
        .lines()
        .find_map(|l| l.trim().strip_prefix("cargo run --release -- "))
        .expect("the README's first command");
    let try_it = words(try_it.split('#').next().unwrap());
    let shown = shown_commands(&readme);
    assert_eq!(
        try_it, shown[0].0,
        "the README's first command and the output under it"
    );
}

#[test]
fn shown_commands_are_read_as_a_shell_reads_them() {
    assert_eq!(
        words(r#"check "白日依山尽 黄河入海流" --json"#),
        ["check", "白日依山尽 黄河入海流", "--json"]
    );
    let blocks = code_blocks("text\n```\n$ yingshi check \"a b\"\nok\n```\n```sh\nls\n```\n");
    assert_eq!(blocks, [vec!["$ yingshi check \"a b\"", "ok"], vec!["ls"]]);
    assert_eq!(
        shown_commands("```\n$ yingshi check x\n合律\n```\n"),
        [(
            vec!["check".to_string(), "x".to_string()],
            "合律\n".to_string()
        )]
    );
}

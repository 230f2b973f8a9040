//! The `yingshi` command as a user runs it.

use assert_cmd::Command;

fn yingshi() -> Command {
    let mut cmd = Command::cargo_bin("yingshi").unwrap();
    cmd.current_dir(env!("CARGO_MANIFEST_DIR"));
    cmd.env_remove("DISCORD_TOKEN");
    cmd
}

fn stdout(cmd: &mut Command) -> String {
    String::from_utf8(cmd.output().unwrap().stdout).unwrap()
}

#[test]
fn help_lists_the_subcommands() {
    let out = stdout(yingshi().arg("--help"));
    // The first word of each entry of the "Commands:" section (an entry's
    // wrapped lines are indented further).
    let listed: Vec<&str> = out
        .lines()
        .skip_while(|l| !l.starts_with("Commands:"))
        .skip(1)
        .take_while(|l| l.starts_with("  "))
        .filter(|l| !l.starts_with("   "))
        .filter_map(|l| l.split_whitespace().next())
        .collect();
    assert_eq!(
        listed,
        ["bot", "poem", "keywords", "check", "bench", "eval", "sheet", "scores", "help"],
        "{out}"
    );
}

#[test]
fn bad_config_names_the_key() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("bad.toml");
    std::fs::write(&path, "[poem]\ncandidates = \"many\"\n").unwrap();
    let out = yingshi()
        .args(["--config", path.to_str().unwrap(), "check", "白日依山尽"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8(out.stderr).unwrap();
    assert!(
        err.contains("poem.candidates") && err.contains("many"),
        "{err}"
    );

    std::fs::write(&path, "[poem]\nfrom = \"五绝\"\n").unwrap();
    let out = yingshi()
        .args(["--config", path.to_str().unwrap(), "check", "x"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8(out.stderr).unwrap().contains("from"));
}

#[test]
fn check_exit_status_and_json() {
    yingshi()
        .args(["check", "白日依山尽，黄河入海流。欲穷千里目，更上一层楼。"])
        .assert()
        .success();
    let out = yingshi()
        .args([
            "check",
            "--json",
            "床前明月光，疑是地上霜。举头望明月，低头思故乡。",
        ])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["form"], "五绝");
    assert_eq!(v["pass"], false);
    assert!(v["violations"]
        .as_array()
        .unwrap()
        .iter()
        .any(|x| x["rule"] == "失粘" && x["line"] == 3 && x["char"] == 2));
}

#[test]
fn poem_json_from_keywords() {
    let v = run_json(yingshi().args([
        "poem",
        "--keywords",
        "春风",
        "明月",
        "--form",
        "七绝",
        "--candidates",
        "3",
        "--seed",
        "9",
        "--json",
    ]));
    assert_eq!(v["form"], "七绝");
    let lines = v["lines"].as_array().unwrap();
    assert_eq!(lines.len(), 4);
    assert!(lines
        .iter()
        .all(|l| l.as_str().unwrap().chars().count() == 7));
    assert_eq!(v["alternatives"].as_array().unwrap().len(), 2);
    assert_eq!(v["keywords"], serde_json::json!(["春风", "明月"]));

    // The ideographic space the bot prints between keywords splits them too.
    let v = run_json(yingshi().args(["poem", "--keywords", "孤舟　明月", "--json"]));
    assert_eq!(v["keywords"], serde_json::json!(["孤舟", "明月"]));
}

#[test]
fn bad_poem_arguments_are_friendly() {
    let out = yingshi()
        .args([
            "poem",
            "--keywords",
            "春风",
            "--acrostic",
            "春江",
            "--form",
            "七绝",
        ])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8(out.stderr).unwrap().contains("4"));
    let out = yingshi().args(["poem", "--form", "十绝"]).output().unwrap();
    assert_eq!(out.status.code(), Some(2));
}

#[test]
fn rewrite_one_line_of_a_poem() {
    let poem = "白日依山尽，黄河入海流。欲穷千里目，更上一层楼。";
    let kept = ["白日依山尽", "欲穷千里目", "更上一层楼"];
    let v = run_json(yingshi().args([
        "poem",
        "--rewrite",
        "2",
        "--poem",
        poem,
        "--seed",
        "1",
        "--candidates",
        "3",
        "--json",
    ]));
    // The form comes from the poem; line 2 is new, the others are kept.
    assert_eq!(v["form"], "五绝");
    let lines: Vec<&str> = v["lines"]
        .as_array()
        .unwrap()
        .iter()
        .map(|l| l.as_str().unwrap())
        .collect();
    assert_eq!([lines[0], lines[2], lines[3]], kept);
    assert_ne!(lines[1], "黄河入海流");
    yingshi()
        .args(["check", &lines.join("，")])
        .assert()
        .success();

    let out = yingshi()
        .args(["poem", "--rewrite", "5", "--poem", poem])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8(out.stderr).unwrap().contains("no line 5"));
}

/// Runs a command that must succeed and print JSON.
fn run_json(cmd: &mut Command) -> serde_json::Value {
    let out = cmd.output().unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).unwrap()
}

fn with_tiny_clip(cmd: &mut Command, cache: &std::path::Path) {
    cmd.args(["--clip-model", "tests/fixtures/clip-tiny"]);
    cmd.env("YINGSHI_MODELS__CACHE_DIR", cache);
}

/// `yingshi keywords` of a test photo, its `top_k` keywords as JSON.
fn keywords_of_a_photo(top_k: usize) -> Command {
    let mut cmd = yingshi();
    cmd.args([
        "keywords",
        "--image",
        "tests/fixtures/photos/chelsea.png",
        "--json",
    ])
    .args(["--top-k", &top_k.to_string()]);
    cmd
}

#[test]
fn keywords_json_from_a_photo() {
    let cache = tempfile::tempdir().unwrap();
    let mut cmd = keywords_of_a_photo(5);
    with_tiny_clip(&mut cmd, cache.path());
    let v = run_json(&mut cmd);
    let keywords = v["keywords"].as_array().unwrap();
    assert_eq!(keywords.len(), 5);
    let scores: Vec<f64> = keywords
        .iter()
        .map(|k| k["score"].as_f64().unwrap())
        .collect();
    assert!(scores.windows(2).all(|w| w[0] >= w[1]));
    // Diverse by default: five topics.
    let topics: std::collections::HashSet<_> = keywords
        .iter()
        .map(|k| k["topic"].as_str().unwrap())
        .collect();
    assert_eq!(topics.len(), 5);
}

/// The command line takes any number of keywords up to the vocabulary's
/// size (the bot keeps to 1–16): as many as asked with keywords.diverse off,
/// one per topic with it on (the default), which stderr says.
#[test]
fn keywords_top_k_goes_up_to_the_vocabulary() {
    let cache = tempfile::tempdir().unwrap();
    let mut cmd = keywords_of_a_photo(1_000_000);
    with_tiny_clip(&mut cmd, cache.path());
    let out = cmd.output().unwrap();
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8(out.stderr).unwrap();
    let size: usize = err
        .split("at most ")
        .nth(1)
        .and_then(|rest| rest.split(',').next()?.parse().ok())
        .unwrap_or_else(|| panic!("{err}"));
    assert!(size > 100, "{err}");

    let mut cmd = keywords_of_a_photo(size);
    with_tiny_clip(&mut cmd, cache.path());
    cmd.env("YINGSHI_KEYWORDS__DIVERSE", "false");
    let v = run_json(&mut cmd);
    assert_eq!(v["keywords"].as_array().unwrap().len(), size);

    let mut cmd = keywords_of_a_photo(size);
    with_tiny_clip(&mut cmd, cache.path());
    let out = cmd.output().unwrap();
    assert!(out.status.success());
    let shown: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let topics = shown["keywords"].as_array().unwrap().len();
    assert!(topics > 16 && topics < size, "{topics} of {size}");
    let err = String::from_utf8(out.stderr).unwrap();
    assert!(err.contains("one per topic"), "{err}");

    let mut cmd = keywords_of_a_photo(0);
    with_tiny_clip(&mut cmd, cache.path());
    assert_eq!(cmd.output().unwrap().status.code(), Some(2));
}

#[test]
fn bad_photos_exit_2_with_a_message() {
    let cache = tempfile::tempdir().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let cases = [
        ("empty.png", &b""[..], "empty"),
        ("notes.jpg", &b"hello"[..], "not an image"),
    ];
    for (name, bytes, says) in cases {
        let path = dir.path().join(name);
        std::fs::write(&path, bytes).unwrap();
        let mut cmd = yingshi();
        cmd.args(["keywords", "--image", path.to_str().unwrap()]);
        with_tiny_clip(&mut cmd, cache.path());
        let out = cmd.output().unwrap();
        assert_eq!(out.status.code(), Some(2), "{name}");
        let err = String::from_utf8(out.stderr).unwrap();
        assert!(
            err.contains(says) && !err.contains("panicked"),
            "{name}: {err}"
        );
    }
    let mut cmd = yingshi();
    cmd.args(["keywords", "--image", "no/such/photo.jpg"]);
    with_tiny_clip(&mut cmd, cache.path());
    assert_eq!(cmd.output().unwrap().status.code(), Some(2));
}

#[test]
fn poem_from_a_photo() {
    let cache = tempfile::tempdir().unwrap();
    let mut cmd = yingshi();
    cmd.args([
        "poem",
        "--image",
        "tests/fixtures/photos/rocket.jpg",
        "--form",
        "五绝",
        "--seed",
        "3",
        "--candidates",
        "3",
        "--json",
    ]);
    with_tiny_clip(&mut cmd, cache.path());
    let v = run_json(&mut cmd);
    assert_eq!(v["matched"].as_array().unwrap().len(), 4);
    assert_eq!(v["keywords"].as_array().unwrap().len(), 4);
    let lines = v["lines"].as_array().unwrap();
    assert_eq!(lines.len(), 4);
    assert!(lines
        .iter()
        .all(|l| l.as_str().unwrap().chars().count() == 5));
}

/// Runs a command that must fail with exit status 2; returns what it said.
fn input_error(cmd: &mut Command) -> String {
    let out = cmd.output().unwrap();
    assert_eq!(out.status.code(), Some(2), "{out:?}");
    String::from_utf8(out.stderr).unwrap()
}

/// A sheet key's rows: id, source, set, form, keywords.
fn key_rows(key: &str) -> Vec<Vec<&str>> {
    key.lines()
        .filter(|l| !l.starts_with('#'))
        .map(|l| l.split('\t').collect())
        .collect()
}

#[test]
fn a_blind_sheet_and_its_scores() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("sheet");
    let sheet = |extra: &[&str]| {
        let mut cmd = yingshi();
        cmd.args([
            "sheet",
            "--out",
            out.to_str().unwrap(),
            "--sets",
            "3",
            "--skip",
            "5",
        ]);
        cmd.args([
            "--variant",
            "warm",
            "--variant",
            "cold:poem.temperature=0.2,poem.candidates=2",
        ]);
        cmd.args(extra);
        cmd
    };
    sheet(&[]).assert().success();
    let text = std::fs::read_to_string(out.join("sheet.txt")).unwrap();
    let key = std::fs::read_to_string(out.join("key.tsv")).unwrap();
    let rows = key_rows(&key);
    let ids: Vec<&str> = rows.iter().map(|r| r[0]).collect();
    // Each variant wrote a poem for each of the three sets (6–8); the sheet
    // shows every id of the key and none of the sources' names.
    for variant in ["warm", "cold"] {
        let sets: Vec<&str> = rows
            .iter()
            .filter(|r| r[1] == variant)
            .map(|r| r[2])
            .collect();
        assert_eq!(sets.len(), 3, "{key}");
    }
    assert!(
        rows.iter().all(|r| ["6", "7", "8"].contains(&r[2])),
        "{key}"
    );
    for id in &ids {
        assert!(text.contains(&format!("#{id} ")), "#{id} missing");
    }
    assert!(!text.contains("warm") && !text.contains("cold") && !text.contains("corpus"));

    // An existing sheet is kept unless --force.
    let err = input_error(&mut sheet(&[]));
    assert!(err.contains("--force"), "{err}");
    sheet(&["--force"]).assert().success();
    let err = input_error(&mut sheet(&["--force", "--variant", "bad:poem.tempo=1"]));
    assert!(err.contains("tempo"), "{err}");

    // Scores: the means per source; an id left out is named.
    let key = std::fs::read_to_string(out.join("key.tsv")).unwrap();
    let rows = key_rows(&key);
    let score_of = |source: &str| match source {
        "corpus" => "5\t5\t4\t5\tH",
        "warm" => "2\t1\t2\t1\tM",
        _ => "3\t3\t3\t2\tM",
    };
    let scores: String = rows
        .iter()
        .map(|r| format!("{}\t{}\tok\n", r[0], score_of(r[1])))
        .collect();
    let reader = dir.path().join("reader.tsv");
    std::fs::write(
        &reader,
        format!("id\tfluency\tcoherence\trelevance\toverall\tguess\tcomment\n{scores}"),
    )
    .unwrap();
    let v = run_json(yingshi().args([
        "scores",
        out.to_str().unwrap(),
        reader.to_str().unwrap(),
        "--json",
    ]));
    let mean = |source: &str, axis: &str| {
        v.as_array()
            .unwrap()
            .iter()
            .find(|r| r["source"] == source)
            .map(|r| r[axis].as_f64().unwrap())
    };
    assert_eq!(mean("warm", "overall"), Some(1.0));
    assert_eq!(mean("cold", "fluency"), Some(3.0));
    let first = scores.lines().next().unwrap().split('\t').next().unwrap();
    let short: String = scores.lines().skip(1).map(|l| format!("{l}\n")).collect();
    std::fs::write(&reader, short).unwrap();
    let err =
        input_error(yingshi().args(["scores", out.to_str().unwrap(), reader.to_str().unwrap()]));
    assert!(
        err.contains(&format!("#{first}")) && err.contains("reader.tsv"),
        "{err}"
    );
}

#[cfg(not(feature = "llm"))]
#[test]
fn the_llm_poet_needs_its_feature() {
    let out = yingshi()
        .args([
            "poem",
            "--poet",
            "llm",
            "--llm-model",
            "Qwen/Qwen3-1.7B",
            "--keywords",
            "明月",
        ])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8(out.stderr).unwrap();
    assert!(err.contains("--features llm"), "{err}");
}

#[test]
fn an_unknown_poet_is_refused() {
    let out = yingshi()
        .args(["poem", "--poet", "gpt", "--keywords", "明月"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8(out.stderr).unwrap();
    assert!(err.contains("t5 or llm"), "{err}");
}

/// `bench` names the CPU and the reference's versions before its tables; a
/// stand-in for the Python reference answers as tools/reference.py does.
#[cfg(unix)]
#[test]
fn bench_names_the_machine_and_the_reference() {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir().unwrap();
    let python = dir.path().join("python");
    std::fs::write(
        &python,
        "#!/bin/sh\n# $1 is the script, $2 the subcommand.\ncase \"$2\" in\n\
         versions) echo '{\"torch\": \"9.9.0\", \"transformers\": \"8.8.0\"}' ;;\n\
         poem) echo '{\"ms_per_poem\": 1000.0, \"tokens_per_s\": 50.0}' ;;\n\
         *) exit 1 ;;\nesac\n",
    )
    .unwrap();
    std::fs::set_permissions(&python, std::fs::Permissions::from_mode(0o755)).unwrap();
    let cpu = std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|info| {
            info.lines()
                .find(|l| l.starts_with("model name"))
                .map(|l| l.split_once(':').unwrap().1.trim().to_owned())
        });
    let bench = |python: &str| {
        stdout(yingshi().args([
            "bench",
            "--poems",
            "1",
            "--candidates",
            "1",
            "--python",
            python,
        ]))
    };

    let out = bench(python.to_str().unwrap());
    let first = out.lines().next().unwrap_or_default();
    assert!(first.starts_with("machine: "), "{out}");
    if let Some(cpu) = cpu {
        assert!(first.contains(&cpu), "{first} lacks {cpu}");
    }
    assert!(
        first.contains("python reference: torch 9.9.0, transformers 8.8.0"),
        "{first}"
    );
    assert!(out.contains("1000.0 ms/poem"), "{out}");

    let out = bench("/nonexistent/python");
    let first = out.lines().next().unwrap_or_default();
    assert!(
        first.contains("python reference: not run: cannot start /nonexistent/python"),
        "{first}"
    );
}

/// Runs `cmd` with `YINGSHI_CPU_CAPABILITY` set to `capability`, or unset.
fn with_cpu_capability(cmd: &mut Command, capability: Option<&str>) {
    match capability {
        Some(value) => cmd.env("YINGSHI_CPU_CAPABILITY", value),
        None => cmd.env_remove("YINGSHI_CPU_CAPABILITY"),
    };
}

fn cpu_has_avx512() -> bool {
    #[cfg(target_arch = "x86_64")]
    {
        std::arch::is_x86_feature_detected!("avx512f")
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        false
    }
}

/// With `YINGSHI_CPU_CAPABILITY=avx2` on a CPU with AVX-512, `bench` says the
/// AVX2 kernels run and starts the reference with PyTorch's, MKL's and
/// oneDNN's switches to AVX2; on one without, there is nothing to hold back.
#[cfg(unix)]
#[test]
fn bench_holds_avx512_back_on_both_sides() {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir().unwrap();
    let python = dir.path().join("python");
    let seen = dir.path().join("env");
    std::fs::write(
        &python,
        format!(
            "#!/bin/sh\nenv | grep -E '^(ATEN_CPU_CAPABILITY|MKL_ENABLE_INSTRUCTIONS|ONEDNN_MAX_CPU_ISA)=' \
             | sort > {}\necho '{{\"torch\": \"9.9.0\", \"transformers\": \"8.8.0\"}}'\n",
            seen.display()
        ),
    )
    .unwrap();
    std::fs::set_permissions(&python, std::fs::Permissions::from_mode(0o755)).unwrap();
    let bench = |capability: Option<&str>| {
        let mut cmd = yingshi();
        cmd.args(["bench", "--poems", "1", "--candidates", "1", "--python"])
            .arg(&python)
            .env_remove("ATEN_CPU_CAPABILITY")
            .env_remove("MKL_ENABLE_INSTRUCTIONS")
            .env_remove("ONEDNN_MAX_CPU_ISA");
        with_cpu_capability(&mut cmd, capability);
        let out = stdout(&mut cmd);
        let first = out.lines().next().unwrap_or_default().to_owned();
        (first, std::fs::read_to_string(&seen).unwrap())
    };

    let (first, env) = bench(Some("avx2"));
    if cpu_has_avx512() {
        assert!(
            first.contains("AVX2 kernels: AVX-512 held back") && first.contains("no AMX tiles"),
            "{first}"
        );
        assert_eq!(
            env,
            "ATEN_CPU_CAPABILITY=avx2\nMKL_ENABLE_INSTRUCTIONS=AVX2\nONEDNN_MAX_CPU_ISA=AVX2\n"
        );
    } else {
        assert!(!first.contains("held back"), "{first}");
        assert_eq!(env, "");
    }

    let (first, env) = bench(None);
    assert!(!first.contains("held back"), "{first}");
    assert_eq!(env, "");
}

/// The AVX2 kernels give the AVX-512 kernels' sums to the bit, so a photo's
/// keywords and their scores (the vocabulary's embeddings too) are the same
/// with AVX-512 held back (on a CPU without it, the same kernels run either
/// way).
#[test]
fn keywords_are_the_same_with_avx512_held_back() {
    let keywords = |capability: Option<&str>| {
        // A cache each, so that each embeds the vocabulary too.
        let cache = tempfile::tempdir().unwrap();
        let mut cmd = keywords_of_a_photo(8);
        with_tiny_clip(&mut cmd, cache.path());
        with_cpu_capability(&mut cmd, capability);
        run_json(&mut cmd)
    };
    let held_back = keywords(Some("avx2"));
    assert_eq!(held_back["keywords"].as_array().unwrap().len(), 8);
    assert_eq!(keywords(None), held_back);
}

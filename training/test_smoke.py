"""CPU smoke runs of the training pipeline: prepare 300 poems, train 5 steps of
a tiny model, export, and have both transformers and the Rust poet load it;
a warm start that keeps the model's logits, a stopped run that resumes, and
the GPU retrain script (its H200 preset) at tiny scale.

    npm pack chinese-poetry@2.0.1   # once, beside the repository or in $CORPUS_TGZ
    python -m pytest training/test_smoke.py
"""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from transformers import T5ForConditionalGeneration

ROOT = Path(__file__).resolve().parent.parent
TGZ = Path(os.environ.get("CORPUS_TGZ", ROOT / "chinese-poetry-2.0.1.tgz"))


needs_corpus = pytest.mark.skipif(not TGZ.exists(), reason=f"no corpus at {TGZ} (npm pack chinese-poetry@2.0.1)")


def run(*args):
    done = subprocess.run([sys.executable, *map(str, args)], check=True, cwd=ROOT, capture_output=True, text=True)
    return done.stdout


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    data = tmp_path_factory.mktemp("prepared") / "data"
    run("training/prepare.py", TGZ, data, "--limit", 300)
    return data


def logits(model_dir, ids):
    model = T5ForConditionalGeneration.from_pretrained(model_dir, dtype=torch.float32).eval()
    with torch.no_grad():
        return model(input_ids=ids, decoder_input_ids=ids[:, :4]).logits


@needs_corpus
def test_prepare_train_export_and_load(tmp_path, data):
    model_dir = tmp_path / "model"
    info = json.loads((data / "prepare_info.json").read_text())
    assert sum(info["poems"].values()) == 300
    first = json.loads((data / "train.jsonl").open(encoding="utf-8").readline())
    assert first["src"].count("|") >= 2 and len(first["tgt"]) in (5, 7)

    heldout = [json.loads(l) for l in (data / "heldout_poems.jsonl").open(encoding="utf-8")]
    assert heldout and all(len(p["lines"]) in (4, 8) for p in heldout)

    run("training/train.py", data, model_dir, "--max-steps", 5, "--device", "cpu", "--small", "--batch-size", 32)
    for name in ("config.json", "model.safetensors.index.json", "tokenizer.json", "train_lines.bloom"):
        assert (model_dir / name).exists(), name
    shards = list(model_dir.glob("model-*.safetensors"))
    assert shards and all(s.stat().st_size <= 15 * 2**20 for s in shards)
    config = json.loads((model_dir / "config.json").read_text())
    assert config["tie_word_embeddings"] is False

    model = T5ForConditionalGeneration.from_pretrained(model_dir, dtype=torch.float32)
    assert model.config.vocab_size == info["vocab"]

    out = subprocess.run(
        ["cargo", "run", "--release", "-q", "--", "poem", "--poet-model", str(model_dir),
         "--keywords", "春风", "--form", "五绝", "--seed", "1", "--json"],
        cwd=ROOT, capture_output=True, text=True, check=True,
    )
    poem = json.loads(out.stdout)
    assert len(poem["lines"]) == 4 and all(len(l) == 5 for l in poem["lines"])


@needs_corpus
def test_a_warm_start_keeps_the_logits_and_a_stopped_run_resumes(tmp_path, data):
    first, same, resumed = tmp_path / "first", tmp_path / "same", tmp_path / "resumed"
    small = ("--device", "cpu", "--small", "--batch-size", 32)
    run("training/train.py", data, first, "--max-steps", 5, *small)
    # No training: the export equals the model it started from (the output
    # scaling folded once, not twice).
    run("training/train.py", data, same, "--init", first, "--seconds", 0, *small)
    ids = torch.tensor([[7, 8, 9, 10, 4, 11, 12, 2]])
    assert torch.allclose(logits(first, ids), logits(same, ids), atol=1e-4)

    run("training/train.py", data, resumed, "--init", first, "--max-steps", 3, *small)
    assert (resumed / "checkpoint.pt").exists()
    log = run("training/train.py", data, resumed, "--init", first, "--max-steps", 6, *small)
    assert "resumed at step 3" in log, log
    info = json.loads((resumed / "train_info.json").read_text())
    assert info["steps"] == 6
    steps = [s for s, _ in info["heldout_char_loss"]]
    assert steps[0] == 0 and steps[-1] == 6, steps
    assert not torch.allclose(logits(first, ids), logits(resumed, ids), atol=1e-4)


@needs_corpus
def test_the_gpu_retrain_script_packs_and_runs_at_tiny_scale(tmp_path, data):
    out = tmp_path / "out"
    script = ROOT / "tools" / "gpu_retrain.sh"
    subprocess.run([script, "pack", data], check=True, cwd=ROOT, capture_output=True)
    env = {**os.environ, "OUT": str(out),
           "YINGSHI_RETRAIN_ARGS": "--device cpu --small --seconds 2 --eval-poems 5"}
    subprocess.run([script, "run"], check=True, cwd=ROOT, env=env, capture_output=True)
    names = sorted(p.name for p in out.iterdir())
    assert "checkpoint.pt" not in names and len(names) <= 8, names
    assert {"config.json", "model.safetensors.index.json", "tokenizer.json", "train_info.json"} <= set(names)
    info = json.loads((out / "train_info.json").read_text())
    assert info["batch_size"] == 2048 and info["steps"] >= 1


@needs_corpus
def test_the_line_index_and_a_judge_the_rust_poet_uses(tmp_path, data):
    """prepare.py's line index, a few seconds of the judge's training, and `yingshi poem --style jiju` on both."""
    import gzip

    rows = gzip.open(data / "jiju_lines.tsv.gz", "rt", encoding="utf-8").read().splitlines()
    heldout = {l for p in map(json.loads, (data / "heldout_poems.jsonl").open(encoding="utf-8")) for l in p["lines"]}
    assert rows and all(len(r.split("\t")) == 4 for r in rows)
    assert not heldout & {l for r in rows for l in r.split("\t")[3].split(" ")}
    jiju = tmp_path / "jiju"
    jiju.mkdir()
    (jiju / "lines.tsv.gz").write_bytes((data / "jiju_lines.tsv.gz").read_bytes())
    reference = tmp_path / "reference.json"
    run("training/train_judge.py", jiju / "lines.tsv.gz", jiju, "--minutes", 0.1, "--epochs", 1, "--threads", 1,
        "--reference", reference)
    info = json.loads((jiju / "judge_info.json").read_text())
    assert info["examples"] > 0 and 0 <= info["top1_of_16"] <= 1 and set(info["true_beats"]) == {"tones", "words", "season", "random"}
    assert len(json.loads(reference.read_text())) >= 3
    config = tmp_path / "jiju.toml"
    config.write_text(f'[models]\njiju_dir = "{jiju}"\n')
    out = subprocess.run(
        ["cargo", "run", "--release", "-q", "--", "--config", str(config), "poem", "--style", "jiju",
         "--keywords", "春风", "--form", "五绝", "--seed", "1", "--json"],
        cwd=ROOT, capture_output=True, text=True, check=True,
    )
    poem = json.loads(out.stdout)
    assert len(poem["lines"]) == 4 and len(poem["sources"]) == 4

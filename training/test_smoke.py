"""CPU smoke run of the training pipeline: prepare 300 poems, train 5 steps of
a tiny model, export, and have both transformers and the Rust poet load it.

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


@pytest.mark.skipif(not TGZ.exists(), reason=f"no corpus at {TGZ} (npm pack chinese-poetry@2.0.1)")
def test_prepare_train_export_and_load(tmp_path):
    data, model_dir = tmp_path / "data", tmp_path / "model"
    run = lambda *a: subprocess.run([sys.executable, *map(str, a)], check=True, cwd=ROOT)
    run("training/prepare.py", TGZ, data, "--limit", 300)
    info = json.loads((data / "prepare_info.json").read_text())
    assert sum(info["poems"].values()) == 300
    first = json.loads((data / "train.jsonl").open(encoding="utf-8").readline())
    assert first["src"].count("|") >= 2 and len(first["tgt"]) in (5, 7)

    run("training/train.py", data, model_dir, "--max-steps", 5, "--device", "cpu", "--small", "--batch-size", 32)
    for name in ("config.json", "model.safetensors", "tokenizer.json", "train_lines.bloom"):
        assert (model_dir / name).exists(), name
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

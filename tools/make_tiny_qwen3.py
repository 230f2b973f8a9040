"""Writes tests/fixtures/qwen3-tiny: a tiny random-weight Qwen3 made by the
reference implementation (Python transformers), with a byte-level BPE
tokenizer trained here on 诗学含英's phrases, so that it has tokens of several
Chinese characters, tokens of one, and rarer characters left as byte pieces
(as Qwen's own tokenizer does), and a Qwen-style chat template.

    python tools/make_tiny_qwen3.py          # writes tests/fixtures/qwen3-tiny/

The LLM poet's tests load it through mistral.rs. Fixed seeds: running it again
gives the same files (same torch, transformers and tokenizers versions).
"""

import json
import re
import shutil
from pathlib import Path

import torch
from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
from transformers import Qwen3Config, Qwen3ForCausalLM

ROOT = Path(__file__).resolve().parent.parent
OUT = ROOT / "tests" / "fixtures" / "qwen3-tiny"
SPECIAL = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]
VOCAB_SIZE = 8000

# Qwen's template without tools; with thinking off it writes the empty think
# block Qwen3 expects, so the model answers directly.
CHAT_TEMPLATE = (
    "{% for message in messages %}"
    "{{ '<|im_start|>' + message['role'] + '\\n' + message['content'] + '<|im_end|>\\n' }}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\\n' }}"
    "{% if enable_thinking is defined and enable_thinking is false %}"
    "{{ '<think>\\n\\n</think>\\n\\n' }}{% endif %}{% endif %}"
)


def phrases():
    """诗学含英's phrases and the keyword file's words: text with the
    multi-character words a BPE merges, and most common characters."""
    text = (ROOT / "keywords" / "shixuehanying.txt").read_text(encoding="utf-8")
    for line in text.splitlines():
        fields = line.split("\t")
        if len(fields) == 3 and not fields[0].startswith("<"):
            yield " ".join(fields[1:])
    words = (ROOT / "keywords" / "default.txt").read_text(encoding="utf-8")
    yield from (l for l in words.splitlines() if not l.startswith("#"))
    # The chat frame and the prompt's own words, so they are short in tokens.
    yield "你是一位古典诗人。请以 为意象，写一首五言绝句七言律诗，藏头：每句一行，不要标题和解释。"
    yield "，。\n" * 20


def tokenizer() -> Tokenizer:
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=VOCAB_SIZE,
        special_tokens=SPECIAL,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(phrases(), trainer=trainer)
    return tok


def main():
    torch.manual_seed(20261202)
    if OUT.exists():
        shutil.rmtree(OUT)
    OUT.mkdir(parents=True)
    tok = tokenizer()
    tok.save(str(OUT / "tokenizer.json"))
    vocab = tok.get_vocab()
    pieces = [tok.decode([i]) for i in range(tok.get_vocab_size())]
    han = re.compile(r"^[\u4e00-\u9fff]+$")
    multi = sum(1 for p in pieces if han.match(p) and len(p) > 1)
    single = sum(1 for p in pieces if han.match(p) and len(p) == 1)
    print(f"vocabulary {tok.get_vocab_size()}: {single} one-character and {multi} multi-character Chinese tokens")

    eos = vocab["<|im_end|>"]
    config = Qwen3Config(
        vocab_size=tok.get_vocab_size(),
        hidden_size=64,
        intermediate_size=128,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        head_dim=16,
        max_position_embeddings=512,
        rope_theta=10000.0,
        tie_word_embeddings=True,
        # Wider than the default 0.02, so the logits depend on the context.
        initializer_range=0.3,
        bos_token_id=vocab["<|endoftext|>"],
        eos_token_id=eos,
        pad_token_id=vocab["<|endoftext|>"],
        torch_dtype="float32",
    )
    model = Qwen3ForCausalLM(config).eval()
    model.save_pretrained(OUT, safe_serialization=True)
    cfg = json.loads((OUT / "config.json").read_text())
    # mistral.rs reads `rope_theta`; transformers 5 writes only `rope_parameters`.
    cfg["rope_theta"] = 10000.0
    (OUT / "config.json").write_text(json.dumps(cfg, indent=2) + "\n")
    (OUT / "tokenizer_config.json").write_text(
        json.dumps(
            {
                "tokenizer_class": "PreTrainedTokenizerFast",
                "bos_token": None,
                "eos_token": "<|im_end|>",
                "pad_token": "<|endoftext|>",
                "unk_token": None,
                "model_max_length": 512,
                "chat_template": CHAT_TEMPLATE,
                "added_tokens_decoder": {
                    str(vocab[t]): {"content": t, "special": True, "lstrip": False, "rstrip": False,
                                    "normalized": False, "single_word": False}
                    for t in SPECIAL
                },
            },
            ensure_ascii=False,
            indent=2,
        )
        + "\n"
    )
    (OUT / "generation_config.json").write_text(
        json.dumps({"eos_token_id": eos, "pad_token_id": vocab["<|endoftext|>"]}, indent=2) + "\n"
    )
    for p in sorted(OUT.iterdir()):
        print(f"{p.name}: {p.stat().st_size:,} bytes")


if __name__ == "__main__":
    main()

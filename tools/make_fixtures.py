"""Writes the test fixtures: tiny random-weight models made by the reference
implementation (Python transformers), and what that implementation computes
with them. The Rust tests load the same models and must agree.

    python tools/make_fixtures.py            # writes tests/fixtures/

Fixed seeds: running it again gives the same files (same torch version).
"""

import json
import math
import shutil
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from safetensors.torch import save_file
from transformers import (
    BertTokenizer,
    ChineseCLIPConfig,
    ChineseCLIPModel,
    T5Config,
    T5ForConditionalGeneration,
)
from transformers.models.chinese_clip.image_processing_pil_chinese_clip import (
    ChineseCLIPImageProcessorPil,
)

ROOT = Path(__file__).resolve().parent.parent
SHARED = ROOT.parent / "shared"
OUT = ROOT / "tests" / "fixtures"

# Keywords and prompts whose text features the tests compare.
KEYWORDS = [
    "春风", "明月", "孤舟", "落日", "青山", "白云", "梅花", "秋风", "落叶", "江南",
    "烟雨", "长城", "故乡", "松竹", "星河", "猫", "咖啡", "火箭", "一只小猫在窗边", "夜空中的星星",
]


def synthetic_pixels(size: int) -> torch.Tensor:
    """A pixel tensor both sides can compute: sin of the flat index."""
    n = 3 * size * size
    idx = torch.arange(n, dtype=torch.float64)
    return (torch.sin(idx * 0.37) * 1.5).to(torch.float32).reshape(1, 3, size, size)


def make_clip():
    out = OUT / "clip-tiny"
    out.mkdir(parents=True, exist_ok=True)
    # Vocabulary: BERT's specials, then every character of the phrase book and the keywords.
    chars = set()
    for line in (SHARED / "data" / "shixuehanying.txt").read_text(encoding="utf-8").splitlines():
        chars.update(c for c in line if "\u4e00" <= c <= "\u9fff")
    for k in KEYWORDS:
        chars.update(k)
    vocab = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"] + sorted(chars)
    (out / "vocab.txt").write_text("\n".join(vocab) + "\n", encoding="utf-8")

    torch.manual_seed(0)
    # Wider than the default init: at 0.02 every text gives nearly the same feature.
    config = ChineseCLIPConfig(
        text_config=dict(
            vocab_size=len(vocab), hidden_size=32, num_hidden_layers=2, num_attention_heads=4,
            intermediate_size=64, max_position_embeddings=64, initializer_range=0.2,
            initializer_factor=10.0, hidden_act="gelu",
        ),
        vision_config=dict(
            hidden_size=32, num_hidden_layers=2, num_attention_heads=4, intermediate_size=64,
            image_size=224, patch_size=16, projection_dim=16, initializer_range=0.2,
            initializer_factor=10.0, hidden_act="quick_gelu",
        ),
        projection_dim=16,
        initializer_factor=10.0,
    )
    model = ChineseCLIPModel(config).eval()
    model.save_pretrained(out, safe_serialization=True)
    processor = ChineseCLIPImageProcessorPil()
    processor.save_pretrained(out)
    tokenizer = BertTokenizer(str(out / "vocab.txt"), tokenize_chinese_chars=True)

    with torch.no_grad():
        synthetic = model.get_image_features(pixel_values=synthetic_pixels(224))
        features = {"synthetic": to_list(synthetic)}
        photos = {}
        pixel_dump = {}
        for photo in sorted((SHARED / "data" / "photos").iterdir()):
            shutil.copy(photo, OUT / "photos" / photo.name)
            image = Image.open(photo)
            pixels = processor(images=image, return_tensors="pt")["pixel_values"]
            photos[photo.name] = to_list(model.get_image_features(pixel_values=pixels))
            if photo.name == "chelsea.png":
                pixel_dump["chelsea"] = pixels[0].contiguous()
        features["photos"] = photos
        texts = {}
        ids = {}
        for k in KEYWORDS:
            enc = tokenizer(k, return_tensors="pt", truncation=True, max_length=52)
            texts[k] = to_list(model.get_text_features(**enc))
            ids[k] = enc["input_ids"][0].tolist()
        features["texts"] = texts
        features["token_ids"] = ids
        # A padded batch must give the same features as one text at a time.
        enc = tokenizer(KEYWORDS[:4], return_tensors="pt", padding=True)
        batch = getattr(model.get_text_features(**enc), "pooler_output")
        features["batch_texts"] = [to_list(r) for r in batch]
    (out / "reference.json").write_text(json.dumps(features, ensure_ascii=False), encoding="utf-8")
    save_file(pixel_dump, str(out / "pixels.safetensors"))


def make_t5():
    out = OUT / "t5-tiny"
    out.mkdir(parents=True, exist_ok=True)
    # The poet's character tokenizer cut to its 1,000 most frequent tokens.
    tok = json.loads((SHARED / "models" / "poet-t5-ref" / "tokenizer.json").read_text(encoding="utf-8"))
    n_vocab = 1000
    tok["model"]["vocab"] = {c: i for c, i in tok["model"]["vocab"].items() if i < n_vocab}
    (out / "tokenizer.json").write_text(json.dumps(tok, ensure_ascii=False), encoding="utf-8")

    torch.manual_seed(1)
    config = T5Config(
        vocab_size=n_vocab, d_model=32, d_kv=8, d_ff=64, num_layers=2, num_decoder_layers=2,
        num_heads=4, relative_attention_num_buckets=32, relative_attention_max_distance=128,
        feed_forward_proj="gated-gelu", tie_word_embeddings=False, decoder_start_token_id=0,
        eos_token_id=2, pad_token_id=0, initializer_factor=3.0,
    )
    model = T5ForConditionalGeneration(config).eval()
    state = {k: v.detach().clone().contiguous() for k, v in model.state_dict().items()}
    state.pop("encoder.embed_tokens.weight", None)
    state.pop("decoder.embed_tokens.weight", None)
    save_file(state, str(out / "model.safetensors"))
    config.save_pretrained(out)
    # transformers 5 always ties lm_head to the embeddings and writes
    # `tie_word_embeddings: true`; with `scale_decoder_outputs: false` it does not
    # rescale. candle reads `true` as "tied and rescaled", so say what the
    # weights are: an untied, unscaled head (as the shipped poet's card does).
    cfg = json.loads((out / "config.json").read_text())
    cfg["tie_word_embeddings"] = False
    (out / "config.json").write_text(json.dumps(cfg, indent=2))

    from tokenizers import Tokenizer

    tokenizer = Tokenizer.from_str(json.dumps(tok, ensure_ascii=False))
    sources = ["七绝|春风 明月|", "五绝|孤舟|", "五律||", "七绝|春风 明月|春风又绿江南岸|"]
    cases = []
    with torch.no_grad():
        for src in sources:
            ids = tokenizer.encode(src).ids
            input_ids = torch.tensor([ids])
            generated = model.generate(
                input_ids, max_new_tokens=8, do_sample=False, num_beams=1,
                decoder_start_token_id=0, eos_token_id=2,
            )
            decoder_ids = generated[0].tolist()
            # Logits at every step of that decoding, for a numeric comparison.
            logits = model(input_ids=input_ids, decoder_input_ids=generated).logits[0]
            cases.append({
                "source": src,
                "input_ids": ids,
                "generated": decoder_ids,
                "last_logits": logits[-1].tolist(),
            })
    (out / "reference.json").write_text(json.dumps(cases, ensure_ascii=False), encoding="utf-8")


def to_list(t):
    # transformers 5 returns the projected feature as `pooler_output`.
    t = getattr(t, "pooler_output", t)
    return t.reshape(-1).tolist()


if __name__ == "__main__":
    (OUT / "photos").mkdir(parents=True, exist_ok=True)
    make_clip()
    make_t5()
    print("fixtures written to", OUT)

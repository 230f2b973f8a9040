"""Writes a full-size Chinese-CLIP ViT-B/16 with random weights, for timing:
the same shapes as OFA-Sys/chinese-clip-vit-base-patch16, so the same cost.

    python tools/make_bench_models.py OUT_DIR     # ~750 MB
"""

import sys
from pathlib import Path

import torch
from transformers import ChineseCLIPConfig, ChineseCLIPModel
from transformers.models.chinese_clip.image_processing_pil_chinese_clip import ChineseCLIPImageProcessorPil

ROOT = Path(__file__).resolve().parent.parent


def main(out):
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    # A 21,128-entry vocabulary like bert-base-chinese's: the specials, the
    # characters of the phrase book and the keyword prompts, then fillers.
    chars = set()
    for f in (ROOT / "keywords" / "shixuehanying.txt", ROOT / "keywords" / "default.txt"):
        chars.update(c for c in f.read_text(encoding="utf-8") if "\u4e00" <= c <= "\u9fff")
    vocab = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"] + sorted(chars)
    vocab += [f"[unused{i}]" for i in range(21128 - len(vocab))]
    (out / "vocab.txt").write_text("\n".join(vocab) + "\n", encoding="utf-8")
    torch.manual_seed(0)
    config = ChineseCLIPConfig(
        text_config=dict(vocab_size=21128, hidden_size=768, num_hidden_layers=12, num_attention_heads=12,
                         intermediate_size=3072, hidden_act="gelu", max_position_embeddings=512),
        vision_config=dict(hidden_size=768, num_hidden_layers=12, num_attention_heads=12, intermediate_size=3072,
                           image_size=224, patch_size=16, hidden_act="quick_gelu"),
        projection_dim=512,
    )
    ChineseCLIPModel(config).eval().save_pretrained(out, safe_serialization=True)
    ChineseCLIPImageProcessorPil().save_pretrained(out)
    print("wrote", out)


if __name__ == "__main__":
    main(sys.argv[1])

"""A measurement, writing nothing: the held-out loss per character (the first
300 held-out poems, train.py's figure) of the T5 poet, of the character
n-gram of ngram.py counted from DATA, and of their mixtures, each weight
being poem.ngram_weight (the n-gram's share).

    python training/ngram_mix.py DATA POET_DIR [--order 3] [--min-count 2]
"""
import argparse
import json
from pathlib import Path

import numpy as np
import torch
from tokenizers import Tokenizer

from ngram import CharNgram, ids_of_lines
from train import EOS, PAD, SEP, load_init, load_poems, source

POEMS = load_poems(Path(__file__).parent / "heldout_poems.jsonl", 300)


@torch.no_grad()
def t5_logp(model_dir, tok):
    """The T5's log-probability of each held-out character (poem, line,
    character order), each line given the form, keywords and lines before it."""
    model = load_init(model_dir, "cpu").eval()
    examples = [(tok.encode(source(p["form"], p["keywords"], p["lines"][:i])).ids, tok.encode(line).ids)
                for p in POEMS for i, line in enumerate(p["lines"])]
    out = []
    for b in range(0, len(examples), 64):
        batch = examples[b:b + 64]
        S = max(len(s) for s, _ in batch); T = max(len(t) for _, t in batch)
        src = torch.tensor([s + [PAD] * (S - len(s)) for s, _ in batch])
        tgt = torch.tensor([t + [-100] * (T - len(t)) for _, t in batch])
        lp = torch.log_softmax(model(input_ids=src, attention_mask=(src != PAD).long(), labels=tgt).logits.float(), -1)
        out += [lp[r, j, id].item() for r, (_, t) in enumerate(batch) for j, id in enumerate(t) if id not in (SEP, EOS, PAD)]
    return np.array(out)


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("data", type=Path)
    ap.add_argument("poet_dir", type=Path)
    ap.add_argument("--order", type=int, default=3)
    ap.add_argument("--min-count", type=int, default=2)
    args = ap.parse_args()

    tok = Tokenizer.from_file(str(args.poet_dir / "tokenizer.json"))
    with open(args.data / "train.jsonl", encoding="utf-8") as f:
        lines = [json.loads(l)["tgt"] for l in f]
    ngram = CharNgram(ids_of_lines(lines, tok), tok.get_vocab_size(), args.order, args.min_count)
    p = np.exp([x for poem in POEMS for line in ids_of_lines(poem["lines"], tok) for x in ngram.line_logprobs(line)])
    lt = t5_logp(args.poet_dir, tok)
    assert len(lt) == len(p), (len(lt), len(p))
    print(f"order {args.order}, min count {args.min_count}: {len(p)} held-out characters")
    print(f"  t5 alone {-lt.mean():.3f}, n-gram alone {-np.log(p).mean():.3f}")
    for weight in [0.2, 0.3, 0.4, 0.5, 0.6]:
        print(f"  ngram_weight {weight}: {-np.log((1 - weight) * np.exp(lt) + weight * p).mean():.3f}")


if __name__ == "__main__":
    main()

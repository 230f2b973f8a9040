"""The character n-gram the poet mixes with the T5 (src/poem/ngram.rs):
interpolated Kneser-Ney with discount D = 0.75, counted within a line of the
training data, in the poet tokenizer's ids, and written beside the poet as
char_ngram.bin.

    python training/ngram.py DATA POET_DIR [--order 3] [--min-count 2]

DATA is prepare.py's output (train.jsonl); POET_DIR holds the poet's
tokenizer.json, and receives char_ngram.bin. N-grams above the first order
seen fewer than --min-count times are dropped, their mass going to the order
below, so the table stays a few MB (the counts are Kneser-Ney's: occurrences
at the highest order, distinct characters before it at order 2). It prints the table's held-out loss per
character on the first 300 held-out poems (train.py's figure).

char_ngram.bin, little-endian (src/poem/ngram.rs reads it):
    b"YSNGRAM1", u32 vocab, u32 order
    f32 unigram[vocab]                      the smoothed first-order distribution
    for each order n = 2..order:
        u32 contexts, u32 followers
        u32 context[contexts]               the n-1 previous ids, 16 bits each,
                                            the nearest lowest; 0xFFFF before a line
        f32 backoff[contexts]               gamma: the mass left to the order below
        u32 start[contexts + 1]             each context's followers
        u16 follower[followers]             ids, ascending within a context
        f32 share[followers]                (count - D) / context total
"""
import argparse
import json
from pathlib import Path

import numpy as np
from tokenizers import Tokenizer

D = 0.75
BITS = 16
BOS = (1 << BITS) - 1
MAGIC = b"YSNGRAM1"


class CharNgram:
    """Counts lines (lists of ids) into an interpolated Kneser-Ney model:
    raw counts at the highest order, continuation counts below."""

    def __init__(self, lines, vocab, order, min_count=1):
        assert vocab < BOS, "ids must fit in 16 bits, with one left for the line start"
        assert 2 <= order <= 3, "the codes are 16 bits an id in an int64; the reader takes orders 2 and 3"
        self.vocab, self.order = vocab, order
        full = self.codes(lines)
        grams, cnt = np.unique(full, return_counts=True)
        tables = {order: (grams, cnt.astype(np.float64))}
        for n in range(order - 1, 0, -1):
            lower = tables[n + 1][0] & ((1 << (BITS * n)) - 1)  # drop the farthest id
            g, c = np.unique(lower, return_counts=True)
            tables[n] = (g, c.astype(np.float64))
        uni = np.zeros(vocab)
        uni[tables[1][0]] = tables[1][1]
        self.unigram = 0.999 * uni / uni.sum() + 0.001 / vocab
        # per order n >= 2: contexts, their backoff, and the kept followers' shares
        self.orders = {}
        for n in range(2, order + 1):
            g, c = tables[n]
            ctx, inv = np.unique(g >> BITS, return_inverse=True)
            total = np.bincount(inv, weights=c)
            keep = c >= min_count
            kept = np.bincount(inv[keep], weights=c[keep] - D, minlength=len(ctx))
            backoff = (total - kept) / total  # D of each kept follower, all of a pruned one
            # a context with no follower kept backs off whole: it need not be stored
            used = np.bincount(inv[keep], minlength=len(ctx)) > 0
            renumber = np.cumsum(used) - 1
            ctx, backoff = ctx[used], backoff[used]
            g, c, inv = g[keep], c[keep], renumber[inv[keep]]
            start = np.searchsorted(inv, np.arange(len(ctx) + 1))
            share = (c - D) / total[used][inv]
            self.orders[n] = (ctx, backoff, start, g, share)

    def codes(self, lines):
        """The highest-order code of every character of the lines, the line start padded with BOS."""
        n = self.order
        out = []
        for ids in lines:
            padded = [BOS] * (n - 1) + list(ids)
            for i in range(n - 1, len(padded)):
                code = 0
                for x in padded[i - n + 1:i + 1]:
                    code = (code << BITS) | x
                out.append(code)
        return np.array(out, dtype=np.int64)

    def prob(self, context, w):
        """P(w | the up to order-1 ids before it in its line)."""
        p = self.unigram[w]
        padded = [BOS] * (self.order - 1) + list(context)
        for n in range(2, self.order + 1):
            key = 0
            for x in padded[len(padded) - (n - 1):]:
                key = (key << BITS) | x
            ctx, backoff, start, g, share = self.orders[n]
            i = np.searchsorted(ctx, key)
            if i < len(ctx) and ctx[i] == key:
                lo, hi = start[i], start[i + 1]
                j = lo + np.searchsorted(g[lo:hi] & BOS, w)
                p = backoff[i] * p + (share[j] if j < hi and (g[j] & BOS) == w else 0.0)
        return p

    def line_logprobs(self, ids):
        return [np.log(self.prob(ids[:i], w)) for i, w in enumerate(ids)]

    def write(self, path):
        with open(path, "wb") as f:
            f.write(MAGIC)
            np.array([self.vocab, self.order], "<u4").tofile(f)
            self.unigram.astype("<f4").tofile(f)
            for n in range(2, self.order + 1):
                ctx, backoff, start, g, share = self.orders[n]
                np.array([len(ctx), len(g)], "<u4").tofile(f)
                ctx.astype("<u4").tofile(f)
                backoff.astype("<f4").tofile(f)
                start.astype("<u4").tofile(f)
                (g & BOS).astype("<u2").tofile(f)
                share.astype("<f4").tofile(f)


def ids_of_lines(lines, tok):
    vocab = tok.get_vocab()
    unk = vocab["[UNK]"]
    return [[vocab.get(c, unk) for c in line] for line in lines]


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
    model = CharNgram(ids_of_lines(lines, tok), tok.get_vocab_size(), args.order, args.min_count)
    out = args.poet_dir / "char_ngram.bin"
    model.write(out)
    sizes = ", ".join(f"order {n}: {len(model.orders[n][0])} contexts, {len(model.orders[n][3])} followers"
                      for n in model.orders)
    print(f"{len(lines)} lines → {out} ({out.stat().st_size / 1e6:.1f} MB; {sizes})")

    with open(Path(__file__).parent / "heldout_poems.jsonl", encoding="utf-8") as f:
        poems = [json.loads(l) for l in f if l.strip()][:300]  # train.py's held-out figure
    lp = [x for p in poems for line in ids_of_lines(p["lines"], tok) for x in model.line_logprobs(line)]
    loss = -float(np.mean(lp))
    print(f"held-out loss per character: {loss:.4f} ({len(lp)} characters)")
    # Recorded beside the model: the Rust reader's test computes the same figure.
    info_path = args.poet_dir / "train_info.json"
    info = json.loads(info_path.read_text(encoding="utf-8")) if info_path.exists() else {}
    info["char_ngram"] = {"order": args.order, "min_count": args.min_count, "discount": D,
                          "training_lines": len(lines), "heldout_poems": len(poems),
                          "heldout_loss_per_char": loss}
    info_path.write_text(json.dumps(info, ensure_ascii=False, indent=1) + "\n", encoding="utf-8")


if __name__ == "__main__":
    main()

"""Trains the 集句 poet's judge of coherence from the line index.

    python training/train_judge.py models/jiju/lines.tsv.gz models/jiju [--minutes 25]

The judge (Jiuge's context-coherence rewarder, small) reads a candidate line
together with the lines before it and scores how well it goes on from them. It
learns to pick a poem's real next line among 15 others chosen to be hard:

- "tones": lines of the same length, the same tone at the second character and
  the same ending (the true line's rhyme group, or an oblique end), so that the
  rules cannot tell them apart;
- "words": lines sharing a two-character word of the true line's rhythm, as
  lines found by a keyword do;
- "season": lines of another season than the lines before (the scene lexicon,
  src/poem/data/scenes.txt), where those name one;
- "random": any line of the same length.

The network, mirrored by src/poem/jiju/judge.rs (which must give the same
scores: tests/fixtures/judge_reference.json, written here, checks it):
each character is embedded with its place in the line and the line's distance
from the candidate (0 for the candidate, k for k lines before); a line is read
by a convolution of width 3 inside it, `h = LayerNorm(x + gelu(conv(x)))`; the
candidate's characters attend over all characters before (one head); the means
of the candidate's states, of what they read and of their product, and the
candidate's mean times the context's mean, go through a hidden layer that also
takes the slot (which line of which length is written) to one score.

Writes to OUT: judge.safetensors (f32), judge_chars.txt (the characters by id,
from 2: 0 is padding, 1 unknown) and judge_info.json (held-out accuracy: top-1
of 16, and how often the true line beats each kind of negative). Poems whose
md5 ends a multiple of 50 are held out of training for that figure.
"""

import argparse
import collections
import gzip
import hashlib
import json
import math
import random
import time
from pathlib import Path

import torch
import torch.nn.functional as F
from safetensors.torch import load_file, save_file
from torch import nn

ROOT = Path(__file__).resolve().parent.parent
RHYME_TABLE = ROOT / "src" / "poem" / "data" / "pingshuiyun.txt"
SCENES = ROOT / "src" / "poem" / "data" / "scenes.txt"
NEGATIVES = {"tones": 7, "words": 4, "season": 2, "random": 2}
DIM = 64
SLOTS = 16


def read_index(path):
    """(credit, lines) per poem of a line index written by prepare.py."""
    poems = []
    with gzip.open(path, "rt", encoding="utf-8") as f:
        for row in f:
            poet, title, dynasty, lines = row.rstrip("\n").split("\t")
            poems.append(((poet, title, dynasty), lines.split(" ")))
    return poems


def rhyme_table():
    """char -> (can be level, can be oblique, level groups), as src/poem/rhyme.rs reads the table."""
    rows = [l.strip() for l in RHYME_TABLE.read_text(encoding="utf-8").splitlines() if l.strip()]
    table = collections.defaultdict(lambda: [False, False, []])
    for g, (heading, chars) in enumerate(zip(rows[0::2], rows[1::2])):
        level = heading.startswith(("上平", "下平"))
        depth = 0
        for c in chars:
            if c in "[<(（":
                depth = 1
            elif c in "]>)）":
                depth = 0
            elif depth == 0 and ("\u4e00" <= c <= "\u9fff" or "\u3400" <= c <= "\u4dbf"):
                entry = table[c]
                entry[0 if level else 1] = True
                if level and g not in entry[2]:
                    entry[2].append(g)
    return table


def scenes():
    """[(kind, name, words)] from the scene lexicon."""
    out = []
    for row in SCENES.read_text(encoding="utf-8").splitlines():
        if row.strip() and not row.startswith("#"):
            kind, name, *words = row.split()
            out.append((kind, name, words))
    return out


def season_of(line, lexicon):
    return {name for kind, name, words in lexicon if kind == "season" and any(w in line for w in words)}


def tone_key(line, table):
    """Lines the rules cannot tell apart share this key: length, second character's tone, ending."""
    level, oblique, groups = table.get(line[1], (False, False, []))
    second = "P" if level and not oblique else "Z" if oblique and not level else "E"
    end_level, _, end_groups = table.get(line[-1], (False, False, []))
    end = f"g{end_groups[0]}" if end_level else "Z"
    return (len(line), second, end)


def rhythm_words(line):
    n = len(line)
    starts = [0, 2, n - 2] if n == 5 else [0, 2, 4, 5]
    return {line[s:s + 2] for s in starts}


class Judge(nn.Module):
    def __init__(self, chars):
        super().__init__()
        self.embed = nn.Embedding(chars, DIM, padding_idx=0)
        self.place = nn.Embedding(7, DIM)
        self.distance = nn.Embedding(8, DIM)
        self.conv = nn.Conv1d(DIM, DIM, 3, padding=1)
        self.norm = nn.LayerNorm(DIM)
        self.query = nn.Linear(DIM, DIM, bias=False)
        self.key = nn.Linear(DIM, DIM, bias=False)
        self.value = nn.Linear(DIM, DIM, bias=False)
        self.slot = nn.Embedding(SLOTS, DIM)
        self.hidden = nn.Linear(4 * DIM, DIM)
        self.out = nn.Linear(DIM, 1)

    def encode(self, ids, distance):
        """ids [..., n], distance [...] -> states [..., n, DIM]."""
        n = ids.shape[-1]
        x = self.embed(ids) + self.place.weight[:n] + self.distance(distance)[..., None, :]
        flat = x.reshape(-1, n, DIM).transpose(1, 2)
        conv = F.gelu(self.conv(flat), approximate="tanh").transpose(1, 2).reshape(x.shape)
        return self.norm(x + conv)

    def forward(self, context, candidates, slot):
        """context [B, L, n] (L >= 1 lines before), candidates [B, K, n], slot [B] -> scores [B, K]."""
        b, lines, n = context.shape
        distance = torch.arange(lines, 0, -1).expand(b, lines)
        ctx = self.encode(context, distance).reshape(b, lines * n, DIM)
        cand = self.encode(candidates, torch.zeros(candidates.shape[:2], dtype=torch.long))
        q = self.query(cand)
        k, v = self.key(ctx), self.value(ctx)
        weights = torch.softmax(torch.einsum("bknd,bmd->bknm", q, k) / math.sqrt(DIM), -1)
        read = torch.einsum("bknm,bmd->bknd", weights, v)
        mean_cand = cand.mean(-2)
        features = torch.cat(
            [mean_cand, read.mean(-2), (cand * read).mean(-2), mean_cand * ctx.mean(1)[:, None, :]], -1
        )
        hidden = F.gelu(self.hidden(features) + self.slot(slot)[:, None, :], approximate="tanh")
        return self.out(hidden).squeeze(-1)


def slot_of(index, n):
    return index + (8 if n == 7 else 0)


class Negatives:
    """Draws the hard negatives of one example."""

    def __init__(self, lines, table, lexicon, rng):
        self.lines, self.rng, self.lexicon = lines, rng, lexicon
        self.by_tone = collections.defaultdict(list)
        self.by_word = collections.defaultdict(list)
        self.by_length = collections.defaultdict(list)
        self.by_season = collections.defaultdict(list)
        for i, line in enumerate(lines):
            self.by_tone[tone_key(line, table)].append(i)
            self.by_length[len(line)].append(i)
            for w in rhythm_words(line):
                self.by_word[(len(line), w)].append(i)
            for s in season_of(line, lexicon):
                self.by_season[(len(line), s)].append(i)
        self.table = table

    def draw(self, true, context):
        """[(line, kind)] of the NEGATIVES' sizes; never the true line."""
        n = len(true)
        ctx_seasons = set().union(*(season_of(l, self.lexicon) for l in context))
        other = [s for kind, s, _ in self.lexicon if kind == "season" and s not in ctx_seasons]
        pools = {
            "tones": self.by_tone[tone_key(true, self.table)],
            "words": [i for w in sorted(rhythm_words(true)) for i in self.by_word[(n, w)][:2000]],
            "season": [i for s in other for i in self.by_season[(n, s)]] if ctx_seasons else [],
            "random": self.by_length[n],
        }
        drawn = []
        for kind, count in NEGATIVES.items():
            pool = pools[kind] if len(pools[kind]) > 20 else pools["random"]
            while sum(1 for _, k in drawn if k == kind) < count:
                line = self.lines[self.rng.choice(pool)]
                if line != true:
                    drawn.append((line, kind))
        return drawn


def encode_line(line, vocab):
    return [vocab.get(c, 1) for c in line]


def examples_of(poems):
    """(n, index, context, true) for each line after the first."""
    for _, lines in poems:
        for i in range(1, len(lines)):
            yield len(lines[0]), i, lines[:i], lines[i]


def batches(examples, negatives, vocab, size, rng):
    """Batches of one length and one context size: (context, candidates, slot, kinds)."""
    buckets = collections.defaultdict(list)
    for ex in examples:
        buckets[(ex[0], ex[1])].append(ex)
    order = [(key, start) for key, exs in buckets.items() for start in range(0, len(exs), size)]
    rng.shuffle(order)
    for key, start in order:
        chunk = buckets[key][start:start + size]
        context, candidates, kinds = [], [], []
        for n, i, ctx, true in chunk:
            drawn = negatives.draw(true, ctx)
            context.append([encode_line(l, vocab) for l in ctx])
            candidates.append([encode_line(true, vocab)] + [encode_line(l, vocab) for l, _ in drawn])
            kinds.append([k for _, k in drawn])
        slot = torch.full((len(chunk),), slot_of(key[1], key[0]), dtype=torch.long)
        yield torch.tensor(context), torch.tensor(candidates), slot, kinds


def evaluate(model, examples, negatives, vocab):
    model.eval()
    top1 = total = 0
    beats = collections.Counter()
    seen = collections.Counter()
    with torch.no_grad():
        for context, candidates, slot, kinds in batches(examples, negatives, vocab, 256, random.Random(0)):
            scores = model(context, candidates, slot)
            top1 += int((scores.argmax(-1) == 0).sum())
            total += len(kinds)
            for row, row_kinds in zip(scores, kinds):
                for s, kind in zip(row[1:].tolist(), row_kinds):
                    seen[kind] += 1
                    beats[kind] += s < row[0].item()
    model.train()
    return {
        "top1_of_16": top1 / max(1, total),
        "examples": total,
        "true_beats": {k: beats[k] / seen[k] for k in NEGATIVES},
    }


def export(model, chars, out):
    tensors = {name: t.detach().float().contiguous() for name, t in model.state_dict().items()}
    save_file(tensors, str(out / "judge.safetensors"))
    (out / "judge_chars.txt").write_text("\n".join(chars) + "\n", encoding="utf-8")


def write_reference(model, examples, negatives, vocab, path):
    """A few held-out examples with the scores torch gives, for the Rust judge's test."""
    rng = random.Random(1)
    picked = [ex for ex in examples if ex[1] in (1, 3)][:2] + [ex for ex in examples if ex[0] == 7 and ex[1] == 7][:2]
    cases = []
    model.eval()
    with torch.no_grad():
        for n, i, ctx, true in picked:
            negatives.rng = rng
            lines = [true] + [l for l, _ in negatives.draw(true, ctx)][:5]
            scores = model(
                torch.tensor([[encode_line(l, vocab) for l in ctx]]),
                torch.tensor([[encode_line(l, vocab) for l in lines]]),
                torch.tensor([slot_of(i, n)]),
            )[0]
            cases.append({"context": ctx, "candidates": lines, "scores": scores.tolist()})
    Path(path).write_text(json.dumps(cases, ensure_ascii=False, indent=1) + "\n", encoding="utf-8")


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("index", help="the line index (prepare.py's jiju_lines.tsv.gz)")
    ap.add_argument("out")
    ap.add_argument("--minutes", type=float, default=25, help="training time budget")
    ap.add_argument("--epochs", type=int, default=2)
    ap.add_argument("--batch", type=int, default=256)
    ap.add_argument("--lr", type=float, default=3e-3)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--limit", type=int, default=0, help="use only the first N poems (smoke runs)")
    ap.add_argument("--reference", help="also write the Rust test's reference scores here")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--init", help="go on from the judge in this directory (its judge_chars.txt must be the index's)")
    args = ap.parse_args()
    torch.manual_seed(args.seed)
    torch.set_num_threads(args.threads)
    rng = random.Random(args.seed)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)

    poems = read_index(args.index)
    if args.limit:
        poems = poems[: args.limit]
    held = lambda lines: int(hashlib.md5("".join(lines).encode()).hexdigest(), 16) % 50 == 0
    train = [p for p in poems if not held(p[1])]
    valid = [p for p in poems if held(p[1])]
    counts = collections.Counter(c for _, lines in poems for l in lines for c in l)
    chars = [c for c, _ in counts.most_common()]
    vocab = {c: i + 2 for i, c in enumerate(chars)}
    all_lines = sorted({l for _, lines in poems for l in lines})
    negatives = Negatives(all_lines, rhyme_table(), scenes(), rng)
    train_examples = list(examples_of(train))
    valid_examples = list(examples_of(valid))[:20000]
    print(f"{len(train)} poems to train on ({len(train_examples)} examples), {len(valid)} held out", flush=True)

    model = Judge(len(chars) + 2)
    if args.init:
        init = Path(args.init)
        if (init / "judge_chars.txt").read_text(encoding="utf-8").split("\n")[:-1] != chars:
            raise SystemExit(f"{init}: its characters are not this index's")
        model.load_state_dict(load_file(str(init / "judge.safetensors")))
    optimizer = torch.optim.AdamW(model.parameters(), lr=args.lr, weight_decay=0.01)
    steps = args.epochs * math.ceil(len(train_examples) / args.batch) + 14 * args.epochs
    start, step = time.time(), 0
    done = False
    for epoch in range(args.epochs):
        for context, candidates, slot, _ in batches(train_examples, negatives, vocab, args.batch, rng):
            loss = F.cross_entropy(model(context, candidates, slot), torch.zeros(len(slot), dtype=torch.long))
            # Warm-up, then cosine to 5 % over whichever ends first: the epochs or the time.
            progress = max(step / steps, (time.time() - start) / (args.minutes * 60))
            for group in optimizer.param_groups:
                group["lr"] = args.lr * min(1.0, (step + 1) / 200) * (0.05 + 0.95 * 0.5 * (1 + math.cos(math.pi * min(1.0, progress))))
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            step += 1
            if step % 200 == 0:
                print(f"epoch {epoch} step {step}/{steps} loss {loss.item():.3f} {time.time() - start:.0f}s", flush=True)
            if step % 1000 == 0:
                export(model, chars, out)
            if time.time() - start > args.minutes * 60:
                done = True
                break
        if done:
            break
    result = evaluate(model, valid_examples, negatives, vocab)
    result.update({"steps": step, "seconds": round(time.time() - start), "train_examples": len(train_examples),
                   "negatives": NEGATIVES, "dim": DIM, "chars": len(chars)})
    print(json.dumps(result), flush=True)
    export(model, chars, out)
    (out / "judge_info.json").write_text(json.dumps(result, ensure_ascii=False, indent=1) + "\n", encoding="utf-8")
    if args.reference:
        write_reference(model, valid_examples, negatives, vocab, args.reference)


if __name__ == "__main__":
    main()

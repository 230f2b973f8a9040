"""A measurement, not shipped: a character n-gram of the training lines
(interpolated Kneser-Ney, D 0.75, within a line), its held-out loss per
character on the first 300 held-out poems (train.py's figure), and that of a
linear mixture with the T5's probabilities.

    python training/ngram_mix.py DATA ORDER [MIN_COUNT] [T5_DIR]

DATA is prepare.py's output (train.jsonl); n-grams seen fewer than MIN_COUNT
times are dropped (their mass goes to the backoff); T5_DIR, an exported poet
such as models/poet-t5, adds its loss and the mixtures'."""
import json, sys, numpy as np, torch
from pathlib import Path
from tokenizers import Tokenizer

from train import EOS, PAD, SEP, load_init, load_poems, source

DATA = Path(sys.argv[1]); N = int(sys.argv[2]); D = 0.75; PRUNE = int(sys.argv[3]) if len(sys.argv) > 3 else 1
T5_DIR = Path(sys.argv[4]) if len(sys.argv) > 4 else None
BITS = 14
POEMS = load_poems(Path(__file__).parent / "heldout_poems.jsonl", 300)

def lines_of_train():
    out = []
    with open(DATA / "train.jsonl", encoding="utf-8") as f:
        for l in f:
            out.append(json.loads(l)["tgt"])
    return out

train = lines_of_train()
chars = sorted({c for l in train for c in l})
cid = {c: i + 1 for i, c in enumerate(chars)}  # 0 = BOS
V = len(chars) + 1
print("lines", len(train), "vocab", V, file=sys.stderr)

def codes(lines, n):
    """n-gram codes of every character of the lines (BOS-padded within line)."""
    out = []
    for l in lines:
        ids = [0] * (N - 1) + [cid.get(c, -1) for c in l]
        for i in range(N - 1, len(ids)):
            out.append(ids[i - n + 1:i + 1])
    a = np.array(out, dtype=np.int64)
    code = np.zeros(len(a), dtype=np.int64)
    for j in range(n):
        code = (code << BITS) | np.where(a[:, j] < 0, 0, a[:, j])
    return code, a

# highest order: raw counts. lower orders: continuation counts from the order above.
full, _ = codes(train, N)
tables = {}
grams, cnt = np.unique(full, return_counts=True)
tables[N] = (grams, cnt.astype(np.float64))
for n in range(N - 1, 0, -1):
    higher = tables[n + 1][0]
    lower = higher & ((1 << (BITS * n)) - 1)  # drop the leftmost char
    g, c = np.unique(lower, return_counts=True)
    tables[n] = (g, c.astype(np.float64))

ctx_stats = {}
for n in range(2, N + 1):
    g, c = tables[n]
    ctx = g >> BITS
    u, inv = np.unique(ctx, return_inverse=True)
    tot = np.bincount(inv, weights=c)
    distinct = np.bincount(inv)
    ctx_stats[n] = (u, tot, distinct.astype(np.float64))
if PRUNE > 1:
    for n in range(2, N + 1):
        g, c = tables[n]
        keep = c >= PRUNE
        tables[n] = (g[keep], c[keep])
for n in range(1, N + 1):
    print("order", n, "entries", len(tables[n][0]), file=sys.stderr)
uni_g, uni_c = tables[1]
uni = np.zeros(V); uni[uni_g] = uni_c; uni = uni / uni.sum()
uni = 0.999 * uni + 0.001 / V

# mass of pruned followers, per context (goes to the backoff)
cut = {}
for n in range(2, N + 1):
    u, tot, distinct = ctx_stats[n]
    g, c = tables[n]
    ci = np.searchsorted(u, g >> BITS)
    kept = np.bincount(ci, weights=c - D, minlength=len(u))
    cut[n] = tot - D * distinct - kept

def lookup(keys, q):
    i = np.searchsorted(keys, q); i = np.minimum(i, len(keys) - 1)
    return i, keys[i] == q

def prob(a):
    """a: rows of N ids (context..., w)."""
    w = a[:, -1]
    p = uni[w]
    for n in range(2, N + 1):
        sub = a[:, N - n:]
        code = np.zeros(len(a), dtype=np.int64)
        for j in range(n):
            code = (code << BITS) | sub[:, j]
        g, c = tables[n]; u, tot, distinct = ctx_stats[n]
        ci, cfound = lookup(u, code >> BITS)
        gi, gfound = lookup(g, code)
        cw = np.where(gfound, c[gi], 0.0)
        T = np.where(cfound, tot[ci], 1.0); Dn = np.where(cfound, distinct[ci], 0.0)
        gamma = (D * Dn + cut[n][ci]) / T
        pn = np.maximum(cw - D, 0) / T + gamma * p
        p = np.where(cfound, pn, p)
    return p

@torch.no_grad()
def t5_logp(model_dir):
    """The T5's log-probability of each held-out character (poem, line,
    character order), each line given the form, keywords and lines before it."""
    tok = Tokenizer.from_file(str(model_dir / "tokenizer.json"))
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

ev = [l for p in POEMS for l in p["lines"]]
_, a = codes(ev, N)
known = a[:, -1] >= 0
a = np.where(a < 0, 0, a)
p = prob(a)
lp = np.log(p)
print(f"order {N}: held-out chars {len(lp)} (unknown {np.sum(~known)}), loss/char {-lp.mean():.3f}")
if T5_DIR is not None:
    lt = t5_logp(T5_DIR)
    assert len(lt) == len(lp), (len(lt), len(lp))
    print(f"t5 alone {-lt.mean():.3f}")
    for lam in [0.9, 0.8, 0.7, 0.6, 0.5, 0.4]:
        mix = np.log(lam * np.exp(lt) + (1 - lam) * p)
        print(f"  mix lambda(t5)={lam}: {-mix.mean():.3f}")

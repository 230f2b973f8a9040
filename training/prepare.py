"""Builds the poet's training data from the public corpus.

    npm pack chinese-poetry@2.0.1            # MIT, (c) 2016 JackeyGao
    python training/prepare.py chinese-poetry-2.0.1.tgz OUT [--limit N]

Writes to OUT:
- train.jsonl, valid.jsonl: one example per poem line, {"src": …, "tgt": …}, in
  the card's format `{form}|{kw1 kw2 …}|{line1}|…|` → next line;
- tokenizer.json: one token per character, [PAD]=0 [UNK]=1 [EOS]=2 [BOS]=3 |=4
  space=5 、=6, characters from 7 on by frequency;
- train_lines.bloom: every 5- and 7-character line of the corpus, so the
  decoder can refuse verbatim copies (format in src/poem/novelty.rs);
- corpus_lines.txt: the same lines, exactly, for `yingshi eval --corpus-lines`;
- heldout_poems.jsonl: form, keywords and lines of each held-out poem (the
  eval set, and the corpus poems of blind-reading sheets; shipped as
  training/heldout_poems.jsonl);
- jiju_lines.tsv.gz: the 集句 poet's line index (shipped as
  models/jiju/lines.tsv.gz): every kept poem but the held-out ones, a row each,
  `poet<TAB>title<TAB>dynasty<TAB>line line …`, in corpus order. Held-out
  poems stay out, and so does any poem sharing a line with one, so that no
  blind-reading sheet's 集句 can borrow a line of that set's own poem.
"""

import argparse
import collections
import gzip
import hashlib
import json
import math
import random
import re
import tarfile
from pathlib import Path

from opencc import OpenCC

ROOT = Path(__file__).resolve().parent.parent
PHRASE_BOOK = ROOT / "keywords" / "shixuehanying.txt"
FORMS = {(4, 5): "五绝", (4, 7): "七绝", (8, 5): "五律", (8, 7): "七律"}
SPECIALS = ["[PAD]", "[UNK]", "[EOS]", "[BOS]", "|", " ", "、"]
MIN_CHAR_COUNT = 5
SPLIT = re.compile(r"[，。！？；]")
NOTE = re.compile(r"[（(\[【{｛][^）)\]】}｝]*[）)\]】}｝]")


def is_han(c):
    return "\u4e00" <= c <= "\u9fff" or "\u3400" <= c <= "\u4dbf"


DYNASTIES = {"tang": "唐", "song": "宋"}


def read_corpus(tgz):
    """Each poem of the 全唐诗 folder with its dynasty (唐 or 宋, from the file name)."""
    with tarfile.open(tgz) as tar:
        for member in tar.getmembers():
            found = re.fullmatch(r"package/dist/quantangshi/poet\.(tang|song)\.\d+\.json", member.name)
            if found:
                dynasty = DYNASTIES[found.group(1)]
                for poem in json.load(tar.extractfile(member)):
                    yield dynasty, poem


def credit_field(text, cc):
    """A poet's name or a title as one TSV field: simplified, on one line, no tabs."""
    return " ".join(cc.convert(text or "").split()) or "佚名"


def write_line_index(kept, held_out, path):
    """The 集句 line index (see the module doc); returns its poem and line counts."""
    held_lines = {l for lines in held_out for l in lines}
    poems = lines_written = 0
    # mtime=0: the same corpus gives the same bytes.
    with gzip.GzipFile(path, "wb", compresslevel=9, mtime=0) as raw:
        for form, lines, credit in kept:
            if any(l in held_lines for l in lines):
                continue
            raw.write(("\t".join(credit) + "\t" + " ".join(lines) + "\n").encode("utf-8"))
            poems += 1
            lines_written += len(lines)
    return poems, lines_written


def poem_lines(paragraphs, cc):
    text = cc.convert("".join(paragraphs))
    text = NOTE.sub("", text)
    return [l.strip() for l in SPLIT.split(text) if l.strip()]


def phrase_vocabulary():
    words = set()
    for line in PHRASE_BOOK.read_text(encoding="utf-8").splitlines():
        parts = line.split("\t")
        if len(parts) == 3 and not line.startswith("<begin>"):
            topic = parts[1]
            if len(topic) == 1:
                words.add(topic)
            words.update(w for w in parts[2].split() if 2 <= len(w) <= 3)
    return words


def words_in(lines, vocab):
    """The phrase-book words (1–3 characters) inside the poem's lines."""
    found = set()
    for line in lines:
        for size in (1, 2, 3):
            found.update(line[i:i + size] for i in range(len(line) - size + 1))
    return sorted(found & vocab)


def pick_keywords(lines, vocab, idf, rng):
    present = words_in(lines, vocab)
    if not present or rng.random() < 0.03:
        return []
    k = min(len(present), rng.randint(1, 4))
    weights = [idf.get(w, 1.0) for w in present]
    chosen = []
    while len(chosen) < k:
        w = rng.choices(present, weights=weights)[0]
        if w not in chosen:
            chosen.append(w)
    return chosen


def source(form, keywords, lines):
    return f"{form}|{' '.join(keywords)}|" + "".join(l + "|" for l in lines)


def fnv1a(data, offset):
    h = offset
    for b in data:
        h = ((h ^ b) * 0x100000001B3) & 0xFFFFFFFFFFFFFFFF
    return h


def write_bloom(lines, path, fp_rate=0.01):
    n = max(1, len(lines))
    m = int(math.ceil(-n * math.log(fp_rate) / (math.log(2) ** 2)))
    k = max(1, round(m / n * math.log(2)))
    bits = bytearray((m + 7) // 8)
    for line in lines:
        data = line.encode("utf-8")
        h1 = fnv1a(data, 0xCBF29CE484222325)
        h2 = fnv1a(data, 0x84222325CBF29CE4) | 1
        for i in range(k):
            bit = (h1 + i * h2) % (1 << 64) % m
            bits[bit // 8] |= 1 << (bit % 8)
    with open(path, "wb") as f:
        f.write(b"YSBLOOM1")
        f.write(m.to_bytes(8, "little"))
        f.write(k.to_bytes(4, "little"))
        f.write(bits)
    return m, k


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("corpus", help="chinese-poetry-2.0.1.tgz from `npm pack chinese-poetry@2.0.1`")
    ap.add_argument("out")
    ap.add_argument("--limit", type=int, default=0, help="use only the first N kept poems (smoke runs)")
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    cc = OpenCC("t2s")
    rng = random.Random(args.seed)

    all_lines = set()
    kept, seen = [], set()
    for dynasty, poem in read_corpus(args.corpus):
        if args.limit and len(kept) >= 10 * args.limit:
            break
        lines = poem_lines(poem.get("paragraphs", []), cc)
        for l in lines:
            if len(l) in (5, 7) and all(is_han(c) for c in l):
                all_lines.add(l)
        form = FORMS.get((len(lines), len(lines[0]) if lines else 0))
        if not form or any(len(l) != len(lines[0]) or not all(is_han(c) for c in l) for l in lines):
            continue
        key = "".join(lines)
        if key in seen:
            continue
        seen.add(key)
        credit = (credit_field(poem.get("author"), cc), credit_field(poem.get("title"), cc), dynasty)
        kept.append((form, lines, credit))
    counts = collections.Counter(c for _, lines, _ in kept for l in lines for c in l)
    kept = [p for p in kept if all(counts[c] >= MIN_CHAR_COUNT for l in p[1] for c in l)]
    if args.limit:
        kept = kept[: args.limit]
    counts = collections.Counter(c for _, lines, _ in kept for l in lines for c in l)

    vocab = phrase_vocabulary()
    doc_freq = collections.Counter()
    for _, lines, _ in kept:
        doc_freq.update(words_in(lines, vocab))
    idf = {w: math.log(len(kept) / (1 + doc_freq[w])) for w in doc_freq}

    chars = [c for c, _ in counts.most_common()]
    token_vocab = {t: i for i, t in enumerate(SPECIALS + chars)}
    tokenizer = {
        "version": "1.0", "truncation": None, "padding": None,
        "added_tokens": [
            {"id": i, "content": t, "single_word": False, "lstrip": False, "rstrip": False,
             "normalized": False, "special": True}
            for i, t in enumerate(SPECIALS[:4])
        ],
        "normalizer": None,
        "pre_tokenizer": {"type": "Split", "pattern": {"Regex": "."}, "behavior": "Isolated", "invert": False},
        "post_processor": {
            "type": "TemplateProcessing",
            "single": [{"Sequence": {"id": "A", "type_id": 0}}, {"SpecialToken": {"id": "[EOS]", "type_id": 0}}],
            "pair": [{"Sequence": {"id": "A", "type_id": 0}}, {"SpecialToken": {"id": "[EOS]", "type_id": 0}},
                     {"Sequence": {"id": "B", "type_id": 0}}, {"SpecialToken": {"id": "[EOS]", "type_id": 0}}],
            "special_tokens": {"[EOS]": {"id": "[EOS]", "ids": [2], "tokens": ["[EOS]"]}},
        },
        "decoder": {"type": "Fuse"},
        "model": {"type": "WordLevel", "vocab": token_vocab, "unk_token": "[UNK]"},
    }
    (out / "tokenizer.json").write_text(json.dumps(tokenizer, ensure_ascii=False), encoding="utf-8")

    stats = collections.Counter()
    held_out_poems = []
    with open(out / "train.jsonl", "w", encoding="utf-8") as train, \
            open(out / "valid.jsonl", "w", encoding="utf-8") as valid, \
            open(out / "heldout_poems.jsonl", "w", encoding="utf-8") as heldout:
        for form, lines, _ in kept:
            held_out = int(hashlib.md5("".join(lines).encode()).hexdigest(), 16) % 100 == 0
            keywords = pick_keywords(lines, vocab, idf, rng)
            sink = valid if held_out else train
            for i, line in enumerate(lines):
                sink.write(json.dumps({"src": source(form, keywords, lines[:i]), "tgt": line}, ensure_ascii=False) + "\n")
            if held_out:
                held_out_poems.append(lines)
                heldout.write(json.dumps({"form": form, "keywords": keywords, "lines": lines}, ensure_ascii=False) + "\n")
            stats[("valid" if held_out else "train", form)] += 1
    jiju_poems, jiju_lines = write_line_index(kept, held_out_poems, out / "jiju_lines.tsv.gz")
    m, k = write_bloom(sorted(all_lines), out / "train_lines.bloom")
    (out / "corpus_lines.txt").write_text("\n".join(sorted(all_lines)) + "\n", encoding="utf-8")
    summary = {
        "poems": {f"{split} {form}": n for (split, form), n in sorted(stats.items())},
        "vocab": len(token_vocab),
        "corpus_lines": len(all_lines),
        "bloom_bits": m,
        "bloom_hashes": k,
        "jiju_poems": jiju_poems,
        "jiju_lines": jiju_lines,
    }
    (out / "prepare_info.json").write_text(json.dumps(summary, ensure_ascii=False, indent=1), encoding="utf-8")
    print(json.dumps(summary, ensure_ascii=False))


if __name__ == "__main__":
    main()

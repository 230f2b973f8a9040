"""The Python `transformers` reference pipeline, timed for `yingshi bench`.

    python tools/reference.py poem --model models/poet-t5 --poems 10 --candidates 8 --form 七绝
    python tools/reference.py clip --model DIR --photos tests/fixtures/photos --vocabulary keywords/default.txt
    python tools/reference.py serve --clip-model DIR --poet-model models/poet-t5 --photos tests/fixtures/photos \
        --vocabulary keywords/default.txt --concurrency 1 8 64 --requests 64

Prints one JSON line: {"ms_per_poem": …, "tokens_per_s": …, …}. The poem side is
what the prototype did: each line sampled with `generate` (temperature, top-p),
all candidates of a poem as one batch, only Chinese characters allowed and the
line length forced; no form rules.
"""

import argparse
import json
import time

import torch
import transformers
from transformers import LogitsProcessor, LogitsProcessorList, T5ForConditionalGeneration
from tokenizers import Tokenizer

FORMS = {"五绝": (4, 5), "七绝": (4, 7), "五律": (8, 5), "七律": (8, 7)}
FIRST_CHAR_ID = 7


class OnlyCharacters(LogitsProcessor):
    def __call__(self, input_ids, scores):
        scores[:, :FIRST_CHAR_ID] = -float("inf")
        return scores


def bench_poem(args):
    torch.manual_seed(0)
    torch.set_num_threads(args.threads)
    model = T5ForConditionalGeneration.from_pretrained(args.model, dtype=torch.float32).eval()
    tok = Tokenizer.from_file(f"{args.model}/tokenizer.json")
    lines_n, chars_n = FORMS[args.form]
    keywords = " ".join(args.keywords)

    def write_poem():
        poems = [[] for _ in range(args.candidates)]
        for _ in range(lines_n):
            sources = [f"{args.form}|{keywords}|" + "".join(l + "|" for l in p) for p in poems]
            ids = torch.tensor([tok.encode(s).ids for s in sources])
            out = model.generate(
                ids, do_sample=True, temperature=0.8, top_p=0.9, top_k=0,
                min_new_tokens=chars_n, max_new_tokens=chars_n,
                logits_processor=LogitsProcessorList([OnlyCharacters()]),
                decoder_start_token_id=0, eos_token_id=2, pad_token_id=0,
            )
            for p, row in zip(poems, out[:, 1:].tolist()):
                p.append(tok.decode(row).replace(" ", ""))
        return poems

    with torch.no_grad():
        write_poem()  # warm-up
        start = time.perf_counter()
        for _ in range(args.poems):
            poems = write_poem()
        seconds = time.perf_counter() - start
    tokens = args.poems * args.candidates * lines_n * chars_n
    print(json.dumps({
        "ms_per_poem": seconds * 1000 / args.poems,
        "tokens_per_s": tokens / seconds,
        "poems": args.poems,
        "candidates": args.candidates,
        "threads": torch.get_num_threads(),
        "sample": poems[0],
    }, ensure_ascii=False))


def vocabulary_prompts(path):
    """The prompts of keywords/default.txt (or the words of a plain list), in file order."""
    lines = [l.strip() for l in open(path, encoding="utf-8")]
    structured = any(l.startswith("[") for l in lines)
    prompts = []
    for line in lines:
        if not line or line.startswith("#"):
            continue
        if not structured:
            prompts.append(line)
            continue
        for entry in line.split("]", 1)[1].split("|"):
            entry = entry.strip()
            if not entry:
                continue
            word, _, rest = entry.partition(":")
            ps = [p.strip() for p in rest.split(";") if p.strip()]
            prompts.extend(ps or [word.strip()])
    return prompts


def bench_clip(args):
    from pathlib import Path
    from PIL import Image
    from transformers import BertTokenizer, ChineseCLIPModel
    from transformers.models.chinese_clip.image_processing_pil_chinese_clip import ChineseCLIPImageProcessorPil

    torch.set_num_threads(args.threads)
    model = ChineseCLIPModel.from_pretrained(args.model, dtype=torch.float32).eval()
    processor = ChineseCLIPImageProcessorPil.from_pretrained(args.model)
    tokenizer = BertTokenizer.from_pretrained(args.model)
    photos = sorted(Path(args.photos).iterdir())
    prompts = sorted(set(vocabulary_prompts(args.vocabulary)))

    def embed_photo(path):
        image = Image.open(path)
        pixels = processor(images=image, return_tensors="pt")["pixel_values"]
        out = model.get_image_features(pixel_values=pixels)
        out = getattr(out, "pooler_output", out)
        return out / out.norm(dim=-1, keepdim=True)

    with torch.no_grad():
        embed_photo(photos[0])  # warm-up
        start = time.perf_counter()
        for i in range(args.images):
            embed_photo(photos[i % len(photos)])
        image_ms = (time.perf_counter() - start) * 1000 / args.images
        start = time.perf_counter()
        for i in range(0, len(prompts), 64):
            enc = tokenizer(prompts[i:i + 64], padding=True, truncation=True, max_length=52, return_tensors="pt")
            out = model.get_text_features(**enc)
            out = getattr(out, "pooler_output", out)
        vocab_s = time.perf_counter() - start
    print(json.dumps({"image_ms": image_ms, "vocabulary_s": vocab_s, "prompts": len(prompts),
                      "threads": torch.get_num_threads()}))


def vocabulary_words(path):
    """The keywords of keywords/default.txt (or the words of a plain list), in file order."""
    words = []
    for line in open(path, encoding="utf-8"):
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        if "]" not in line:
            words.append(line)
            continue
        for entry in line.split("]", 1)[1].split("|"):
            word = entry.partition(":")[0].strip()
            if word:
                words.append(word)
    return words


def bench_serve(args):
    """Photo → poem as the prototype served it, with the requests that wait
    together run as one batch: their photos in one CLIP call, every
    candidate of every poem in one `generate` call per line, the poems'
    texts in one CLIP call for the rerank."""
    from pathlib import Path
    from PIL import Image
    from transformers import BertTokenizer, ChineseCLIPModel
    from transformers.models.chinese_clip.image_processing_pil_chinese_clip import ChineseCLIPImageProcessorPil

    torch.manual_seed(0)
    torch.set_num_threads(args.threads)
    device, dtype = args.device, {"f32": torch.float32, "bf16": torch.bfloat16}[args.dtype]
    clip = ChineseCLIPModel.from_pretrained(args.clip_model, dtype=dtype).to(device).eval()
    processor = ChineseCLIPImageProcessorPil.from_pretrained(args.clip_model)
    bert = BertTokenizer.from_pretrained(args.clip_model)
    poet = T5ForConditionalGeneration.from_pretrained(args.poet_model, dtype=dtype).to(device).eval()
    tok = Tokenizer.from_file(f"{args.poet_model}/tokenizer.json")
    lines_n, chars_n = FORMS[args.form]
    photos = sorted(Path(args.photos).iterdir())
    words = vocabulary_words(args.vocabulary)

    def texts_features(texts):
        out = []
        for i in range(0, len(texts), 64):
            enc = bert(texts[i:i + 64], padding=True, truncation=True, max_length=52, return_tensors="pt").to(device)
            f = clip.get_text_features(**enc)
            f = getattr(f, "pooler_output", f).float()
            out.append(f / f.norm(dim=-1, keepdim=True))
        return torch.cat(out)

    def serve(paths):
        images = [Image.open(p).convert("RGB") for p in paths]
        pixels = processor(images=images, return_tensors="pt")["pixel_values"].to(device, dtype)
        f = clip.get_image_features(pixel_values=pixels)
        f = getattr(f, "pooler_output", f).float()
        f = f / f.norm(dim=-1, keepdim=True)
        top = (f @ vocab.T).topk(args.top_k, dim=-1).indices.tolist()
        rows = [([words[j] for j in t], []) for t in top for _ in range(args.candidates)]
        for _ in range(lines_n):
            sources = [f"{args.form}|{' '.join(kw)}|" + "".join(l + "|" for l in p) for kw, p in rows]
            ids = [tok.encode(s).ids for s in sources]
            width = max(len(i) for i in ids)
            mask = torch.tensor([[1] * len(i) + [0] * (width - len(i)) for i in ids], device=device)
            ids = torch.tensor([i + [0] * (width - len(i)) for i in ids], device=device)
            out = poet.generate(
                ids, attention_mask=mask, do_sample=True, temperature=0.8, top_p=0.9, top_k=0,
                min_new_tokens=chars_n, max_new_tokens=chars_n,
                logits_processor=LogitsProcessorList([OnlyCharacters()]),
                decoder_start_token_id=0, eos_token_id=2, pad_token_id=0,
            )
            for (_, p), row in zip(rows, out[:, 1:].tolist()):
                p.append(tok.decode(row).replace(" ", ""))
        poems = texts_features(["，".join(p) for _, p in rows])
        best = (poems.view(len(paths), args.candidates, -1) * f[:, None, :]).sum(-1).argmax(-1)
        return [rows[i * args.candidates + b][1] for i, b in enumerate(best.tolist())]

    results = []
    with torch.no_grad():
        vocab = texts_features(words)  # once, as the bot's cache does
        serve(photos[:1])  # warm-up
        for c in args.concurrency:
            latencies = []
            start = time.perf_counter()
            for g in range(0, args.requests, c):
                group = [photos[i % len(photos)] for i in range(g, min(g + c, args.requests))]
                t0 = time.perf_counter()
                serve(group)
                if device != "cpu":
                    torch.cuda.synchronize()
                latencies += [(time.perf_counter() - t0) * 1000] * len(group)
            seconds = time.perf_counter() - start
            latencies.sort()
            results.append({
                "concurrency": c,
                "p50_ms": latencies[len(latencies) // 2],
                "p95_ms": latencies[min(len(latencies) - 1, int(len(latencies) * 0.95))],
                "photos_per_s": args.requests / seconds,
            })
    print(json.dumps({"levels": results, "threads": torch.get_num_threads()}))


def versions(args):
    print(json.dumps({"torch": torch.__version__, "transformers": transformers.__version__}))


def main():
    ap = argparse.ArgumentParser()
    sub = ap.add_subparsers(dest="what", required=True)
    p = sub.add_parser("poem")
    p.add_argument("--model", required=True)
    p.add_argument("--poems", type=int, default=10)
    p.add_argument("--candidates", type=int, default=8)
    p.add_argument("--form", default="七绝")
    p.add_argument("--keywords", nargs="*", default=["春风", "明月"])
    p.add_argument("--threads", type=int, default=torch.get_num_threads())
    c = sub.add_parser("clip")
    c.add_argument("--model", required=True)
    c.add_argument("--photos", required=True)
    c.add_argument("--vocabulary", required=True)
    c.add_argument("--images", type=int, default=10)
    c.add_argument("--threads", type=int, default=torch.get_num_threads())
    v = sub.add_parser("serve")
    v.add_argument("--clip-model", required=True)
    v.add_argument("--poet-model", required=True)
    v.add_argument("--photos", required=True)
    v.add_argument("--vocabulary", required=True)
    v.add_argument("--form", default="七绝")
    v.add_argument("--candidates", type=int, default=8)
    v.add_argument("--top-k", type=int, default=4)
    v.add_argument("--requests", type=int, default=64)
    v.add_argument("--concurrency", type=int, nargs="+", default=[1, 8, 64])
    v.add_argument("--device", default="cpu", help="cpu or cuda")
    v.add_argument("--dtype", default="f32", choices=["f32", "bf16"])
    v.add_argument("--threads", type=int, default=torch.get_num_threads())
    r = sub.add_parser("versions")
    r.add_argument("--threads", type=int, default=torch.get_num_threads())
    args = ap.parse_args()
    {"poem": bench_poem, "clip": bench_clip, "serve": bench_serve, "versions": versions}[args.what](args)


if __name__ == "__main__":
    main()

"""The Python `transformers` reference pipeline, timed for `yingshi bench`.

    python tools/reference.py poem --model models/poet-t5 --poems 10 --candidates 8 --form 七绝

Prints one JSON line: {"ms_per_poem": …, "tokens_per_s": …, …}. The poem side is
what the prototype did: each line sampled with `generate` (temperature, top-p),
all candidates of a poem as one batch, only Chinese characters allowed and the
line length forced; no form rules.
"""

import argparse
import json
import time

import torch
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
    args = ap.parse_args()
    if args.what == "poem":
        bench_poem(args)


if __name__ == "__main__":
    main()

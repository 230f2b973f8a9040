"""Trains the poet (character-level T5) on the data of prepare.py and exports
it in the format the Rust side loads (models/poet-t5/card.md).

    python training/train.py DATA OUT [--seconds 220] [--device cuda]
    python training/train.py DATA OUT --max-steps 5 --device cpu --small   # smoke run

What the reference run taught: AdamW stalled at the unigram loss and ignored
its input; Adafactor with parameter-scaled updates (lr 1e-2) learned. The model
is trained with tied input/output embeddings and the decoder output scaled by
d_model**-0.5 (transformers' T5), and exported as the equivalent untied,
unscaled model: the factor is folded into decoder.final_layer_norm.weight and
lm_head.weight is stored as a copy of shared.weight, so candle (untied branch)
and transformers compute the same logits.
"""

import argparse
import json
import math
import random
import shutil
import time
from pathlib import Path

import torch
from safetensors.torch import save_file
from tokenizers import Tokenizer
from transformers import T5Config, T5ForConditionalGeneration
from transformers.optimization import Adafactor

PAD, EOS = 0, 2


def log(start, msg):
    print(f"[{time.time() - start:8.1f}s] {msg}", flush=True)


def load_examples(path, tok, limit=0):
    examples = []
    with open(path, encoding="utf-8") as f:
        for i, line in enumerate(f):
            if limit and i >= limit:
                break
            ex = json.loads(line)
            examples.append((tok.encode(ex["src"]).ids, tok.encode(ex["tgt"]).ids))
    return examples


def batches(examples, batch_size, rng, shuffle=True):
    """Length-bucketed batches: sort by source length within shuffled chunks."""
    order = list(range(len(examples)))
    if shuffle:
        rng.shuffle(order)
    chunk = batch_size * 50
    for c in range(0, len(order), chunk):
        part = sorted(order[c:c + chunk], key=lambda i: len(examples[i][0]))
        groups = [part[i:i + batch_size] for i in range(0, len(part), batch_size)]
        if shuffle:
            rng.shuffle(groups)
        yield from groups


def collate(examples, idx, device, shuffle_sources=False, rng=None):
    srcs = [examples[i][0] for i in idx]
    if shuffle_sources:
        srcs = srcs[:]
        rng.shuffle(srcs)
    tgts = [examples[i][1] for i in idx]
    s_len, t_len = max(map(len, srcs)), max(map(len, tgts))
    input_ids = torch.full((len(idx), s_len), PAD)
    attention = torch.zeros((len(idx), s_len), dtype=torch.long)
    labels = torch.full((len(idx), t_len), -100)
    for r, (s, t) in enumerate(zip(srcs, tgts)):
        input_ids[r, :len(s)] = torch.tensor(s)
        attention[r, :len(s)] = 1
        labels[r, :len(t)] = torch.tensor(t)
    return input_ids.to(device), attention.to(device), labels.to(device)


@torch.no_grad()
def evaluate(model, examples, batch_size, device, amp, shuffle_sources=False, limit=0):
    model.eval()
    rng = random.Random(0)
    total, tokens = 0.0, 0
    data = examples[:limit] if limit else examples
    for idx in batches(data, batch_size, rng, shuffle=False):
        ids, att, labels = collate(data, idx, device, shuffle_sources, rng)
        with torch.autocast(device_type=device.split(":")[0], dtype=torch.bfloat16, enabled=amp):
            logits = model(input_ids=ids, attention_mask=att, labels=labels).logits
        loss = torch.nn.functional.cross_entropy(
            logits.float().reshape(-1, logits.shape[-1]), labels.reshape(-1), ignore_index=-100, reduction="sum")
        total += loss.item()
        tokens += (labels != -100).sum().item()
    model.train()
    return total / max(tokens, 1)


def export(model, tok_path, out, info):
    out.mkdir(parents=True, exist_ok=True)
    cfg = model.config
    state = {k: v.detach().float().cpu().clone() for k, v in model.state_dict().items()}
    # Fold the d_model**-0.5 output scaling into the last norm; untie the head.
    state["decoder.final_layer_norm.weight"] *= cfg.d_model ** -0.5
    state["lm_head.weight"] = state["shared.weight"].clone()
    for k in ("encoder.embed_tokens.weight", "decoder.embed_tokens.weight"):
        state.pop(k, None)
    save_file({k: v.to(torch.bfloat16).contiguous() for k, v in state.items()}, str(out / "model.safetensors"))
    config = cfg.to_dict()
    config.update(tie_word_embeddings=False, scale_decoder_outputs=False, dtype="bfloat16")
    (out / "config.json").write_text(json.dumps(config, indent=2, ensure_ascii=False))
    shutil.copy(tok_path, out / "tokenizer.json")
    (out / "train_info.json").write_text(json.dumps(info, indent=1, ensure_ascii=False))


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("data", help="the output folder of prepare.py")
    ap.add_argument("out")
    ap.add_argument("--seconds", type=float, default=220, help="training time budget")
    ap.add_argument("--max-steps", type=int, default=0)
    ap.add_argument("--batch-size", type=int, default=512)
    ap.add_argument("--lr", type=float, default=1e-2)
    ap.add_argument("--warmup", type=int, default=50)
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--small", action="store_true", help="a tiny model, for smoke runs")
    ap.add_argument("--limit", type=int, default=0, help="use the first N training examples")
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()
    start = time.time()
    torch.manual_seed(args.seed)
    rng = random.Random(args.seed)
    data, out = Path(args.data), Path(args.out)
    tok = Tokenizer.from_file(str(data / "tokenizer.json"))
    train = load_examples(data / "train.jsonl", tok, args.limit)
    valid = load_examples(data / "valid.jsonl", tok, args.limit // 10 if args.limit else 0)
    log(start, f"train {len(train)} examples, valid {len(valid)}, vocab {tok.get_vocab_size()}")

    size = dict(d_model=64, d_kv=16, num_heads=4, d_ff=128, num_layers=2, num_decoder_layers=2) if args.small \
        else dict(d_model=384, d_kv=64, num_heads=6, d_ff=1024, num_layers=6, num_decoder_layers=6)
    config = T5Config(
        vocab_size=tok.get_vocab_size(), feed_forward_proj="gated-gelu", relative_attention_num_buckets=32,
        relative_attention_max_distance=128, dropout_rate=0.1, tie_word_embeddings=True,
        decoder_start_token_id=PAD, pad_token_id=PAD, eos_token_id=EOS, **size,
    )
    device = args.device
    amp = device.startswith("cuda")
    model = T5ForConditionalGeneration(config).to(device)
    model.train()
    optim = Adafactor(model.parameters(), lr=args.lr, scale_parameter=True, relative_step=False, warmup_init=False)
    est_steps = args.max_steps or 10**9

    def lr_at(step, total):
        if step < args.warmup:
            return args.lr * (step + 1) / args.warmup
        t = min(1.0, (step - args.warmup) / max(1, total - args.warmup))
        return args.lr * (0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * t)))

    step, train_start, history = 0, time.time(), []
    done = False
    while not done:
        for idx in batches(train, args.batch_size, rng):
            ids, att, labels = collate(train, idx, device)
            elapsed = time.time() - train_start
            if step == 20 and not args.max_steps:
                est_steps = int(args.seconds / (elapsed / 20))
            for group in optim.param_groups:
                group["lr"] = lr_at(step, est_steps)
            with torch.autocast(device_type=device.split(":")[0], dtype=torch.bfloat16, enabled=amp):
                loss = model(input_ids=ids, attention_mask=att, labels=labels).loss
            loss.backward()
            optim.step()
            optim.zero_grad(set_to_none=True)
            step += 1
            if step % 100 == 0:
                log(start, f"step {step} train_loss {loss.item():.4f}")
            if (args.max_steps and step >= args.max_steps) or (not args.max_steps and elapsed > args.seconds):
                done = True
                break
    train_seconds = time.time() - train_start
    valid_loss = evaluate(model, valid, args.batch_size, device, amp)
    shuffled = evaluate(model, valid, args.batch_size, device, amp, shuffle_sources=True)
    log(start, f"stopped after {step} steps ({train_seconds:.0f}s); valid loss {valid_loss:.4f}, "
               f"with shuffled sources {shuffled:.4f} (gap {shuffled - valid_loss:.3f})")
    info = dict(steps=step, train_seconds=train_seconds, valid_loss=valid_loss, valid_loss_shuffled=shuffled,
                optimizer="adafactor", lr=args.lr, batch_size=args.batch_size, size=size, device=device,
                torch=torch.__version__)
    export(model, data / "tokenizer.json", out, info)
    if (data / "train_lines.bloom").exists():
        shutil.copy(data / "train_lines.bloom", out / "train_lines.bloom")
    log(start, f"exported to {out}")


if __name__ == "__main__":
    main()

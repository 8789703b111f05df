"""Pretraining as a script, on one process or many (PyTorch DistributedDataParallel).

One process (CPU, one GPU or Apple silicon)::

    python -m helpers.pretrain --config pretrain-124M --epochs 10

Several processes on one machine, with ``torchrun`` (gloo on CPUs, nccl on NVIDIA GPUs)::

    torchrun --standalone --nproc_per_node 2 -m helpers.pretrain --config tiny --epochs 1

Each process trains a full copy of the model on its own share of the batches; after every backward
pass DDP averages the gradients across processes, so all copies take the same optimizer step and stay
identical. ``--grad-accum N`` sums gradients over N micro-batches before each step (a larger effective
batch on the same memory); DDP skips the all-reduce on the first N-1 of them.

``--corpus books`` trains on several public-domain books instead of The Verdict (downloaded through
the data registry; see ``helpers.data.GUTENBERG_BOOKS``).
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import json
import math
import os
import time
from dataclasses import replace
from pathlib import Path

import torch
import torch.distributed as dist
from torch.nn.parallel import DistributedDataParallel
from torch.utils.data import DataLoader, DistributedSampler

from . import data, runtime
from .losses import calc_loss_batch, calc_loss_loader
from .model import GPTModel, get_config
from .perf import FastPath, autocast, prepare_model
from .tokenizer import get_tokenizer
from .training import make_optimizer


def parse_args(argv=None):
    p = argparse.ArgumentParser(prog="python -m helpers.pretrain", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--config", default="pretrain-124M", help="a helpers.model.get_config name")
    p.add_argument("--context-length", type=int, default=None, help="override the config's context length")
    p.add_argument("--corpus", default="the-verdict",
                   help="'the-verdict', 'books' (five Gutenberg books), or comma-separated registry names")
    p.add_argument("--epochs", type=int, default=10)
    p.add_argument("--batch-size", type=int, default=2, help="micro-batch size per process")
    p.add_argument("--grad-accum", type=int, default=1, help="micro-batches per optimizer step")
    p.add_argument("--lr", type=float, default=4e-4)
    p.add_argument("--weight-decay", type=float, default=0.1)
    p.add_argument("--eval-freq", type=int, default=5, help="evaluate every N optimizer steps")
    p.add_argument("--eval-iter", type=int, default=5, help="batches per evaluation")
    p.add_argument("--max-steps", type=int, default=None, help="stop after this many optimizer steps")
    p.add_argument("--seed", type=int, default=123)
    p.add_argument("--teaching", action="store_true", help="use the teaching path instead of the fast path")
    p.add_argument("--pad-vocab", type=int, default=None, metavar="N",
                   help="pad the vocabulary to a multiple of N (1: none; default: 64 on CUDA, none elsewhere)")
    p.add_argument("--device", default=None, help="cpu, cuda or mps (default: helpers.runtime.get_device)")
    p.add_argument("--out", default=None, help="folder for checkpoint.pt and summary.json")
    return p.parse_args(argv)


def corpus_text(corpus: str) -> str:
    if corpus == "books":
        return data.read_corpus(list(data.GUTENBERG_BOOKS))
    return data.read_corpus([name.strip() for name in corpus.split(",")])


def parameter_digest(model: torch.nn.Module) -> str:
    """A SHA-256 over all parameters' bytes: equal digests mean bit-identical weights."""
    digest = hashlib.sha256()
    for name, p in sorted(model.state_dict().items()):
        digest.update(name.encode())
        digest.update(p.detach().cpu().contiguous().numpy().tobytes())
    return digest.hexdigest()


def setup_distributed(device_arg: str | None) -> tuple[int, int, torch.device]:
    """Initialise the process group when launched by torchrun; returns (rank, world_size, device)."""
    world_size = int(os.environ.get("WORLD_SIZE", "1"))
    rank = int(os.environ.get("RANK", "0"))
    device = runtime.get_device(device_arg)
    if world_size > 1:
        if device.type == "cuda":
            local_rank = int(os.environ.get("LOCAL_RANK", "0"))
            device = torch.device("cuda", local_rank)
            torch.cuda.set_device(device)
            backend = "nccl"
        else:
            backend = "gloo"
        dist.init_process_group(backend=backend)
    return rank, world_size, device


def train(args) -> dict:
    rank, world_size, device = setup_distributed(args.device)
    is_main = rank == 0
    runtime.set_seed(args.seed)  # same seed on every rank: identical initial weights
    overrides = {"context_length": args.context_length} if args.context_length else {}
    cfg = get_config(args.config, **overrides)
    options = FastPath.teaching() if args.teaching else FastPath.for_device(device)
    if device.type != "cuda":
        options = replace(options, pin_memory=False)
    if args.pad_vocab is not None:
        options = replace(options, pad_vocab_multiple=args.pad_vocab)

    text = corpus_text(args.corpus)
    train_text, val_text = data.train_val_split(text, 0.9)
    tokenizer = get_tokenizer()
    ctx = cfg["context_length"]
    train_set = data.GPTDatasetV1(train_text, tokenizer, ctx, ctx)
    val_set = data.GPTDatasetV1(val_text, tokenizer, ctx, ctx)
    sampler = DistributedSampler(train_set, world_size, rank, shuffle=True, seed=args.seed, drop_last=True) \
        if world_size > 1 else None
    generator = torch.Generator().manual_seed(args.seed)
    train_loader = DataLoader(train_set, batch_size=args.batch_size, sampler=sampler, shuffle=sampler is None,
                              drop_last=True, generator=generator, pin_memory=options.pin_memory)
    val_loader = DataLoader(val_set, batch_size=args.batch_size, shuffle=False, pin_memory=options.pin_memory)

    model = GPTModel(cfg).to(device)
    model = prepare_model(model, options)
    ddp_model = DistributedDataParallel(model) if world_size > 1 else model
    optimizer = make_optimizer(model, args.lr, args.weight_decay, options, device)

    history = {"step": [], "tokens_seen": [], "train_loss": [], "val_loss": []}
    tokens_seen, step, start = 0, 0, time.perf_counter()
    steps_per_epoch = len(train_loader) // args.grad_accum
    total_steps = steps_per_epoch * args.epochs
    if args.max_steps is not None:
        total_steps = min(total_steps, args.max_steps)
    if total_steps == 0:
        raise ValueError(
            f"No optimizer step fits: {len(train_loader)} micro-batches per epoch and process, "
            f"grad-accum {args.grad_accum}. Use a smaller batch, context or --grad-accum, or a larger corpus."
        )
    if is_main:
        print(f"{world_size} process(es) on {device}; {len(train_set)} training windows of {ctx} tokens; "
              f"{total_steps} optimizer steps; effective batch {args.batch_size * args.grad_accum * world_size}")

    def evaluate():
        model.eval()
        with torch.no_grad(), autocast(device, options):
            losses = torch.tensor([calc_loss_loader(train_loader, model, device, args.eval_iter),
                                   calc_loss_loader(val_loader, model, device, args.eval_iter)], device=device)
        if world_size > 1:  # average the ranks' estimates
            dist.all_reduce(losses)
            losses /= world_size
        model.train()
        return losses.tolist()

    model.train()
    for epoch in range(args.epochs):
        if sampler is not None:
            sampler.set_epoch(epoch)
        micro_batches = iter(train_loader)
        for _ in range(steps_per_epoch):
            if step >= total_steps:
                break
            optimizer.zero_grad(set_to_none=True)
            for micro in range(args.grad_accum):
                input_batch, target_batch = next(micro_batches)
                last = micro == args.grad_accum - 1
                sync = contextlib.nullcontext() if last or world_size == 1 else ddp_model.no_sync()
                with sync, autocast(device, options):
                    loss = calc_loss_batch(input_batch, target_batch, ddp_model, device) / args.grad_accum
                loss.backward()  # sums gradients over micro-batches; DDP averages across ranks
                tokens_seen += input_batch.numel() * world_size
            optimizer.step()
            step += 1
            if step % args.eval_freq == 0 or step == total_steps:
                train_loss, val_loss = evaluate()
                for key, value in zip(history, (step, tokens_seen, train_loss, val_loss), strict=True):
                    history[key].append(value)
                if is_main:
                    print(f"step {step:5d}  epoch {epoch + 1}  tokens {tokens_seen:,}  "
                          f"train {train_loss:.3f}  val {val_loss:.3f}", flush=True)

    digest = parameter_digest(model)
    digests = [None] * world_size
    if world_size > 1:
        dist.all_gather_object(digests, digest)
    else:
        digests = [digest]
    summary = {
        "world_size": world_size, "device": str(device), "config": cfg, "steps": step,
        "tokens_seen": tokens_seen, "seconds": time.perf_counter() - start, "history": history,
        "parameter_digests": digests, "ranks_agree": len(set(digests)) == 1,
        "final_val_perplexity": math.exp(history["val_loss"][-1]) if history["val_loss"] else None,
    }
    if is_main and args.out:
        from .checkpoints import save_checkpoint

        out = Path(args.out)
        out.mkdir(parents=True, exist_ok=True)
        save_checkpoint(out / "checkpoint.pt", model, optimizer, args=vars(args), history=history)
        tmp = out / "summary.json.part"
        tmp.write_text(json.dumps(summary, indent=2))
        os.replace(tmp, out / "summary.json")
        print(f"saved {out / 'checkpoint.pt'} and summary.json")
    if world_size > 1:
        dist.barrier()
        dist.destroy_process_group()
    return summary


def main(argv=None) -> int:
    summary = train(parse_args(argv))
    if int(os.environ.get("RANK", "0")) == 0:
        print(f"done: {summary['steps']} steps in {summary['seconds']:.1f} s; ranks agree on the weights: "
              f"{summary['ranks_agree']}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

"""Pretraining as a script, on one process or many (PyTorch DistributedDataParallel).

Lecture 02's pretraining as a command: the same data, model, optimizer and loop (``helpers.training.train_loop``),
so one process with the same settings gives the same losses as the lecture. One process (CPU, one GPU
or Apple silicon)::

    python -m helpers.pretrain --config pretrain-124M --epochs 10 --out runs/verdict

Several processes on one machine, with ``torchrun`` (gloo on CPUs, nccl on NVIDIA GPUs)::

    torchrun --standalone --nproc_per_node 2 -m helpers.pretrain --config tiny --epochs 1

Each process trains a full copy of the model on its own share of the batches; after every step's
backward pass DDP averages the gradients across processes, so all copies take the same optimizer step
and stay identical. They start from the same weights (the same seed) but draw different dropout masks
(the seed plus the process's rank). ``--grad-accum N`` adds up the gradients of N micro-batches before
each step (a larger effective batch in the same memory).

``--checkpoint-every N`` saves the whole training state to ``OUT/training-state.pt`` every N steps;
``--resume OUT/training-state.pt`` continues from it with exactly the losses of an uninterrupted run.
At the end ``OUT`` holds ``history.json`` (``helpers.history.History``; ``helpers.plotting.plot_losses``
draws it), ``checkpoint.pt`` (``helpers.checkpoints.load_checkpoint``) and ``summary.json``.

``--corpus books`` trains on several public-domain books instead of The Verdict (downloaded through
the data registry; see ``helpers.data.GUTENBERG_BOOKS``).

``--data FOLDER`` trains on a corpus prepared by ``python -m helpers.prepare`` (any size: the shards are
memory-mapped, see :mod:`helpers.shards`): each epoch draws ``--windows-per-epoch`` random windows from
the training split (seeded by ``--seed`` and the epoch, each process its own share), and evaluates on
the validation split's windows in order. ``--checkpoint-every``/``--resume`` continue such a run exactly
too. On several machines, start the same command on each with PyTorch's launcher, e.g. on two machines
with 8 GPUs each (``--node-rank 1`` on the second; HOST is the first machine's address)::

    torchrun --nnodes 2 --node-rank 0 --rdzv-backend c10d --rdzv-endpoint HOST:29500 --nproc-per-node 8 \
        -m helpers.pretrain --data data/books --config gpt2-small --max-steps 20000 --out runs/books
"""

from __future__ import annotations

import argparse
import hashlib
import math
import os
import time
from dataclasses import replace
from pathlib import Path

import torch
import torch.distributed as dist
from torch.nn.parallel import DistributedDataParallel
from torch.utils.data import DataLoader, DistributedSampler

from . import data, runtime, shards
from .checkpoints import save_checkpoint
from .files import atomic_write_json, atomic_write_text, explain_write_error
from .history import History
from .model import GPTModel, get_config
from .perf import FastPath, prepare_model
from .tokenizer import get_tokenizer
from .training import (
    WarmupCosine,
    count_steps,
    evaluate_model,
    gather_across_ranks,
    make_optimizer,
    train_loop,
)

STATE_FILE = "training-state.pt"


def _number(kind, minimum, strict=False):
    """An argparse type: a ``kind`` (int or float) of at least ``minimum`` (above it when ``strict``)."""
    def parse(text: str):
        try:
            value = kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected {'an integer' if kind is int else 'a number'}, "
                                             f"got {text!r}") from None
        if value < minimum or (strict and value == minimum):
            raise argparse.ArgumentTypeError(f"must be {'above' if strict else 'at least'} {minimum}, got {text}")
        return value
    return parse


def build_parser() -> argparse.ArgumentParser:
    """The command line of ``python -m helpers.pretrain`` (lecture 02's training as a script)."""
    p = argparse.ArgumentParser(prog="python -m helpers.pretrain", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    count, positive = _number(int, 1), _number(float, 0.0, strict=True)
    p.add_argument("--config", default="pretrain-124M", help="a helpers.model.get_config name")
    p.add_argument("--context-length", type=count, default=None, help="override the config's context length")
    p.add_argument("--drop-rate", type=_number(float, 0.0), default=None, help="override the config's dropout rate")
    p.add_argument("--corpus", default=None,
                   help="'the-verdict' (the default), 'books' (five Gutenberg books), or comma-separated registry names")
    p.add_argument("--data", type=Path, default=None, metavar="FOLDER",
                   help="train on a corpus prepared by `python -m helpers.prepare` instead of --corpus")
    p.add_argument("--windows-per-epoch", type=count, default=None, metavar="N",
                   help="with --data: random training windows per epoch, all processes together "
                        "(default: as many as non-overlapping windows fit into the training split)")
    p.add_argument("--epochs", type=count, default=10)
    p.add_argument("--batch-size", type=count, default=2, help="micro-batch size per process")
    p.add_argument("--grad-accum", type=count, default=1, help="micro-batches per optimizer step")
    p.add_argument("--lr", type=positive, default=4e-4, help="learning rate (the peak, with a schedule)")
    p.add_argument("--weight-decay", type=_number(float, 0.0), default=0.1)
    p.add_argument("--lr-schedule", choices=("constant", "warmup-cosine"), default="constant",
                   help="warmup-cosine: the course's appendix D (linear warmup, then cosine decay)")
    p.add_argument("--warmup-steps", type=_number(int, 0), default=None,
                   help="with warmup-cosine: warmup steps (default: 20%% of all steps, as in the course)")
    p.add_argument("--initial-lr", type=_number(float, 0.0), default=None,
                   help="with warmup-cosine: learning rate at step 0 (default: lr / 10, as in the course)")
    p.add_argument("--min-lr", type=_number(float, 0.0), default=None,
                   help="with warmup-cosine: learning rate at the end (default: lr / 100, as in the course)")
    p.add_argument("--clip-grad-norm", type=positive, default=None, metavar="MAX_NORM",
                   help="clip the gradients' overall norm to this before every step (the course uses 1.0)")
    p.add_argument("--eval-freq", type=count, default=5, help="evaluate every N optimizer steps")
    p.add_argument("--eval-iter", type=count, default=5, help="batches per evaluation")
    p.add_argument("--max-steps", type=count, default=None, help="stop after this many optimizer steps")
    p.add_argument("--seed", type=int, default=123)
    p.add_argument("--teaching", action="store_true", help="use the teaching path instead of the fast path")
    p.add_argument("--pad-vocab", type=count, default=None, metavar="N",
                   help="pad the vocabulary to a multiple of N (1: none; default: 64 on CUDA, none elsewhere)")
    p.add_argument("--device", default=None, help="cpu, cuda or mps (default: helpers.runtime.get_device)")
    p.add_argument("--out", default=None, type=Path,
                   help="folder for history.json, checkpoint.pt, summary.json and the training state")
    p.add_argument("--checkpoint-every", type=count, default=None, metavar="N",
                   help=f"save the training state to OUT/{STATE_FILE} every N optimizer steps (needs --out)")
    p.add_argument("--resume", type=Path, default=None, metavar="PATH",
                   help=f"continue from a saved training state (an OUT/{STATE_FILE}), with the same settings")
    p.add_argument("--progress", action=argparse.BooleanOptionalAction, default=True, help="show a progress bar")
    return p


def parse_args(argv=None) -> argparse.Namespace:
    """Parse and check the command line: a bad value stops here, before any data is read (lecture 02's script)."""
    parser = build_parser()
    args = parser.parse_args(argv)
    check_args(parser, args)
    return args


def check_args(parser: argparse.ArgumentParser, args: argparse.Namespace) -> None:
    """Refuse settings that cannot work, with ``parser.error`` (usage and exit status 2), before any work.

    Part of lecture 02's training script: a typo should not cost a training run.
    """
    try:
        get_config(args.config)
    except (KeyError, ValueError) as err:
        parser.error(f"--config: {err.args[0]}")
    if args.data is not None:
        if args.corpus is not None:
            parser.error("--data and --corpus exclude each other: train on a prepared folder or on registry texts")
        try:
            manifest = shards.read_manifest(args.data)
        except ValueError as err:
            parser.error(f"--data: {err}")
        vocab = get_config(args.config)["vocab_size"]
        if manifest["tokenizer"]["vocab_size"] > vocab:
            parser.error(f"--data: the corpus uses {manifest['tokenizer']['vocab_size']} token ids, the model "
                         f"config {args.config} only {vocab}")
    else:
        if args.windows_per_epoch is not None:
            parser.error("--windows-per-epoch only applies with --data")
        args.corpus = args.corpus or "the-verdict"
        unknown = [name for name in corpus_names(args.corpus) if name not in data.REGISTRY]
        if unknown:
            parser.error(f"--corpus: unknown data file(s) {', '.join(unknown)}; known: "
                         f"{', '.join(sorted(data.REGISTRY))}")
    try:
        runtime.get_device(args.device)
    except (RuntimeError, ValueError) as err:
        parser.error(f"--device: {err}")
    if args.lr_schedule == "constant":
        given = [flag for flag, value in (("--warmup-steps", args.warmup_steps), ("--initial-lr", args.initial_lr),
                                          ("--min-lr", args.min_lr)) if value is not None]
        if given:
            parser.error(f"{', '.join(given)} only apply with --lr-schedule warmup-cosine")
    if args.checkpoint_every is not None and args.out is None:
        parser.error("--checkpoint-every needs --out (the folder the training state is saved in)")
    if args.resume is not None and not args.resume.is_file():
        parser.error(f"--resume: no file at {args.resume}")
    if args.out is not None:
        try:
            check_writable(args.out)
        except OSError as err:
            parser.error(f"--out: {err}")


def check_writable(folder: Path) -> None:
    """Create ``folder`` if needed and write (then delete) a small file in it, so a bad --out fails now.

    Lecture 02's script checks its output folder with it before training, not after.
    """
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise explain_write_error(folder, err) from err
    probe = atomic_write_text(folder / f".write-test-{os.getpid()}", "")
    probe.unlink()


def corpus_names(corpus: str) -> list[str]:
    """The registry names ``--corpus`` stands for (lecture 02's script; The Verdict by default)."""
    return list(data.GUTENBERG_BOOKS) if corpus == "books" else [name.strip() for name in corpus.split(",")]


def corpus_text(corpus: str) -> str:
    """The training text ``--corpus`` names, read through the data registry (lecture 02 uses The Verdict)."""
    return data.read_corpus(corpus_names(corpus))


def parameter_digest(model: torch.nn.Module) -> str:
    """A SHA-256 over all parameters' bytes: equal digests mean bit-identical weights (lecture 02's script)."""
    digest = hashlib.sha256()
    for name, p in sorted(model.state_dict().items()):
        digest.update(name.encode())
        digest.update(p.detach().cpu().contiguous().numpy().tobytes())
    return digest.hexdigest()


def setup_distributed(device_arg: str | None) -> tuple[int, int, torch.device]:
    """Initialise the process group when launched by torchrun; returns (rank, world_size, device).

    Lecture 02's script runs on several processes with it (gloo on CPUs, nccl on NVIDIA GPUs).
    """
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


def fast_path(args, device: torch.device) -> FastPath:
    """The speed-ups for this run: the teaching path with ``--teaching``, else ``FastPath.for_device``.

    Lecture 02's script; the README's section on speed explains the fast path.
    """
    options = FastPath.teaching() if args.teaching else FastPath.for_device(device)
    if device.type != "cuda":
        options = replace(options, pin_memory=False)
    if args.pad_vocab is not None:
        options = replace(options, pad_vocab_multiple=args.pad_vocab)
    return options


def make_loaders(text: str, context: int, batch_size: int, rank: int, world_size: int, seed: int,
                 pin_memory: bool = False) -> tuple[DataLoader, DataLoader]:
    """Lecture 02's loaders: 90/10 split, non-overlapping windows, the training windows shuffled.

    On one process they are built exactly as the lecture builds them (shuffled by PyTorch's global
    generator). On several, each process reads its own share of the training windows, shuffled anew
    every epoch by a ``DistributedSampler`` seeded with ``seed``; the validation loader is the same
    everywhere (the evaluation splits its batches among the processes).
    """
    tokenizer = get_tokenizer()
    train_text, val_text = data.train_val_split(text, 0.9)
    val_loader = data.create_dataloader(val_text, batch_size=batch_size, max_length=context, stride=context,
                                        drop_last=False, shuffle=False, tokenizer=tokenizer, pin_memory=pin_memory)
    if world_size == 1:
        train_loader = data.create_dataloader(train_text, batch_size=batch_size, max_length=context, stride=context,
                                              drop_last=True, shuffle=True, tokenizer=tokenizer, pin_memory=pin_memory)
    else:
        train_set = data.GPTDatasetV1(train_text, tokenizer, context, context)
        sampler = DistributedSampler(train_set, world_size, rank, shuffle=True, seed=seed, drop_last=True)
        train_loader = DataLoader(train_set, batch_size=batch_size, sampler=sampler, drop_last=True,
                                  pin_memory=pin_memory)
    return train_loader, val_loader


def lr_schedule(args, total_steps: int) -> WarmupCosine | None:
    """``--lr-schedule warmup-cosine`` as a :class:`helpers.training.WarmupCosine`, with the course's defaults.

    Lecture 02's script; the schedule is the course's appendix D.
    """
    if args.lr_schedule == "constant":
        return None
    warmup = args.warmup_steps if args.warmup_steps is not None else int(0.2 * total_steps)
    initial = args.initial_lr if args.initial_lr is not None else args.lr / 10
    minimum = args.min_lr if args.min_lr is not None else args.lr / 100
    return WarmupCosine(peak_lr=args.lr, total_steps=total_steps, warmup_steps=min(warmup, total_steps),
                        initial_lr=initial, min_lr=minimum)


def train(args: argparse.Namespace) -> History:
    """Run the pretraining that ``args`` (from :func:`parse_args`) describe; returns the :class:`History`.

    Lecture 02's training as a script. With ``--out``, rank 0 saves ``history.json``, ``checkpoint.pt``
    and ``summary.json`` there (and the training state every ``--checkpoint-every`` steps).
    """
    rank, world_size, device = setup_distributed(args.device)
    try:
        return _train(args, rank, world_size, device)
    finally:
        if world_size > 1:
            dist.destroy_process_group()


def _train(args, rank: int, world_size: int, device: torch.device) -> History:
    is_main = rank == 0
    options = fast_path(args, device)
    overrides = {key: value for key, value in (("context_length", args.context_length), ("drop_rate", args.drop_rate))
                 if value is not None}
    cfg = get_config(args.config, **overrides)
    runtime.set_seed(args.seed)  # the same seed on every rank: identical initial weights
    if args.data is not None:
        train_loader, val_loader = shards.pretraining_loaders(
            args.data, cfg["context_length"], args.batch_size, rank, world_size, args.seed, args.windows_per_epoch,
            options.pin_memory)
    else:
        train_loader, val_loader = make_loaders(corpus_text(args.corpus), cfg["context_length"], args.batch_size,
                                                rank, world_size, args.seed, options.pin_memory)
    model = prepare_model(GPTModel(cfg).to(device), options)
    ddp_model = DistributedDataParallel(model) if world_size > 1 else model
    optimizer = make_optimizer(model, args.lr, args.weight_decay, options, device)
    runtime.set_seed(args.seed + rank)  # ... but each rank its own dropout masks (rank 0: the lecture's)

    _, total_steps = count_steps(len(train_loader), args.epochs, args.grad_accum, args.max_steps)
    if is_main:
        windows = len(train_loader.sampler) * world_size if args.data is not None else len(train_loader.dataset)
        print(f"{world_size} process(es) on {device}; {windows} training windows of "
              f"{cfg['context_length']} tokens per epoch; {total_steps} optimizer steps; effective batch "
              f"{args.batch_size * args.grad_accum * world_size}", flush=True)
    config = {"args": {k: str(v) if isinstance(v, Path) else v for k, v in vars(args).items()}, "model": cfg,
              "options": options.as_dict(), "world_size": world_size, "device": str(device)}
    start = time.perf_counter()
    history = train_loop(
        ddp_model, train_loader, val_loader, optimizer, device, args.epochs, args.eval_freq, args.eval_iter,
        grad_accum=args.grad_accum, options=options, lr_schedule=lr_schedule(args, total_steps),
        max_grad_norm=args.clip_grad_norm, max_steps=args.max_steps, checkpoint_every=args.checkpoint_every,
        checkpoint_path=args.out / STATE_FILE if args.out is not None else None, resume_from=args.resume,
        progress=is_main and args.progress, verbose=is_main, config=config,
    )
    final_train, final_val = evaluate_model(ddp_model, train_loader, val_loader, device, args.eval_iter,
                                            options=options)
    digests = gather_across_ranks(parameter_digest(model), ddp_model)
    losses = gather_across_ranks([history.train_losses, history.val_losses], ddp_model)
    summary = {
        "world_size": world_size, "device": str(device), "steps": history.total_steps,
        "tokens_seen": history.total_seen, "seconds": time.perf_counter() - start,
        "final_train_loss": final_train, "final_val_loss": final_val,
        "final_val_perplexity": math.exp(final_val), "parameter_digests": digests,
        "ranks_agree": len(set(digests)) == 1, "losses_agree": all(x == losses[0] for x in losses),
    }
    if is_main:
        print(f"done: {summary['steps']} steps in {summary['seconds']:.1f} s; final validation loss "
              f"{final_val:.3f}; ranks agree on the weights: {summary['ranks_agree']}", flush=True)
        if args.out is not None:
            save_checkpoint(args.out / "checkpoint.pt", model, optimizer, args=config["args"])
            history.to_json(args.out / "history.json")
            atomic_write_json(args.out / "summary.json", summary)
            print(f"saved history.json, checkpoint.pt and summary.json in {args.out}")
    return history


def main(argv=None) -> int:
    """``python -m helpers.pretrain``: parse the arguments and train (lecture 02's training as a script)."""
    train(parse_args(argv))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

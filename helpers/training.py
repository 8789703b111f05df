"""The training loop of the lectures, and what one optimizer step needs.

Lecture 02 teaches it. ``train_model_simple`` is the course's pretraining loop, a thin wrapper around
:func:`train_loop`, the one loop that every lecture which trains something reuses (lecture 04's
``train_classifier_simple``, lecture 05's instruction finetuning) and that ``python -m helpers.pretrain``
runs as a script, on one process or several.

One optimizer step is :func:`train_step`: ``optimizer.zero_grad()``, the loss and ``loss.backward()``,
``optimizer.step()``. Every ``eval_freq`` steps the loop estimates the training and validation loss on
``eval_iter`` batches and records them in a :class:`History`, with the tokens seen, the step and the
(fractional) epoch. The history unpacks like the course's three return values::

    train_losses, val_losses, tokens_seen = train_model_simple(...)

and saves to JSON (``history.to_json(path)``, ``History.from_json(path)``).

Everything beyond the course is off by default, so that the loop computes exactly what the course does:

- ``grad_accum=N``: add up the gradients of N micro-batches before each optimizer step (an N times
  larger batch in the same memory); each micro-batch's loss is divided by N, so the step follows the
  gradient of the mean loss. A step is one optimizer step: ``eval_freq`` and ``max_steps`` count those.
- ``options=FastPath(...)``: autocast (bf16) and TF32 from :mod:`helpers.perf`, for the loop only.
- ``lr_schedule=WarmupCosine(...)`` and ``max_grad_norm``: the course's appendix D (linear warmup,
  cosine decay, gradient clipping).
- ``checkpoint_every`` with ``checkpoint_path``, and ``resume_from``: save the whole training state
  now and then, and continue from it later with exactly the losses of an uninterrupted run.
- A model wrapped in ``DistributedDataParallel`` (see :mod:`helpers.pretrain`): gradients are averaged
  across processes once per step, and each evaluation is shared out among them.
"""

from __future__ import annotations

import contextlib
import math
import random
import time
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch
import torch.distributed as dist
from torch.nn.parallel import DistributedDataParallel
from torch.utils.data import DataLoader
from tqdm.auto import tqdm

from .checkpoints import load_checkpoint, save_checkpoint
from .generation import generate_and_print_sample
from .history import History
from .losses import calc_loss_batch, calc_loss_loader
from .model import eval_mode
from .perf import FastPath, autocast, fused_adamw_supported, precision
from .plotting import LiveLossPlot

# ------------------------------------------------------------------------------------ the optimizer


def make_optimizer(model: torch.nn.Module, lr: float, weight_decay: float, options: FastPath,
                   device: str | torch.device | None = None) -> torch.optim.AdamW:
    """AdamW over the trainable parameters, in the implementation ``options.optimizer`` names.

    Lecture 02 builds its optimizer with it, lectures 04-06 theirs. ``"fused"`` updates all weights in
    one kernel, ``"foreach"`` in a few batched ones, ``"for-loop"`` in a Python loop over the tensors
    (the readable reference); they compute the same update within float tolerance. Only parameters
    with ``requires_grad`` are optimized, so frozen layers (lectures 04 and 06) cost no optimizer state.
    """
    params = [p for p in model.parameters() if p.requires_grad]
    device = torch.device(device) if device is not None else params[0].device
    kind = options.optimizer
    if kind == "fused" and not fused_adamw_supported(device):
        kind = "foreach"
    extra = {"fused": {"fused": True}, "foreach": {"foreach": True}, "for-loop": {"foreach": False}}
    if kind not in extra:
        raise ValueError(f"optimizer must be 'fused', 'foreach' or 'for-loop', got {options.optimizer!r}.")
    return torch.optim.AdamW(params, lr=lr, weight_decay=weight_decay, **extra[kind])


# ------------------------------------------------------------------------------------ one step


def train_step(model, optimizer, micro_batches, device, loss_fn: Callable = calc_loss_batch, *,
               options: FastPath | None = None, max_grad_norm: float | None = None) -> torch.Tensor:
    """One optimizer step on a list of ``(input_batch, target_batch)`` micro-batches; returns the mean loss.

    Lecture 02 teaches the three moves: forget the old gradients, compute new ones with backpropagation,
    move every weight against its gradient. With several micro-batches the gradients of all of them
    add up before the step (gradient accumulation), each loss divided by their number, so the step
    follows the mean loss as one large batch would. The loop (:func:`train_loop`) and the benchmarks
    (``python -m benchmarks``) both train with this function.
    """
    optimizer.zero_grad()                                          # forget the previous step's gradients
    total = 0.0
    for i, (input_batch, target_batch) in enumerate(micro_batches):
        with gradient_sync(model, last=i == len(micro_batches) - 1):   # DDP: average once per step
            with autocast(device, options):                        # lower precision, if options ask for it
                loss = loss_fn(input_batch, target_batch, model, device) / len(micro_batches)
            loss.backward()                                        # gradients of the loss for every weight
        total += loss.detach()
    clip_gradients(model, max_grad_norm)                           # only with a max_grad_norm
    optimizer.step()                                               # move every weight against its gradient
    return total


def gradient_sync(model, last: bool):
    """A context for one micro-batch's forward and backward pass: gradient averaging only when ``last``.

    DistributedDataParallel averages the gradients across processes in every backward pass. During
    gradient accumulation only the last micro-batch of a step needs that; the others run under
    ``model.no_sync()`` and just add to the local gradients. For a plain model it does nothing.
    Lecture 02's loop uses it when ``python -m helpers.pretrain`` runs on several processes.
    """
    if last or not isinstance(model, DistributedDataParallel):
        return contextlib.nullcontext()
    return model.no_sync()


def clip_gradients(model, max_norm: float | None) -> torch.Tensor | None:
    """Scale all gradients down together so that their overall (L2) norm is at most ``max_norm``.

    The course's appendix D (lecture 02's extras) clips at 1.0 against rare, huge steps. Returns the
    norm before clipping; ``max_norm=None`` does nothing and returns None. :func:`train_step` clips on
    every step; the course starts clipping only after the warmup, when the learning rate is large
    (during warmup the small learning rate already keeps the steps small), which is a fine alternative.
    """
    if max_norm is None:
        return None
    return torch.nn.utils.clip_grad_norm_(model.parameters(), max_norm)


# ------------------------------------------------------------------------- learning-rate schedule


@dataclass(frozen=True)
class WarmupCosine:
    """The course's learning-rate schedule (appendix D): linear warmup, then cosine decay.

    For the first ``warmup_steps`` steps the rate rises in a straight line from ``initial_lr`` towards
    ``peak_lr``; then it falls along half a cosine wave to ``min_lr`` at ``total_steps``. Calling the
    schedule with a 0-based step gives that step's rate, with the course's formulas. Lecture 02's
    loop takes it as ``train_loop(..., lr_schedule=WarmupCosine(...))`` (off by default, as in the
    course); the course's appendix uses ``initial_lr = peak_lr / 10``, ``min_lr = initial_lr / 10``
    and 20% of the steps for warmup.
    """

    peak_lr: float
    total_steps: int
    warmup_steps: int = 0
    initial_lr: float = 0.0
    min_lr: float = 0.0

    def __post_init__(self):
        if self.total_steps < 1 or not 0 <= self.warmup_steps <= self.total_steps:
            raise ValueError(f"Need total_steps >= 1 and 0 <= warmup_steps <= total_steps, got "
                             f"{self.total_steps} and {self.warmup_steps}.")
        if min(self.peak_lr, self.initial_lr, self.min_lr) < 0:
            raise ValueError("Learning rates cannot be negative.")

    def __call__(self, step: int) -> float:
        if step < self.warmup_steps:
            lr_increment = (self.peak_lr - self.initial_lr) / self.warmup_steps
            return self.initial_lr + step * lr_increment
        progress = min(1.0, (step - self.warmup_steps) / max(1, self.total_steps - self.warmup_steps))
        return self.min_lr + (self.peak_lr - self.min_lr) * 0.5 * (1 + math.cos(math.pi * progress))


def set_learning_rate(optimizer, schedule: Callable[[int], float] | None, step: int) -> float | None:
    """Give every parameter group ``schedule(step)`` as its learning rate; without a schedule do nothing.

    Lecture 02's loop calls it before each step (``step`` counts from 0). Returns the rate set, or None.
    """
    if schedule is None:
        return None
    lr = schedule(step)
    for group in optimizer.param_groups:
        group["lr"] = lr
    return lr


# ------------------------------------------------------------------------------------ evaluation


def evaluate_model(model, train_loader, val_loader, device, eval_iter, loss_fn=calc_loss_loader, *,
                   options: FastPath | None = None):
    """Training and validation loss over ``eval_iter`` batches each, in eval mode without gradients.

    Lecture 02 teaches it. Eval mode switches dropout off, so the estimate is not noisier than it must
    be; the model is given back in the mode it came in. ``options`` adds its autocast. For a model
    wrapped in DistributedDataParallel every process evaluates its share of the ``eval_iter`` batches
    (see :class:`RankShare`) and the processes add up their sums, so they all get the same mean.
    """
    if isinstance(model, DistributedDataParallel):
        return _evaluate_across_ranks(model.module, train_loader, val_loader, device, eval_iter, loss_fn, options)
    with eval_mode(model), autocast(device, options):
        train_loss = loss_fn(train_loader, model, device, num_batches=eval_iter)
        val_loss = loss_fn(val_loader, model, device, num_batches=eval_iter)
    return train_loss, val_loss


class RankShare:
    """The batches ``rank``, ``rank + world``, ``rank + 2 world``, ... of the first ``num_batches`` of a loader.

    The shares of ranks 0 to world - 1 split those batches among the processes without overlap.
    Lecture 02's :func:`evaluate_model` uses it when ``python -m helpers.pretrain`` runs several processes.
    """

    def __init__(self, loader, num_batches: int | None, rank: int, world: int):
        self.loader, self.rank, self.world = loader, rank, world
        self.num_batches = len(loader) if num_batches is None else min(num_batches, len(loader))

    def __len__(self) -> int:
        return len(range(self.rank, self.num_batches, self.world))

    def __iter__(self):
        for index, batch in enumerate(self.loader):
            if index >= self.num_batches:
                break
            if index % self.world == self.rank:
                yield batch


def _evaluate_across_ranks(model, train_loader, val_loader, device, eval_iter, loss_fn, options):
    """Each rank's loss sums over its share, added up over all ranks: the mean over all the shared batches."""
    rank, world = dist.get_rank(), dist.get_world_size()
    sums = []
    with eval_mode(model), autocast(device, options):
        for loader in (train_loader, val_loader):
            share = RankShare(loader, eval_iter, rank, world)
            mean = loss_fn(share, model, device, num_batches=len(share)) if len(share) else 0.0
            sums += [mean * len(share), len(share)]
    totals = torch.tensor(sums, dtype=torch.float64, device=device)
    dist.all_reduce(totals)
    train_sum, train_count, val_sum, val_count = totals.tolist()
    return train_sum / train_count, val_sum / val_count


def report_evaluation(history: History, epoch: int, bar=None, verbose: bool = True, plot=None) -> None:
    """Show the latest evaluation: the course's printed line, the progress bar and the live plot (lecture 02)."""
    train_loss, val_loss = history.train_losses[-1], history.val_losses[-1]
    if bar is not None:
        bar.set_postfix(train=f"{train_loss:.3f}", val=f"{val_loss:.3f}")
    if verbose:
        print(f"Ep {epoch + 1} (Step {history.steps[-1]:06d}): Train loss {train_loss:.3f}, Val loss {val_loss:.3f}")
    if plot is not None:
        plot.update(history)


def count_tokens(input_batch, target_batch) -> int:
    """The default ``count_fn`` of :func:`train_loop` (lecture 02): the number of input tokens in the batch."""
    return input_batch.numel()


def process_count(model) -> int:
    """How many processes train ``model`` together: the DDP world size, else 1 (lecture 02's loop counts tokens with it)."""
    return dist.get_world_size() if isinstance(model, DistributedDataParallel) else 1


def _rank(model) -> int:
    return dist.get_rank() if isinstance(model, DistributedDataParallel) else 0


# ---------------------------------------------------------------------- which batches each step gets


def count_steps(num_batches: int, num_epochs: int, grad_accum: int = 1, max_steps: int | None = None) -> tuple[int, int]:
    """``(steps_per_epoch, total_steps)`` for a loader of ``num_batches`` micro-batches (lecture 02's loop).

    A step takes ``grad_accum`` micro-batches; an incomplete group at the end of an epoch is skipped.
    ``max_steps`` caps the total. Raises a ValueError when not one step fits.
    """
    if num_batches == 0:
        raise ValueError(
            "The training loader has no batches at all, so there is nothing to train on. Usually the batch "
            "size is larger than the training data and the loader drops incomplete batches (drop_last=True): "
            "use a smaller batch_size (or a shorter context), or more data."
        )
    steps_per_epoch = num_batches // grad_accum
    if steps_per_epoch == 0:
        raise ValueError(
            f"No optimizer step fits: {num_batches} micro-batches per epoch (and process), grad_accum "
            f"{grad_accum}. Use a smaller batch, context or grad_accum, or a larger corpus."
        )
    total = steps_per_epoch * num_epochs
    return steps_per_epoch, total if max_steps is None else min(total, max_steps)


class BatchPlan:
    """Which micro-batches each optimizer step trains on, and how far the loop has come.

    Lecture 02's loop asks it for each epoch's steps: ``for micro_batches in plan.steps(epoch)``. It
    reads the loader exactly once per epoch (one ``iter(loader)``, as a plain ``for`` loop does, so the
    random shuffling and dropout match the course's loop), groups ``grad_accum`` micro-batches per step,
    stops after ``total_steps`` and drives the progress bar by hand. It also remembers the random
    number generators' state at the start of the epoch, so that a resumed run can replay the epoch's
    shuffle and skip the batches already trained on (see :func:`save_training_checkpoint`).
    """

    def __init__(self, loader, num_epochs: int, grad_accum: int = 1, max_steps: int | None = None,
                 progress: bool = True):
        self.loader, self.num_epochs, self.grad_accum, self.progress = loader, num_epochs, grad_accum, progress
        self.steps_per_epoch, self.total_steps = count_steps(len(loader), num_epochs, grad_accum, max_steps)
        self.epoch, self.batches_done, self.steps_done = 0, 0, 0
        self.epoch_rng: dict | None = None    # generators' state when this epoch's pass over the loader began
        self._resume_rng: dict | None = None  # their state at the checkpoint, restored once a resumed epoch caught up
        self.bar = None

    def epochs(self) -> range:
        """The epochs still to run."""
        return range(self.epoch, math.ceil(self.total_steps / self.steps_per_epoch))

    @property
    def epoch_progress(self) -> float:
        """Epochs done so far, fractional: 1.5 is halfway through the second epoch."""
        return self.epoch + self.batches_done / len(self.loader)

    def steps(self, epoch: int) -> Iterator[list]:
        """Yield, for each optimizer step of ``epoch``, its list of ``grad_accum`` micro-batches."""
        sampler_epoch = getattr(getattr(self.loader, "sampler", None), "set_epoch", None)
        if sampler_epoch is not None:  # a DistributedSampler shuffles by seed + epoch
            sampler_epoch(epoch)
        catching_up = self._resume_rng is not None
        if catching_up:
            set_rng_state(self.epoch_rng, self.loader)
        else:
            self.epoch, self.batches_done, self.epoch_rng = epoch, 0, rng_state(self.loader)
        self.bar = tqdm(total=len(self.loader), initial=self.batches_done, desc=f"epoch {epoch + 1}/{self.num_epochs}",
                        disable=not self.progress, leave=False)
        try:
            batches = iter(self.loader)
            if catching_up:
                for _ in range(self.batches_done):
                    next(batches)
                set_rng_state(self._resume_rng, self.loader)
                self._resume_rng = None
            group = []
            for batch in batches:
                if self.steps_done >= self.total_steps:
                    break
                group.append(batch)
                self.batches_done += 1
                self.bar.update(1)
                if len(group) == self.grad_accum:
                    self.steps_done += 1
                    yield group
                    group = []
        finally:
            self.bar.close()

    def state(self) -> dict:
        """Where the loop is, as plain data for a checkpoint."""
        return {"epoch": self.epoch, "batches_done": self.batches_done, "steps_done": self.steps_done,
                "grad_accum": self.grad_accum, "steps_per_epoch": self.steps_per_epoch}

    def restore(self, state: dict, epoch_rng: dict, rng: dict) -> None:
        """Continue from ``state`` (see :meth:`state`): the next :meth:`steps` replays the epoch up to there."""
        for key in ("grad_accum", "steps_per_epoch"):
            if state[key] != getattr(self, key):
                raise ValueError(f"The checkpoint was written with {key} {state[key]}, this run has "
                                 f"{getattr(self, key)}: resume with the same loader, batch size and grad_accum.")
        self.epoch, self.batches_done, self.steps_done = state["epoch"], state["batches_done"], state["steps_done"]
        self.epoch_rng, self._resume_rng = epoch_rng, rng


# ------------------------------------------------------------------------- random number generators


def _generators(loader) -> list[torch.Generator]:
    """The loader's own generators (``DataLoader(generator=...)``, a sampler's or batch sampler's), each once."""
    found = []
    for owner in (loader, getattr(loader, "sampler", None), getattr(loader, "batch_sampler", None)):
        generator = getattr(owner, "generator", None)
        if isinstance(generator, torch.Generator) and all(generator is not g for g in found):
            found.append(generator)
    return found


def rng_state(loader=None) -> dict:
    """The state of every random number generator training draws from, as plain data (tensors, lists).

    PyTorch's (CPU and every GPU), Python's, NumPy's, and the loader's own generators. Lecture 02's
    loop stores it in checkpoints so that a resumed run draws the same dropout masks and shuffles.
    """
    version, internal, gauss = random.getstate()
    _, keys, pos, has_gauss, cached = np.random.get_state()
    return {
        "torch": torch.get_rng_state(),
        "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_initialized() else [],  # unused CUDA: nothing drawn
        "mps": torch.mps.get_rng_state() if torch.backends.mps.is_available() else None,
        "python": [version, list(internal), gauss],
        "numpy": [torch.from_numpy(keys.astype(np.int64)), int(pos), int(has_gauss), float(cached)],
        "loader": [g.get_state() for g in _generators(loader)],
    }


def set_rng_state(state: dict, loader=None) -> None:
    """Put every generator back to ``state`` (from :func:`rng_state`; lecture 02's loop resumes with it)."""
    torch.set_rng_state(state["torch"])
    if state["cuda"]:
        torch.cuda.set_rng_state_all(state["cuda"])
    if state["mps"] is not None:
        torch.mps.set_rng_state(state["mps"])
    version, internal, gauss = state["python"]
    random.setstate((version, tuple(internal), gauss))
    keys, pos, has_gauss, cached = state["numpy"]
    np.random.set_state(("MT19937", keys.numpy().astype(np.uint32), pos, has_gauss, cached))
    for generator, saved in zip(_generators(loader), state["loader"], strict=True):
        generator.set_state(saved)


def gather_across_ranks(obj, model) -> list:
    """``obj`` (any picklable value) from every process, in rank order; ``[obj]`` unless ``model`` is DDP.

    Lecture 02's loop gathers the RNG states for checkpoints with it; the pretraining script the
    parameter digests, to check that all processes end with the same weights.
    """
    if not isinstance(model, DistributedDataParallel):
        return [obj]
    gathered = [None] * dist.get_world_size()
    dist.all_gather_object(gathered, obj)
    return gathered


# ------------------------------------------------------------------------------------ checkpoints


def save_training_checkpoint(path: str | Path, model, optimizer, history: History, plan: BatchPlan) -> Path | None:
    """Save all that training needs to continue exactly: weights, optimizer, history, position, RNG states.

    Lecture 02's loop calls it every ``checkpoint_every`` steps. The file is a normal checkpoint
    (``helpers.checkpoints.load_checkpoint`` reads the model from it), written atomically, with the
    history so far, the loop's position (epoch, batches and steps done) and the random generators'
    state now and at the start of the epoch, for every process. Under DDP all processes must call it;
    rank 0 writes the file and returns its path, the others None.
    """
    rng = gather_across_ranks({"now": rng_state(plan.loader), "epoch_start": plan.epoch_rng}, model)
    if _rank(model) != 0:
        return None
    training = {**plan.state(), "world_size": len(rng), "rng": rng}
    return save_checkpoint(path, model, optimizer, history=asdict(history), training=training)


def load_training_checkpoint(path: str | Path, model, optimizer, plan: BatchPlan) -> History:
    """Load a :func:`save_training_checkpoint` file into ``model``, ``optimizer`` and ``plan``; return the history.

    Lecture 02's loop calls it for ``resume_from``. Build the model, optimizer and loaders as for the
    first run (same seed, batch size and ``grad_accum``, same number of processes).
    """
    _, _, meta = load_checkpoint(path, model, optimizer)
    training = meta.get("training")
    if training is None:
        raise ValueError(f"{path} holds a model but no training position: it was not written by train_loop's "
                         f"checkpoint_every, so training cannot resume from it exactly.")
    if training["world_size"] != process_count(model):
        raise ValueError(f"{path} was written by {training['world_size']} process(es); this run has "
                         f"{process_count(model)}. Resume with the same number of processes.")
    rng = training["rng"][_rank(model)]
    plan.restore(training, epoch_rng=rng["epoch_start"], rng=rng["now"])
    return History(**meta["history"])


# ------------------------------------------------------------------------------------ the loop


def _check_settings(eval_freq, eval_iter, grad_accum, max_steps, checkpoint_every, checkpoint_path,
                    num_epochs=1, val_loader=None) -> None:
    if isinstance(num_epochs, bool) or not isinstance(num_epochs, int) or num_epochs < 1:
        raise ValueError(f"num_epochs must be a whole number >= 1, got {num_epochs!r}.")
    if isinstance(val_loader, DataLoader) and len(val_loader) == 0:
        raise ValueError("The validation loader has no batches, so every evaluation would report nan. The "
                         "validation split is probably shorter than one batch (or one context window): use a "
                         "smaller batch_size or context_length, or a larger validation share.")
    if eval_freq < 1 or (eval_iter is not None and eval_iter < 1):
        raise ValueError(f"eval_freq and eval_iter must be at least 1, got {eval_freq} and {eval_iter}.")
    if grad_accum < 1 or (max_steps is not None and max_steps < 1):
        raise ValueError(f"grad_accum and max_steps must be at least 1, got {grad_accum} and {max_steps}.")
    if checkpoint_every is not None and (checkpoint_every < 1 or checkpoint_path is None):
        raise ValueError(f"checkpoint_every must be at least 1 and needs a checkpoint_path, got "
                         f"{checkpoint_every} and {checkpoint_path}.")


def train_loop(
    model, train_loader, val_loader, optimizer, device, num_epochs, eval_freq, eval_iter, *,
    loss_fn: Callable = calc_loss_batch,
    eval_loss_fn: Callable = calc_loss_loader,
    count_fn: Callable | None = count_tokens,
    seen_unit: str = "tokens",
    on_epoch_end: Callable | None = None,
    live_plot: bool = False,
    progress: bool = True,
    verbose: bool = True,
    config: dict | None = None,
    grad_accum: int = 1,
    options: FastPath | None = None,
    lr_schedule: Callable[[int], float] | None = None,
    max_grad_norm: float | None = None,
    max_steps: int | None = None,
    checkpoint_every: int | None = None,
    checkpoint_path: str | Path | None = None,
    resume_from: str | Path | None = None,
) -> History:
    """Train for ``num_epochs``, evaluate every ``eval_freq`` steps, and return the :class:`History`.

    Lecture 02 teaches it. Each step is :func:`train_step`: ``optimizer.zero_grad()``,
    ``loss_fn(input_batch, target_batch, model, device)``, ``loss.backward()``, ``optimizer.step()``.
    Steps are counted from 0 and evaluated when ``step % eval_freq == 0``, as in the course (so the
    first evaluation follows the first step).

    The hooks make the loop reusable:

    - ``loss_fn(input_batch, target_batch, model, device)``: the loss to minimise;
    - ``eval_loss_fn(loader, model, device, num_batches)``: the loss to report at evaluations;
    - ``count_fn(input_batch, target_batch)``: what one batch adds to ``history.tokens_seen``
      (default: its number of tokens; ``seen_unit`` names the unit for plots);
    - ``on_epoch_end(epoch, history)``: runs after each epoch (``epoch`` counts from 0), in eval mode
      without gradients; it may print, generate a sample, or append to ``history.extra``.

    ``live_plot=True`` redraws the loss curves in place in a notebook; ``progress`` shows a tqdm bar;
    ``verbose`` prints each evaluation as the course does; ``config`` is stored in the history. The
    options beyond the course (``grad_accum``, ``options``, ``lr_schedule``, ``max_grad_norm``,
    ``max_steps``, ``checkpoint_every``/``checkpoint_path``, ``resume_from``, DDP) are described in the
    module's docstring; all are off by default.

    Lecture 04's ``helpers.classifier.train_classifier_simple`` is such a wrapper: it passes the
    last-token losses, counts examples instead of tokens and records the accuracies after each epoch
    in ``history.extra`` (read its source for the dozen lines).
    """
    _check_settings(eval_freq, eval_iter, grad_accum, max_steps, checkpoint_every, checkpoint_path,
                    num_epochs, val_loader)
    count_fn = count_fn or count_tokens
    plan = BatchPlan(train_loader, num_epochs, grad_accum, max_steps, progress)
    history = History(config=dict(config or {}), seen_unit=seen_unit)
    if resume_from is not None:
        history = load_training_checkpoint(resume_from, model, optimizer, plan)
    plot = LiveLossPlot() if live_plot else None
    ranks, start = process_count(model), time.perf_counter()
    with precision(options):                                       # TF32 only inside the loop, if asked for
        for epoch in plan.epochs():
            model.train()                                          # dropout on while training
            for micro_batches in plan.steps(epoch):                # grad_accum (input, target) batches
                global_step = history.total_steps                  # counted from 0, as in the course
                set_learning_rate(optimizer, lr_schedule, global_step)    # only with a schedule
                train_step(model, optimizer, micro_batches, device, loss_fn, options=options,
                           max_grad_norm=max_grad_norm)
                history.total_steps += 1
                history.total_seen += ranks * sum(count_fn(x, y) for x, y in micro_batches)
                if global_step % eval_freq == 0:
                    train_loss, val_loss = evaluate_model(model, train_loader, val_loader, device, eval_iter,
                                                          eval_loss_fn, options=options)
                    history.record(train_loss, val_loss, step=global_step, epoch=plan.epoch_progress)
                    report_evaluation(history, epoch, plan.bar, verbose, plot)
                if checkpoint_every and history.total_steps % checkpoint_every == 0:
                    save_training_checkpoint(checkpoint_path, model, optimizer, history, plan)
            if on_epoch_end is not None:
                with eval_mode(model):
                    on_epoch_end(epoch, history)
    history.wall_time += time.perf_counter() - start
    return history


def train_model_simple(model, train_loader, val_loader, optimizer, device, num_epochs, eval_freq, eval_iter,
                       start_context, tokenizer, **kwargs) -> History:
    """The course's pretraining loop (lecture 02): :func:`train_loop` plus a greedy sample after every epoch.

    The samples (from ``start_context``, 50 new tokens) are printed and kept in ``history.samples``.
    Extra keyword arguments (``live_plot``, ``progress``, ``verbose``, ``config``, ``grad_accum``,
    ``options``, ...) go to ``train_loop``.
    """
    quiet = not kwargs.get("verbose", True)

    def sample(epoch, history):
        history.samples.append(generate_and_print_sample(model, tokenizer, device, start_context, quiet=quiet))

    return train_loop(model, train_loader, val_loader, optimizer, device, num_epochs, eval_freq, eval_iter,
                      on_epoch_end=sample, **kwargs)

"""The training loop of the lectures, and the record it keeps.

``train_model_simple`` is the course's pretraining loop. It is a thin wrapper around ``train_loop``,
which the classification lecture reuses with another loss and another counter (examples instead of
tokens)::

    history = train_loop(model, train_loader, val_loader, optimizer, device, num_epochs, eval_freq,
                         eval_iter, loss_fn=..., eval_loss_fn=..., count_fn=lambda x, y: x.shape[0],
                         seen_unit="examples", on_epoch_end=record_accuracy)

Every ``eval_freq`` optimizer steps the loop estimates the training and validation loss on
``eval_iter`` batches and records them in a :class:`History`, together with the tokens seen, the
step and the (fractional) epoch. The history unpacks like the course's three return values::

    train_losses, val_losses, tokens_seen = train_model_simple(...)
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path

from tqdm.auto import tqdm

from .generation import eval_mode, generate_and_print_sample
from .losses import calc_loss_batch, calc_loss_loader


@dataclass
class History:
    """What happened during training: one entry per evaluation, plus per-epoch extras."""

    train_losses: list[float] = field(default_factory=list)
    val_losses: list[float] = field(default_factory=list)
    tokens_seen: list[int] = field(default_factory=list)  # or examples, see seen_unit
    steps: list[int] = field(default_factory=list)
    epochs: list[float] = field(default_factory=list)     # fractional epoch at each evaluation
    samples: list[str] = field(default_factory=list)      # text generated after each epoch
    extra: dict[str, list] = field(default_factory=dict)  # per-epoch metrics, e.g. "train_acc"
    wall_time: float = 0.0                                # seconds
    config: dict = field(default_factory=dict)            # hyperparameters, for comparing runs
    seen_unit: str = "tokens"

    def __iter__(self):
        """Unpack like the course's return value: ``train_losses, val_losses, tokens_seen``."""
        return iter((self.train_losses, self.val_losses, self.tokens_seen))

    def to_json(self, path: str | Path) -> Path:
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(path.name + ".part")
        tmp.write_text(json.dumps(asdict(self), indent=1, default=str))
        os.replace(tmp, path)
        return path

    @classmethod
    def from_json(cls, path: str | Path) -> History:
        return cls(**json.loads(Path(path).read_text()))


def evaluate_model(model, train_loader, val_loader, device, eval_iter, loss_fn=calc_loss_loader):
    """Training and validation loss over ``eval_iter`` batches each, in eval mode without gradients."""
    with eval_mode(model):
        train_loss = loss_fn(train_loader, model, device, num_batches=eval_iter)
        val_loss = loss_fn(val_loader, model, device, num_batches=eval_iter)
    return train_loss, val_loss


def train_loop(
    model, train_loader, val_loader, optimizer, device, num_epochs, eval_freq, eval_iter, *,
    loss_fn: Callable = calc_loss_batch,
    eval_loss_fn: Callable = calc_loss_loader,
    count_fn: Callable | None = None,
    seen_unit: str = "tokens",
    on_epoch_end: Callable | None = None,
    live_plot: bool = False,
    progress: bool = True,
    verbose: bool = True,
    config: dict | None = None,
) -> History:
    """Train for ``num_epochs``; evaluate every ``eval_freq`` steps; return the :class:`History`.

    ``loss_fn(input_batch, target_batch, model, device)`` gives the loss to minimise;
    ``eval_loss_fn(loader, model, device, num_batches)`` the loss to report; ``count_fn(input_batch,
    target_batch)`` how much one batch adds to ``history.tokens_seen`` (default: its number of tokens);
    ``on_epoch_end(epoch, history)`` runs after each epoch (to generate a sample, measure accuracy...).
    """
    count_fn = count_fn or (lambda input_batch, target_batch: input_batch.numel())
    history = History(config=dict(config or {}), seen_unit=seen_unit)
    plot = None
    if live_plot:
        from .plotting import LiveLossPlot

        plot = LiveLossPlot()
    seen, global_step, start = 0, -1, time.perf_counter()
    steps_per_epoch = len(train_loader)
    for epoch in range(num_epochs):
        model.train()
        batches = tqdm(train_loader, desc=f"epoch {epoch + 1}/{num_epochs}", disable=not progress, leave=False)
        for batch_index, (input_batch, target_batch) in enumerate(batches):
            optimizer.zero_grad()                                  # forget the previous step's gradients
            loss = loss_fn(input_batch, target_batch, model, device)
            loss.backward()                                        # gradients of the loss for every weight
            optimizer.step()                                       # move every weight against its gradient
            seen += count_fn(input_batch, target_batch)
            global_step += 1
            if global_step % eval_freq == 0:
                train_loss, val_loss = evaluate_model(model, train_loader, val_loader, device, eval_iter, eval_loss_fn)
                history.train_losses.append(train_loss)
                history.val_losses.append(val_loss)
                history.tokens_seen.append(seen)
                history.steps.append(global_step)
                history.epochs.append(epoch + (batch_index + 1) / steps_per_epoch)
                batches.set_postfix(train=f"{train_loss:.3f}", val=f"{val_loss:.3f}")
                if verbose:
                    print(f"Ep {epoch + 1} (Step {global_step:06d}): Train loss {train_loss:.3f}, Val loss {val_loss:.3f}")
                if plot is not None:
                    plot.update(history)
        if on_epoch_end is not None:
            on_epoch_end(epoch, history)
    history.wall_time = time.perf_counter() - start
    if plot is not None:
        plot.close()
    return history


def train_model_simple(model, train_loader, val_loader, optimizer, device, num_epochs, eval_freq, eval_iter,
                       start_context, tokenizer, **kwargs) -> History:
    """The course's pretraining loop: ``train_loop`` plus a generated sample after every epoch.

    Extra keyword arguments (``live_plot``, ``progress``, ``verbose``, ``config``) go to ``train_loop``.
    """
    quiet = not kwargs.get("verbose", True)

    def sample(epoch, history):
        history.samples.append(generate_and_print_sample(model, tokenizer, device, start_context, quiet=quiet))

    return train_loop(model, train_loader, val_loader, optimizer, device, num_epochs, eval_freq, eval_iter,
                      on_epoch_end=sample, **kwargs)

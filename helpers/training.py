"""The training loop of the lectures, and the record it keeps.

``train_model_simple`` is the course's pretraining loop. It is a thin wrapper around :func:`train_loop`,
the generic loop that every lecture which trains something reuses.

Every ``eval_freq`` optimizer steps the loop estimates the training and validation loss on ``eval_iter``
batches and records them in a :class:`History`, together with the tokens seen, the step and the
(fractional) epoch. The history unpacks like the course's three return values::

    train_losses, val_losses, tokens_seen = train_model_simple(...)

and saves to JSON (``history.to_json(path)``, ``History.from_json(path)``) so runs can be compared later
(see ``helpers.checkpoints.save_run`` and ``helpers.plotting.plot_runs``).
"""

from __future__ import annotations

import time
from collections.abc import Callable

from tqdm.auto import tqdm

from .generation import generate_and_print_sample
from .history import History
from .losses import calc_loss_batch, calc_loss_loader
from .model import eval_mode
from .plotting import LiveLossPlot


def evaluate_model(model, train_loader, val_loader, device, eval_iter, loss_fn=calc_loss_loader):
    """Training and validation loss over ``eval_iter`` batches each, in eval mode without gradients.

    Eval mode switches dropout off, so the estimate is not noisier than it must be; the model is given
    back in the mode it came in.
    """
    with eval_mode(model):
        train_loss = loss_fn(train_loader, model, device, num_batches=eval_iter)
        val_loss = loss_fn(val_loader, model, device, num_batches=eval_iter)
    return train_loss, val_loss


def count_tokens(input_batch, target_batch) -> int:
    """The default ``count_fn`` of :func:`train_loop`: the number of input tokens in the batch."""
    return input_batch.numel()


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
) -> History:
    """Train for ``num_epochs``, evaluate every ``eval_freq`` steps, and return the :class:`History`.

    Each step: ``optimizer.zero_grad()``, ``loss_fn(input_batch, target_batch, model, device)``,
    ``loss.backward()``, ``optimizer.step()``. Steps are counted from 0 and evaluated when
    ``step % eval_freq == 0``, as in the course (so the first evaluation follows the first step).

    The hooks make the loop reusable:

    - ``loss_fn(input_batch, target_batch, model, device)``: the loss to minimise;
    - ``eval_loss_fn(loader, model, device, num_batches)``: the loss to report at evaluations;
    - ``count_fn(input_batch, target_batch)``: what one batch adds to ``history.tokens_seen``
      (default: its number of tokens; ``seen_unit`` names the unit for plots);
    - ``on_epoch_end(epoch, history)``: runs after each epoch (``epoch`` counts from 0), in eval mode
      without gradients; it may print, generate a sample, or append to ``history.extra``.

    ``live_plot=True`` redraws the loss curves in place in a notebook; ``progress`` shows a tqdm bar;
    ``verbose`` prints each evaluation as the course does; ``config`` is stored in the history.

    The classification lecture's ``train_classifier_simple`` is such a wrapper: it counts examples
    instead of tokens and records the accuracies after each epoch (``calc_loss_batch`` and
    ``calc_loss_loader`` there are the last-token versions, ``calc_accuracy_loader`` its accuracy)::

        def train_classifier_simple(model, train_loader, val_loader, optimizer, device, num_epochs,
                                    eval_freq, eval_iter, **kwargs):
            def record_accuracy(epoch, history):
                for split, loader in (("train", train_loader), ("val", val_loader)):
                    accuracy = calc_accuracy_loader(loader, model, device, num_batches=eval_iter)
                    history.extra.setdefault(f"{split}_acc", []).append(accuracy)
                print(f"Training accuracy: {history.extra['train_acc'][-1] * 100:.2f}% | "
                      f"Validation accuracy: {history.extra['val_acc'][-1] * 100:.2f}%")

            return train_loop(model, train_loader, val_loader, optimizer, device, num_epochs,
                              eval_freq, eval_iter, loss_fn=calc_loss_batch,
                              eval_loss_fn=calc_loss_loader, count_fn=lambda x, y: x.shape[0],
                              seen_unit="examples", on_epoch_end=record_accuracy, **kwargs)

    and its history gives the course's five return values: ``history.train_losses``,
    ``history.val_losses``, ``history.extra["train_acc"]``, ``history.extra["val_acc"]`` and
    ``history.total_seen``.
    """
    if eval_freq < 1 or (eval_iter is not None and eval_iter < 1):
        raise ValueError(f"eval_freq and eval_iter must be at least 1, got {eval_freq} and {eval_iter}.")
    count_fn = count_fn or count_tokens
    history = History(config=dict(config or {}), seen_unit=seen_unit)
    plot = None
    if live_plot:
        plot = LiveLossPlot()
    seen, global_step, start = 0, -1, time.perf_counter()
    steps_per_epoch = len(train_loader)
    for epoch in range(num_epochs):
        model.train()                                              # dropout on while training
        batches = tqdm(train_loader, desc=f"epoch {epoch + 1}/{num_epochs}", disable=not progress, leave=False)
        for batch_index, (input_batch, target_batch) in enumerate(batches):
            optimizer.zero_grad()                                  # forget the previous step's gradients
            loss = loss_fn(input_batch, target_batch, model, device)
            loss.backward()                                        # gradients of the loss for every weight
            optimizer.step()                                       # move every weight against its gradient
            seen += count_fn(input_batch, target_batch)
            global_step += 1
            history.total_seen, history.total_steps = seen, global_step + 1
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
            with eval_mode(model):
                on_epoch_end(epoch, history)
    history.wall_time = time.perf_counter() - start
    return history


def train_model_simple(model, train_loader, val_loader, optimizer, device, num_epochs, eval_freq, eval_iter,
                       start_context, tokenizer, **kwargs) -> History:
    """The course's pretraining loop: :func:`train_loop` plus a greedy sample after every epoch.

    The samples (from ``start_context``, 50 new tokens) are printed and kept in ``history.samples``.
    Extra keyword arguments (``live_plot``, ``progress``, ``verbose``, ``config``) go to ``train_loop``.
    """
    quiet = not kwargs.get("verbose", True)

    def sample(epoch, history):
        history.samples.append(generate_and_print_sample(model, tokenizer, device, start_context, quiet=quiet))

    return train_loop(model, train_loader, val_loader, optimizer, device, num_epochs, eval_freq, eval_iter,
                      on_epoch_end=sample, **kwargs)

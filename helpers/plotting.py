"""Figures of training runs. Every function returns its matplotlib Figure (to show, save or change).

In a notebook a returned Figure shows when it is the cell's last value (or is passed to ``display``).
The figures are made with pyplot, so that Jupyter's inline backend knows how to draw them, and closed in
pyplot right away: they are not drawn a second time at the end of the cell, and scripts do not pile up
open figures.
"""

from __future__ import annotations

from collections.abc import Sequence

import matplotlib.pyplot as plt
import numpy as np
import torch
from matplotlib.figure import Figure
from matplotlib.ticker import MaxNLocator

from .checkpoints import list_runs, load_run
from .generation import apply_temperature_and_top_k


def new_figure(figsize=(6, 3.5)) -> Figure:
    """A pyplot figure (so Jupyter's inline backend renders it) that pyplot no longer tracks.

    Used by the plots of lectures 02-06.
    """
    fig = plt.figure(figsize=figsize, layout="constrained")
    plt.close(fig)
    return fig


def _history_like(obj):
    """A ``History`` as is; a string as the name of a saved run."""
    if isinstance(obj, str):
        return load_run(obj)
    return obj


def _as_list(values) -> list[float]:
    return [] if values is None else np.asarray(values, dtype=float).ravel().tolist()


def _linear_fit(x: list[float], y: list[float]) -> tuple[float, float] | None:
    """``(slope, offset)`` of the line through the points (through the origin for one point), or None."""
    if len(x) == 0 or len(x) != len(y):
        return None
    if len(set(x)) < 2:
        return (y[0] / x[0], 0.0) if x[0] > 0 and y[0] > 0 else None
    slope, offset = np.polyfit(x, y, 1)
    return (float(slope), float(offset)) if slope > 0 else None


def plot_values(epochs_seen, examples_seen, train_values, val_values, label="loss", seen_unit="tokens",
                title=None, ax=None) -> Figure:
    """Training and validation ``label`` against epochs, with a second x-axis of tokens (or examples) seen.

    The course's function for both lectures: losses in pretraining, and ``label="accuracy"`` with
    ``seen_unit="examples"`` in classification. The arguments may be lists, arrays or tensors;
    ``examples_seen`` may be None (then there is no second axis). ``ax`` draws into an existing axes.
    """
    epochs, seen = _as_list(epochs_seen), _as_list(examples_seen)
    if ax is None:
        fig = new_figure((6, 3.5))
        ax = fig.add_subplot()
    else:
        fig = ax.figure
    ax.plot(epochs, _as_list(train_values), label=f"Training {label}")
    ax.plot(epochs, _as_list(val_values), linestyle="-.", label=f"Validation {label}")
    ax.set_xlabel("Epochs")
    ax.set_ylabel(label.capitalize())
    ax.legend(loc="best")
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    scale = _linear_fit(epochs, seen)
    if scale is not None:
        # The second axis converts epochs into tokens (or examples) seen: a straight line, because every
        # step sees a batch of the same size.
        slope, offset = scale
        top = ax.secondary_xaxis("top", functions=(lambda x: slope * np.asarray(x) + offset,
                                                   lambda x: (np.asarray(x) - offset) / slope))
        top.set_xlabel(f"{seen_unit.capitalize()} seen")
    if title:
        ax.set_title(title)
    return fig


def plot_losses(epochs_seen, tokens_seen=None, train_losses=None, val_losses=None) -> Figure:
    """The course's loss plot. Pass the four lists, or one ``History`` (or a saved run's name).

    Lecture 02 (and 05).
    """
    if train_losses is None:
        history = _history_like(epochs_seen)
        return plot_values(history.epochs, history.tokens_seen, history.train_losses, history.val_losses,
                           seen_unit=history.seen_unit)
    return plot_values(epochs_seen, tokens_seen, train_losses, val_losses)


def plot_runs(runs: Sequence | str | None = None, labels: Sequence[str] | None = None, metric: str = "loss",
              match: str | None = None) -> Figure:
    """Overlay several runs: training solid, validation dashed. Lecture 02 compares runs with it.

    ``runs`` are ``History`` objects or saved run names; or leave them out and pass ``match``, a pattern
    over saved run names (``match="lecture02-quick*"``; see ``helpers.checkpoints.list_runs``).
    ``metric="loss"`` plots the evaluations' losses against tokens seen, so runs of different lengths
    line up; another name plots that per-epoch extra (e.g. ``"val_acc"``) against epochs.
    """
    if isinstance(runs, str):
        runs = [runs]
    if match is not None:
        runs = [*(runs or []), *list_runs(match)]
    if not runs:
        raise ValueError("No runs to plot: pass runs (History objects or saved run names) or a match pattern "
                         f"that names saved runs (saved: {', '.join(list_runs()) or 'none yet'}).")
    histories = [_history_like(r) for r in runs]
    if labels is None:
        labels = [r if isinstance(r, str) else f"run {i + 1}" for i, r in enumerate(runs)]
    if len(labels) != len(histories):
        raise ValueError(f"Got {len(histories)} runs but {len(labels)} labels.")
    fig = new_figure((7, 4))
    ax = fig.add_subplot()
    for i, (history, label) in enumerate(zip(histories, labels, strict=True)):
        color = f"C{i % 10}"
        if metric == "loss":
            ax.plot(history.tokens_seen, history.train_losses, color=color, label=f"{label} (train)")
            ax.plot(history.tokens_seen, history.val_losses, color=color, linestyle="--", label=f"{label} (val)")
            ax.set_xlabel(f"{history.seen_unit.capitalize()} seen")
        else:
            if metric not in history.extra:
                raise KeyError(f"Run {label!r} has no {metric!r}; it has {sorted(history.extra) or 'no extras'}.")
            values = history.extra[metric]
            ax.plot(range(1, len(values) + 1), values, color=color, marker="o", label=label)
            ax.set_xlabel("Epoch")
            ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.set_ylabel(metric)
    ax.legend(fontsize="small")
    ax.set_title("Runs compared: solid = training, dashed = validation" if metric == "loss" else metric)
    return fig


def plot_token_probabilities(logits, tokenizer, settings=((0.1, None), (1.0, None), (5.0, None), (1.0, 3)),
                             top: int = 8) -> Figure:
    """What temperature and top-k do to a next-token distribution: one bar chart per setting.

    Lecture 02 (decoding strategies).

    ``logits`` are the model's scores for the next token (shape (vocab,) or (1, vocab)); each entry of
    ``settings`` is ``(temperature, top_k)``, passed to ``helpers.generation.apply_temperature_and_top_k``.
    The bars show the probability of the ``top`` most likely tokens (by the raw logits) and, in grey,
    the probability left for all the other tokens of the vocabulary together.
    """
    logits = torch.as_tensor(logits).detach().float().cpu().reshape(1, -1)
    ids = torch.topk(logits[0], min(top, logits.shape[-1])).indices
    words = [repr(tokenizer.decode([int(i)])) for i in ids] + [f"other {logits.shape[-1] - len(ids):,}"]
    fig = new_figure((2.6 * len(settings), 3.2))
    axes = fig.subplots(1, len(settings), sharey=True, squeeze=False)[0]
    for ax, (temperature, top_k) in zip(axes, settings, strict=True):
        probs = apply_temperature_and_top_k(logits, temperature, top_k)[0]
        shown = probs[ids].tolist()
        ax.bar(range(len(ids) + 1), [*shown, max(0.0, 1.0 - sum(shown))], color=["C0"] * len(ids) + ["0.6"])
        ax.set_xticks(range(len(ids) + 1), words, rotation=60, fontsize=8)
        ax.set_title(f"temperature {temperature:g}" + (f", top-k {top_k}" if top_k else ""), fontsize=10)
    axes[0].set_ylabel("probability")
    return fig


class LiveLossPlot:
    """One loss figure that is redrawn in place in a notebook while training runs.

    Lectures 02-06, through ``train_loop(live_plot=True)``.

    ``train_loop(..., live_plot=True)`` calls :meth:`update` after every evaluation. The figure is shown
    (once) at the first update and replaced in the same output area afterwards. Outside a Jupyter
    kernel it does nothing, so scripts can leave it switched on.
    """

    def __init__(self, title: str = "training (live)"):
        self.title = title
        self.fig: Figure | None = None
        self.handle = None
        self.active = _in_notebook()

    def update(self, history) -> Figure | None:
        """Redraw from ``history``; returns the figure (None outside a notebook or before any evaluation)."""
        if not self.active or not history.epochs:
            return None
        from IPython.display import display

        if self.fig is None:
            self.fig = new_figure((6, 3.5))
        self.fig.clear()
        plot_values(history.epochs, history.tokens_seen, history.train_losses, history.val_losses,
                    seen_unit=history.seen_unit, title=self.title, ax=self.fig.add_subplot())
        if self.handle is None:
            self.handle = display(self.fig, display_id=True)
        else:
            self.handle.update(self.fig)
        return self.fig


def _in_notebook() -> bool:
    """True inside a Jupyter kernel (where ``display`` draws figures), False in scripts and terminals."""
    try:
        from IPython import get_ipython
    except ImportError:  # pragma: no cover - IPython comes with jupyter
        return False
    shell = get_ipython()
    return shell is not None and getattr(shell, "kernel", None) is not None

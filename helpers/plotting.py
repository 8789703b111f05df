"""Figures of training runs. Every function returns its matplotlib Figure (to show, save or change).

In a notebook a returned Figure shows when it is the cell's last value (or is passed to ``display``).
The figures are closed in pyplot right after they are made, so they are not drawn a second time at
the end of the cell, and scripts do not pile up open figures.
"""

from __future__ import annotations

from collections.abc import Sequence

import matplotlib.pyplot as plt
from matplotlib.figure import Figure
from matplotlib.ticker import MaxNLocator


def new_figure(figsize=(6, 3.5)) -> Figure:
    """A pyplot figure (so Jupyter's inline backend renders it) that pyplot no longer tracks."""
    fig = plt.figure(figsize=figsize, layout="constrained")
    plt.close(fig)
    return fig


def _history_like(obj):
    if isinstance(obj, str):
        from .checkpoints import load_run

        return load_run(obj)
    return obj


def plot_values(epochs_seen, examples_seen, train_values, val_values, label="loss", seen_unit="tokens",
                title=None, ax=None) -> Figure:
    """Training and validation ``label`` against epochs, with a second x-axis of tokens (or examples) seen."""
    if ax is None:
        fig = new_figure((6, 3.5))
        ax = fig.add_subplot()
    else:
        fig = ax.figure
    ax.plot(epochs_seen, train_values, label=f"Training {label}")
    ax.plot(epochs_seen, val_values, linestyle="-.", label=f"Validation {label}")
    ax.set_xlabel("Epochs")
    ax.set_ylabel(label.capitalize())
    ax.legend(loc="best")
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    if len(epochs_seen) and len(examples_seen):
        # A second x-axis with the matching count: tokens (or examples) seen = f(epoch), monotone.
        def forward(x):
            import numpy as np

            return np.interp(x, epochs_seen, examples_seen)

        def inverse(x):
            import numpy as np

            return np.interp(x, examples_seen, epochs_seen)

        top = ax.secondary_xaxis("top", functions=(forward, inverse))
        top.set_xlabel(f"{seen_unit.capitalize()} seen")
    if title:
        ax.set_title(title)
    return fig


def plot_losses(epochs_seen, tokens_seen=None, train_losses=None, val_losses=None) -> Figure:
    """The course's loss plot. Pass the four lists, or one ``History`` (or a saved run's name)."""
    if train_losses is None:
        history = _history_like(epochs_seen)
        return plot_values(history.epochs, history.tokens_seen, history.train_losses, history.val_losses,
                           seen_unit=history.seen_unit)
    return plot_values(epochs_seen, tokens_seen, train_losses, val_losses)


def plot_runs(runs: Sequence, labels: Sequence[str] | None = None, metric: str = "loss") -> Figure:
    """Overlay several runs (``History`` objects or saved run names): training solid, validation dashed.

    ``metric="loss"`` plots the evaluations' losses against tokens seen; another name plots that
    per-epoch extra (e.g. ``"val_acc"``) against epochs.
    """
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
    ax.set_ylabel(metric)
    ax.legend(fontsize="small")
    ax.set_title("Runs compared: solid = training, dashed = validation" if metric == "loss" else metric)
    return fig


class LiveLossPlot:
    """A loss figure that redraws in place in a notebook while training runs (``train_loop(live_plot=True)``).

    Outside IPython it does nothing, so scripts can leave it switched on.
    """

    def __init__(self):
        try:
            from IPython import get_ipython
            from IPython.display import display
        except ImportError:  # pragma: no cover - IPython is a requirement of jupyterlab
            get_ipython = None
        self.handle = None
        if get_ipython is not None and get_ipython() is not None:
            self.handle = display(new_figure((1, 1)), display_id=True)

    def update(self, history) -> Figure | None:
        if self.handle is None or not history.epochs:
            return None
        fig = plot_values(history.epochs, history.tokens_seen, history.train_losses, history.val_losses,
                          seen_unit=history.seen_unit, title="training live")
        self.handle.update(fig)
        return fig

    def close(self) -> None:
        self.handle = None

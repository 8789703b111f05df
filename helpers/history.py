"""The record of a training run: losses at each evaluation, tokens seen, samples and metrics.

Lecture 02 introduces it (``train_model_simple`` returns one); lectures 04-06 reuse it. A ``History``
unpacks like the course's three return values::

    train_losses, val_losses, tokens_seen = train_model_simple(...)

and is saved as JSON (:meth:`History.to_json`, :meth:`History.from_json`), so runs can be compared later
(``helpers.checkpoints.save_run``, ``helpers.plotting.plot_runs``).
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path

from .files import atomic_write_json


@dataclass
class History:
    """What happened during training: one entry per evaluation, plus per-epoch extras.

    ``train_losses``, ``val_losses``, ``tokens_seen``, ``steps`` and ``epochs`` have one entry per
    evaluation (``epochs`` is fractional: 1.5 is halfway through the second epoch). ``samples`` holds
    the text generated after each epoch, ``extra`` per-epoch lists of other metrics (for example
    ``"train_acc"``). ``total_seen`` and ``total_steps`` count everything so far, also after the
    last evaluation. ``seen_unit`` says what ``tokens_seen`` counts: ``"tokens"`` or ``"examples"``.
    Lecture 02's ``train_loop`` fills it in; lectures 04-06 compare runs with it.
    """

    train_losses: list[float] = field(default_factory=list)
    val_losses: list[float] = field(default_factory=list)
    tokens_seen: list[int] = field(default_factory=list)  # or examples, see seen_unit
    steps: list[int] = field(default_factory=list)        # global step (0-based) of each evaluation
    epochs: list[float] = field(default_factory=list)     # fractional epoch at each evaluation
    samples: list[str] = field(default_factory=list)      # text generated after each epoch
    extra: dict[str, list] = field(default_factory=dict)  # per-epoch metrics, e.g. "train_acc"
    wall_time: float = 0.0                                # seconds
    config: dict = field(default_factory=dict)            # hyperparameters, for comparing runs
    seen_unit: str = "tokens"
    total_seen: int = 0                                   # tokens (or examples) after the last step
    total_steps: int = 0                                  # optimizer steps taken

    def record(self, train_loss: float, val_loss: float, step: int, epoch: float) -> None:
        """Append one evaluation: the two losses, the tokens seen so far, the step and the fractional epoch."""
        self.train_losses.append(train_loss)
        self.val_losses.append(val_loss)
        self.tokens_seen.append(self.total_seen)
        self.steps.append(step)
        self.epochs.append(epoch)

    def __iter__(self):
        """Unpack like the course's return value: ``train_losses, val_losses, tokens_seen``."""
        return iter((self.train_losses, self.val_losses, self.tokens_seen))

    def to_json(self, path: str | Path) -> Path:
        """Write the history as JSON, atomically (see :mod:`helpers.files`). Returns the path."""
        return atomic_write_json(path, asdict(self))

    @classmethod
    def from_json(cls, path: str | Path) -> History:
        """Read a history written by :meth:`to_json`."""
        path = Path(path)
        data = json.loads(path.read_text())
        known = {f.name for f in fields(cls)}
        if not isinstance(data, dict) or not {"train_losses", "val_losses", "tokens_seen"} <= set(data):
            raise ValueError(f"{path} is not a training history (expected the JSON that History.to_json writes).")
        unknown = set(data) - known
        if unknown:
            raise ValueError(f"{path} has fields this History does not know: {sorted(unknown)}. "
                             f"Was it written by a newer version of the helpers?")
        return cls(**data)

"""Saving and loading models, optimizers and whole training runs.

A checkpoint is one file holding one dict::

    {"format": "llm-lectures-checkpoint/1", "cfg": <the model's config>, "model_state": ...,
     "optimizer_state": ... or None, "meta": {...}}

It is written atomically (to ``path.part``, then renamed), so a crash mid-save never leaves a broken
file behind, and read with ``torch.load(weights_only=True)``, which refuses to run code from the file.

A *run* is a folder under ``LECTURES_CACHE/runs/<name>/`` with ``history.json`` and, optionally,
``checkpoint.pt``: reload and compare runs later with :func:`list_runs` and :func:`load_run`.
"""

from __future__ import annotations

import os
import re
from pathlib import Path

import torch

from . import runtime
from .model import GPTModel

FORMAT = "llm-lectures-checkpoint/1"


def atomic_torch_save(obj, path: str | Path) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".part")
    torch.save(obj, tmp)
    os.replace(tmp, path)
    return path


def save_checkpoint(path: str | Path, model: torch.nn.Module, optimizer: torch.optim.Optimizer | None = None,
                    **meta) -> Path:
    """Save model (and optimizer) state with the model's config, so it can be rebuilt from the file alone."""
    cfg = getattr(model, "cfg", None)
    return atomic_torch_save(
        {"format": FORMAT, "cfg": dict(cfg) if cfg is not None else None, "model_state": model.state_dict(),
         "optimizer_state": optimizer.state_dict() if optimizer is not None else None, "meta": meta},
        path,
    )


def read_checkpoint(path: str | Path, map_location="cpu") -> dict:
    """The checkpoint dict, checked to be one of ours."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"No checkpoint at {path}.")
    try:
        ckpt = torch.load(path, map_location=map_location, weights_only=True)
    except Exception as err:
        raise ValueError(f"{path} could not be read as a checkpoint ({err}). Is it truncated or another format?") from err
    if not isinstance(ckpt, dict) or ckpt.get("format") != FORMAT:
        raise ValueError(
            f"{path} is not a checkpoint written by helpers.checkpoints.save_checkpoint "
            f"(expected a dict with format {FORMAT!r})."
        )
    return ckpt


def load_checkpoint(path: str | Path, model: torch.nn.Module | None = None,
                    optimizer: torch.optim.Optimizer | None = None, map_location="cpu"):
    """Restore a checkpoint. Returns ``(model, optimizer, meta)``.

    Without ``model``, a ``GPTModel`` is built from the saved config. The optimizer state is restored
    only when an ``optimizer`` is passed (training can then resume exactly where it stopped).
    """
    ckpt = read_checkpoint(path, map_location)
    if model is None:
        if ckpt["cfg"] is None:
            raise ValueError(f"{path} holds no model config; pass the model to load it into.")
        model = GPTModel(ckpt["cfg"])
    model.load_state_dict(ckpt["model_state"])
    if optimizer is not None:
        if ckpt["optimizer_state"] is None:
            raise ValueError(f"{path} holds no optimizer state.")
        optimizer.load_state_dict(ckpt["optimizer_state"])
    return model, optimizer, ckpt["meta"]


def pretrained_checkpoint_path(profile: str | None = None) -> Path:
    """Where lecture 02 saves its trained model (read by lectures 03-06 when GPT-2 cannot be downloaded)."""
    return runtime.cache_dir() / "checkpoints" / f"02_pretraining_{runtime.profile(profile)}.pt"


# ------------------------------------------------------------------------------------------ runs


def runs_dir() -> Path:
    return runtime.cache_dir() / "runs"


def _run_folder(name: str) -> Path:
    if not re.fullmatch(r"[A-Za-z0-9_.=+-]+", name):
        raise ValueError(f"Run names may use letters, digits and _ . = + - only; got {name!r}.")
    return runs_dir() / name


def save_run(name: str, history, model: torch.nn.Module | None = None,
             optimizer: torch.optim.Optimizer | None = None) -> Path:
    """Save a run's history (and optionally its model and optimizer) under ``runs/<name>/``."""
    folder = _run_folder(name)
    folder.mkdir(parents=True, exist_ok=True)
    history.to_json(folder / "history.json")
    if model is not None:
        save_checkpoint(folder / "checkpoint.pt", model, optimizer, run=name)
    return folder


def list_runs() -> list[str]:
    """Names of the saved runs, oldest first."""
    if not runs_dir().is_dir():
        return []
    runs = [p for p in runs_dir().iterdir() if (p / "history.json").is_file()]
    return [p.name for p in sorted(runs, key=lambda p: (p / "history.json").stat().st_mtime)]


def load_run(name: str, with_model: bool = False):
    """The saved ``History`` of a run, and with ``with_model=True`` also ``(model, meta)`` from its checkpoint."""
    from .training import History

    folder = _run_folder(name)
    if not (folder / "history.json").is_file():
        known = ", ".join(list_runs()) or "none yet"
        raise FileNotFoundError(f"No saved run called {name!r} in {runs_dir()} (saved runs: {known}).")
    history = History.from_json(folder / "history.json")
    if not with_model:
        return history
    model, _, meta = load_checkpoint(folder / "checkpoint.pt")
    return history, model, meta

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

import fnmatch
import hashlib
import json
import re
from pathlib import Path

import torch

from . import runtime
from .files import atomic_save, atomic_write_json, describe_read_error
from .history import History
from .model import GPTModel

FORMAT = "llm-lectures-checkpoint/1"


def atomic_torch_save(obj, path: str | Path) -> Path:
    """``torch.save`` through :func:`helpers.files.atomic_save`: the file at ``path`` is always complete.

    Lectures 02-06 save through it.
    """
    return atomic_save(path, lambda handle: torch.save(obj, handle))


def _plain(value, where: str = "meta"):
    """``value`` as plain Python data that ``torch.load(weights_only=True)`` accepts.

    Paths and devices become strings, tuples lists, NumPy scalars Python numbers; tensors stay.
    Anything else is refused now, at saving, rather than when the file is loaded.
    """
    if value is None or isinstance(value, (bool, int, float, str, torch.Tensor)):
        return value
    if isinstance(value, (Path, torch.device, torch.dtype)):
        return str(value)
    if isinstance(value, dict):
        return {str(k): _plain(v, f"{where}[{k!r}]") for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v, f"{where}[{i}]") for i, v in enumerate(value)]
    if hasattr(value, "item") and getattr(value, "shape", None) == ():  # NumPy scalar
        return value.item()
    raise TypeError(
        f"Cannot store {where} = {value!r} ({type(value).__name__}) in a checkpoint: use numbers, strings, "
        f"lists, dicts or tensors (a checkpoint is loaded with weights_only=True, which refuses other objects)."
    )


def _unwrap(model: torch.nn.Module) -> torch.nn.Module:
    """The model inside ``torch.compile`` (``_orig_mod``) or DDP (``module``), whose state_dict keys are plain."""
    while True:
        if hasattr(model, "_orig_mod"):
            model = model._orig_mod
        elif isinstance(model, torch.nn.parallel.DistributedDataParallel):
            model = model.module
        else:
            return model


def save_checkpoint(path: str | Path, model: torch.nn.Module, optimizer: torch.optim.Optimizer | None = None,
                    **meta) -> Path:
    """Save model (and optimizer) state with the model's config, so the model can be rebuilt from the file.

    Lecture 02 teaches saving and resuming.

    Keyword arguments are stored as ``meta`` (numbers, strings, lists, dicts; paths become strings).
    The write is atomic. Returns the path.
    """
    model = _unwrap(model)
    cfg = getattr(model, "cfg", None)
    return atomic_torch_save(
        {"format": FORMAT, "cfg": _plain(dict(cfg), "cfg") if cfg is not None else None,
         "model_state": model.state_dict(),
         "optimizer_state": optimizer.state_dict() if optimizer is not None else None,
         "meta": _plain(meta)},
        path,
    )


def read_torch_file(path: str | Path, fmt: str, what: str, writer: str, map_location="cpu") -> dict:
    """Load a dict saved by one of our writers, with ``weights_only=True``, and check its ``format``.

    Lectures 02-06 read checkpoints, classifiers and LoRA weights through it.

    ``what`` names the kind of file in messages ("a checkpoint", "LoRA weights"), ``writer`` the
    function that writes it. A missing, unreadable or foreign file gets an error that says which.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(describe_read_error(path, FileNotFoundError(), what))
    try:
        data = torch.load(path, map_location=map_location, weights_only=True)
    except Exception as err:
        raise ValueError(describe_read_error(path, err, what)) from err
    if not isinstance(data, dict) or data.get("format") != fmt:
        raise ValueError(f"{path} is not {what} (not a file written by {writer}: expected a dict with format {fmt!r}).")
    return data


def read_checkpoint(path: str | Path, map_location="cpu") -> dict:
    """The checkpoint dict, checked to be one of ours. Lecture 02."""
    return read_torch_file(path, FORMAT, "a checkpoint", "helpers.checkpoints.save_checkpoint", map_location)


def load_checkpoint(path: str | Path, model: torch.nn.Module | None = None,
                    optimizer: torch.optim.Optimizer | None = None, map_location="cpu"):
    """Restore a checkpoint. Returns ``(model, optimizer, meta)``. Lecture 02 teaches saving and resuming.

    Without ``model``, a ``GPTModel`` is built from the saved config (on the CPU: move it with
    ``.to(device)``). The optimizer state is restored only when an ``optimizer`` is passed; build it
    over the model's parameters first, then training resumes exactly where it stopped.
    """
    ckpt = read_checkpoint(path, map_location)
    passed_model = model is not None
    if model is None:
        if ckpt["cfg"] is None:
            raise ValueError(f"{path} holds no model config; pass the model to load it into.")
        model = GPTModel(ckpt["cfg"])
    target = _unwrap(model)
    try:
        target.load_state_dict(ckpt["model_state"])
    except RuntimeError as err:
        mine = getattr(target, "cfg", None)
        if passed_model:
            fix = ("Build the model from the checkpoint's config instead: load_checkpoint(path) without a "
                   "model returns one.")
        else:
            fix = ("The file's weights do not match its own config: it was written by other code, or "
                   "damaged. Save it again with helpers.checkpoints.save_checkpoint.")
        raise ValueError(
            f"The weights in {path} do not fit this model. The checkpoint's config is {ckpt['cfg']}"
            + (f"; the model's is {mine}" if mine is not None and passed_model else "")
            + f". {fix}\n{str(err).splitlines()[0]}"
        ) from err
    if optimizer is not None:
        if ckpt["optimizer_state"] is None:
            raise ValueError(f"{path} holds no optimizer state (it was saved without an optimizer).")
        optimizer.load_state_dict(ckpt["optimizer_state"])
    return model, optimizer, ckpt["meta"]


def pretrained_checkpoint_path(profile: str | None = None) -> Path:
    """Where lecture 02 saves its trained model (read by lectures 03-06 when GPT-2 cannot be downloaded)."""
    return runtime.cache_dir() / "checkpoints" / f"02_pretraining_{runtime.profile(profile)}.pt"


# ------------------------------------------------------------------------------------------ runs


def runs_dir() -> Path:
    """The folder of saved runs (lecture 02 compares runs from it)."""
    return runtime.cache_dir() / "runs"


def _run_folder(name: str) -> Path:
    if not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9_.=+-]*", name):
        raise ValueError(f"Run names start with a letter or digit and may use letters, digits and _ . = + - "
                         f"only; got {name!r}.")
    return runs_dir() / name


def _plain_config(config: dict) -> dict:
    """A run's config as it is stored in ``config.json`` (plain JSON data), for comparing runs."""
    return json.loads(json.dumps(config, default=str, sort_keys=True))


def settings_hash(config: dict, length: int = 8) -> str:
    """A short hash of a run's settings: equal settings, equal hash (lecture 02 names runs with it)."""
    text = json.dumps(_plain_config(config), sort_keys=True)
    return hashlib.sha256(text.encode()).hexdigest()[:length]


def _flatten(config: dict, prefix: str = "") -> dict:
    flat = {}
    for key, value in config.items():
        if isinstance(value, dict):
            flat.update(_flatten(value, f"{key}."))
        else:
            flat[f"{prefix}{key}"] = value
    return flat


def settings_diff(config: dict, reference: dict) -> dict:
    """The settings of ``config`` that differ from ``reference`` (nested keys as ``model.drop_rate``).

    Lecture 02 labels reruns with it.
    """
    mine, theirs = _flatten(_plain_config(config)), _flatten(_plain_config(reference))
    return {k: mine.get(k) for k in sorted(set(mine) | set(theirs)) if mine.get(k) != theirs.get(k)}


def _label(diff: dict, limit: int = 3) -> str:
    parts = [f"{key.rsplit('.', 1)[-1]}{value}" for key, value in list(diff.items())[:limit]]
    label = "-".join(re.sub(r"[^A-Za-z0-9_.=+-]", "", part) for part in parts)
    return label[:60]


def saved_config(name: str) -> dict | None:
    """The settings a saved run was trained with (its ``config.json``), or None when there is no such run.

    Lecture 02.
    """
    path = _run_folder(name) / "config.json"
    if not path.is_file():
        return None
    return json.loads(path.read_text())


def run_name_for(name: str, config: dict) -> str:
    """The name to save a run with ``config`` under, so that no saved run is replaced by a different one.

    Lecture 02 names its runs with it. ``name`` itself when no run of that name exists or the saved one
    has the same settings (a rerun); otherwise ``name`` followed by what differs from the saved run and a
    short hash of all settings, e.g. ``lecture02-quick-learning_rate0.001-3f2a9c1e``.
    """
    _run_folder(name)  # validates the name
    existing = saved_config(name)
    if existing is None or _plain_config(existing) == _plain_config(config):
        return name
    label = _label(settings_diff(config, existing))
    return "-".join(part for part in (name, label, settings_hash(config)) if part)


def save_run(name: str, history, model: torch.nn.Module | None = None,
             optimizer: torch.optim.Optimizer | None = None, *, overwrite: bool = False) -> Path:
    """Save a run under ``runs/<name>/``: ``history.json``, ``config.json`` and, with a model, ``checkpoint.pt``.

    Lecture 02 compares saved runs.

    A saved run is never replaced silently: saving under a name whose run was trained with other settings
    (``history.config``) raises ``FileExistsError`` unless ``overwrite=True``; pick the name with
    :func:`run_name_for` to get a free one. A rerun with the same settings replaces the run (it is the
    same experiment). Returns the run's folder.
    """
    folder = _run_folder(name)
    existing = saved_config(name)
    if existing is not None and not overwrite and _plain_config(existing) != _plain_config(history.config):
        differs = settings_diff(history.config, existing)
        raise FileExistsError(
            f"A run called {name!r} with other settings is saved already (differences: {differs}). "
            f"Save this one as run_name_for({name!r}, history.config) = {run_name_for(name, history.config)!r}, "
            f"or pass overwrite=True to replace it."
        )
    folder.mkdir(parents=True, exist_ok=True)
    if model is not None:
        config = _plain_config(history.config)  # plain data, as in config.json
        save_checkpoint(folder / "checkpoint.pt", model, optimizer, run=name, config=config)
    else:
        (folder / "checkpoint.pt").unlink(missing_ok=True)  # a rerun under the same name replaces it all
    atomic_write_json(folder / "config.json", history.config)
    history.to_json(folder / "history.json")  # last: a run is listed once its history is there
    return folder


def list_runs(match: str | None = None) -> list[str]:
    """Names of the saved runs, oldest first; ``match`` keeps those matching a pattern (``"lecture02-*"``).

    Lecture 02.
    """
    if not runs_dir().is_dir():
        return []
    runs = [p for p in runs_dir().iterdir() if (p / "history.json").is_file()]
    if match is not None:
        runs = [p for p in runs if fnmatch.fnmatchcase(p.name, match)]
    return [p.name for p in sorted(runs, key=lambda p: (p / "history.json").stat().st_mtime)]


def load_run(name: str, with_model: bool = False):
    """The saved ``History`` of a run; with ``with_model=True`` ``(history, model, meta)`` from its checkpoint.

    Lecture 02.
    """
    folder = _run_folder(name)
    if not (folder / "history.json").is_file():
        known = ", ".join(list_runs()) or "none yet"
        raise FileNotFoundError(f"No saved run called {name!r} in {runs_dir()} (saved runs: {known}).")
    history = History.from_json(folder / "history.json")
    if not with_model:
        return history
    model, _, meta = load_checkpoint(folder / "checkpoint.pt")
    return history, model, meta

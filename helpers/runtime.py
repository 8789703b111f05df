"""Where the lectures run: the profile, the cache and mirror folders, the device and the seeds.

Three environment variables steer the whole series:

``LECTURES_PROFILE``
    ``full`` (the default): the lecture's real hyperparameters. ``quick``: smaller sizes so that
    every notebook runs on two CPU cores in a minute or two. Both run the same code.
``LECTURES_CACHE``
    Where downloads, checkpoints and saved runs go (default: ``~/.cache/llm-lectures``, or
    ``$XDG_CACHE_HOME/llm-lectures``).
``LECTURES_MIRROR``
    A folder of pre-downloaded files that is looked at before any network (for example a USB
    stick handed round in class, or ``../shared/data`` in CI).

``LECTURES_DEVICE`` optionally forces a device (``cpu``, ``cuda``, ``cuda:1``, ``mps``).
"""

from __future__ import annotations

import os
import random
from pathlib import Path

import numpy as np
import torch

PROFILES = ("full", "quick")
PROFILE_ENV = "LECTURES_PROFILE"
CACHE_ENV = "LECTURES_CACHE"
MIRROR_ENV = "LECTURES_MIRROR"
DEVICE_ENV = "LECTURES_DEVICE"


def profile(override: str | None = None) -> str:
    """Return the active profile: ``override`` if given (a papermill parameter), else ``LECTURES_PROFILE``.

    Defaults to ``"full"``. Anything other than ``full`` or ``quick`` is an error, so a typo never
    silently runs a 10-minute training job.
    """
    value = override if override is not None else os.environ.get(PROFILE_ENV, "full")
    value = value.strip().lower()
    if value not in PROFILES:
        raise ValueError(
            f"Unknown lecture profile {value!r} (from {'the PROFILE parameter' if override else PROFILE_ENV}). "
            f"Use one of {', '.join(PROFILES)}, e.g. `export {PROFILE_ENV}=quick`."
        )
    return value


def is_quick(override: str | None = None) -> bool:
    """True in the quick profile; every lecture reads it in its config cell. Every lecture."""
    return profile(override) == "quick"


def cache_dir(create: bool = True) -> Path:
    """The folder for downloads, checkpoints and runs (``LECTURES_CACHE``)."""
    if os.environ.get(CACHE_ENV):
        path = Path(os.environ[CACHE_ENV]).expanduser()
    else:
        base = Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")).expanduser()
        path = base / "llm-lectures"
    if create:
        path.mkdir(parents=True, exist_ok=True)
    return path


def mirror_dir() -> Path | None:
    """The pre-filled mirror folder (``LECTURES_MIRROR``), or None when unset.

    A mirror that is set but missing is an error: it is almost always a wrong path.
    """
    value = os.environ.get(MIRROR_ENV)
    if not value:
        return None
    path = Path(value).expanduser()
    if not path.is_dir():
        raise FileNotFoundError(
            f"{MIRROR_ENV}={value!r} is not a folder. Point it at a folder of pre-downloaded files "
            f"or unset it."
        )
    return path


def get_device(prefer: str | torch.device | None = None) -> torch.device:
    """Pick the device: ``prefer``, else ``LECTURES_DEVICE``, else cuda, then mps, then cpu."""
    choice = prefer if prefer is not None else os.environ.get(DEVICE_ENV)
    if choice:
        device = torch.device(choice)
        if device.type == "cuda" and not torch.cuda.is_available():
            raise RuntimeError(f"Device {choice!r} was asked for, but PyTorch sees no CUDA GPU here.")
        if device.type == "mps" and not (torch.backends.mps.is_available()):
            raise RuntimeError(f"Device {choice!r} was asked for, but Apple's MPS backend is not available.")
        return device
    if torch.cuda.is_available():
        return torch.device("cuda")
    if torch.backends.mps.is_available():
        return torch.device("mps")
    return torch.device("cpu")


def set_seed(seed: int = 123) -> None:
    """Seed Python, NumPy and PyTorch (all devices) so that a rerun gives the same numbers.

    Every lecture seeds with it.
    """
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)  # also seeds CUDA and MPS generators


def apply_overrides(overrides: dict, *groups: dict, name: str = "TRY_THIS") -> tuple[dict, ...]:
    """Copies of the setting ``groups`` with ``overrides`` applied, each key to the group that has it.

    Lecture 02's rerun uses it: ``settings, config = apply_overrides(TRY_THIS, SETTINGS, GPT_CONFIG)``
    lets ``TRY_THIS`` change training settings (``learning_rate``) and model keys (``drop_rate``) alike.
    A key that no group has is refused with the keys that exist, so a typo is never silently ignored.
    The groups themselves are not changed.
    """
    copies = tuple(dict(group) for group in groups)
    for key, value in overrides.items():
        owners = [copy for copy in copies if key in copy]
        if not owners:
            known = ", ".join(sorted({k for group in groups for k in group}))
            raise KeyError(f"{name} sets {key!r}, which is not a setting here. Use one of: {known}.")
        if len(owners) > 1:
            raise KeyError(f"{name} sets {key!r}, which more than one group of settings has; "
                           f"change it in the config cell instead.")
        owners[0][key] = value
    return copies

"""Where OpenAI's GPT-2 files come from, and how we know a downloaded one is the real thing (lecture 03).

Two sources hold the same weights:

* **OpenAI's TensorFlow checkpoint** (the course's route): seven files per model size from OpenAI's
  storage, or from the course's backup copy when that fails; :func:`download_gpt2_files`;
* **safetensors on the Hugging Face Hub** (``openai-community/gpt2`` and friends), downloaded and
  cached by ``huggingface_hub``: :func:`download_gpt2_safetensors`.

OpenAI publishes no hashes, so a file is checked by what we do know: the SHA-256 of the two
tokenizer files (the very files tiktoken pins), the exact size of the data files of the two smaller
models (4 bytes per parameter), a lower bound for the larger ones, and the content of the small files
(a saved HTML error page is refused, ``hparams.json`` must hold five positive sizes). Every copy,
cached or downloaded, is checked so before it is used; one that fails is replaced. Damage that only
TensorFlow notices when reading (a checksum inside the index or data file) makes
:func:`helpers.weights.download_and_load_gpt2` fetch the files again. :func:`first_reachable` asks a
server, briefly, whether it answers at all before a download is started, so that an offline
lecture does not wait through minutes of retries.

Reading the files is :mod:`helpers.gpt2_formats`; :mod:`helpers.weights` puts it all together.
"""

from __future__ import annotations

import json
import os
import threading
import time
import urllib.error
import urllib.request
from pathlib import Path

from huggingface_hub import constants as hf_constants
from huggingface_hub import hf_hub_download

from . import runtime
from .download import OFFLINE_HINT, USER_AGENT, DownloadError, copy_verified, download, sha256sum
from .files import explain_write_error
from .gpt2_formats import settings_problem
from .model import GPT2_SIZES
from .tokenizer import GPT2_FILES as TOKENIZER_FILES

MODEL_SIZES = tuple(GPT2_SIZES)  # ("124M", "355M", "774M", "1558M")
DATA_FILE = "model.ckpt.data-00000-of-00001"
GPT2_FILES = ("checkpoint", "encoder.json", "hparams.json", DATA_FILE, "model.ckpt.index", "model.ckpt.meta",
              "vocab.bpe")
BASE_URLS = (
    "https://openaipublic.blob.core.windows.net/gpt-2/models",  # OpenAI's own storage
    "https://f001.backblazeb2.com/file/LLMs-from-scratch/gpt2",  # the course's backup copy
)
# Exact sizes in bytes, where known: (size, file) or, for files every size shares, just the file name.
# The data file holds nothing but the float32 parameters: 4 bytes x 124,439,808 = 497,759,232.
KNOWN_SIZES = {
    ("124M", DATA_FILE): 497_759_232,
    ("355M", DATA_FILE): 1_419_292_672,
    "encoder.json": 1_042_301,  # GPT-2's tokenizer files, the same for every size
    "vocab.bpe": 456_318,
}
# Sizes a file must at least have (OpenAI publishes no hashes): a data file cannot hold fewer than 4 bytes
# per parameter. Every other file must be non-empty and is also checked by content (_content_problem).
MIN_SIZES = {
    ("774M", DATA_FILE): 4 * 774_030_080,
    ("1558M", DATA_FILE): 4 * 1_557_611_200,
}
# The tokenizer files are the same for every size, and the same bytes as tiktoken's own copies, whose
# SHA-256 tiktoken pins (helpers.tokenizer.GPT2_FILES).
KNOWN_SHA256 = {name: digest for name, (_, digest) in TOKENIZER_FILES.items()}
# The most bytes a download of a file of unknown exact size may have (beyond that it is cut off): a
# data file of 774M or 1558M holds little besides its parameters; every other file is small.
SMALL_FILE_MAX_BYTES = 100_000_000
DATA_FILE_SLACK = 1.05
# TensorFlow's index file is a LevelDB-style table, which always ends with this magic number.
TF_INDEX_MAGIC = bytes.fromhex("57fb808b247547db")
HF_REPOS = {
    "124M": "openai-community/gpt2",
    "355M": "openai-community/gpt2-medium",
    "774M": "openai-community/gpt2-large",
    "1558M": "openai-community/gpt2-xl",
}
HF_ENDPOINT: str | None = None   # None: huggingface_hub's default (https://huggingface.co, or $HF_ENDPOINT)
HF_CACHE_DIR: str | None = None  # None: the Hub's own cache (~/.cache/huggingface/hub, or $HF_HUB_CACHE)
PROBE_TIMEOUT = 3.0  # seconds a server gets to answer before we call the network down


# ------------------------------------------------------------------------------- sizes and checks


def check_size(model_size: str) -> str:
    """``model_size`` if it is one of the released GPT-2 sizes, else a ValueError listing them (lectures 03-06)."""
    if model_size not in MODEL_SIZES:
        raise ValueError(f"Unknown GPT-2 size {model_size!r}; the released sizes are {', '.join(MODEL_SIZES)}.")
    return model_size


def download_bytes(model_size: str) -> int:
    """Roughly how many bytes OpenAI's seven files of ``model_size`` take; lecture 03 tabulates it."""
    data = KNOWN_SIZES.get((model_size, DATA_FILE)) or MIN_SIZES[(check_size(model_size), DATA_FILE)]
    return data + KNOWN_SIZES["encoder.json"] + KNOWN_SIZES["vocab.bpe"] + 1_000_000  # + index and meta, about


def default_models_dir() -> Path:
    """The cache folder for OpenAI's checkpoints, ``LECTURES_CACHE/gpt2`` (lecture 03 prints it)."""
    return runtime.cache_dir() / "gpt2"


def _lookup(table: dict, model_size: str, name: str) -> int | None:
    return table.get((model_size, name), table.get(name))


def _max_bytes(model_size: str, name: str) -> int:
    """The most bytes a download of this file may have."""
    exact, minimum = _lookup(KNOWN_SIZES, model_size, name), _lookup(MIN_SIZES, model_size, name)
    if exact is not None:
        return exact
    return int(minimum * DATA_FILE_SLACK) if minimum is not None else SMALL_FILE_MAX_BYTES


def _content_problem(path: Path, name: str) -> str | None:
    """Why a checkpoint file is not what its name claims (e.g. a saved HTML error page), or None."""
    if name in KNOWN_SHA256:
        digest = sha256sum(path)
        return None if digest == KNOWN_SHA256[name] else f"SHA-256 {digest}, expected {KNOWN_SHA256[name]}"
    if name == "hparams.json":
        try:
            settings = json.loads(path.read_text(encoding="utf-8"))
        except (ValueError, UnicodeDecodeError):
            return "not a JSON object of GPT-2 settings"
        return settings_problem(settings)
    if name == "checkpoint":
        text = path.read_text(errors="replace")
        return None if "model_checkpoint_path" in text else "not a TensorFlow 'checkpoint' file"
    with open(path, "rb") as f:
        head = f.read(64).lstrip()
        f.seek(max(0, path.stat().st_size - len(TF_INDEX_MAGIC)))
        tail = f.read()
    if head.startswith(b"<"):  # e.g. Azure's "<?xml ...><Error>" page, saved under the file's name
        return "an HTML/XML page, not the file"
    if name == "model.ckpt.index" and tail != TF_INDEX_MAGIC:
        return "not a TensorFlow index file (wrong ending)"
    return None


def file_problem(path: Path, model_size: str, name: str) -> str | None:
    """What is wrong with a downloaded GPT-2 file, or None when it passes every check we can make.

    Lecture 03 explains the checks; every GPT-2 file the lectures read has passed them.
    """
    if not path.is_file():
        return "missing"
    size = path.stat().st_size
    exact, minimum = _lookup(KNOWN_SIZES, model_size, name), _lookup(MIN_SIZES, model_size, name) or 1
    if exact is not None and size != exact:
        return f"{size:,} bytes, expected {exact:,}"
    if size < minimum:
        return f"{size:,} bytes, expected at least {minimum:,} (an error page or a cut-off download?)"
    try:
        return _content_problem(path, name)
    except OSError as err:
        return f"unreadable ({type(err).__name__}: {err})"


# ------------------------------------------------------------------------------- is the network there?


def reachable(url: str, timeout: float = PROBE_TIMEOUT) -> bool:
    """True when a HEAD request to ``url`` gets any HTTP answer within ``timeout`` seconds.

    Lectures 03-06 probe a server this way before downloading GPT-2 from it.
    """
    request = urllib.request.Request(url, method="HEAD", headers={"User-Agent": USER_AGENT})
    try:
        urllib.request.urlopen(request, timeout=timeout).close()
        return True
    except urllib.error.HTTPError:
        return True  # the server answered (403, 404, 405...): the network works
    except (OSError, ValueError):
        return False


def first_reachable(urls, timeout: float = PROBE_TIMEOUT) -> str | None:
    """The first of ``urls`` whose server answers, probing all at once; None after ``timeout`` seconds.

    Each probe runs in a background thread, so even a name lookup that hangs (which socket timeouts do
    not cover) cannot hold us up for longer than ``timeout``. Lectures 03-06 use it to tell quickly
    that they are offline.
    """
    urls, answers = list(urls), {}

    def probe(url):
        answers[url] = reachable(url, timeout)

    threads = [threading.Thread(target=probe, args=(url,), daemon=True) for url in urls]
    for thread in threads:
        thread.start()
    deadline = time.monotonic() + timeout + 0.5
    for thread in threads:
        thread.join(max(0.0, deadline - time.monotonic()))
    return next((url for url in urls if answers.get(url)), None)


# ------------------------------------------------------------------------------- OpenAI's seven files


def gpt2_urls(model_size: str, name: str) -> list[str]:
    """Where one checkpoint file can be downloaded: OpenAI's URL first, then the backup (lecture 03)."""
    return [f"{base}/{model_size}/{name}" for base in BASE_URLS]


def _fetch_file(model_size: str, name: str, dest: Path, progress: bool) -> None:
    """One checkpoint file into ``dest``: from the mirror folder, else OpenAI, else the backup.

    Each candidate must pass :func:`file_problem` before it takes ``dest``'s name; one that fails
    moves on to the next source.
    """
    def check(path: Path) -> str | None:
        return file_problem(path, model_size, name)

    mirror = runtime.mirror_dir()
    if mirror is not None and check(mirror / "gpt2" / model_size / name) is None:
        copy_verified(mirror / "gpt2" / model_size / name, dest, check=check)
        return
    try:
        # resumes dest.part if an earlier attempt (even from the other URL: same bytes) left one
        download(gpt2_urls(model_size, name), dest, size=_lookup(KNOWN_SIZES, model_size, name), check=check,
                 max_bytes=_max_bytes(model_size, name), progress=progress)
    except DownloadError as err:
        raise DownloadError(
            f"Could not download {name} of GPT-2 {model_size}. Tried:\n  - " + "\n  - ".join(err.failures)
            + (f"\n{OFFLINE_HINT}" if err.offline else "")
            + f"\nTo go on without a network, put the file at {dest} or in $LECTURES_MIRROR/gpt2/{model_size}/.",
            err.failures,
            err.offline,
        ) from None


def missing_gpt2_files(model_size: str, models_dir: str | Path | None = None) -> list[str]:
    """The checkpoint files of ``model_size`` found neither in ``models_dir`` nor in the mirror folder.

    Lectures 03-06 ask this before deciding whether a download is needed.
    """
    folder, mirror = Path(models_dir or default_models_dir()) / check_size(model_size), runtime.mirror_dir()
    return [name for name in GPT2_FILES
            if file_problem(folder / name, model_size, name) is not None
            and (mirror is None or file_problem(mirror / "gpt2" / model_size / name, model_size, name) is not None)]


def download_gpt2_files(model_size: str, models_dir: str | Path | None = None, progress: bool = True) -> Path:
    """Make sure the seven checkpoint files of ``model_size`` are in ``models_dir/model_size``; return it.

    Lecture 03 downloads GPT-2 with it. Each file comes from the cache, from the ``LECTURES_MIRROR``
    folder (``<mirror>/gpt2/<size>/<file>``) or from the network (OpenAI first, then the backup).
    Downloads go to ``<file>.part`` and resume from there after a dropped connection; a file appears
    under its own name only once it has passed the size (and, for the small ones, content) checks, so
    a half-written file is never read.
    """
    folder = Path(models_dir or default_models_dir()) / check_size(model_size)
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise explain_write_error(folder, err) from err
    for name in GPT2_FILES:
        dest = folder / name
        if file_problem(dest, model_size, name) is not None:
            # a damaged file is replaced (a ``.part`` next to it is kept and resumed)
            _fetch_file(model_size, name, dest, progress)
    return folder


# ------------------------------------------------------------------------------- the Hugging Face Hub


def hf_offline() -> bool:
    """Whether ``huggingface_hub`` is told to stay offline (``HF_HUB_OFFLINE``); lectures 03-06 then skip the Hub."""
    return hf_constants.HF_HUB_OFFLINE or os.environ.get("HF_HUB_OFFLINE", "").lower() in ("1", "true", "yes", "on")


def hf_endpoint() -> str:
    """The Hub's address: :data:`HF_ENDPOINT` when set, else ``huggingface_hub``'s (lectures 03-06 probe it)."""
    return (HF_ENDPOINT or hf_constants.ENDPOINT).rstrip("/")


def download_gpt2_safetensors(model_size: str, *, local_only: bool = False) -> Path:
    """``model.safetensors`` and ``config.json`` of GPT-2 ``model_size`` from the Hub; returns their folder.

    Lecture 03's second route, without TensorFlow. ``huggingface_hub`` caches the files (a second call
    needs no network), resumes interrupted downloads, and honours ``HF_HUB_OFFLINE=1``. With
    ``local_only=True`` only the cache is looked at (``huggingface_hub.errors.LocalEntryNotFoundError``
    when the files are not there).
    """
    repo = HF_REPOS[check_size(model_size)]
    kwargs = {"cache_dir": HF_CACHE_DIR, "endpoint": HF_ENDPOINT, "local_files_only": local_only}
    hf_hub_download(repo, "config.json", **kwargs)
    return Path(hf_hub_download(repo, "model.safetensors", **kwargs)).parent

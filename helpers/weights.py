"""OpenAI's GPT-2 weights: download them, read them, and copy them into our ``GPTModel``.

Two routes lead to the same ``params`` dictionary and so through the same loader:

* **OpenAI's TensorFlow checkpoint** (the course's route): seven files per model size from OpenAI's
  storage (a backup mirror when that fails), read with TensorFlow, which is imported only here;
* **safetensors from the Hugging Face Hub** (``openai-community/gpt2`` and friends), which needs no
  TensorFlow and gets the Hub's cache, offline mode and resumable downloads for free.

``params`` mirrors the checkpoint's variable names (``model/h0/attn/c_attn/w`` becomes
``params["blocks"][0]["attn"]["c_attn"]["w"]``) and holds NumPy arrays in OpenAI's orientation:
weights are ``[in_features, out_features]`` (PyTorch's ``nn.Linear`` stores the transpose).

``load_base_model`` is what lectures 03-06 call: the real GPT-2 when it can be had, otherwise
lecture 02's model, written in OpenAI's layout and read back through the very same loader.
"""

from __future__ import annotations

import importlib.util
import json
import os
import shutil
import threading
import time
import urllib.error
import urllib.request
from pathlib import Path

import numpy as np
import torch

from . import runtime
from .download import USER_AGENT, DownloadError, copy_verified, download
from .model import GPT2_SIZES, GPTModel, get_config

# ------------------------------------------------------------------------------- the registry

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


def check_size(model_size: str) -> str:
    """``model_size`` if it is one of the released GPT-2 sizes, else a ValueError listing them."""
    if model_size not in MODEL_SIZES:
        raise ValueError(f"Unknown GPT-2 size {model_size!r}; the released sizes are {', '.join(MODEL_SIZES)}.")
    return model_size


def download_bytes(model_size: str) -> int:
    """Roughly how many bytes OpenAI's seven files of ``model_size`` take (the data file dominates)."""
    data = KNOWN_SIZES.get((model_size, DATA_FILE)) or MIN_SIZES[(check_size(model_size), DATA_FILE)]
    return data + KNOWN_SIZES["encoder.json"] + KNOWN_SIZES["vocab.bpe"] + 1_000_000  # + index and meta, about


def default_models_dir() -> Path:
    return runtime.cache_dir() / "gpt2"


def _lookup(table: dict, model_size: str, name: str) -> int | None:
    return table.get((model_size, name), table.get(name))


def _content_problem(path: Path, name: str) -> str | None:
    """Why a checkpoint file is not what its name claims (e.g. a saved HTML error page), or None."""
    if name == "hparams.json":
        try:
            settings = json.loads(path.read_text())
            missing = {"n_vocab", "n_ctx", "n_embd", "n_head", "n_layer"} - set(settings)
        except (ValueError, UnicodeDecodeError, AttributeError, TypeError):
            return "not a JSON object of GPT-2 settings"
        return f"lacks {sorted(missing)}" if missing else None
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
    """What is wrong with a downloaded GPT-2 file, or None when it passes every check we can make."""
    if not path.is_file():
        return "missing"
    size = path.stat().st_size
    exact, minimum = _lookup(KNOWN_SIZES, model_size, name), _lookup(MIN_SIZES, model_size, name) or 1
    if exact is not None and size != exact:
        return f"{size:,} bytes, expected {exact:,}"
    if size < minimum:
        return f"{size:,} bytes, expected at least {minimum:,} (an error page or a cut-off download?)"
    return _content_problem(path, name)


# ------------------------------------------------------------------------------- is the network there?


def reachable(url: str, timeout: float = PROBE_TIMEOUT) -> bool:
    """True when a HEAD request to ``url`` gets any HTTP answer within ``timeout`` seconds."""
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
    not cover) cannot hold us up for longer than ``timeout``.
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


# ------------------------------------------------------------------------------- OpenAI's checkpoint


def gpt2_urls(model_size: str, name: str) -> list[str]:
    return [f"{base}/{model_size}/{name}" for base in BASE_URLS]


def _fetch_file(model_size: str, name: str, dest: Path, progress: bool) -> None:
    """One checkpoint file into ``dest``: from the mirror folder, else OpenAI, else the backup."""
    mirror = runtime.mirror_dir()
    if mirror is not None and file_problem(mirror / "gpt2" / model_size / name, model_size, name) is None:
        copy_verified(mirror / "gpt2" / model_size / name, dest)
        return
    failures = []
    for url in gpt2_urls(model_size, name):
        try:
            # resumes dest.part if an earlier attempt (even from the other URL: same bytes) left one
            download(url, dest, size=_lookup(KNOWN_SIZES, model_size, name), progress=progress)
        except DownloadError as err:
            failures += [line for line in str(err).splitlines() if line.startswith("  - ")]
            continue
        problem = file_problem(dest, model_size, name)
        if problem is None:
            return
        dest.unlink()
        failures.append(f"  - {url}: {problem}")
    raise DownloadError(f"Could not download {name} of GPT-2 {model_size}. Tried:\n" + "\n".join(failures)
                        + f"\nIf you are offline, put the file at {dest} or in $LECTURES_MIRROR/gpt2/{model_size}/.")


def missing_gpt2_files(model_size: str, models_dir: str | Path | None = None) -> list[str]:
    """The checkpoint files of ``model_size`` found neither in ``models_dir`` nor in the mirror folder."""
    folder, mirror = Path(models_dir or default_models_dir()) / check_size(model_size), runtime.mirror_dir()
    return [name for name in GPT2_FILES
            if file_problem(folder / name, model_size, name) is not None
            and (mirror is None or file_problem(mirror / "gpt2" / model_size / name, model_size, name) is not None)]


def download_gpt2_files(model_size: str, models_dir: str | Path | None = None, progress: bool = True) -> Path:
    """Make sure the seven checkpoint files of ``model_size`` are in ``models_dir/model_size``; return it.

    Each file comes from the cache, from the ``LECTURES_MIRROR`` folder (``<mirror>/gpt2/<size>/<file>``)
    or from the network (OpenAI first, then the backup). Downloads go to ``<file>.part`` and resume
    from there after a dropped connection; a file appears under its own name only once it has passed
    the size (and, for the small ones, content) checks, so a half-written file is never read.
    """
    folder = Path(models_dir or default_models_dir()) / check_size(model_size)
    folder.mkdir(parents=True, exist_ok=True)
    for name in GPT2_FILES:
        dest = folder / name
        if file_problem(dest, model_size, name) is not None:
            dest.unlink(missing_ok=True)  # a damaged file (a ``.part`` next to it is kept and resumed)
            _fetch_file(model_size, name, dest, progress)
    return folder


def download_and_load_gpt2(model_size: str, models_dir: str | Path | None = None, progress: bool = True):
    """The course's entry point: download GPT-2 ``model_size`` if needed; return ``(settings, params)``.

    ``settings`` is OpenAI's ``hparams.json`` (n_vocab, n_ctx, n_embd, n_head, n_layer); ``params``
    the nested dictionary of NumPy arrays described at the top of this module.
    """
    folder = download_gpt2_files(model_size, models_dir, progress)
    return load_openai_checkpoint(folder)


def load_openai_checkpoint(folder: str | Path):
    """``(settings, params)`` from a folder in OpenAI's layout (``checkpoint``, ``hparams.json``, ``model.ckpt.*``)."""
    folder = Path(folder)
    settings = json.loads((folder / "hparams.json").read_text())
    tf = _import_tensorflow()
    ckpt_path = tf.train.latest_checkpoint(str(folder))
    if ckpt_path is None:
        raise FileNotFoundError(f"No TensorFlow checkpoint in {folder} (its 'checkpoint' file is missing or wrong).")
    return settings, load_gpt2_params_from_tf_ckpt(ckpt_path, settings)


def tensorflow_available() -> bool:
    return importlib.util.find_spec("tensorflow") is not None


def _import_tensorflow():
    try:
        os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
        os.environ.setdefault("TF_ENABLE_ONEDNN_OPTS", "0")  # we only read files; this also silences its banner
        import tensorflow as tf
    except ImportError as err:
        raise ImportError(
            "Reading OpenAI's original checkpoint needs TensorFlow (`pip install tensorflow-cpu`). "
            "Without it, take the safetensors route, which loads the very same weights: "
            "helpers.weights.load_gpt2_from_hf(model_size)."
        ) from err
    return tf


def load_gpt2_params_from_tf_ckpt(ckpt_path: str, settings: dict) -> dict:
    """Read every variable of a GPT-2 TF checkpoint into a nested dict of NumPy arrays.

    ``model/h3/mlp/c_fc/w`` goes to ``params["blocks"][3]["mlp"]["c_fc"]["w"]``; variables outside the
    blocks (``model/wte``, ``model/wpe``, ``model/ln_f/g``, ``model/ln_f/b``) to ``params["wte"]`` etc.,
    with ``ln_f``'s gain and bias at ``params["g"]`` and ``params["b"]`` as in the course. OpenAI
    stored its weights as 1x1 convolutions, ``[1, in, out]``; the leading 1 is dropped.
    """
    tf = _import_tensorflow()
    params: dict = {"blocks": [{} for _ in range(settings["n_layer"])]}
    for name, _shape in tf.train.list_variables(ckpt_path):
        array = tf.train.load_variable(ckpt_path, name)
        if array.ndim == 3 and array.shape[0] == 1:  # conv1d weights [1, in, out] -> [in, out]
            array = array[0]
        parts = name.split("/")[1:]  # drop the leading "model"
        if parts[0].startswith("h") and parts[0][1:].isdigit():
            node, path = params["blocks"][int(parts[0][1:])], parts[1:]
        elif parts[0] == "ln_f":
            node, path = params, parts[1:]
        else:
            node, path = params, parts
        for key in path[:-1]:
            node = node.setdefault(key, {})
        node[path[-1]] = array
    return params


# ------------------------------------------------------------------------------- safetensors route


def _hf_offline() -> bool:
    from huggingface_hub import constants

    return constants.HF_HUB_OFFLINE or os.environ.get("HF_HUB_OFFLINE", "").lower() in ("1", "true", "yes", "on")


def _hf_endpoint() -> str:
    from huggingface_hub import constants

    return (HF_ENDPOINT or constants.ENDPOINT).rstrip("/")


def download_gpt2_safetensors(model_size: str, *, local_only: bool = False) -> Path:
    """``model.safetensors`` and ``config.json`` of GPT-2 ``model_size`` from the Hub; returns their folder.

    ``huggingface_hub`` caches the files (a second call needs no network), resumes interrupted
    downloads, and honours ``HF_HUB_OFFLINE=1``. With ``local_only=True`` only the cache is looked at
    (``huggingface_hub.errors.LocalEntryNotFoundError`` when the files are not there).
    """
    from huggingface_hub import hf_hub_download

    repo = HF_REPOS[check_size(model_size)]
    kwargs = {"cache_dir": HF_CACHE_DIR, "endpoint": HF_ENDPOINT, "local_files_only": local_only}
    hf_hub_download(repo, "config.json", **kwargs)
    return Path(hf_hub_download(repo, "model.safetensors", **kwargs)).parent


def load_gpt2_params_from_safetensors(path: str | Path):
    """``(settings, params)`` from a Hugging Face GPT-2 folder (or its ``model.safetensors`` file).

    Hugging Face's GPT-2 uses ``Conv1D`` layers that store weights as ``[in, out]`` like OpenAI, so
    the arrays go into the same dictionary as the TF route's without transposing.
    """
    from safetensors.numpy import load_file

    path = Path(path)
    folder = path if path.is_dir() else path.parent
    tensors = load_file(folder / "model.safetensors" if path.is_dir() else path)
    tensors = {k.removeprefix("transformer."): v for k, v in tensors.items()}  # save_pretrained adds it
    config = json.loads((folder / "config.json").read_text())
    settings = {"n_vocab": config["vocab_size"], "n_ctx": config.get("n_positions", config.get("n_ctx")),
                "n_embd": config["n_embd"], "n_head": config["n_head"], "n_layer": config["n_layer"]}

    def pair(prefix):  # a Conv1D layer's weight and bias
        return {"w": tensors[f"{prefix}.weight"], "b": tensors[f"{prefix}.bias"]}

    params: dict = {"wte": tensors["wte.weight"], "wpe": tensors["wpe.weight"],
                    "g": tensors["ln_f.weight"], "b": tensors["ln_f.bias"], "blocks": []}
    for i in range(settings["n_layer"]):
        h = f"h.{i}"
        params["blocks"].append({
            "attn": {"c_attn": pair(f"{h}.attn.c_attn"), "c_proj": pair(f"{h}.attn.c_proj")},
            "mlp": {"c_fc": pair(f"{h}.mlp.c_fc"), "c_proj": pair(f"{h}.mlp.c_proj")},
            "ln_1": {"g": tensors[f"{h}.ln_1.weight"], "b": tensors[f"{h}.ln_1.bias"]},
            "ln_2": {"g": tensors[f"{h}.ln_2.weight"], "b": tensors[f"{h}.ln_2.bias"]},
        })
    return settings, params


def load_gpt2_from_hf(model_size: str, device=None):
    """GPT-2 ``model_size`` through the safetensors route, as ``(model, cfg)``."""
    settings, params = load_gpt2_params_from_safetensors(download_gpt2_safetensors(model_size))
    return _model_from_params(settings, params, device)


# ------------------------------------------------------------------------------- loading into GPTModel


def assign(param: torch.nn.Parameter | None, array, name: str) -> None:
    """Copy ``array`` into ``param`` in place; a shape mismatch names the parameter and both shapes."""
    if param is None:
        raise ValueError(f"{name}: the model has no such parameter (for c_attn biases, set qkv_bias=True).")
    value = torch.as_tensor(np.ascontiguousarray(array), dtype=param.dtype)
    if tuple(param.shape) != tuple(value.shape):
        raise ValueError(
            f"Shape mismatch for {name}: the model has {tuple(param.shape)}, the checkpoint "
            f"{tuple(value.shape)}. Does the model config match the checkpoint's size and context length?"
        )
    with torch.no_grad():
        param.copy_(value)


def assign_vocab(param: torch.nn.Parameter, array: np.ndarray, name: str, vocab_size: int) -> None:
    """:func:`assign` for a (vocabulary x emb_dim) weight of a model whose vocabulary may be padded
    (``helpers.model.pad_vocab``): the checkpoint fills the first ``vocab_size`` rows, the padding
    rows are zeroed. Any other difference in shape is an error, as in :func:`assign`."""
    rows = np.shape(array)[0]
    if rows == vocab_size and param.shape[0] > rows and tuple(param.shape[1:]) == tuple(np.shape(array)[1:]):
        assign(param[:rows], array, name)
        with torch.no_grad():
            param[rows:].zero_()
    else:
        assign(param, array, name)


def load_weights_into_gpt(gpt: GPTModel, params: dict) -> GPTModel:
    """Copy GPT-2 ``params`` into ``gpt`` (in place) and return it.

    ``c_attn`` holds query, key and value side by side and is split in three; every weight matrix is
    transposed from OpenAI's ``[in, out]`` to ``nn.Linear``'s ``[out, in]``. GPT-2 ties its output
    layer to the token embedding, so ``out_head`` gets ``wte`` (unless ``params`` carries an
    ``out_head`` of its own, as lecture 02's untied model exported by :func:`params_from_model` does).
    """
    if len(params["blocks"]) != len(gpt.trf_blocks):
        raise ValueError(f"The checkpoint has {len(params['blocks'])} blocks, the model {len(gpt.trf_blocks)}.")
    assign(gpt.pos_emb.weight, params["wpe"], "pos_emb.weight (wpe)")
    assign_vocab(gpt.tok_emb.weight, params["wte"], "tok_emb.weight (wte)", gpt.cfg["vocab_size"])
    for i, (block, p) in enumerate(zip(gpt.trf_blocks, params["blocks"], strict=True)):
        att, ff = block.att, block.ff
        q_w, k_w, v_w = np.split(p["attn"]["c_attn"]["w"], 3, axis=-1)
        q_b, k_b, v_b = np.split(p["attn"]["c_attn"]["b"], 3, axis=-1)
        for layer, w, b, label in ((att.W_query, q_w, q_b, "W_query"), (att.W_key, k_w, k_b, "W_key"),
                                   (att.W_value, v_w, v_b, "W_value")):
            assign(layer.weight, w.T, f"trf_blocks.{i}.att.{label}.weight")
            if layer.bias is not None:
                assign(layer.bias, b, f"trf_blocks.{i}.att.{label}.bias")
            elif np.any(b != 0):
                raise ValueError("The checkpoint has non-zero query/key/value biases; build the model with qkv_bias=True.")
        assign(att.out_proj.weight, p["attn"]["c_proj"]["w"].T, f"trf_blocks.{i}.att.out_proj.weight")
        assign(att.out_proj.bias, p["attn"]["c_proj"]["b"], f"trf_blocks.{i}.att.out_proj.bias")
        assign(ff.layers[0].weight, p["mlp"]["c_fc"]["w"].T, f"trf_blocks.{i}.ff.layers.0.weight")
        assign(ff.layers[0].bias, p["mlp"]["c_fc"]["b"], f"trf_blocks.{i}.ff.layers.0.bias")
        assign(ff.layers[2].weight, p["mlp"]["c_proj"]["w"].T, f"trf_blocks.{i}.ff.layers.2.weight")
        assign(ff.layers[2].bias, p["mlp"]["c_proj"]["b"], f"trf_blocks.{i}.ff.layers.2.bias")
        assign(block.norm1.scale, p["ln_1"]["g"], f"trf_blocks.{i}.norm1.scale")
        assign(block.norm1.shift, p["ln_1"]["b"], f"trf_blocks.{i}.norm1.shift")
        assign(block.norm2.scale, p["ln_2"]["g"], f"trf_blocks.{i}.norm2.scale")
        assign(block.norm2.shift, p["ln_2"]["b"], f"trf_blocks.{i}.norm2.shift")
    assign(gpt.final_norm.scale, params["g"], "final_norm.scale")
    assign(gpt.final_norm.shift, params["b"], "final_norm.shift")
    out_head = params["out_head"]["w"] if "out_head" in params else params["wte"]
    assign_vocab(gpt.out_head.weight, out_head, "out_head.weight", gpt.cfg["vocab_size"])
    return gpt


def config_from_settings(settings: dict) -> dict:
    """Our config dict for a checkpoint's ``hparams.json``: GPT-2 style (qkv bias, no dropout)."""
    return {"vocab_size": settings["n_vocab"], "context_length": settings["n_ctx"], "emb_dim": settings["n_embd"],
            "n_heads": settings["n_head"], "n_layers": settings["n_layer"], "drop_rate": 0.0, "qkv_bias": True}


def _model_from_params(settings, params, device=None):
    cfg = config_from_settings(settings)
    model = load_weights_into_gpt(GPTModel(cfg), params)
    return model.to(device or "cpu").eval(), cfg


# ------------------------------------------------------------------------------- writing OpenAI's layout


def params_from_model(model: GPTModel) -> tuple[dict, dict]:
    """``(settings, params)`` of one of our models, in OpenAI's layout (the inverse of the loader).

    A model without qkv bias gets zero ``c_attn`` biases (the same outputs). A model whose
    ``out_head`` differs from ``tok_emb`` (lecture 02 trains them separately) also gets
    ``params["out_head"]``, which GPT-2 itself does not have.
    """
    cfg = model.cfg
    d = cfg["emb_dim"]

    def np_(t):
        return t.detach().cpu().float().numpy()

    def bias(layer):
        return np_(layer.bias) if layer.bias is not None else np.zeros(d, np.float32)

    vocab = cfg["vocab_size"]  # without the padding rows of a padded vocabulary
    params: dict = {"wte": np_(model.tok_emb.weight[:vocab]), "wpe": np_(model.pos_emb.weight),
                    "g": np_(model.final_norm.scale), "b": np_(model.final_norm.shift), "blocks": []}
    for block in model.trf_blocks:
        att, ff = block.att, block.ff
        qkv = (att.W_query, att.W_key, att.W_value)
        params["blocks"].append({
            "attn": {"c_attn": {"w": np.concatenate([np_(lin.weight).T for lin in qkv], axis=-1),
                                "b": np.concatenate([bias(lin) for lin in qkv])},
                     "c_proj": {"w": np_(att.out_proj.weight).T, "b": np_(att.out_proj.bias)}},
            "mlp": {"c_fc": {"w": np_(ff.layers[0].weight).T, "b": np_(ff.layers[0].bias)},
                    "c_proj": {"w": np_(ff.layers[2].weight).T, "b": np_(ff.layers[2].bias)}},
            "ln_1": {"g": np_(block.norm1.scale), "b": np_(block.norm1.shift)},
            "ln_2": {"g": np_(block.norm2.scale), "b": np_(block.norm2.shift)},
        })
    if not torch.equal(model.out_head.weight, model.tok_emb.weight):
        params["out_head"] = {"w": np_(model.out_head.weight[:vocab])}
    settings = {"n_vocab": cfg["vocab_size"], "n_ctx": cfg["context_length"], "n_embd": d,
                "n_head": cfg["n_heads"], "n_layer": cfg["n_layers"]}
    return settings, params


def _flatten(params: dict) -> dict[str, np.ndarray]:
    """OpenAI's variable names for a params dict (weights get the conv1d shape [1, in, out])."""
    flat = {"model/wte": params["wte"], "model/wpe": params["wpe"],
            "model/ln_f/g": params["g"], "model/ln_f/b": params["b"]}
    if "out_head" in params:
        flat["model/out_head/w"] = params["out_head"]["w"]
    for i, block in enumerate(params["blocks"]):
        for group in ("attn", "mlp"):
            for layer, wb in block[group].items():
                flat[f"model/h{i}/{group}/{layer}/w"] = wb["w"][None]
                flat[f"model/h{i}/{group}/{layer}/b"] = wb["b"]
        for norm in ("ln_1", "ln_2"):
            flat[f"model/h{i}/{norm}/g"] = block[norm]["g"]
            flat[f"model/h{i}/{norm}/b"] = block[norm]["b"]
    return flat


def write_openai_checkpoint(folder: str | Path, settings: dict, params: dict) -> Path:
    """Write ``(settings, params)`` as a TensorFlow 1 ``Saver`` checkpoint in exactly OpenAI's layout.

    The argument order matches what :func:`download_and_load_gpt2` and :func:`params_from_model`
    return, so ``write_openai_checkpoint(folder, *params_from_model(model))`` works. The folder gets
    ``checkpoint`` (with relative paths, so the folder can be moved), ``model.ckpt.{data-00000-of-00001,
    index,meta}``, ``hparams.json``, and GPT-2's ``encoder.json`` and ``vocab.bpe`` (from the tokenizer
    package), like the seven files OpenAI publishes. It is built in a temporary folder and moved into
    place, so a crash never leaves half a checkpoint.
    """
    from .tokenizer import packaged_bpe_dir

    tf = _import_tensorflow()
    folder = Path(folder)
    tmp = folder.with_name(folder.name + ".part")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    flat = _flatten(params)
    graph = tf.Graph()
    with graph.as_default():
        # Variables start as zeros and the arrays are fed in when initialising, so that the graph in
        # model.ckpt.meta stays small (as OpenAI's) instead of holding a second copy of every weight.
        variables = {name: tf.compat.v1.Variable(tf.zeros(value.shape, tf.float32), name=name)
                     for name, value in flat.items()}
        saver = tf.compat.v1.train.Saver(list(variables.values()), save_relative_paths=True)
        with tf.compat.v1.Session(graph=graph) as session:
            for name, var in variables.items():
                session.run(var.initializer, {var.initial_value: flat[name].astype(np.float32)})
            saver.save(session, str(tmp / "model.ckpt"))
    (tmp / "hparams.json").write_text(json.dumps(settings, indent=2))
    bpe = packaged_bpe_dir()
    if bpe is not None:
        for name in ("encoder.json", "vocab.bpe"):
            shutil.copyfile(bpe / name, tmp / name)
    old = folder.with_name(folder.name + ".old")
    shutil.rmtree(old, ignore_errors=True)
    if folder.exists():
        os.replace(folder, old)
    os.replace(tmp, folder)
    shutil.rmtree(old, ignore_errors=True)
    return folder


# ------------------------------------------------------------------------------- the lectures' entry point


def _first_line(err: BaseException, limit: int = 200) -> str:
    """An error in one line: its type, its first line and, for a list of tries, the last one."""
    lines = [line.strip() for line in str(err).strip().splitlines()]
    tries = [line[2:] for line in lines if line.startswith("- ")]
    text = lines[0] if lines else ""
    if tries:
        text += f" ... {tries[-1]}"
    return f"{type(err).__name__}: {text[:limit]}"


def _real_gpt2(model_size: str, allow_download: bool, problems: list[str]):
    """``(settings, params, source)`` of OpenAI's GPT-2 by the first route that works, else None.

    Each route first looks for files already on disk; only then, and only when a short probe shows
    that the server answers, does it start a download. What went wrong is appended to ``problems``.
    """
    # Route 1: OpenAI's TensorFlow checkpoint (the cache, the mirror folder, OpenAI, the backup).
    if not tensorflow_available():
        problems.append("OpenAI's checkpoint: TensorFlow is not installed (pip install tensorflow-cpu)")
    else:
        missing = missing_gpt2_files(model_size)
        if missing and not allow_download:
            problems.append(f"OpenAI's checkpoint: not in {default_models_dir()} and downloads are turned off")
        elif missing and first_reachable(gpt2_urls(model_size, "hparams.json")) is None:
            problems.append("OpenAI's checkpoint: neither OpenAI's server nor the backup answers")
        else:
            try:
                settings, params = download_and_load_gpt2(model_size)
                return settings, params, f"OpenAI's GPT-2 {model_size} (TensorFlow checkpoint in {default_models_dir()})"
            except Exception as err:  # DownloadError, OSError, TensorFlow's own errors for a damaged file
                problems.append(f"OpenAI's checkpoint: {_first_line(err)}")
    # Route 2: safetensors from the Hugging Face Hub (its cache first).
    source = f"OpenAI's GPT-2 {model_size} (safetensors from the Hugging Face Hub, {HF_REPOS[model_size]})"
    folder = None
    try:
        folder = download_gpt2_safetensors(model_size, local_only=True)
    except Exception:  # LocalEntryNotFoundError: not in the Hub's cache
        if not allow_download:
            problems.append("Hugging Face Hub: not in its cache and downloads are turned off")
        elif _hf_offline():
            problems.append("Hugging Face Hub: not in its cache and HF_HUB_OFFLINE is set")
        elif first_reachable([f"{_hf_endpoint()}/{HF_REPOS[model_size]}/resolve/main/config.json"]) is None:
            problems.append(f"Hugging Face Hub: {_hf_endpoint()} does not answer")
        else:
            try:
                folder = download_gpt2_safetensors(model_size)
            except Exception as err:  # the Hub raises its own error types
                problems.append(f"Hugging Face Hub: {_first_line(err)}")
    if folder is not None:
        try:
            return (*load_gpt2_params_from_safetensors(folder), source)
        except Exception as err:
            problems.append(f"Hugging Face Hub files in {folder}: {_first_line(err)}")
    return None


def _stand_in(model_size: str, profile: str, say):
    """Lecture 02's model in OpenAI's layout, else an untrained model: ``(settings, params, source)``."""
    from .checkpoints import load_checkpoint, pretrained_checkpoint_path

    ckpt = pretrained_checkpoint_path(profile)
    if ckpt.is_file():
        trained, _, _ = load_checkpoint(ckpt)
        if not tensorflow_available():
            say("Using lecture 02's model instead (TensorFlow is not installed, so its weights are taken "
                "straight from the model rather than through OpenAI's checkpoint format).")
            return (*params_from_model(trained), f"lecture 02's model ({profile} profile)")
        folder = runtime.cache_dir() / "gpt2-local" / f"lecture02-{profile}"
        hparams = folder / "hparams.json"
        if not (folder / "checkpoint").is_file() or not hparams.is_file() or hparams.stat().st_mtime < ckpt.stat().st_mtime:
            write_openai_checkpoint(folder, *params_from_model(trained))
        settings, params = load_openai_checkpoint(folder)
        say(f"Using lecture 02's model instead: written in OpenAI's checkpoint layout to {folder} and read "
            "back with the same code that reads GPT-2.")
        return settings, params, f"lecture 02's model ({profile} profile) in OpenAI's checkpoint layout"
    if profile == "full":
        cfg = get_config(model_size)
    else:  # the size lecture 02 trains in the quick profile
        cfg = get_config("gpt2-small", context_length=128, emb_dim=128, n_heads=4, n_layers=2)
    runtime.set_seed(123)
    say(f"WARNING: no GPT-2 weights and no lecture 02 checkpoint ({ckpt}) found: using an UNTRAINED "
        "model. Everything below runs, but its text is gibberish. Run lecture 02 first, or go online.")
    return (*params_from_model(GPTModel(cfg)), "an untrained model (random weights)")


def load_base_params(model_size: str = "124M", *, allow_download: bool = True, profile: str | None = None,
                     verbose: bool = True):
    """The weights lectures 03-06 start from, as ``(settings, params, source)``.

    In the full profile: OpenAI's GPT-2 ``model_size``, from OpenAI's TensorFlow checkpoint or else the
    Hub's safetensors (files already on disk first; with ``allow_download=False`` nothing else). When
    neither can be had (offline), or in the quick profile (which never downloads the 0.5-6 GB files):
    lecture 02's model, written in OpenAI's layout and read back through the very same reader. If
    lecture 02 has not run either, a freshly initialised model. ``source`` says in words which one
    you got, and a short message says why.
    """
    check_size(model_size)
    profile = runtime.profile(profile)
    say = print if verbose else (lambda *a, **k: None)
    if profile == "quick":
        say(f"Quick profile: GPT-2 {model_size} is not downloaded ({download_bytes(model_size) / 1e9:.1f} GB); "
            "lecture 02's small model stands in. The full profile loads the real weights.")
    else:
        problems: list[str] = []
        found = _real_gpt2(model_size, allow_download, problems)
        if found is not None:
            return found
        say(f"Could not get GPT-2 {model_size}'s weights (offline?):\n  - " + "\n  - ".join(problems))
    return _stand_in(model_size, profile, say)


def load_base_model(model_size: str = "124M", *, allow_download: bool = True, profile: str | None = None,
                    device=None, verbose: bool = True):
    """:func:`load_base_params` loaded into a ``GPTModel``: returns ``(model, cfg, source)``, in eval mode."""
    settings, params, source = load_base_params(model_size, allow_download=allow_download, profile=profile,
                                                verbose=verbose)
    model, cfg = _model_from_params(settings, params, device)
    return model, cfg, source


def prefetch_gpt2(model_size: str) -> Path:
    """Download GPT-2 ``model_size`` for ``python -m helpers prefetch``: OpenAI's checkpoint, or the
    safetensors when TensorFlow is not installed (the lectures would read those then)."""
    if tensorflow_available():
        folder = download_gpt2_files(model_size)
    else:
        folder = download_gpt2_safetensors(model_size)
    print(f"  GPT-2 {model_size:5s}      {folder}")
    return folder

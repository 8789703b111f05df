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

import json
import os
import shutil
import urllib.error
import urllib.request
from pathlib import Path

import numpy as np
import torch

from . import runtime
from .download import DownloadError, copy_verified, download, is_valid
from .model import GPTModel, get_config

MODEL_SIZES = ("124M", "355M", "774M", "1558M")
GPT2_FILES = (
    "checkpoint", "encoder.json", "hparams.json", "model.ckpt.data-00000-of-00001",
    "model.ckpt.index", "model.ckpt.meta", "vocab.bpe",
)
BASE_URLS = (
    "https://openaipublic.blob.core.windows.net/gpt-2/models",
    "https://f001.backblazeb2.com/file/LLMs-from-scratch/gpt2",
)
# Sizes known for certain; other files are only checked to be non-empty (OpenAI publishes no hashes).
KNOWN_SIZES = {
    ("124M", "model.ckpt.data-00000-of-00001"): 497_759_232,
    ("355M", "model.ckpt.data-00000-of-00001"): 1_419_292_672,
}
HF_REPOS = {
    "124M": "openai-community/gpt2",
    "355M": "openai-community/gpt2-medium",
    "774M": "openai-community/gpt2-large",
    "1558M": "openai-community/gpt2-xl",
}
# Approximate download sizes of OpenAI's checkpoint, for the lecture's table.
DOWNLOAD_GB = {"124M": 0.50, "355M": 1.42, "774M": 3.10, "1558M": 6.23}


def check_size(model_size: str) -> str:
    if model_size not in MODEL_SIZES:
        raise ValueError(f"Unknown GPT-2 size {model_size!r}; the released sizes are {', '.join(MODEL_SIZES)}.")
    return model_size


def default_models_dir() -> Path:
    return runtime.cache_dir() / "gpt2"


# ------------------------------------------------------------------------------- downloading


def reachable(url: str, timeout: float = 5.0) -> bool:
    """True when a HEAD request to ``url`` gets any HTTP answer within ``timeout`` seconds."""
    try:
        urllib.request.urlopen(urllib.request.Request(url, method="HEAD"), timeout=timeout).close()
        return True
    except urllib.error.HTTPError:
        return True  # the server answered (e.g. 403/404): the network works
    except (OSError, ValueError):
        return False


def _file_ok(path: Path, expected_size: int | None) -> bool:
    return path.is_file() and path.stat().st_size > 0 and is_valid(path, None, expected_size)


def download_gpt2_files(model_size: str, models_dir: str | Path | None = None, progress: bool = True) -> Path:
    """Make sure the seven checkpoint files of ``model_size`` are in ``models_dir/model_size``.

    Each file comes from the cache, the ``LECTURES_MIRROR`` folder (``<mirror>/gpt2/<size>/<file>``)
    or the network (OpenAI first, then the backup; interrupted downloads resume). Returns the folder.
    """
    check_size(model_size)
    folder = Path(models_dir or default_models_dir()) / model_size
    folder.mkdir(parents=True, exist_ok=True)
    mirror = runtime.mirror_dir()
    for name in GPT2_FILES:
        dest, expected = folder / name, KNOWN_SIZES.get((model_size, name))
        if _file_ok(dest, expected):
            continue
        if mirror is not None and _file_ok(mirror / "gpt2" / model_size / name, expected):
            copy_verified(mirror / "gpt2" / model_size / name, dest, None, expected)
            continue
        urls = [f"{base}/{model_size}/{name}" for base in BASE_URLS]
        download(urls, dest, size=expected, progress=progress)
        if dest.stat().st_size == 0:
            dest.unlink()
            raise DownloadError(f"{name} of GPT-2 {model_size} downloaded empty from {urls}.")
    return folder


def download_and_load_gpt2(model_size: str, models_dir: str | Path | None = None, progress: bool = True):
    """The course's entry point: download GPT-2 ``model_size`` if needed; return ``(settings, params)``.

    ``settings`` is OpenAI's ``hparams.json`` (n_vocab, n_ctx, n_embd, n_head, n_layer).
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


def _import_tensorflow():
    try:
        os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
        os.environ.setdefault("TF_ENABLE_ONEDNN_OPTS", "0")  # we only read files; this also silences its banner
        import tensorflow as tf
    except ImportError as err:
        raise ImportError(
            "Reading OpenAI's original checkpoint needs TensorFlow (`pip install tensorflow-cpu`). "
            "Without it, use the safetensors route: load_gpt2_from_hf(model_size)."
        ) from err
    return tf


def load_gpt2_params_from_tf_ckpt(ckpt_path: str, settings: dict) -> dict:
    """Read every variable of a GPT-2 TF checkpoint into a nested dict of NumPy arrays.

    ``model/h3/mlp/c_fc/w`` goes to ``params["blocks"][3]["mlp"]["c_fc"]["w"]``; variables outside the
    blocks (``model/wte``, ``model/wpe``, ``model/ln_f/g``, ``model/ln_f/b``) to ``params["wte"]`` etc.,
    with ``ln_f``'s gain and bias at ``params["g"]`` and ``params["b"]`` as in the course.
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


def download_gpt2_safetensors(model_size: str) -> Path:
    """Fetch ``model.safetensors`` and ``config.json`` from the Hub (cached, resumable); return the folder."""
    from huggingface_hub import hf_hub_download

    repo = HF_REPOS[check_size(model_size)]
    path = hf_hub_download(repo, "model.safetensors")
    hf_hub_download(repo, "config.json")
    return Path(path).parent


def load_gpt2_params_from_safetensors(path: str | Path):
    """``(settings, params)`` from a Hugging Face GPT-2 folder (or its ``model.safetensors`` file).

    Hugging Face's GPT-2 uses ``Conv1D`` layers that store weights as ``[in, out]`` like OpenAI, so
    the arrays go into the same dictionary as the TF route's without transposing.
    """
    from safetensors.numpy import load_file

    path = Path(path)
    folder = path if path.is_dir() else path.parent
    tensors = load_file(folder / "model.safetensors" if path.is_dir() else path)
    tensors = {k.removeprefix("transformer."): v for k, v in tensors.items()}
    config = json.loads((folder / "config.json").read_text())
    settings = {"n_vocab": config["vocab_size"], "n_ctx": config.get("n_positions", config.get("n_ctx")),
                "n_embd": config["n_embd"], "n_head": config["n_head"], "n_layer": config["n_layer"]}
    params: dict = {"wte": tensors["wte.weight"], "wpe": tensors["wpe.weight"],
                    "g": tensors["ln_f.weight"], "b": tensors["ln_f.bias"], "blocks": []}
    for i in range(settings["n_layer"]):
        def t(name, i=i):
            return tensors[f"h.{i}.{name}"]

        params["blocks"].append({
            "attn": {"c_attn": {"w": t("attn.c_attn.weight"), "b": t("attn.c_attn.bias")},
                     "c_proj": {"w": t("attn.c_proj.weight"), "b": t("attn.c_proj.bias")}},
            "mlp": {"c_fc": {"w": t("mlp.c_fc.weight"), "b": t("mlp.c_fc.bias")},
                    "c_proj": {"w": t("mlp.c_proj.weight"), "b": t("mlp.c_proj.bias")}},
            "ln_1": {"g": t("ln_1.weight"), "b": t("ln_1.bias")},
            "ln_2": {"g": t("ln_2.weight"), "b": t("ln_2.bias")},
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
    assign(gpt.tok_emb.weight, params["wte"], "tok_emb.weight (wte)")
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
    assign(gpt.out_head.weight, out_head, "out_head.weight")
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
    np_ = lambda t: t.detach().cpu().float().numpy()  # noqa: E731
    d = cfg["emb_dim"]
    params: dict = {"wte": np_(model.tok_emb.weight), "wpe": np_(model.pos_emb.weight),
                    "g": np_(model.final_norm.scale), "b": np_(model.final_norm.shift), "blocks": []}
    for block in model.trf_blocks:
        att, ff = block.att, block.ff
        bias = lambda layer: np_(layer.bias) if layer.bias is not None else np.zeros(d, np.float32)  # noqa: E731
        params["blocks"].append({
            "attn": {"c_attn": {"w": np.concatenate([np_(att.W_query.weight).T, np_(att.W_key.weight).T,
                                                     np_(att.W_value.weight).T], axis=-1),
                                "b": np.concatenate([bias(att.W_query), bias(att.W_key), bias(att.W_value)])},
                     "c_proj": {"w": np_(att.out_proj.weight).T, "b": np_(att.out_proj.bias)}},
            "mlp": {"c_fc": {"w": np_(ff.layers[0].weight).T, "b": np_(ff.layers[0].bias)},
                    "c_proj": {"w": np_(ff.layers[2].weight).T, "b": np_(ff.layers[2].bias)}},
            "ln_1": {"g": np_(block.norm1.scale), "b": np_(block.norm1.shift)},
            "ln_2": {"g": np_(block.norm2.scale), "b": np_(block.norm2.shift)},
        })
    if not torch.equal(model.out_head.weight, model.tok_emb.weight):
        params["out_head"] = {"w": np_(model.out_head.weight)}
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
    """Write ``params`` as a TensorFlow 1 ``Saver`` checkpoint in exactly OpenAI's layout.

    The folder gets ``checkpoint`` (relative paths), ``model.ckpt.{data-00000-of-00001,index,meta}``,
    ``hparams.json``, and GPT-2's ``encoder.json`` and ``vocab.bpe`` (from the tokenizer package), like
    the seven files OpenAI publishes. It is built in a temporary folder and moved into place, so a
    crash never leaves half a checkpoint.
    """
    from .tokenizer import packaged_bpe_dir

    tf = _import_tensorflow()
    folder = Path(folder)
    tmp = folder.with_name(folder.name + ".part")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    graph = tf.Graph()
    with graph.as_default():
        variables = [tf.compat.v1.Variable(value.astype(np.float32), name=name)
                     for name, value in _flatten(params).items()]
        saver = tf.compat.v1.train.Saver(variables, save_relative_paths=True)
        with tf.compat.v1.Session(graph=graph) as session:
            session.run(tf.compat.v1.global_variables_initializer())
            saver.save(session, str(tmp / "model.ckpt"))
    (tmp / "hparams.json").write_text(json.dumps(settings, indent=2))
    bpe = packaged_bpe_dir()
    if bpe is not None:
        for name in ("encoder.json", "vocab.bpe"):
            shutil.copyfile(bpe / name, tmp / name)
    old = folder.with_name(folder.name + ".old")
    if folder.exists():
        os.replace(folder, old)
    os.replace(tmp, folder)
    shutil.rmtree(old, ignore_errors=True)
    return folder


# ------------------------------------------------------------------------------- the lectures' entry point


def load_base_params(model_size: str = "124M", *, allow_download: bool = True, profile: str | None = None,
                     verbose: bool = True):
    """The weights lectures 03-06 start from, as ``(settings, params, source)``.

    In the full profile: OpenAI's GPT-2 ``model_size`` (TF checkpoint, else safetensors). When neither
    can be had (offline), or in the quick profile (which never downloads the 0.5-6 GB files): lecture
    02's model, written in OpenAI's layout and read back through the very same reader. If lecture 02 has
    not run either, a freshly initialised model. ``source`` says in words which one you got.
    """
    check_size(model_size)
    profile = runtime.profile(profile)
    say = print if verbose else (lambda *a, **k: None)
    if profile == "full" and allow_download:
        problems = []
        folder = Path(default_models_dir()) / model_size
        local = all(_file_ok(folder / n, KNOWN_SIZES.get((model_size, n))) for n in GPT2_FILES)
        if local or runtime.mirror_dir() is not None or reachable(f"{BASE_URLS[0]}/{model_size}/hparams.json"):
            try:
                settings, params = download_and_load_gpt2(model_size)
                return settings, params, f"OpenAI's GPT-2 {model_size} (TensorFlow checkpoint in {folder})"
            except (DownloadError, OSError, ImportError) as err:
                problems.append(f"OpenAI checkpoint: {str(err).splitlines()[0]}")
        else:
            problems.append("OpenAI checkpoint: the download server cannot be reached")
        try:
            settings, params = load_gpt2_params_from_safetensors(download_gpt2_safetensors(model_size))
            return settings, params, f"OpenAI's GPT-2 {model_size} (safetensors from the Hugging Face Hub)"
        except Exception as err:  # the Hub raises its own error types for offline, missing, ...
            problems.append(f"Hugging Face Hub: {type(err).__name__}: {str(err).splitlines()[0][:160]}")
        say(f"Could not get GPT-2 {model_size}'s weights:\n  - " + "\n  - ".join(problems))
    elif profile == "quick":
        say("Quick profile: using lecture 02's small model instead of downloading GPT-2 "
            "(the full profile downloads the real weights).")
    from .checkpoints import load_checkpoint, pretrained_checkpoint_path

    ckpt = pretrained_checkpoint_path(profile)
    if ckpt.is_file():
        trained, _, _ = load_checkpoint(ckpt)
        folder = runtime.cache_dir() / "gpt2-local" / f"lecture02-{profile}"
        if not (folder / "checkpoint").is_file() or (folder / "hparams.json").stat().st_mtime < ckpt.stat().st_mtime:
            write_openai_checkpoint(folder, *params_from_model(trained))
        settings, params = load_openai_checkpoint(folder)
        say(f"Using lecture 02's model instead, written in OpenAI's checkpoint layout to {folder} and read back.")
        return settings, params, f"lecture 02's model ({profile} profile) in OpenAI's checkpoint layout"
    cfg = get_config(model_size) if profile == "full" else get_config(
        "gpt2-small", context_length=128, emb_dim=128, n_heads=4, n_layers=2)
    runtime.set_seed(123)
    say("WARNING: no GPT-2 weights and no lecture 02 checkpoint found: using an UNTRAINED model. "
        "Its text will be gibberish. Run lecture 02 first, or go online for the real GPT-2.")
    settings, params = params_from_model(GPTModel(cfg))
    return settings, params, "an untrained model (random weights)"


def load_base_model(model_size: str = "124M", *, allow_download: bool = True, profile: str | None = None,
                    device=None, verbose: bool = True):
    """:func:`load_base_params` loaded into a ``GPTModel``: returns ``(model, cfg, source)``, in eval mode."""
    settings, params, source = load_base_params(model_size, allow_download=allow_download, profile=profile,
                                                verbose=verbose)
    model, cfg = _model_from_params(settings, params, device)
    return model, cfg, source


def prefetch_gpt2(model_size: str) -> Path:
    """Download GPT-2 ``model_size`` for ``python -m helpers prefetch``."""
    folder = download_gpt2_files(model_size)
    print(f"  GPT-2 {model_size:5s}      {folder}")
    return folder

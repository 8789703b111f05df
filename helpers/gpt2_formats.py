"""GPT-2's weights on disk and in memory: reading both published formats, and writing OpenAI's (lecture 03).

Both readers return the same ``(settings, params)`` pair, so one loader
(:func:`helpers.weights.load_weights_into_gpt`) serves both:

* ``settings`` is OpenAI's ``hparams.json``: ``n_vocab``, ``n_ctx``, ``n_embd``, ``n_head``, ``n_layer``;
* ``params`` mirrors the checkpoint's variable names (``model/h0/attn/c_attn/w`` becomes
  ``params["blocks"][0]["attn"]["c_attn"]["w"]``) and holds NumPy arrays in OpenAI's orientation:
  weights are ``[in_features, out_features]`` (PyTorch's ``nn.Linear`` stores the transpose).

The readers: :func:`load_openai_checkpoint` for OpenAI's TensorFlow checkpoint (TensorFlow is imported
only here, and only when needed) and :func:`load_gpt2_params_from_safetensors` for the Hugging Face
Hub's files. The other direction, :func:`params_from_model` and :func:`write_openai_checkpoint`, turns
one of our models into OpenAI's exact layout: that is how lecture 02's model stands in for GPT-2 when
the real weights cannot be had, read back through the very same reader.
"""

from __future__ import annotations

import importlib.util
import os
import shutil
from pathlib import Path

import numpy as np
import torch
from safetensors.numpy import load_file as load_safetensors

from .files import (
    ReadError,
    WriteError,
    atomic_write,
    atomic_write_json,
    describe_read_error,
    explain_write_error,
    fsync_dir,
    fsync_file,
    part_path,
    read_json,
)
from .model import GPTModel
from .tokenizer import packaged_bpe_dir

SETTINGS_KEYS = ("n_vocab", "n_ctx", "n_embd", "n_head", "n_layer")


class CheckpointReadError(ValueError):
    """GPT-2's files are there but cannot be read (damaged, cut short, or not GPT-2's); lectures 03-06.

    The message names the folder or file and what is wrong with it.
    """


def settings_problem(settings) -> str | None:
    """What is wrong with a GPT-2 settings dict (``hparams.json``), or None (lecture 03 reads one).

    It must be a JSON object whose five sizes (:data:`SETTINGS_KEYS`) are positive integers.
    """
    if not isinstance(settings, dict):
        return f"not a JSON object of GPT-2 settings (got a {type(settings).__name__})"
    missing = [key for key in SETTINGS_KEYS if key not in settings]
    if missing:
        return f"lacks {missing}"
    bad = {key: settings[key] for key in SETTINGS_KEYS
           if isinstance(settings[key], bool) or not isinstance(settings[key], int) or settings[key] < 1}
    return f"needs positive whole numbers, got {bad}" if bad else None


def read_settings(path: str | Path) -> dict:
    """GPT-2's settings from an ``hparams.json``; a missing, damaged or wrong file raises CheckpointReadError.

    Lecture 03 reads OpenAI's with it.
    """
    try:
        settings = read_json(path, "GPT-2's settings (hparams.json)")
    except ReadError as err:
        raise CheckpointReadError(str(err)) from err
    problem = settings_problem(settings)
    if problem is not None:
        raise CheckpointReadError(f"{path} is not GPT-2's hparams.json: {problem}.")
    return settings


# ------------------------------------------------------------------------------- OpenAI's TF checkpoint


def tensorflow_available() -> bool:
    """Whether TensorFlow is installed, which reading OpenAI's checkpoint needs (lectures 03-06)."""
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


def load_openai_checkpoint(folder: str | Path):
    """``(settings, params)`` from a folder in OpenAI's layout (``checkpoint``, ``hparams.json``, ``model.ckpt.*``).

    Lecture 03 reads GPT-2 (and, offline, lecture 02's model written in the same layout) with it.
    A missing, damaged or inconsistent file raises :class:`CheckpointReadError`, which names it.
    """
    folder = Path(folder)
    if not folder.is_dir():
        raise CheckpointReadError(f"{folder} is not a folder holding a GPT-2 checkpoint.")
    settings = read_settings(folder / "hparams.json")
    tf = _import_tensorflow()
    ckpt_path = tf.train.latest_checkpoint(str(folder))
    if ckpt_path is None:
        raise CheckpointReadError(f"No TensorFlow checkpoint in {folder} (its 'checkpoint' file is missing or wrong).")
    try:
        return settings, load_gpt2_params_from_tf_ckpt(ckpt_path, settings)
    except tf.errors.OpError as err:  # DataLossError (a checksum), NotFoundError (a missing file), ...
        first_line = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise CheckpointReadError(f"TensorFlow cannot read the checkpoint in {folder}: {first_line}. A file is "
                                  f"damaged or cut short; download it again.") from err


def load_gpt2_params_from_tf_ckpt(ckpt_path: str, settings: dict) -> dict:
    """Read every variable of a GPT-2 TF checkpoint into a nested dict of NumPy arrays (the course's name, lecture 03).

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
            if int(parts[0][1:]) >= settings["n_layer"]:
                raise CheckpointReadError(f"The checkpoint {ckpt_path} has a block {parts[0]}, but its hparams.json "
                                          f"says n_layer={settings['n_layer']}: the files do not belong together.")
            node, path = params["blocks"][int(parts[0][1:])], parts[1:]
        elif parts[0] == "ln_f":
            node, path = params, parts[1:]
        else:
            node, path = params, parts
        for key in path[:-1]:
            node = node.setdefault(key, {})
        node[path[-1]] = array
    return params


# ------------------------------------------------------------------------------- the Hub's safetensors


def load_gpt2_params_from_safetensors(path: str | Path):
    """``(settings, params)`` from a Hugging Face GPT-2 folder (or its ``model.safetensors`` file).

    Lecture 03's route without TensorFlow. Hugging Face's GPT-2 uses ``Conv1D`` layers that store
    weights as ``[in, out]`` like OpenAI, so the arrays go into the same dictionary as the TF route's
    without transposing. A missing, damaged or foreign file raises :class:`CheckpointReadError`,
    which names it.
    """
    path = Path(path)
    folder = path if path.is_dir() else path.parent
    weights_file = folder / "model.safetensors" if path.is_dir() else path
    try:
        tensors = load_safetensors(weights_file)
    except Exception as err:  # OSError, or safetensors' own error for a damaged header
        raise CheckpointReadError(describe_read_error(weights_file, err, "GPT-2's safetensors weights")) from err
    tensors = {k.removeprefix("transformer."): v for k, v in tensors.items()}  # save_pretrained adds it
    try:
        config = read_json(folder / "config.json", "GPT-2's config.json")
    except ReadError as err:
        raise CheckpointReadError(str(err)) from err
    if not isinstance(config, dict):
        config = {}
    settings = {"n_vocab": config.get("vocab_size"), "n_ctx": config.get("n_positions", config.get("n_ctx")),
                "n_embd": config.get("n_embd"), "n_head": config.get("n_head"), "n_layer": config.get("n_layer")}
    problem = settings_problem(settings)
    if problem is not None:
        raise CheckpointReadError(f"{folder / 'config.json'} is not a GPT-2 config: {problem}.")

    def tensor(name):
        if name not in tensors:
            raise CheckpointReadError(f"{weights_file} lacks the tensor {name!r}: not GPT-2's weights, or another "
                                      f"size than its config.json says.")
        return tensors[name]

    def pair(prefix):  # a Conv1D layer's weight and bias
        return {"w": tensor(f"{prefix}.weight"), "b": tensor(f"{prefix}.bias")}

    params: dict = {"wte": tensor("wte.weight"), "wpe": tensor("wpe.weight"),
                    "g": tensor("ln_f.weight"), "b": tensor("ln_f.bias"), "blocks": []}
    for i in range(settings["n_layer"]):
        h = f"h.{i}"
        params["blocks"].append({
            "attn": {"c_attn": pair(f"{h}.attn.c_attn"), "c_proj": pair(f"{h}.attn.c_proj")},
            "mlp": {"c_fc": pair(f"{h}.mlp.c_fc"), "c_proj": pair(f"{h}.mlp.c_proj")},
            "ln_1": {"g": tensor(f"{h}.ln_1.weight"), "b": tensor(f"{h}.ln_1.bias")},
            "ln_2": {"g": tensor(f"{h}.ln_2.weight"), "b": tensor(f"{h}.ln_2.bias")},
        })
    return settings, params


# ------------------------------------------------------------------------------- writing OpenAI's layout


def params_from_model(model: GPTModel) -> tuple[dict, dict]:
    """``(settings, params)`` of one of our models, in OpenAI's layout (the inverse of the loader).

    Lectures 03-06 use it to let lecture 02's model stand in for GPT-2. A model without qkv bias gets
    zero ``c_attn`` biases (the same outputs). A model whose ``out_head`` differs from ``tok_emb``
    (lecture 02 trains them separately) also gets ``params["out_head"]``, which GPT-2 itself does not
    have.
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

    Lectures 03-06 read lecture 02's model through it when GPT-2 cannot be had. The argument order
    matches what :func:`helpers.weights.download_and_load_gpt2` and :func:`params_from_model` return,
    so ``write_openai_checkpoint(folder, *params_from_model(model))`` works. The folder gets
    ``checkpoint`` (with relative paths, so the folder can be moved), ``model.ckpt.{data-00000-of-00001,
    index,meta}``, ``hparams.json``, and GPT-2's ``encoder.json`` and ``vocab.bpe`` (from the tokenizer
    package), like the seven files OpenAI publishes. It is built in a temporary folder, flushed to
    disk, and moved into place, so a crash never leaves half a checkpoint.
    """
    tf = _import_tensorflow()
    folder = Path(folder)
    tmp = part_path(folder)
    try:
        _write_openai_layout(tf, folder, tmp, settings, params)
    except (OSError, tf.errors.OpError) as err:  # TensorFlow reports a full disk as its own error
        shutil.rmtree(tmp, ignore_errors=True)
        raise (err if isinstance(err, WriteError) else explain_write_error(folder, err)) from err
    return folder


def _write_openai_layout(tf, folder: Path, tmp: Path, settings: dict, params: dict) -> None:
    """:func:`write_openai_checkpoint`'s steps: build in ``tmp``, flush, then swap it in for ``folder``."""
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
    for path in tmp.iterdir():
        fsync_file(path)
    atomic_write_json(tmp / "hparams.json", settings, indent=2)
    bpe = packaged_bpe_dir()
    if bpe is not None:
        for name in ("encoder.json", "vocab.bpe"):
            with open(bpe / name, "rb") as src, atomic_write(tmp / name, "wb") as dst:
                shutil.copyfileobj(src, dst)
    fsync_dir(tmp)
    # The swap: the old folder steps aside, the new one takes its name; a reader sees one or the other.
    old = folder.with_name(folder.name + ".old")
    shutil.rmtree(old, ignore_errors=True)
    if folder.exists():
        os.replace(folder, old)
    os.replace(tmp, folder)
    fsync_dir(folder.parent)
    shutil.rmtree(old, ignore_errors=True)

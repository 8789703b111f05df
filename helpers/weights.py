"""GPT-2's weights in our ``GPTModel``: the course's loader and the base model of lectures 03-06.

Lecture 03 builds this step by step:

* :func:`download_and_load_gpt2` (the course's entry point) fetches OpenAI's checkpoint
  (:mod:`helpers.gpt2_files`) and reads it into ``(settings, params)`` (:mod:`helpers.gpt2_formats`,
  which also describes the ``params`` dictionary);
* :func:`config_from_settings` turns ``hparams.json`` into our config, and
  :func:`load_weights_into_gpt` copies ``params`` into a ``GPTModel``.

:func:`load_base_model` is what lectures 04-06 call: the real GPT-2 when it can be had (OpenAI's
checkpoint, else the Hub's safetensors; files on disk first), otherwise lecture 02's model, written in
OpenAI's layout and read back through the very same reader, and as a last resort an untrained model.
It says in one short message which one you got and why.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from . import gpt2_files, runtime
from .checkpoints import load_checkpoint, pretrained_checkpoint_path
from .download import one_line
from .files import WriteError, explain_write_error
from .gpt2_files import (
    DATA_FILE,
    GPT2_FILES,
    HF_REPOS,
    check_size,
    default_models_dir,
    download_gpt2_files,
)
from .gpt2_formats import (
    SETTINGS_KEYS,
    CheckpointReadError,
    load_gpt2_params_from_safetensors,
    load_openai_checkpoint,
    params_from_model,
    settings_problem,
    tensorflow_available,
    write_openai_checkpoint,
)
from .model import GPTModel, get_config


def download_and_load_gpt2(model_size: str, models_dir: str | Path | None = None, progress: bool = True):
    """The course's entry point (lecture 03): download GPT-2 ``model_size`` if needed; return ``(settings, params)``.

    ``settings`` is OpenAI's ``hparams.json`` (n_vocab, n_ctx, n_embd, n_head, n_layer); ``params``
    the nested dictionary of NumPy arrays described in :mod:`helpers.gpt2_formats`.

    Files that pass every check made before reading but that TensorFlow then cannot read (a checksum
    inside the index or the data file does not match) are not trusted: the small files are fetched
    again, and if that does not help, the data file too. When even fresh copies cannot be read,
    :class:`helpers.gpt2_formats.CheckpointReadError` says so.
    """
    folder = download_gpt2_files(model_size, models_dir, progress)
    try:
        return load_openai_checkpoint(folder)
    except CheckpointReadError as err:
        error = err
    small = tuple(name for name in GPT2_FILES if name != DATA_FILE)
    for names in (small, (DATA_FILE,)):
        for name in names:
            try:
                (folder / name).unlink(missing_ok=True)
            except OSError as err:
                raise explain_write_error(folder / name, err) from err
        download_gpt2_files(model_size, models_dir, progress)
        try:
            return load_openai_checkpoint(folder)
        except CheckpointReadError as err:
            error = err
    raise CheckpointReadError(f"GPT-2 {model_size}'s files in {folder} cannot be read, even after downloading them "
                              f"again: {error} Try the safetensors route: load_gpt2_from_hf({model_size!r}).") from error


def load_gpt2_from_hf(model_size: str, device=None):
    """GPT-2 ``model_size`` through the safetensors route, as ``(model, cfg)``; lecture 03's route without TensorFlow."""
    settings, params = load_gpt2_params_from_safetensors(gpt2_files.download_gpt2_safetensors(model_size))
    return _model_from_params(settings, params, device)


# ------------------------------------------------------------------------------- loading into GPTModel


def assign(param: torch.nn.Parameter | None, array, name: str) -> None:
    """Copy ``array`` into ``param`` in place; a shape mismatch names the parameter and both shapes (lecture 03)."""
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
    rows are zeroed. Any other difference in shape is an error, as in :func:`assign`. Lectures 03-06
    load GPT-2 into such models when the vocabulary is padded for speed."""
    rows = np.shape(array)[0]
    if rows == vocab_size and param.shape[0] > rows and tuple(param.shape[1:]) == tuple(np.shape(array)[1:]):
        assign(param[:rows], array, name)
        with torch.no_grad():
            param[rows:].zero_()
    else:
        assign(param, array, name)


def load_weights_into_gpt(gpt: GPTModel, params: dict) -> GPTModel:
    """Copy GPT-2 ``params`` into ``gpt`` (in place) and return it: the course's loader, taught in lecture 03.

    ``c_attn`` holds query, key and value side by side and is split in three; every weight matrix is
    transposed from OpenAI's ``[in, out]`` to ``nn.Linear``'s ``[out, in]``. GPT-2 ties its output
    layer to the token embedding, so ``out_head`` gets ``wte`` (unless ``params`` carries an
    ``out_head`` of its own, as lecture 02's untied model exported by :func:`params_from_model` does).
    """
    missing = [key for key in ("wte", "wpe", "g", "b", "blocks") if not isinstance(params, dict) or key not in params]
    if missing:
        hint = " (that is the settings, hparams.json: pass params, the second value)" if isinstance(params, dict) and (
            set(SETTINGS_KEYS) <= set(params)) else ""
        raise ValueError(f"params lacks {missing}{hint}: expected the dictionary that download_and_load_gpt2 returns "
                         f"second, with 'wte', 'wpe', 'g', 'b' and 'blocks'.")
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
    """Our config dict for a checkpoint's ``hparams.json``: GPT-2 style (qkv bias, no dropout); lecture 03."""
    problem = settings_problem(settings)
    if problem is not None:
        raise ValueError(f"Not GPT-2's settings (hparams.json): {problem}.")
    return {"vocab_size": settings["n_vocab"], "context_length": settings["n_ctx"], "emb_dim": settings["n_embd"],
            "n_heads": settings["n_head"], "n_layers": settings["n_layer"], "drop_rate": 0.0, "qkv_bias": True}


def _model_from_params(settings, params, device=None):
    cfg = config_from_settings(settings)
    model = load_weights_into_gpt(GPTModel(cfg), params)
    return model.to(device or "cpu").eval(), cfg


# ------------------------------------------------------------------------------- the lectures' entry point


def _real_gpt2(model_size: str, allow_download: bool, problems: list[str]):
    """``(settings, params, source)`` of OpenAI's GPT-2 by the first route that works, else None.

    Each route first looks for files already on disk; only then, and only when a short probe shows
    that the server answers, does it start a download. What went wrong is appended to ``problems``.
    """
    # Route 1: OpenAI's TensorFlow checkpoint (the cache, the mirror folder, OpenAI, the backup).
    if not tensorflow_available():
        problems.append("OpenAI's checkpoint: TensorFlow is not installed (optional: `make tensorflow`, "
                        "or pip install -r requirements-tensorflow.txt)")
    else:
        missing = gpt2_files.missing_gpt2_files(model_size)
        if missing and not allow_download:
            problems.append(f"OpenAI's checkpoint: not in {default_models_dir()} and downloads are turned off")
        elif missing and gpt2_files.first_reachable(gpt2_files.gpt2_urls(model_size, "hparams.json")) is None:
            problems.append("OpenAI's checkpoint: neither OpenAI's server nor the backup answers")
        else:
            try:
                settings, params = download_and_load_gpt2(model_size)
                return settings, params, f"OpenAI's GPT-2 {model_size} (TensorFlow checkpoint in {default_models_dir()})"
            except Exception as err:  # DownloadError, OSError, TensorFlow's own errors for a damaged file
                problems.append(f"OpenAI's checkpoint: {one_line(err, 200)}")
    # Route 2: safetensors from the Hugging Face Hub (its cache first).
    source = f"OpenAI's GPT-2 {model_size} (safetensors from the Hugging Face Hub, {HF_REPOS[model_size]})"
    folder, hub = None, gpt2_files.hf_endpoint()
    try:
        folder = gpt2_files.download_gpt2_safetensors(model_size, local_only=True)
    except Exception:  # LocalEntryNotFoundError: not in the Hub's cache
        if not allow_download:
            problems.append("Hugging Face Hub: not in its cache and downloads are turned off")
        elif gpt2_files.hf_offline():
            problems.append("Hugging Face Hub: not in its cache and HF_HUB_OFFLINE is set")
        elif gpt2_files.first_reachable([f"{hub}/{HF_REPOS[model_size]}/resolve/main/config.json"]) is None:
            problems.append(f"Hugging Face Hub: {hub} does not answer")
        else:
            try:
                folder = gpt2_files.download_gpt2_safetensors(model_size)
            except Exception as err:  # the Hub raises its own error types
                problems.append(f"Hugging Face Hub: {one_line(err, 200)}")
    if folder is not None:
        try:
            return (*load_gpt2_params_from_safetensors(folder), source)
        except Exception as err:
            problems.append(f"Hugging Face Hub files in {folder}: {one_line(err, 200)}")
    return None


def _stand_in(model_size: str, profile: str, say):
    """Lecture 02's model in OpenAI's layout, else an untrained model: ``(settings, params, source)``.

    Lecture 02's model is rebuilt from its checkpoint, which stores the config the lecture trained
    (the quick profile's small one, or the full one). Without that checkpoint, an untrained model gets
    GPT-2 ``model_size``'s own sizes in the full profile and :data:`helpers.model.TINY_CONFIG`'s in the
    quick profile, so that the lectures still run in seconds.
    """
    ckpt = pretrained_checkpoint_path(profile)
    if ckpt.is_file():
        trained, _, _ = load_checkpoint(ckpt)
        if not tensorflow_available():
            say("Using lecture 02's model instead (TensorFlow is not installed, so its weights are taken "
                "straight from the model rather than through OpenAI's checkpoint format).")
            return (*params_from_model(trained), f"lecture 02's model ({profile} profile)")
        folder = runtime.cache_dir() / "gpt2-local" / f"lecture02-{profile}"
        hparams = folder / "hparams.json"
        try:
            if not (folder / "checkpoint").is_file() or not hparams.is_file() or hparams.stat().st_mtime < ckpt.stat().st_mtime:
                write_openai_checkpoint(folder, *params_from_model(trained))
            try:
                settings, params = load_openai_checkpoint(folder)
            except CheckpointReadError:  # a damaged copy is written again, never trusted
                write_openai_checkpoint(folder, *params_from_model(trained))
                settings, params = load_openai_checkpoint(folder)
        except (WriteError, CheckpointReadError) as err:  # a full disk, or a damaged copy: the model itself will do
            say(f"Using lecture 02's model instead, taken straight from the model: its copy in OpenAI's layout "
                f"could not be written or read ({one_line(err, 300)}).")
            return (*params_from_model(trained), f"lecture 02's model ({profile} profile)")
        say(f"Using lecture 02's model instead: written in OpenAI's checkpoint layout to {folder} and read "
            "back with the same code that reads GPT-2.")
        return settings, params, f"lecture 02's model ({profile} profile) in OpenAI's checkpoint layout"
    cfg = get_config(model_size if profile == "full" else "tiny")
    runtime.set_seed(123)
    say(f"WARNING: no GPT-2 weights and no lecture 02 checkpoint ({ckpt}) found: using an UNTRAINED "
        "model. Everything below runs, but its text is gibberish. Run lecture 02 first, or go online.")
    return (*params_from_model(GPTModel(cfg)), "an untrained model (random weights)")


def load_base_params(model_size: str = "124M", *, allow_download: bool = True, profile: str | None = None,
                     verbose: bool = True):
    """The weights lectures 03-06 start from, as ``(settings, params, source)`` (lecture 03 shows them).

    In both profiles: OpenAI's GPT-2 ``model_size``, from OpenAI's TensorFlow checkpoint or else the
    Hub's safetensors (files already on disk first; with ``allow_download=False`` nothing else). The
    quick profile differs only in what the lectures do with it (fewer steps, fewer examples). When
    neither route works (offline): lecture 02's model of the same profile, written in OpenAI's layout and
    read back through the very same reader. If lecture 02 has not run either, a freshly initialised
    model. ``source`` says in words which one you got, and a short message says why.
    """
    check_size(model_size)
    profile = runtime.profile(profile)
    say = print if verbose else (lambda *a, **k: None)
    problems: list[str] = []
    found = _real_gpt2(model_size, allow_download, problems)
    if found is not None:
        return found
    say(f"Could not get GPT-2 {model_size}'s weights (offline?):\n  - " + "\n  - ".join(problems))
    return _stand_in(model_size, profile, say)


def is_real_gpt2(source: str) -> bool:
    """True when ``source`` (from :func:`load_base_params`) names OpenAI's weights, not a stand-in.

    Lectures 03-06 use it to say which base model the numbers below come from."""
    return source.startswith("OpenAI's GPT-2")


def base_model_banner(source: str, profile: str | None = None) -> str:
    """A short Markdown note on the base model in use and what it means for the numbers (lectures 03-06).

    Each of those lectures shows it, in a cell of its own, right after loading the base model.
    """
    profile = runtime.profile(profile)
    if is_real_gpt2(source):
        note = ("the real weights, so the outputs below show what the lecture describes"
                + ("; the quick profile trains on fewer examples for fewer steps, so its numbers are smaller "
                   "versions of the course's." if profile == "quick" else ", and the course's numbers apply."))
    elif source.startswith("lecture 02"):
        note = ("a stand-in: GPT-2 could not be had (offline?), so **lecture 02's model stands in**: it was pretrained on one "
                "short story, not on 40 GB of web text. Every step runs the same way, and the checks below hold, "
                "but text it writes is poor, and numbers the prose quotes from the course need the real GPT-2 "
                "(go online, or set `LECTURES_MIRROR`, and rerun).")
    else:
        note = ("a placeholder: neither GPT-2 nor lecture 02's model could be found, so the model is **untrained**: the cells run, "
                "but the results mean nothing. Run lecture 02 first, or go online.")
    return f"**Base model: {source}.** This is {note}"


def load_base_model(model_size: str = "124M", *, allow_download: bool = True, profile: str | None = None,
                    device=None, verbose: bool = True):
    """:func:`load_base_params` loaded into a ``GPTModel``: returns ``(model, cfg, source)``, in eval mode.

    Lectures 04, 05 and 06 start from it in one line; lecture 03 shows the steps it takes.
    """
    settings, params, source = load_base_params(model_size, allow_download=allow_download, profile=profile,
                                                verbose=verbose)
    model, cfg = _model_from_params(settings, params, device)
    return model, cfg, source


def prefetch_gpt2(model_size: str) -> Path:
    """Download GPT-2 ``model_size`` for ``python -m helpers prefetch``, before lectures 03-06.

    OpenAI's checkpoint, or the safetensors when TensorFlow is not installed: the files
    :func:`load_base_params` would read then.
    """
    if tensorflow_available():
        folder = download_gpt2_files(model_size)
    else:
        folder = gpt2_files.download_gpt2_safetensors(model_size)
    print(f"  GPT-2 {model_size:5s}      {folder}")
    return folder

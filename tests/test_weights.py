"""GPT-2 weight loading: OpenAI's TF layout and safetensors, checked against Hugging Face transformers."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from helpers import checkpoints, download, weights
from helpers import model as M

transformers = pytest.importorskip("transformers")
tf = pytest.importorskip("tensorflow")

SETTINGS = {"n_vocab": 50257, "n_ctx": 32, "n_embd": 32, "n_head": 4, "n_layer": 2}


def random_params(seed=0, settings=SETTINGS) -> dict:
    """GPT-2 parameters with random values, shaped as in OpenAI's checkpoint ([in, out] weights)."""
    rng = np.random.default_rng(seed)
    d, v, c = settings["n_embd"], settings["n_vocab"], settings["n_ctx"]
    r = lambda *shape, scale=0.05: (rng.standard_normal(shape) * scale).astype(np.float32)  # noqa: E731
    blocks = [{
        "attn": {"c_attn": {"w": r(d, 3 * d), "b": r(3 * d)}, "c_proj": {"w": r(d, d), "b": r(d)}},
        "mlp": {"c_fc": {"w": r(d, 4 * d), "b": r(4 * d)}, "c_proj": {"w": r(4 * d, d), "b": r(d)}},
        "ln_1": {"g": 1 + r(d), "b": r(d)}, "ln_2": {"g": 1 + r(d), "b": r(d)},
    } for _ in range(settings["n_layer"])]
    return {"wte": r(v, d), "wpe": r(c, d), "g": 1 + r(d), "b": r(d), "blocks": blocks}


def hf_model_with(params, settings=SETTINGS):
    """transformers' GPT2LMHeadModel holding ``params`` (mapped by Hugging Face's own names)."""
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
    missing = hf.load_state_dict({k: torch.from_numpy(v) for k, v in state.items()}, strict=False)
    assert not missing.unexpected_keys
    hf.tie_weights()
    return hf


@pytest.fixture(scope="module")
def tiny_ckpt(tmp_path_factory):
    params = random_params()
    folder = weights.write_openai_checkpoint(tmp_path_factory.mktemp("ckpt") / "124M", SETTINGS, params)
    return folder, params


def test_writer_uses_openais_layout(tiny_ckpt):
    folder, _ = tiny_ckpt
    assert sorted(p.name for p in folder.iterdir()) == sorted(weights.GPT2_FILES)
    assert 'model_checkpoint_path: "model.ckpt"' in (folder / "checkpoint").read_text()  # relative path
    shapes = dict(tf.train.list_variables(str(folder / "model.ckpt")))
    assert shapes["model/wte"] == [50257, 32] and shapes["model/wpe"] == [32, 32]
    assert shapes["model/h0/attn/c_attn/w"] == [1, 32, 96] and shapes["model/h0/attn/c_attn/b"] == [96]
    assert shapes["model/h1/mlp/c_proj/w"] == [1, 128, 32] and shapes["model/h0/ln_1/g"] == [32]
    assert shapes["model/ln_f/g"] == [32] and len(shapes) == 4 + 2 * 12


def test_tf_route_matches_transformers(tiny_ckpt):
    folder, params = tiny_ckpt
    settings, loaded = weights.load_openai_checkpoint(folder)
    assert settings == SETTINGS
    model = weights.load_weights_into_gpt(M.GPTModel(weights.config_from_settings(settings)).eval(), loaded)
    hf = hf_model_with(params)
    x = torch.randint(0, 50257, (2, 20), generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        torch.testing.assert_close(model(x), hf(x).logits, atol=1e-5, rtol=1e-5)
    assert torch.equal(model.out_head.weight, model.tok_emb.weight)  # tied, as in GPT-2


def test_safetensors_route_matches_transformers(tmp_path):
    hf = hf_model_with(random_params(seed=3))
    hf.save_pretrained(tmp_path, safe_serialization=True)
    assert (tmp_path / "model.safetensors").is_file()
    settings, params = weights.load_gpt2_params_from_safetensors(tmp_path)
    assert settings == SETTINGS
    model = weights.load_weights_into_gpt(M.GPTModel(weights.config_from_settings(settings)).eval(), params)
    x = torch.randint(0, 50257, (1, 32), generator=torch.Generator().manual_seed(2))
    with torch.no_grad():
        torch.testing.assert_close(model(x), hf(x).logits, atol=1e-5, rtol=1e-5)


def test_shape_mismatch_names_parameter_and_shapes():
    wrong = M.GPTModel(M.get_config("tiny", qkv_bias=True, context_length=16))
    with pytest.raises(ValueError, match=r"pos_emb.weight.*\(16, 32\).*\(32, 32\)"):
        weights.load_weights_into_gpt(wrong, random_params())


def test_qkv_bias_needed_for_nonzero_biases():
    with pytest.raises(ValueError, match="qkv_bias=True"):
        weights.load_weights_into_gpt(M.GPTModel(M.get_config("tiny")), random_params())


def test_invalid_size():
    with pytest.raises(ValueError, match="124M, 355M, 774M, 1558M"):
        weights.download_and_load_gpt2("125M")


def test_our_untied_model_round_trips_through_openai_layout(tmp_path):
    torch.manual_seed(0)
    model = M.GPTModel(M.get_config("tiny")).eval()  # no qkv bias, out_head separate from tok_emb
    folder = weights.write_openai_checkpoint(tmp_path / "ours", *weights.params_from_model(model))
    loaded, _ = weights._model_from_params(*weights.load_openai_checkpoint(folder))
    x = torch.randint(0, 50257, (2, 12))
    with torch.no_grad():
        torch.testing.assert_close(loaded(x), model(x), atol=1e-6, rtol=1e-6)


def _serve_checkpoint(server, folder, prefix):
    for name in weights.GPT2_FILES:
        server.routes[f"{prefix}/124M/{name}"] = (200, (folder / name).read_bytes(), {})


def test_download_with_backup_and_resume(monkeypatch, tmp_path, http_server, tiny_ckpt):
    folder, params = tiny_ckpt
    _serve_checkpoint(http_server, folder, "/backup")
    _serve_checkpoint(http_server, folder, "/openai")
    del http_server.routes["/openai/124M/model.ckpt.index"]  # 404 on the canonical URL: the backup serves it
    data_file = "/openai/124M/model.ckpt.data-00000-of-00001"
    body = http_server.routes[data_file][1]
    http_server.routes[data_file] = (200, body, {"truncate_to": len(body) // 3})  # a connection that keeps dropping
    monkeypatch.setattr(weights, "BASE_URLS", (http_server.url + "/openai", http_server.url + "/backup"))
    monkeypatch.setattr(weights, "KNOWN_SIZES", {("124M", "model.ckpt.data-00000-of-00001"): len(body)})
    monkeypatch.setattr(download.time, "sleep", lambda s: None)
    monkeypatch.delenv("LECTURES_MIRROR", raising=False)

    settings, loaded = weights.download_and_load_gpt2("124M", tmp_path / "models", progress=False)
    assert settings == SETTINGS
    np.testing.assert_array_equal(loaded["blocks"][1]["mlp"]["c_fc"]["w"], params["blocks"][1]["mlp"]["c_fc"]["w"])
    requests = http_server.requests
    assert ("/openai/124M/model.ckpt.index", None) in requests and ("/backup/124M/model.ckpt.index", None) in requests
    ranges = [r for path, r in requests if path == data_file]
    assert ranges[0] is None and ranges[1] == f"bytes={len(body) // 3}-"  # resumed, not restarted
    assert not list((tmp_path / "models" / "124M").glob("*.part"))


def test_wrong_size_is_never_kept(monkeypatch, tmp_path, http_server, tiny_ckpt):
    folder, _ = tiny_ckpt
    _serve_checkpoint(http_server, folder, "/openai")
    monkeypatch.setattr(weights, "BASE_URLS", (http_server.url + "/openai",))
    monkeypatch.setattr(weights, "KNOWN_SIZES", {("124M", "model.ckpt.data-00000-of-00001"): 123})
    monkeypatch.setattr(download.time, "sleep", lambda s: None)
    monkeypatch.delenv("LECTURES_MIRROR", raising=False)
    with pytest.raises(download.DownloadError, match="123 bytes|expected 123"):
        weights.download_gpt2_files("124M", tmp_path / "models", progress=False)
    assert not (tmp_path / "models" / "124M" / "model.ckpt.data-00000-of-00001").exists()


@pytest.fixture
def offline(monkeypatch, tmp_path):
    """No GPT-2 anywhere: dead download URLs, no mirror, the Hub in offline mode, an empty cache."""
    monkeypatch.setenv("LECTURES_CACHE", str(tmp_path / "cache"))
    monkeypatch.delenv("LECTURES_MIRROR", raising=False)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr(weights, "BASE_URLS", ("http://127.0.0.1:9/gpt2",))
    monkeypatch.setattr(weights, "download_gpt2_safetensors", _no_hub)


def _no_hub(size):
    raise OSError("offline: the Hugging Face Hub is not reachable")


def test_load_base_model_falls_back_to_lecture02(offline, capsys):
    torch.manual_seed(0)
    trained = M.GPTModel(M.get_config("tiny")).eval()
    checkpoints.save_checkpoint(checkpoints.pretrained_checkpoint_path("full"), trained)
    model, cfg, source = weights.load_base_model("124M", profile="full")
    out = capsys.readouterr().out
    assert "Could not get GPT-2 124M" in out and "cannot be reached" in out and "offline" in out
    assert "lecture 02" in source and cfg["qkv_bias"] is True
    x = torch.randint(0, 50257, (1, 10))
    with torch.no_grad():
        torch.testing.assert_close(model(x), trained(x), atol=1e-6, rtol=1e-6)


def test_quick_profile_never_downloads(offline, monkeypatch, capsys):
    monkeypatch.setattr(weights, "download_and_load_gpt2", lambda *a, **k: pytest.fail("must not download"))
    model, cfg, source = weights.load_base_model("124M", profile="quick")
    assert "untrained" in source and "WARNING" in capsys.readouterr().out
    assert cfg["context_length"] == 128

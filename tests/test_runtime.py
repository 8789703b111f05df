import pytest
import torch

from helpers import runtime


def test_profile_default_and_override(monkeypatch):
    monkeypatch.delenv("LECTURES_PROFILE", raising=False)
    assert runtime.profile() == "full"
    assert runtime.profile("quick") == "quick"
    monkeypatch.setenv("LECTURES_PROFILE", " Quick ")
    assert runtime.is_quick()


def test_profile_typo_is_an_error(monkeypatch):
    monkeypatch.setenv("LECTURES_PROFILE", "quik")
    with pytest.raises(ValueError, match="quik"):
        runtime.profile()


def test_cache_dir_from_env(monkeypatch, tmp_path):
    monkeypatch.setenv("LECTURES_CACHE", str(tmp_path / "c"))
    assert runtime.cache_dir() == tmp_path / "c"
    assert (tmp_path / "c").is_dir()


def test_cache_dir_default(monkeypatch, tmp_path):
    monkeypatch.delenv("LECTURES_CACHE", raising=False)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    assert runtime.cache_dir(create=False) == tmp_path / "llm-lectures"


def test_mirror(monkeypatch, tmp_path):
    monkeypatch.delenv("LECTURES_MIRROR", raising=False)
    assert runtime.mirror_dir() is None
    monkeypatch.setenv("LECTURES_MIRROR", str(tmp_path))
    assert runtime.mirror_dir() == tmp_path
    monkeypatch.setenv("LECTURES_MIRROR", str(tmp_path / "missing"))
    with pytest.raises(FileNotFoundError, match="LECTURES_MIRROR"):
        runtime.mirror_dir()


def test_get_device(monkeypatch):
    monkeypatch.delenv("LECTURES_DEVICE", raising=False)
    assert runtime.get_device("cpu") == torch.device("cpu")
    monkeypatch.setenv("LECTURES_DEVICE", "cpu")
    assert runtime.get_device() == torch.device("cpu")
    if not torch.cuda.is_available():
        with pytest.raises(RuntimeError, match="CUDA"):
            runtime.get_device("cuda")


def test_set_seed_reproduces():
    runtime.set_seed(7)
    a = torch.rand(3)
    runtime.set_seed(7)
    assert torch.equal(a, torch.rand(3))


def test_apply_overrides_reaches_model_and_training_keys():
    settings, config = {"learning_rate": 4e-4, "num_epochs": 10}, {"drop_rate": 0.1, "emb_dim": 768}
    new_settings, new_config = runtime.apply_overrides({"learning_rate": 1e-3, "drop_rate": 0.5}, settings, config)
    assert new_settings == {"learning_rate": 1e-3, "num_epochs": 10}
    assert new_config == {"drop_rate": 0.5, "emb_dim": 768}
    assert settings["learning_rate"] == 4e-4 and config["drop_rate"] == 0.1  # the originals stay
    with pytest.raises(KeyError, match="'dropout', which is not a setting here. Use one of: drop_rate, emb_dim"):
        runtime.apply_overrides({"dropout": 0.5}, settings, config)
    with pytest.raises(KeyError, match="more than one group"):
        runtime.apply_overrides({"x": 1}, {"x": 0}, {"x": 2})

import json
import pickle

import pytest
import torch

from helpers import checkpoints as C
from helpers import model as M
from helpers.history import History
from helpers.losses import calc_loss_batch


def _step(model, opt, x, y):
    opt.zero_grad()
    calc_loss_batch(x, y, model, "cpu").backward()
    opt.step()


def test_resume_gives_the_identical_next_step(tmp_path):
    torch.manual_seed(0)
    model = M.GPTModel(M.get_config("tiny"))
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3, weight_decay=0.1)
    x, y = torch.randint(0, 50257, (2, 8)), torch.randint(0, 50257, (2, 8))
    _step(model, opt, x, y)
    path = C.save_checkpoint(tmp_path / "ckpt.pt", model, opt, epoch=1)
    assert not (tmp_path / "ckpt.pt.part").exists()

    resumed, _, meta = C.load_checkpoint(path)
    resumed_opt = torch.optim.AdamW(resumed.parameters(), lr=1e-3, weight_decay=0.1)
    C.load_checkpoint(path, resumed, resumed_opt)
    assert meta == {"epoch": 1}
    _step(model, opt, x, y)
    _step(resumed, resumed_opt, x, y)
    for a, b in zip(model.state_dict().values(), resumed.state_dict().values(), strict=True):
        assert torch.equal(a, b)


def test_bad_files_give_clear_errors(tmp_path):
    with pytest.raises(FileNotFoundError):
        C.load_checkpoint(tmp_path / "missing.pt")
    torch.save({"weights": 1}, tmp_path / "other.pt")
    with pytest.raises(ValueError, match="not a checkpoint"):
        C.load_checkpoint(tmp_path / "other.pt")
    (tmp_path / "trunc.pt").write_bytes(b"PK\x03\x04 truncated")
    with pytest.raises(ValueError, match="truncated"):
        C.load_checkpoint(tmp_path / "trunc.pt")


def test_runs_save_list_load(monkeypatch, tmp_path):
    monkeypatch.setenv("LECTURES_CACHE", str(tmp_path))
    torch.manual_seed(0)
    model = M.GPTModel(M.get_config("tiny"))
    h1 = History([2.0], [2.5], [16], [0], [1.0], config={"lr": 4e-4})
    h2 = History([1.0], [2.0], [16], [0], [1.0], config={"lr": 1e-3})
    C.save_run("lr=4e-4", h1, model)
    C.save_run("lr=1e-3", h2)
    assert C.list_runs() == ["lr=4e-4", "lr=1e-3"]
    assert C.load_run("lr=1e-3") == h2
    history, loaded, _ = C.load_run("lr=4e-4", with_model=True)
    assert history == h1 and torch.equal(loaded.tok_emb.weight, model.tok_emb.weight)
    with pytest.raises(FileNotFoundError, match="lr=4e-4"):
        C.load_run("nope")
    with pytest.raises(ValueError, match="letters"):
        C.save_run("../escape", h1)


def test_pretrained_checkpoint_path(monkeypatch, tmp_path):
    monkeypatch.setenv("LECTURES_CACHE", str(tmp_path))
    assert C.pretrained_checkpoint_path("quick") == tmp_path / "checkpoints" / "02_pretraining_quick.pt"


def test_atomic_write_leaves_the_old_file_and_no_part_on_failure(tmp_path):
    path = C.atomic_torch_save({"a": 1}, tmp_path / "x.pt")
    with pytest.raises((pickle.PicklingError, AttributeError)):  # a lambda cannot be pickled
        C.atomic_torch_save({"a": lambda: 0}, path)
    assert torch.load(path, weights_only=True) == {"a": 1}
    assert list(tmp_path.iterdir()) == [path]


def test_meta_is_stored_as_plain_data(tmp_path):
    from pathlib import Path

    import numpy as np

    model = M.GPTModel(M.get_config("tiny"))
    path = C.save_checkpoint(tmp_path / "c.pt", model, data=Path("/data/x.txt"), shape=(2, 3),
                             loss=np.float32(1.5), device=torch.device("cpu"))
    _, _, meta = C.load_checkpoint(path, model)
    assert meta == {"data": "/data/x.txt", "shape": [2, 3], "loss": 1.5, "device": "cpu"}
    with pytest.raises(TypeError, match="meta\\['fn'\\]"):
        C.save_checkpoint(tmp_path / "d.pt", model, fn=print)
    assert not (tmp_path / "d.pt").exists()


def test_loading_into_a_model_of_another_size_says_so(tmp_path):
    path = C.save_checkpoint(tmp_path / "c.pt", M.GPTModel(M.get_config("tiny")))
    with pytest.raises(ValueError, match="do not fit this model.*emb_dim"):
        C.load_checkpoint(path, M.GPTModel(M.get_config("tiny", emb_dim=64)))


@pytest.mark.filterwarnings("ignore::DeprecationWarning")  # raised inside torch when torch.compile loads
def test_a_compiled_model_saves_plain_keys(tmp_path):
    torch.manual_seed(0)
    model = M.GPTModel(M.get_config("tiny"))
    compiled = torch.compile(model)  # compiles lazily, at the first call: nothing is compiled here
    assert any(k.startswith("_orig_mod.") for k in compiled.state_dict())
    loaded, _, _ = C.load_checkpoint(C.save_checkpoint(tmp_path / "c.pt", compiled))
    assert torch.equal(loaded.out_head.weight, model.out_head.weight)


def test_runs_write_config_and_replace_on_rerun(monkeypatch, tmp_path):
    monkeypatch.setenv("LECTURES_CACHE", str(tmp_path))
    model = M.GPTModel(M.get_config("tiny"))
    h = History([2.0], [2.5], [16], [0], [1.0], config={"lr": 4e-4, "model": model.cfg})
    folder = C.save_run("r1", h, model)
    assert sorted(p.name for p in folder.iterdir()) == ["checkpoint.pt", "config.json", "history.json"]
    assert json.loads((folder / "config.json").read_text()) == h.config
    assert C.load_run("r1", with_model=True)[2] == {"run": "r1", "config": h.config}
    C.save_run("r1", h)  # rerun without a model: the old checkpoint must not pass for this run's
    assert not (folder / "checkpoint.pt").exists()
    with pytest.raises(ValueError):
        C.save_run("..", h)


def test_an_empty_checkpoint_file_says_it_is_empty(tmp_path):
    (tmp_path / "empty.pt").write_bytes(b"")
    with pytest.raises(ValueError, match=r"is empty \(0 bytes\)"):
        C.load_checkpoint(tmp_path / "empty.pt")


def test_a_checkpoint_whose_weights_do_not_fit_its_own_config_does_not_suggest_the_same_call(tmp_path):
    model = M.GPTModel(M.get_config("tiny"))
    ckpt = {"format": C.FORMAT, "cfg": M.get_config("tiny", emb_dim=64), "model_state": model.state_dict(),
            "optimizer_state": None, "meta": {}}
    torch.save(ckpt, tmp_path / "odd.pt")
    with pytest.raises(ValueError, match="do not match its own config") as info:
        C.load_checkpoint(tmp_path / "odd.pt")
    assert "without a model" not in str(info.value)


def test_a_full_disk_during_a_save_is_named(tmp_path, monkeypatch):
    def no_space(obj, handle):
        raise RuntimeError("[enforce fail at inline_container.cc:603] . unexpected pos 320 vs 256")

    monkeypatch.setattr(C.torch, "save", no_space)
    target = tmp_path / "c.pt"
    with pytest.raises(OSError, match="disk is full"):
        C.save_checkpoint(target, M.GPTModel(M.get_config("tiny")))
    assert not target.exists() and not (tmp_path / "c.pt.part").exists()


def test_a_run_with_other_settings_is_never_replaced_silently(monkeypatch, tmp_path):
    monkeypatch.setenv("LECTURES_CACHE", str(tmp_path))
    base = History([2.0], [2.5], [16], [0], [1.0], config={"learning_rate": 4e-4, "model": {"drop_rate": 0.1}})
    other = History([1.0], [2.0], [16], [0], [1.0], config={"learning_rate": 1e-3, "model": {"drop_rate": 0.1}})
    C.save_run("lecture02-quick", base)
    with pytest.raises(FileExistsError, match="other settings.*learning_rate.*overwrite=True"):
        C.save_run("lecture02-quick", other)
    assert C.load_run("lecture02-quick") == base
    # A free name that says what differs, plus a hash of all settings:
    name = C.run_name_for("lecture02-quick", other.config)
    assert name.startswith("lecture02-quick-learning_rate0.001-") and len(name.rsplit("-", 1)[1]) == 8
    C.save_run(name, other)
    assert C.list_runs() == ["lecture02-quick", name]
    assert C.list_runs("lecture02-quick-*") == [name]
    # The same settings again: the same name, replaced (a rerun of the same experiment).
    assert C.run_name_for("lecture02-quick", base.config) == "lecture02-quick"
    C.save_run("lecture02-quick", History([1.5], [2.5], [16], [0], [1.0], config=dict(base.config)))
    assert C.load_run("lecture02-quick").train_losses == [1.5]
    # Nested settings are named by their last key; explicit overwrite replaces.
    dropout = {"learning_rate": 4e-4, "model": {"drop_rate": 0.5}}
    assert C.run_name_for("lecture02-quick", dropout).startswith("lecture02-quick-drop_rate0.5-")
    C.save_run("lecture02-quick", other, overwrite=True)
    assert C.saved_config("lecture02-quick") == other.config


def test_settings_hash_and_diff():
    a = {"lr": 1e-3, "model": {"emb_dim": 128, "n_layers": 2}}
    b = {"model": {"n_layers": 2, "emb_dim": 128}, "lr": 1e-3}
    assert C.settings_hash(a) == C.settings_hash(b)
    assert C.settings_hash({**a, "lr": 2e-3}) != C.settings_hash(a)
    assert C.settings_diff({**a, "lr": 2e-3, "new": 1}, a) == {"lr": 0.002, "new": 1}

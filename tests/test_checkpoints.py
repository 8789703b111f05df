import pytest
import torch

from helpers import checkpoints as C
from helpers import model as M
from helpers.losses import calc_loss_batch
from helpers.training import History


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

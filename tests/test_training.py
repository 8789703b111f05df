import inspect
import math
import textwrap

import pytest
import torch

from helpers import model as M
from helpers.training import History, evaluate_model, train_loop, train_model_simple


def _loaders(n_train=7, n_val=2, batch=2, seq=8):
    g = torch.Generator().manual_seed(0)
    make = lambda n: [(torch.randint(0, 50257, (batch, seq), generator=g),  # noqa: E731
                       torch.randint(0, 50257, (batch, seq), generator=g)) for _ in range(n)]
    return make(n_train), make(n_val)


@pytest.fixture
def tiny():
    torch.manual_seed(0)
    return M.GPTModel(M.get_config("tiny"))


def test_bookkeeping(tiny):
    train, val = _loaders()
    opt = torch.optim.AdamW(tiny.parameters(), lr=1e-3)
    history = train_loop(tiny, train, val, opt, "cpu", num_epochs=3, eval_freq=5, eval_iter=1, progress=False,
                         verbose=False, config={"lr": 1e-3})
    total_steps = 3 * 7
    assert history.steps == list(range(0, total_steps, 5))  # evaluated at steps 0, 5, ..., like the course
    assert len(history.train_losses) == len(history.val_losses) == math.ceil(total_steps / 5)
    assert history.tokens_seen == [(s + 1) * 2 * 8 for s in history.steps]
    assert history.epochs[0] == pytest.approx(1 / 7) and history.epochs[-1] == pytest.approx(2 + 7 / 7)
    assert history.wall_time > 0 and history.config == {"lr": 1e-3}
    assert history.total_steps == total_steps and history.total_seen == total_steps * 2 * 8
    train_losses, val_losses, tokens_seen = history  # unpacks like the course's return value
    assert train_losses is history.train_losses and tokens_seen is history.tokens_seen


def test_training_lowers_the_loss_on_repeated_data(tiny):
    train, _ = _loaders(n_train=2)
    opt = torch.optim.AdamW(tiny.parameters(), lr=3e-3)
    history = train_loop(tiny, train, train, opt, "cpu", num_epochs=15, eval_freq=10, eval_iter=2,
                         progress=False, verbose=False)
    assert history.train_losses[-1] < history.train_losses[0] - 1.0


def test_evaluate_model_restores_mode_and_needs_no_grad(tiny):
    train, val = _loaders()
    tiny.train()
    tr, va = evaluate_model(tiny, train, val, "cpu", eval_iter=2)
    assert tiny.training and tr > 0 and va > 0
    assert all(p.grad is None for p in tiny.parameters())


def test_train_model_simple_samples_each_epoch(tiny, capsys):
    from helpers.tokenizer import get_tokenizer

    train, val = _loaders(n_train=3)
    opt = torch.optim.AdamW(tiny.parameters(), lr=1e-3)
    history = train_model_simple(tiny, train, val, opt, "cpu", 2, 2, 1, "Every effort moves you", get_tokenizer(),
                                 progress=False)
    assert len(history.samples) == 2 and all(s.startswith("Every effort moves you") for s in history.samples)
    out = capsys.readouterr().out
    assert "Ep 1 (Step 000000): Train loss" in out and history.samples[0] in out


def test_custom_counter_and_epoch_hook(tiny):
    train, val = _loaders(n_train=4)
    opt = torch.optim.SGD(tiny.parameters(), lr=0.0)
    calls = []

    def hook(epoch, history):
        calls.append(epoch)
        history.extra.setdefault("marker", []).append(epoch * 10)

    history = train_loop(tiny, train, val, opt, "cpu", 2, 3, 1, count_fn=lambda x, y: x.shape[0],
                         seen_unit="examples", on_epoch_end=hook, progress=False, verbose=False)
    assert calls == [0, 1] and history.extra == {"marker": [0, 10]}
    assert history.tokens_seen == [(s + 1) * 2 for s in history.steps] and history.seen_unit == "examples"


def test_history_json_round_trip(tmp_path):
    h = History([1.0, 0.5], [1.2, 0.9], [10, 20], [0, 5], [0.5, 1.0], ["text"], {"val_acc": [0.5]}, 3.2,
                {"lr": 4e-4, "model": {"emb_dim": 32}}, "tokens", 24, 6)
    path = h.to_json(tmp_path / "h.json")
    assert History.from_json(path) == h
    assert not (tmp_path / "h.json.part").exists()
    (tmp_path / "other.json").write_text('{"weights": [1, 2]}')
    with pytest.raises(ValueError, match="not a training history"):
        History.from_json(tmp_path / "other.json")


def test_bad_eval_settings_are_refused(tiny):
    train, val = _loaders()
    opt = torch.optim.SGD(tiny.parameters(), lr=0.0)
    with pytest.raises(ValueError, match="eval_freq"):
        train_loop(tiny, train, val, opt, "cpu", 1, 0, 1, progress=False)


def test_live_plot_is_updated_after_every_evaluation(tiny, monkeypatch):
    from helpers import plotting

    updates = []

    class Recorder:
        def update(self, history):
            updates.append(list(history.steps))

    monkeypatch.setattr(plotting, "LiveLossPlot", Recorder)
    train, val = _loaders(n_train=4)
    opt = torch.optim.SGD(tiny.parameters(), lr=0.0)
    train_loop(tiny, train, val, opt, "cpu", 2, 3, 1, live_plot=True, progress=False, verbose=False)
    assert updates == [[0], [0, 3], [0, 3, 6]]


# ---- the classification lecture's wrapper, exactly as train_loop's docstring shows it


def _docstring_example(func) -> str:
    """The indented code block after the line ending in '::' in ``func``'s docstring."""
    lines = inspect.getdoc(func).splitlines()
    start = next(i for i, line in enumerate(lines) if line.endswith("::")) + 1
    block = []
    for line in lines[start:]:
        if line and not line.startswith("    "):
            break
        block.append(line)
    return textwrap.dedent("\n".join(block))


class TinyClassifier(torch.nn.Module):
    """Mean of token embeddings -> 2 classes; shape (batch, tokens, 2) like the finetuned GPT's output."""

    def __init__(self):
        super().__init__()
        self.emb = torch.nn.Embedding(100, 8)
        self.drop = torch.nn.Dropout(0.5)
        self.head = torch.nn.Linear(8, 2)

    def forward(self, idx):
        return self.head(self.drop(self.emb(idx).cumsum(1)))


def test_the_documented_classifier_wrapper_works(capsys):
    modes = []

    def calc_loss_batch(input_batch, target_batch, model, device):
        return torch.nn.functional.cross_entropy(model(input_batch)[:, -1, :], target_batch)

    def calc_loss_loader(loader, model, device, num_batches=None):
        batches = list(loader)[:num_batches]
        return sum(calc_loss_batch(x, y, model, device).item() for x, y in batches) / len(batches)

    def calc_accuracy_loader(loader, model, device, num_batches=None):
        modes.append((model.training, torch.is_grad_enabled()))
        batches = list(loader)[:num_batches]
        right = sum((model(x)[:, -1, :].argmax(-1) == y).sum().item() for x, y in batches)
        return right / sum(len(y) for _, y in batches)

    namespace = {"train_loop": train_loop, "calc_loss_batch": calc_loss_batch,
                 "calc_loss_loader": calc_loss_loader, "calc_accuracy_loader": calc_accuracy_loader}
    code = _docstring_example(train_loop)
    assert len(code.splitlines()) <= 16
    exec(code, namespace)
    train_classifier_simple = namespace["train_classifier_simple"]

    g = torch.Generator().manual_seed(0)
    data = [(torch.randint(0, 100, (4, 6), generator=g), torch.randint(0, 2, (4,), generator=g)) for _ in range(5)]
    torch.manual_seed(0)
    model = TinyClassifier()
    opt = torch.optim.AdamW(model.parameters(), lr=1e-2)
    history = train_classifier_simple(model, data, data[:2], opt, "cpu", 3, 4, 2, progress=False)

    assert history.seen_unit == "examples" and history.total_seen == 3 * 5 * 4
    assert history.tokens_seen == [(s + 1) * 4 for s in history.steps] and history.steps == [0, 4, 8, 12]
    assert len(history.extra["train_acc"]) == len(history.extra["val_acc"]) == 3
    assert all(0 <= a <= 1 for a in history.extra["train_acc"] + history.extra["val_acc"])
    assert modes == [(False, False)] * 6  # the hook runs in eval mode without gradients
    assert model.training                 # ... and the model is back in training mode afterwards
    assert capsys.readouterr().out.count("Validation accuracy: ") == 3

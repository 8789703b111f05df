import math

import pytest
import torch
import torch.distributed as dist
from torch.nn.parallel import DistributedDataParallel
from torch.utils.data import DataLoader

from helpers import classifier
from helpers import model as M
from helpers.checkpoints import load_checkpoint, save_checkpoint
from helpers.losses import calc_loss_batch
from helpers.training import (
    History,
    RankShare,
    WarmupCosine,
    clip_gradients,
    evaluate_model,
    train_loop,
    train_model_simple,
    train_step,
)


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
    from helpers import training

    updates = []

    class Recorder:
        def update(self, history):
            updates.append(list(history.steps))

    monkeypatch.setattr(training, "LiveLossPlot", Recorder)
    train, val = _loaders(n_train=4)
    opt = torch.optim.SGD(tiny.parameters(), lr=0.0)
    train_loop(tiny, train, val, opt, "cpu", 2, 3, 1, live_plot=True, progress=False, verbose=False)
    assert updates == [[0], [0, 3], [0, 3, 6]]


# ---- the classification lecture's wrapper around the loop


class TinyClassifier(torch.nn.Module):
    """Mean of token embeddings -> 2 classes; shape (batch, tokens, 2) like the finetuned GPT's output."""

    def __init__(self):
        super().__init__()
        self.emb = torch.nn.Embedding(100, 8)
        self.drop = torch.nn.Dropout(0.5)
        self.head = torch.nn.Linear(8, 2)

    def forward(self, idx):
        return self.head(self.drop(self.emb(idx).cumsum(1)))


def test_the_classifier_wrapper_reuses_the_loop(capsys, monkeypatch):
    """Lecture 04's train_classifier_simple is train_loop with the last-token loss, examples and accuracies."""

    modes = []
    accuracy = classifier.calc_accuracy_loader

    def spy(loader, model, device, num_batches=None, **kwargs):
        modes.append((model.training, torch.is_grad_enabled()))
        return accuracy(loader, model, device, num_batches=num_batches, **kwargs)

    monkeypatch.setattr(classifier, "calc_accuracy_loader", spy)
    train_classifier_simple = classifier.train_classifier_simple

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


# ---- beyond the course: one pass per epoch, gradient accumulation, schedule, clipping, DDP, resume


class Windows(torch.utils.data.Dataset):
    """``n`` random token windows of ``seq`` tokens with their shifted-by-one targets (vocabulary 256)."""

    def __init__(self, n, seq=8, seed=0):
        self.tokens = torch.randint(0, 256, (n, seq + 1), generator=torch.Generator().manual_seed(seed))

    def __len__(self):
        return len(self.tokens)

    def __getitem__(self, i):
        return self.tokens[i, :-1], self.tokens[i, 1:]


def _small_gpt(seed=0, drop_rate=0.0):
    torch.manual_seed(seed)
    return M.GPTModel(M.get_config("tiny", vocab_size=256, drop_rate=drop_rate))


def _linear_loss(x, y, model, device):
    return model(x.float()).pow(2).mean()


def test_one_pass_over_the_loader_per_epoch_with_a_progress_bar():
    """The loop reads each epoch like a plain ``for`` loop: same batches, and no extra random numbers drawn
    (tqdm's constructor must not call ``iter(loader)``, which draws a seed and shifts the shuffle)."""
    loader = DataLoader(Windows(8), batch_size=2, shuffle=True)
    torch.manual_seed(5)
    plain = [x for x, _ in loader]
    expected = torch.get_rng_state()

    model = torch.nn.Linear(8, 1)  # no dropout: only the loader draws random numbers
    seen = []

    def loss_fn(x, y, m, device):
        seen.append(x)
        return _linear_loss(x, y, m, device)

    torch.manual_seed(5)
    train_loop(model, loader, [], torch.optim.SGD(model.parameters(), lr=0.0), "cpu", 1, 100, 1, loss_fn=loss_fn,
               eval_loss_fn=lambda *args, **kwargs: 0.0, progress=True, verbose=False)
    assert torch.equal(torch.get_rng_state(), expected)
    assert len(seen) == len(plain) and all(torch.equal(a, b) for a, b in zip(seen, plain, strict=True))


def test_grad_accum_matches_one_large_batch():
    """Two micro-batches of 2 per step train like one batch of 4 (no dropout; SGD feels the gradient's scale)."""
    data = Windows(8).tokens
    big = [(data[i:i + 4, :-1], data[i:i + 4, 1:]) for i in range(0, 8, 4)]
    small = [(data[i:i + 2, :-1], data[i:i + 2, 1:]) for i in range(0, 8, 2)]
    runs = []
    for loader, accum in ((big, 1), (small, 2)):
        model = _small_gpt()
        history = train_loop(model, loader, big[:1], torch.optim.SGD(model.parameters(), lr=0.5), "cpu", 2, 1, 1,
                             grad_accum=accum, progress=False, verbose=False)
        runs.append((model, history))
    (big_model, big_history), (small_model, small_history) = runs
    assert small_history.steps == big_history.steps == [0, 1, 2, 3]  # a step is an optimizer step
    assert small_history.epochs == big_history.epochs == [0.5, 1.0, 1.5, 2.0]
    assert small_history.total_seen == big_history.total_seen == 4 * 4 * 8
    assert small_history.val_losses == pytest.approx(big_history.val_losses, rel=1e-5)
    for (name, a), b in zip(big_model.named_parameters(), small_model.parameters(), strict=True):
        torch.testing.assert_close(a, b, atol=1e-6, rtol=1e-5, msg=name)
    assert not torch.equal(big_model.out_head.weight, _small_gpt().out_head.weight)  # it did train

    # 5 micro-batches with grad_accum 2: two steps per epoch, the fifth batch is left over.
    model = _small_gpt()
    history = train_loop(model, small + small[:1], big[:1], torch.optim.SGD(model.parameters(), lr=0.5), "cpu", 1, 1,
                         1, grad_accum=2, progress=False, verbose=False)
    assert history.total_steps == 2 and history.total_seen == 4 * 2 * 8


def test_bad_loop_settings_are_refused(tiny):
    train, val = _loaders()
    opt = torch.optim.SGD(tiny.parameters(), lr=0.0)
    with pytest.raises(ValueError, match="grad_accum"):
        train_loop(tiny, train, val, opt, "cpu", 1, 1, 1, grad_accum=0)
    with pytest.raises(ValueError, match="checkpoint_path"):
        train_loop(tiny, train, val, opt, "cpu", 1, 1, 1, checkpoint_every=2)
    with pytest.raises(ValueError, match="No optimizer step fits"):
        train_loop(tiny, train, val, opt, "cpu", 1, 1, 1, grad_accum=8)


def test_warmup_cosine_values():
    """Appendix D's schedule: from initial_lr up to peak_lr in warmup_steps, then half a cosine down to min_lr."""
    peak, initial, minimum, total, warmup = 1e-3, 1e-4, 1e-5, 50, 10
    schedule = WarmupCosine(peak, total, warmup, initial, minimum)
    lrs = [schedule(step) for step in range(total)]
    assert lrs[0] == initial and lrs[5] == pytest.approx((initial + peak) / 2)
    assert lrs[warmup] == pytest.approx(peak)
    assert all(a < b for a, b in zip(lrs[:warmup], lrs[1:warmup + 1], strict=True))   # rising
    assert all(a > b for a, b in zip(lrs[warmup:], lrs[warmup + 1:], strict=False))    # falling
    assert schedule(warmup + (total - warmup) // 2) == pytest.approx((peak + minimum) / 2)  # half-way down
    assert schedule(total) == pytest.approx(minimum) and schedule(total + 10) == pytest.approx(minimum)
    assert WarmupCosine(peak, 4)(0) == peak  # no warmup: the decay starts at the peak
    with pytest.raises(ValueError, match="warmup_steps"):
        WarmupCosine(peak, 4, warmup_steps=5)


def test_the_loop_sets_the_scheduled_rate_before_each_step():
    model = torch.nn.Linear(8, 1)
    optimizer = torch.optim.SGD(model.parameters(), lr=1.0)
    schedule = WarmupCosine(0.1, total_steps=6, warmup_steps=2, initial_lr=0.01, min_lr=0.001)
    used = []

    def loss_fn(x, y, m, device):
        used.append(optimizer.param_groups[0]["lr"])
        return _linear_loss(x, y, m, device)

    loader = [Windows(2, seed=i)[:] for i in range(6)]
    train_loop(model, loader, [], optimizer, "cpu", 2, 10, 1, loss_fn=loss_fn, eval_loss_fn=lambda *a, **k: 0.0,
               grad_accum=2, lr_schedule=schedule, progress=False, verbose=False)
    assert used == [schedule(step) for step in range(6) for _ in range(2)]  # two micro-batches per step


def test_clipping_caps_the_size_of_the_gradient():
    x = torch.randn(8, 8) * 100
    for max_norm in (None, 0.5):
        torch.manual_seed(0)
        model = torch.nn.Linear(8, 1)
        before = [p.detach().clone() for p in model.parameters()]
        train_loop(model, [(x, None)], [], torch.optim.SGD(model.parameters(), lr=1.0), "cpu", 1, 10, 1,
                   loss_fn=_linear_loss, eval_loss_fn=lambda *a, **k: 0.0, max_grad_norm=max_norm, progress=False,
                   verbose=False)
        update = torch.cat([(p.detach() - b).flatten() for p, b in zip(model.parameters(), before, strict=True)])
        if max_norm is None:
            assert update.norm() > 100  # SGD with lr 1 moves by the gradient, which is large here
        else:
            assert update.norm().item() == pytest.approx(max_norm, rel=1e-4)
    assert clip_gradients(model, None) is None


def test_train_step_returns_the_mean_loss_of_its_micro_batches():
    model = _small_gpt()
    optimizer = torch.optim.SGD(model.parameters(), lr=0.0)
    batches = [Windows(2, seed=i)[:] for i in range(3)]
    with torch.no_grad():
        expected = sum(calc_loss_batch(x, y, model, "cpu").item() for x, y in batches) / 3
    assert train_step(model, optimizer, batches, "cpu").item() == pytest.approx(expected, rel=1e-5)


def test_rank_shares_split_the_evaluation_batches():
    loader = list(range(10))
    shares = [list(RankShare(loader, 7, rank, 3)) for rank in range(3)]
    assert shares == [[0, 3, 6], [1, 4], [2, 5]]
    assert [len(RankShare(loader, 7, rank, 3)) for rank in range(3)] == [3, 2, 2]
    assert list(RankShare(loader, None, 1, 4)) == [1, 5, 9]


@pytest.fixture
def process_group(tmp_path):
    """A one-process gloo group, so that DistributedDataParallel runs in this process."""
    dist.init_process_group("gloo", init_method=f"file://{tmp_path / 'store'}", rank=0, world_size=1)
    yield
    dist.destroy_process_group()


def test_ddp_model_trains_and_evaluates_like_the_plain_model(process_group, tmp_path):
    """The DDP code paths (no_sync on all but the last micro-batch, shared evaluation, gathered RNG
    states in checkpoints), on one process: the same numbers as the plain model."""
    train = [Windows(2, seed=i)[:] for i in range(6)]
    val = [Windows(2, seed=10 + i)[:] for i in range(3)]
    runs = []
    for wrap in (False, True):
        model = _small_gpt()
        optimizer = torch.optim.AdamW(model.parameters(), lr=1e-2)
        trained = DistributedDataParallel(model) if wrap else model
        history = train_loop(trained, train, val, optimizer, "cpu", 2, 2, 3, grad_accum=2, checkpoint_every=3,
                             checkpoint_path=tmp_path / f"state-{wrap}.pt", progress=False, verbose=False)
        runs.append((model, history))
    (plain, plain_history), (ddp, ddp_history) = runs
    assert ddp_history.steps == plain_history.steps == [0, 2, 4] and ddp_history.total_seen == plain_history.total_seen
    assert ddp_history.val_losses == pytest.approx(plain_history.val_losses, rel=1e-6)
    assert ddp_history.train_losses == pytest.approx(plain_history.train_losses, rel=1e-6)
    for a, b in zip(plain.parameters(), ddp.parameters(), strict=True):
        torch.testing.assert_close(a, b, atol=1e-6, rtol=1e-5)
    saved = load_checkpoint(tmp_path / "state-True.pt")[2]["training"]
    assert saved["world_size"] == 1 and len(saved["rng"]) == 1 and saved["steps_done"] == 6


class Crash(Exception):
    """Stands for a run that dies (power cut, out of time) after a checkpoint."""


@pytest.mark.parametrize("checkpoint_at", [3, 2], ids=["mid-epoch", "end-of-epoch"])
@pytest.mark.parametrize("own_generator", [False, True], ids=["global-rng", "loader-generator"])
def test_resume_gives_exactly_the_uninterrupted_run(tmp_path, checkpoint_at, own_generator):
    """Stop after a checkpoint, rebuild everything in a fresh state, resume: the same losses, samples and
    weights as a run that never stopped (dropout and shuffling included)."""
    dataset, val = Windows(10), DataLoader(Windows(4, seed=1), batch_size=2)

    def setup(seed):
        model = _small_gpt(seed, drop_rate=0.2)
        generator = torch.Generator().manual_seed(seed) if own_generator else None
        loader = DataLoader(dataset, batch_size=2, shuffle=True, generator=generator)
        return model, torch.optim.AdamW(model.parameters(), lr=3e-3), loader

    def mark_epoch(epoch, history):
        history.extra.setdefault("epoch_end", []).append(epoch)

    # 5 micro-batches per epoch and grad_accum 2: 2 steps per epoch (the fifth batch is left over), 6 in all
    settings = dict(num_epochs=3, eval_freq=2, eval_iter=2, grad_accum=2, on_epoch_end=mark_epoch,
                    progress=False, verbose=False)
    model, optimizer, train = setup(0)
    torch.manual_seed(1)
    full = train_loop(model, train, val, optimizer, "cpu", **settings)
    full_weights = model.state_dict()

    calls = []

    def crashing_loss(x, y, m, device):
        calls.append(1)
        if len(calls) > checkpoint_at * 2:  # the step after the checkpoint
            raise Crash
        return calc_loss_batch(x, y, m, device)

    path = tmp_path / "state.pt"
    model, optimizer, train = setup(0)
    torch.manual_seed(1)
    with pytest.raises(Crash):
        train_loop(model, train, val, optimizer, "cpu", **settings, loss_fn=crashing_loss,
                   checkpoint_every=checkpoint_at, checkpoint_path=path)

    model, optimizer, train = setup(7)  # other weights and generator states: all must come from the file
    torch.manual_seed(99)
    resumed = train_loop(model, train, val, optimizer, "cpu", **settings, resume_from=path)
    for field in ("train_losses", "val_losses", "tokens_seen", "steps", "epochs", "extra", "total_seen",
                  "total_steps"):
        assert getattr(resumed, field) == getattr(full, field), field
    assert resumed.extra["epoch_end"] == [0, 1, 2]
    for name, value in model.state_dict().items():
        assert torch.equal(value, full_weights[name]), name


def test_resume_refuses_files_it_cannot_continue(tmp_path):
    model = _small_gpt()
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3)
    train = [Windows(2, seed=i)[:] for i in range(4)]
    save_checkpoint(tmp_path / "plain.pt", model, optimizer)
    with pytest.raises(ValueError, match="no training position"):
        train_loop(model, train, train, optimizer, "cpu", 1, 1, 1, resume_from=tmp_path / "plain.pt")
    train_loop(model, train, train, optimizer, "cpu", 1, 1, 1, checkpoint_every=1, checkpoint_path=tmp_path / "s.pt",
               progress=False, verbose=False)
    with pytest.raises(ValueError, match="grad_accum 1"):
        train_loop(model, train, train, optimizer, "cpu", 1, 1, 1, grad_accum=2, resume_from=tmp_path / "s.pt")


def test_empty_loaders_and_bad_epochs_are_refused_with_advice(tiny):
    """The classic pitfall: a batch larger than the split with drop_last gives a loader of no batches."""
    windows = Windows(3)
    empty = DataLoader(windows, batch_size=8, drop_last=True)
    full = DataLoader(windows, batch_size=1)
    opt = torch.optim.AdamW(tiny.parameters())
    with pytest.raises(ValueError, match="training loader has no batches.*smaller batch_size"):
        train_loop(tiny, empty, full, opt, "cpu", 1, 1, 1, progress=False, verbose=False)
    with pytest.raises(ValueError, match="validation loader has no batches"):
        train_loop(tiny, full, empty, opt, "cpu", 1, 1, 1, progress=False, verbose=False)
    for epochs in (0, -1, 1.5):
        with pytest.raises(ValueError, match="num_epochs must be a whole number"):
            train_loop(tiny, full, full, opt, "cpu", epochs, 1, 1, progress=False, verbose=False)

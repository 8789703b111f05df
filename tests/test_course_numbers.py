"""Side by side with the course's published package: each lecture, run as its notebook runs it, prints the
course's numbers.

``llms-from-scratch`` (the course's code as a package, ``pip install --no-deps llms-from-scratch==1.0.19``;
``make setup`` installs it) is a test-only reference, like ``transformers`` and ``peft``. Every test runs one
lecture's pipeline twice in a small configuration, CPU-cheap: once with the course's code in the order of the
course's notebook (``torch.manual_seed(123)`` where the course seeds it), once with our helpers in the order of
our notebook's cells. Both start from the same data and the same base weights, and the test asserts that they
print the same lines (losses to the printed decimals, accuracies, generated samples) and compute the same
numbers (within 1e-5).

What has to agree for that, and is checked here by the outcome:

- our model draws its initial weights in the course's order, and our dropout draws the same masks;
- our loaders shuffle with the global generator, as the course's ``DataLoader(shuffle=True)`` does, so that
  ``torch.manual_seed(123)`` before training sets the order;
- our training loop draws exactly the random numbers the course's loop draws: one ``iter(loader)`` per epoch
  (the progress bar does not create an iterator of its own), the evaluations and accuracies in the course's
  order, nothing else;
- the notebooks seed where the course seeds, and reseed right before training (so that the numbers do not
  depend on how often earlier cells ran).

"Our notebook's path" is the lectures' default: the fused kernels of ``helpers.model`` and the fused AdamW
that ``FastPath.for_device("cpu")`` picks; "the teaching path" is ``impl="teaching"`` with the for-loop AdamW,
the computation spelled out as the course writes it.

Where the course's code has a bug we do not copy, the test says so and checks our behaviour instead
(:func:`test_lecture05_padding_is_masked_by_position_not_by_value`).

Run as a script, this file compares lecture 02 at the full size of the course (GPT-2 124M's sizes, context
256, 10 epochs: 15-25 minutes of CPU for each implementation), printing both runs' lines side by side::

    PYTHONPATH=. python tests/test_course_numbers.py            # the whole lecture 02 run
    PYTHONPATH=. python tests/test_course_numbers.py --epochs 2 # only the first 18 steps

The course's notebook prints ``Ep 1 (Step 000000): Train loss 9.781, Val loss 9.933`` first and
``Ep 10 (Step 000085): Train loss 0.391, Val loss 6.452`` last (``eval_iter=5``; the book's listing says
``eval_iter=1`` but prints the notebook's numbers, see rasbt/LLMs-from-scratch#312).
"""

from __future__ import annotations

import contextlib
import copy
import functools
import io
import sys

import pytest
import torch
from torch.utils.data import DataLoader, Subset

from helpers import data, runtime
from helpers.classifier import add_classification_head, calc_accuracy_loader, train_classifier_simple
from helpers.instruction import (
    create_instruction_loaders,
    custom_collate_fn,
    format_input,
    load_instruction_data,
)
from helpers.instruction import split_data as split_instruction_data
from helpers.lora import LinearWithLoRA, apply_lora
from helpers.losses import calc_loss_loader
from helpers.model import GPTModel
from helpers.perf import FastPath
from helpers.spam_data import build_spam_datasets, create_spam_loaders, prepare_spam_csvs
from helpers.tokenizer import get_tokenizer
from helpers.training import make_optimizer, train_model_simple

pytest.importorskip("llms_from_scratch", reason="the course's package: make setup installs it")
from llms_from_scratch import appendix_e as course_e  # noqa: E402
from llms_from_scratch import ch02 as course_ch02  # noqa: E402
from llms_from_scratch import ch04 as course_ch04  # noqa: E402
from llms_from_scratch import ch05 as course_ch05  # noqa: E402
from llms_from_scratch import ch06 as course_ch06  # noqa: E402
from llms_from_scratch import ch07 as course_ch07  # noqa: E402

SEED = 123
PATHS = ("teaching", "notebook")


@pytest.fixture(autouse=True)
def one_thread():
    """One CPU thread: these tiny models train many times faster than with threads competing for the cores.
    (Both implementations run under the same setting.)"""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def printed(fn, *args, **kwargs):
    """``(return value, printed lines)`` of ``fn(*args, **kwargs)`` (split at newlines only: a sample from a tiny
    model may hold any other character)."""
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        result = fn(*args, **kwargs)
    return result, out.getvalue().rstrip("\n").split("\n")


def our_model(cfg: dict, path: str) -> GPTModel:
    """Our GPTModel as the notebooks build it ("notebook": the default fused kernels) or the teaching path."""
    return GPTModel({**cfg, "impl": "teaching"} if path == "teaching" else cfg)


def our_options(path: str) -> FastPath:
    """What the notebooks pass to make_optimizer on a CPU (a fused AdamW), or the teaching path's for-loop."""
    return FastPath.teaching() if path == "teaching" else FastPath.for_device("cpu")


def course_copy(model: torch.nn.Module, cfg: dict) -> torch.nn.Module:
    """The course's GPTModel with ``model``'s weights (the parameter names are the course's)."""
    theirs = course_ch04.GPTModel(cfg)
    missing, unexpected = theirs.load_state_dict(model.state_dict(), strict=False)
    assert not unexpected and all(key.endswith(".att.mask") for key in missing)  # the course's mask buffers
    return theirs.train(model.training)


def assert_same_losses(ours: list[float], theirs: list[float]) -> None:
    assert len(ours) == len(theirs)
    assert ours == pytest.approx(theirs, rel=1e-5, abs=1e-5)


class ByteTokenizer:
    """Text as UTF-8 bytes, a 256-token vocabulary: lecture 02's pipeline on real text with a tiny model."""

    n_vocab = 256

    def encode(self, text, allowed_special=None, **kwargs):
        return list(text.encode("utf-8"))

    def decode(self, ids):
        return bytes(ids).decode("utf-8", errors="replace")


# --------------------------------------------------------------------------------------- lectures 01 and 02

TINY_PRETRAIN = {"vocab_size": 256, "context_length": 64, "emb_dim": 32, "n_heads": 4, "n_layers": 2,
                 "drop_rate": 0.1, "qkv_bias": False}
PRETRAIN_SETTINGS = {"learning_rate": 4e-4, "weight_decay": 0.1, "batch_size": 2, "num_epochs": 2,
                     "eval_freq": 5, "eval_iter": 5}


def course_lecture02(text, tokenizer, cfg, settings):
    """The course's chapter 5 notebook: seed, loaders, the loss before training (seeded), then the training cell
    (seed, build the model, AdamW, train_model_simple). Returns ``(initial losses, losses, printed lines)``."""
    train_text, val_text = data.train_val_split(text, 0.9)
    ctx, batch_size = cfg["context_length"], settings["batch_size"]
    torch.manual_seed(123)
    model = course_ch04.GPTModel(cfg)
    model.eval()
    torch.manual_seed(123)
    train_loader = DataLoader(course_ch02.GPTDatasetV1(train_text, tokenizer, ctx, ctx), batch_size=batch_size,
                              shuffle=True, drop_last=True)
    val_loader = DataLoader(course_ch02.GPTDatasetV1(val_text, tokenizer, ctx, ctx), batch_size=batch_size,
                            shuffle=False, drop_last=False)
    for _ in train_loader:  # the notebook's checks of the batch shapes and the token counts
        pass
    torch.manual_seed(123)
    with torch.no_grad():
        initial = (course_ch05.calc_loss_loader(train_loader, model, "cpu"),
                   course_ch05.calc_loss_loader(val_loader, model, "cpu"))

    torch.manual_seed(123)
    model = course_ch04.GPTModel(cfg)
    optimizer = torch.optim.AdamW(model.parameters(), lr=settings["learning_rate"],
                                  weight_decay=settings["weight_decay"])
    (train_losses, val_losses, _), lines = printed(
        course_ch05.train_model_simple, model, train_loader, val_loader, optimizer, "cpu",
        num_epochs=settings["num_epochs"], eval_freq=settings["eval_freq"], eval_iter=settings["eval_iter"],
        start_context="Every effort moves you", tokenizer=tokenizer)
    return initial, (train_losses, val_losses), lines


def our_lecture02(text, tokenizer, cfg, settings, path="notebook", demo=False):
    """Our lecture 02 (and 01) notebook, cell by cell. ``demo=True`` also runs the cells between building the
    model and training (generation, a demonstration step): they must not change the training run."""
    train_text, val_text = data.train_val_split(text, 0.9)
    ctx, batch_size = cfg["context_length"], settings["batch_size"]
    runtime.set_seed(SEED)
    train_loader = data.create_dataloader(train_text, batch_size=batch_size, max_length=ctx, stride=ctx,
                                          drop_last=True, shuffle=True, tokenizer=tokenizer)
    val_loader = data.create_dataloader(val_text, batch_size=batch_size, max_length=ctx, stride=ctx,
                                        drop_last=False, shuffle=False, tokenizer=tokenizer)
    runtime.set_seed(SEED)
    model = our_model(cfg, path).eval()
    runtime.set_seed(SEED)  # lecture 01's loss before training
    initial = (calc_loss_loader(train_loader, model, "cpu"), calc_loss_loader(val_loader, model, "cpu"))
    if demo:  # lecture 02's cells between building the model and training draw random numbers
        model.train()
        inputs, targets = next(iter(train_loader))
        optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3, weight_decay=0.1)   # as lecture 02's cells
        optimizer.zero_grad()
        torch.nn.functional.cross_entropy(model(inputs).flatten(0, 1), targets.flatten()).backward()
        optimizer.step()
        torch.rand(7)

    runtime.set_seed(SEED)  # the training cell, as the course's: seed, build the model, train
    model = our_model(cfg, path)
    # Lecture 02's training cell: torch.optim.AdamW with fused=True (SETTINGS["fused_adamw"]); the plain one too.
    if path in ("notebook", "plain-adamw"):
        optimizer = torch.optim.AdamW(model.parameters(), lr=settings["learning_rate"],
                                      weight_decay=settings["weight_decay"], fused=path == "notebook")
    else:
        optimizer = make_optimizer(model, lr=settings["learning_rate"], weight_decay=settings["weight_decay"],
                                   options=our_options(path))
    history, lines = printed(
        train_model_simple, model, train_loader, val_loader, optimizer, "cpu",
        num_epochs=settings["num_epochs"], eval_freq=settings["eval_freq"], eval_iter=settings["eval_iter"],
        start_context="Every effort moves you", tokenizer=tokenizer, progress=True)
    return initial, (history.train_losses, history.val_losses), lines


@pytest.fixture(scope="module")
def short_verdict():
    return data.read_text("the-verdict")[:2_000]


def test_both_models_draw_the_same_initial_weights():
    """After the same seed, our GPTModel and the course's have the same weights: the notebooks can seed where
    the course seeds and start from the course's model."""
    for cfg in (TINY_PRETRAIN, {**TINY_PRETRAIN, "qkv_bias": True, "vocab_size": 300}):
        torch.manual_seed(SEED)
        ours = GPTModel(cfg)
        after_ours = torch.get_rng_state()
        torch.manual_seed(SEED)
        theirs = course_ch04.GPTModel(cfg)
        assert torch.equal(torch.get_rng_state(), after_ours)  # the same number of draws, too
        theirs_state = theirs.state_dict()
        for name, tensor in ours.state_dict().items():
            assert torch.equal(tensor, theirs_state[name]), name


@pytest.mark.parametrize("path", (*PATHS, "plain-adamw"))
def test_lecture02_prints_the_courses_losses_and_samples(short_verdict, path):
    """Lecture 01's losses before training, and lecture 02's training run: every printed line is the course's
    (losses to three decimals, the greedy samples after each epoch), and the numbers agree within 1e-5."""
    tokenizer = ByteTokenizer()
    course_initial, course_losses, course_lines = course_lecture02(short_verdict, tokenizer, TINY_PRETRAIN,
                                                                   PRETRAIN_SETTINGS)
    initial, losses, lines = our_lecture02(short_verdict, tokenizer, TINY_PRETRAIN, PRETRAIN_SETTINGS, path)
    assert initial == pytest.approx(course_initial, rel=1e-6)
    assert len(course_lines) == 2 + 2 * 3  # 2 epochs of 7 steps: 3 evaluations and a sample each
    assert lines == course_lines
    for ours, theirs in zip(losses, course_losses, strict=True):
        assert_same_losses(ours, theirs)


def test_lecture02_training_does_not_depend_on_earlier_cells(short_verdict):
    """The training cell seeds and builds its model itself: running the cells before it (a demonstration step,
    generation, anything that draws random numbers) does not change one printed number."""
    tokenizer = ByteTokenizer()
    settings = {**PRETRAIN_SETTINGS, "num_epochs": 1}
    _, _, plain = our_lecture02(short_verdict, tokenizer, TINY_PRETRAIN, settings)
    _, _, after_demo = our_lecture02(short_verdict, tokenizer, TINY_PRETRAIN, settings, demo=True)
    assert after_demo == plain


# --------------------------------------------------------------------------------------- lecture 04

TINY_GPT2 = {"vocab_size": 50257, "context_length": 128, "emb_dim": 16, "n_heads": 2, "n_layers": 2,
             "drop_rate": 0.1, "qkv_bias": True}
CLASSIFIER_SETTINGS = {"learning_rate": 5e-5, "weight_decay": 0.1, "batch_size": 8, "num_epochs": 2,
                       "eval_freq": 5, "eval_iter": 2}
TRAIN_MESSAGES = 80  # 10 batches per epoch


@pytest.fixture(scope="module")
def spam():
    """Our datasets (as lecture 04 builds them) and the course's SpamDataset over the same CSV files."""
    tokenizer = get_tokenizer()
    csvs = prepare_spam_csvs(seed=SEED)
    ours = build_spam_datasets(csvs, tokenizer, context_length=TINY_GPT2["context_length"])
    course_train = course_ch06.SpamDataset(csvs.train, tokenizer=tokenizer)
    theirs = (course_train,
              course_ch06.SpamDataset(csvs.validation, tokenizer=tokenizer, max_length=course_train.max_length),
              course_ch06.SpamDataset(csvs.test, tokenizer=tokenizer, max_length=course_train.max_length))
    for mine, course_set in zip(ours, theirs, strict=True):
        assert mine.encoded_texts == course_set.encoded_texts and mine.labels == list(course_set.data["Label"])
    return ours, theirs


def course_spam_loaders(datasets, batch_size=8, train_messages=None):
    """The course's loaders of chapter 6 and appendix E."""
    train, val, test = datasets
    if train_messages is not None:
        train = Subset(train, range(train_messages))
    torch.manual_seed(123)
    return (DataLoader(train, batch_size=batch_size, shuffle=True, drop_last=True),
            DataLoader(val, batch_size=batch_size, drop_last=False),
            DataLoader(test, batch_size=batch_size, drop_last=False))


@functools.cache
def tiny_base_state(context_length: int) -> dict:
    """A stand-in for GPT-2's weights: a tiny GPTModel of GPT-2's vocabulary, the same for both sides."""
    with torch.random.fork_rng():
        torch.manual_seed(0)
        return GPTModel({**TINY_GPT2, "context_length": context_length}).state_dict()


def tiny_base(path: str, context_length: int = TINY_GPT2["context_length"]) -> GPTModel:
    model = our_model({**TINY_GPT2, "context_length": context_length}, path)
    model.load_state_dict(tiny_base_state(context_length))
    return model.eval()  # load_base_model gives the model in eval mode, as the course's notebooks do


def test_lecture04_first_batch_is_the_courses(spam):
    """After ``torch.manual_seed(123)`` the first training batch is the course's: its labels are
    [0, 0, 1, 0, 0, 0, 1, 0] for the lecture's data."""
    ours = create_spam_loaders(*spam[0], batch_size=8)
    theirs = course_spam_loaders(spam[1])
    torch.manual_seed(123)
    x, y = next(iter(ours.train))
    torch.manual_seed(123)
    course_x, course_y = next(iter(theirs[0]))
    assert torch.equal(x, course_x) and torch.equal(y, course_y)
    assert y.tolist() == [0, 0, 1, 0, 0, 0, 1, 0]


def course_lecture04(datasets, settings, lora=None):
    """The course's chapter 6 notebook (``lora=None``) or appendix E (``lora={"rank": r, "alpha": a}``):
    loaders, a new head after ``torch.manual_seed(123)``, the accuracies before training (seeded), for
    appendix E the LoRA layers, then the training cell (seed, AdamW, train_classifier_simple) and the
    accuracies after training. Returns ``(accuracies before, history lists, accuracies after, lines)``."""
    train_loader, val_loader, test_loader = course_spam_loaders(datasets, settings["batch_size"], TRAIN_MESSAGES)
    model = course_copy(tiny_base("teaching"), TINY_GPT2).eval()
    if lora is None:
        for param in model.parameters():
            param.requires_grad = False
    torch.manual_seed(123)
    model.out_head = torch.nn.Linear(in_features=TINY_GPT2["emb_dim"], out_features=2)
    if lora is None:
        for param in [*model.trf_blocks[-1].parameters(), *model.final_norm.parameters()]:
            param.requires_grad = True
    torch.manual_seed(123)
    before = [course_ch06.calc_accuracy_loader(loader, model, "cpu", num_batches=10)
              for loader in (train_loader, val_loader, test_loader)]
    if lora is not None:
        for param in model.parameters():
            param.requires_grad = False
        course_e.replace_linear_with_lora(model, **lora)
    torch.manual_seed(123)
    optimizer = torch.optim.AdamW(model.parameters(), lr=settings["learning_rate"],
                                  weight_decay=settings["weight_decay"])
    history, lines = printed(course_ch06.train_classifier_simple, model, train_loader, val_loader, optimizer,
                             "cpu", num_epochs=settings["num_epochs"], eval_freq=settings["eval_freq"],
                             eval_iter=settings["eval_iter"])
    after = [course_ch06.calc_accuracy_loader(loader, model, "cpu")
             for loader in (train_loader, val_loader, test_loader)]
    return before, history, after, lines


def our_lecture04(datasets, settings, path, lora=None):
    """Our lecture 04 notebook cell by cell (``lora=None``), or lecture 06's ``prepare`` and training loop
    for a LoRA strategy (``lora`` as in its STRATEGIES, with ``convention``)."""
    loaders = create_spam_loaders(*datasets, batch_size=settings["batch_size"], train_examples=TRAIN_MESSAGES)
    base = tiny_base(path)
    runtime.set_seed(SEED)
    model = copy.deepcopy(base)
    add_classification_head(model, 2, trainable="head" if lora else "last_block")
    runtime.set_seed(SEED)
    before = [calc_accuracy_loader(loader, model, "cpu", num_batches=10) for loader in loaders]
    if lora is not None:
        apply_lora(model, targets="all", **lora)
    runtime.set_seed(SEED)
    optimizer = make_optimizer(model, lr=settings["learning_rate"], weight_decay=settings["weight_decay"],
                               options=our_options(path))
    history, lines = printed(train_classifier_simple, model, loaders.train, loaders.validation, optimizer, "cpu",
                             num_epochs=settings["num_epochs"], eval_freq=settings["eval_freq"],
                             eval_iter=settings["eval_iter"], progress=True)
    after = [calc_accuracy_loader(loader, model, "cpu") for loader in loaders]
    history_lists = (history.train_losses, history.val_losses, history.extra["train_acc"], history.extra["val_acc"],
                     history.total_seen)
    return before, history_lists, after, lines


def assert_same_classifier_run(ours, theirs):
    (before, history, after, lines), (course_before, course_history, course_after, course_lines) = ours, theirs
    assert before == course_before
    assert lines == course_lines
    for mine, course_values in zip(history[:4], course_history[:4], strict=True):
        assert_same_losses(mine, course_values)
    assert history[4] == course_history[4]  # examples seen
    assert after == course_after


@pytest.mark.parametrize("path", PATHS)
def test_lecture04_prints_the_courses_losses_and_accuracies(spam, path):
    """The classifier of lecture 04 (last block, final norm and a new head train), side by side with the course's
    chapter 6: the accuracies before training, every printed loss and accuracy, and the final accuracies."""
    course_run = course_lecture04(spam[1], CLASSIFIER_SETTINGS)
    ours = our_lecture04(spam[0], CLASSIFIER_SETTINGS, path)
    assert len(course_run[3]) == 2 * (2 + 1)  # 2 epochs: 2 evaluations and the accuracies each
    assert_same_classifier_run(ours, course_run)


# --------------------------------------------------------------------------------------- lecture 06


def test_course_convention_is_the_courses_lora_layer():
    """``convention="course"``: the course's ``A`` (the same random numbers, drawn in its layout), its scaling by
    alpha alone, so the same outputs; merging folds that update in."""
    base = torch.nn.Linear(12, 7)
    torch.manual_seed(1)
    ours = LinearWithLoRA(copy.deepcopy(base), rank=4, alpha=8, convention="course")
    torch.manual_seed(1)
    theirs = course_e.LinearWithLoRA(copy.deepcopy(base), rank=4, alpha=8)
    assert torch.equal(ours.lora.A, theirs.lora.A) and ours.lora.scaling == 8
    with torch.no_grad():
        ours.lora.B.normal_()
        theirs.lora.B.copy_(ours.lora.B)
    x = torch.randn(3, 12)
    assert torch.equal(ours(x), theirs(x))
    assert torch.allclose(ours.merge()(x), theirs(x), atol=1e-6)



@pytest.mark.parametrize("path", PATHS)
def test_lecture06_course_lora_prints_the_courses_numbers(spam, path):
    """Lecture 06's LoRA strategy with ``convention="course"`` and the course's learning rate, side by side
    with the course's appendix E (LoRA on every linear layer, the new head included)."""
    lora = {"rank": 4, "alpha": 4}
    settings = {**CLASSIFIER_SETTINGS, "learning_rate": 5e-4}
    course_run = course_lecture04(spam[1], settings, lora=lora)
    ours = our_lecture04(spam[0], settings, path, lora={**lora, "convention": "course"})
    assert_same_classifier_run(ours, course_run)


def test_lecture06_paper_lora_is_a_different_run(spam):
    """Our default LoRA (the paper's scaling alpha / r, A initialised as nn.Linear's weight) starts from the same
    accuracies (B = 0) but trains differently: the course's curves need ``convention="course"``."""
    lora = {"rank": 4, "alpha": 4}
    settings = {**CLASSIFIER_SETTINGS, "learning_rate": 5e-4, "num_epochs": 1}
    course_before, _, _, course_lines = course_lecture04(spam[1], settings, lora=lora)
    before, _, _, lines = our_lecture04(spam[0], settings, "teaching", lora=lora)
    assert before == course_before
    assert lines != course_lines


# --------------------------------------------------------------------------------------- lecture 05

TINY_INSTRUCT = {**TINY_GPT2, "context_length": 256}
INSTRUCTION_SETTINGS = {"learning_rate": 5e-4, "weight_decay": 0.1, "batch_size": 2, "num_epochs": 2,
                        "eval_freq": 4, "eval_iter": 2}


@pytest.fixture(scope="module")
def instruction_data():
    train, test, val = split_instruction_data(load_instruction_data())
    shortest = sorted(train, key=lambda e: len(format_input(e)) + len(e["output"]))
    return shortest[:16], val[:6]


def course_lecture05(train_data, val_data, tokenizer, settings, max_length):
    """The course's chapter 7 notebook: loaders (seeded), the losses before training (seeded), the training
    cell (seed, AdamW, train_model_simple with the first validation prompt as the sample's start)."""
    collate = functools.partial(course_ch07.custom_collate_fn, device="cpu", allowed_max_length=max_length)
    torch.manual_seed(123)
    train_loader = DataLoader(course_ch07.InstructionDataset(train_data, tokenizer), batch_size=settings["batch_size"],
                              collate_fn=collate, shuffle=True, drop_last=True)
    val_loader = DataLoader(course_ch07.InstructionDataset(val_data, tokenizer), batch_size=settings["batch_size"],
                            collate_fn=collate, shuffle=False, drop_last=False)
    model = course_copy(tiny_base("teaching", max_length), TINY_INSTRUCT).eval()
    for _ in train_loader:  # the notebook prints the batch shapes
        pass
    torch.manual_seed(123)
    with torch.no_grad():
        before = (course_ch05.calc_loss_loader(train_loader, model, "cpu", num_batches=5),
                  course_ch05.calc_loss_loader(val_loader, model, "cpu", num_batches=5))
    torch.manual_seed(123)
    optimizer = torch.optim.AdamW(model.parameters(), lr=settings["learning_rate"],
                                  weight_decay=settings["weight_decay"])
    (train_losses, val_losses, _), lines = printed(
        course_ch05.train_model_simple, model, train_loader, val_loader, optimizer, "cpu",
        num_epochs=settings["num_epochs"], eval_freq=settings["eval_freq"], eval_iter=settings["eval_iter"],
        start_context=course_ch07.format_input(val_data[0]), tokenizer=tokenizer)
    return before, (train_losses, val_losses), lines


def our_lecture05(train_data, val_data, tokenizer, settings, path, max_length):
    """Our lecture 05 notebook, cell by cell."""
    train_loader, val_loader = create_instruction_loaders(
        train_data, val_data, tokenizer, batch_size=settings["batch_size"], device="cpu",
        allowed_max_length=max_length)
    next(iter(train_loader))  # the notebook shows the first batch
    model = tiny_base(path, max_length)
    runtime.set_seed(SEED)
    before = (calc_loss_loader(train_loader, model, "cpu", num_batches=5),
              calc_loss_loader(val_loader, model, "cpu", num_batches=5))
    runtime.set_seed(SEED)
    optimizer = make_optimizer(model, lr=settings["learning_rate"], weight_decay=settings["weight_decay"],
                               options=our_options(path))
    history, lines = printed(
        train_model_simple, model, train_loader, val_loader, optimizer, "cpu",
        num_epochs=settings["num_epochs"], eval_freq=settings["eval_freq"], eval_iter=settings["eval_iter"],
        start_context=format_input(val_data[0]), tokenizer=tokenizer, progress=True)
    return before, (history.train_losses, history.val_losses), lines


@pytest.mark.parametrize("path", PATHS)
def test_lecture05_prints_the_courses_losses(instruction_data, path):
    """Instruction finetuning side by side with the course's chapter 7: the losses before training, every
    printed loss and the sample after each epoch."""
    tokenizer, (train_data, val_data) = get_tokenizer(), instruction_data
    max_length = TINY_INSTRUCT["context_length"]
    course_run = course_lecture05(train_data, val_data, tokenizer, INSTRUCTION_SETTINGS, max_length)
    ours = our_lecture05(train_data, val_data, tokenizer, INSTRUCTION_SETTINGS, path, max_length)
    assert ours[0] == pytest.approx(course_run[0], rel=1e-6)
    assert len(course_run[2]) == 2 * (2 + 1)  # 2 epochs of 8 steps: 2 evaluations and a sample each
    assert ours[2] == course_run[2]
    for mine, course_values in zip(ours[1], course_run[1], strict=True):
        assert_same_losses(mine, course_values)


def test_lecture05_padding_is_masked_by_position_not_by_value():
    """The course's ``custom_collate_fn`` finds the padding by value: every end-of-text id in the targets but the
    first becomes -100. A text that contains the end-of-text id itself then loses its real end-of-text target,
    the one that teaches the model to stop. We do not copy that: our padding is everything after a sequence's
    own tokens. For texts without that id (all of the lecture's data) both give the same batches."""
    eot = 50256
    batch = [[5, eot, 7], [8, 9]]
    course_inputs, course_targets = course_ch07.custom_collate_fn(batch)
    inputs, targets = custom_collate_fn(batch)
    assert torch.equal(inputs, course_inputs)
    assert targets[0].tolist() == [eot, 7, eot]          # ours: the end-of-text after 7 is learnt
    assert course_targets[0].tolist() == [eot, 7, -100]  # the course's: masked, as if it were padding
    assert torch.equal(targets[1], course_targets[1])
    plain = [[5, 6, 7], [8, 9], [1]]
    assert all(torch.equal(a, b) for a, b in zip(custom_collate_fn(plain), course_ch07.custom_collate_fn(plain),
                                                 strict=True))


# --------------------------------------------------------------------------------------- the full size


def main(argv: list[str]) -> None:
    """Lecture 02 at the course's full size, ours (the notebook's path) next to the course's code."""
    import argparse

    parser = argparse.ArgumentParser(description=main.__doc__)
    parser.add_argument("--epochs", type=int, default=10, help="train for this many epochs (9 steps each)")
    parser.add_argument("--path", choices=PATHS, default="notebook", help="our notebook's path or the teaching path")
    args = parser.parse_args(argv)
    from helpers.model import GPT_CONFIG_124M

    settings = {**PRETRAIN_SETTINGS, "num_epochs": args.epochs}
    text, tokenizer = data.read_text("the-verdict"), get_tokenizer()
    course_initial, course_losses, course_lines = course_lecture02(text, tokenizer, GPT_CONFIG_124M, settings)
    print(f"course: losses before training {course_initial[0]:.4f} / {course_initial[1]:.4f}")
    print(*course_lines, sep="\n", flush=True)
    initial, losses, lines = our_lecture02(text, tokenizer, GPT_CONFIG_124M, settings, args.path)
    print(f"ours:   losses before training {initial[0]:.4f} / {initial[1]:.4f}")
    print(*lines, sep="\n")
    same = [a == b for a, b in zip(lines, course_lines, strict=False)]
    differences = [abs(a - b) for mine, theirs in zip(losses, course_losses, strict=True)
                   for a, b in zip(mine, theirs, strict=True)]
    print(f"\n{sum(same)} of {len(course_lines)} printed lines are the course's (ours printed {len(lines)}); "
          f"largest loss difference {max(differences):.2e}")


if __name__ == "__main__":
    main(sys.argv[1:])

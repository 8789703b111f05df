"""Exercises for lectures 01-06, and a checker that says what is wrong with an attempt.

In a lecture notebook an exercise is a stub and one call::

    from helpers.exercises import check, hint

    def my_cross_entropy(logits, targets):
        raise NotImplementedError  # your code

    check("01.cross_entropy", my_cross_entropy)

:func:`check` runs the answer (a function, a class or a value) on fresh random inputs (a few shapes,
dtypes and edge cases) and compares it with what the lectures' own helpers compute: ``helpers.losses``,
``helpers.training``, ``helpers.generation``, ``helpers.weights``, ``helpers.classifier``,
``helpers.instruction``, ``helpers.lora`` and so on. When the answer is wrong it is compared with the
typical wrong answers as well (targets not shifted, logits not flattened, a mask one position off, a
count that forgot the biases...), so the message can say *what* went wrong, in the lecture's words.
It never shows solution code; :func:`hint` gives a nudge, and the worked solutions are in
``notebooks/solutions/``.

An exercise that has not been answered yet (the stub raises ``NotImplementedError``, or the value is
``...`` or ``None``) prints what to do; a wrong answer prints the feedback. Neither raises, so *Run All*
still runs a lecture to the end. ``check(..., strict=True)`` raises :class:`ExerciseFailed` instead,
which is what the solutions notebooks and the tests use. ``check`` returns a :class:`Result` that is
true when the answer is right.

The checks run on the CPU with tiny tensors and models, in well under a second each, and leave the
learner's random generators (Python, NumPy, PyTorch) exactly as they were.
"""

from __future__ import annotations

import contextlib
import copy
import difflib
import math
import random
import textwrap
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd
import torch
import torch.nn as nn
import torch.nn.functional as F
from torch.utils.data import DataLoader

from . import runtime
from .classifier import add_classification_head, calc_accuracy_loader, classifier_logits, set_trainable
from .data import GPTDatasetV1
from .generation import apply_temperature_and_top_k
from .gpt2_formats import params_from_model
from .instruction import IGNORE_INDEX, custom_collate_fn, format_input, format_response, split_data
from .lora import LinearWithLoRA, apply_lora
from .losses import calc_loss_batch, perplexity
from .model import GPTModel, count_parameters, get_config, parameter_report
from .spam_data import SpamDataset
from .tokenizer import END_OF_TEXT_ID
from .training import train_step
from .weights import config_from_settings, load_weights_into_gpt

# --------------------------------------------------------------------------------- the machinery


class ExerciseFailed(AssertionError):
    """Raised by ``check(..., strict=True)`` for a wrong or missing answer (lectures 01-06's solutions)."""


class UnknownExercise(KeyError):
    """An exercise id that does not exist; the message lists the ids there are (lectures 01-06)."""

    def __str__(self) -> str:
        return str(self.args[0]) if self.args else ""


class Wrong(Exception):
    """Raised inside a checker: the answer is wrong, and the message says how (lectures 01-06)."""


class _Unanswered(Exception):
    """The learner has not answered yet (a stub that raises NotImplementedError, or ``...``)."""


@dataclass(frozen=True)
class Exercise:
    """One exercise of lectures 01-06: its id (``"02.train_step"``), title, task, hint and checker."""

    id: str
    title: str
    task: str
    hint: str
    checker: Callable[[Any], str]

    @property
    def lecture(self) -> str:
        return self.id.split(".")[0]


@dataclass(frozen=True)
class Result:
    """What :func:`check` found (lectures 01-06): true when the answer is right.

    ``status`` is ``"correct"``, ``"wrong"`` or ``"unanswered"``; ``message`` is the text printed.
    In a notebook it displays as nothing (the message was printed already).
    """

    exercise: str
    status: str
    message: str

    @property
    def passed(self) -> bool:
        return self.status == "correct"

    def __bool__(self) -> bool:
        return self.passed

    def __repr__(self) -> str:
        return f"Result({self.exercise!r}, {self.status!r})"

    def _ipython_display_(self) -> None:  # the feedback is printed by check(); show nothing more
        pass


EXERCISES: dict[str, Exercise] = {}


def _exercise(exercise_id: str, title: str, task: str, hint: str):
    """Register the decorated checker as exercise ``exercise_id``."""
    def register(checker):
        EXERCISES[exercise_id] = Exercise(exercise_id, title, " ".join(task.split()), " ".join(hint.split()),
                                          checker)
        return checker
    return register


def get_exercise(exercise_id: str) -> Exercise:
    """The :class:`Exercise` called ``exercise_id``; an unknown id raises :class:`UnknownExercise` (lectures 01-06)."""
    if isinstance(exercise_id, str) and exercise_id in EXERCISES:
        return EXERCISES[exercise_id]
    close = difflib.get_close_matches(str(exercise_id), list(EXERCISES), n=1, cutoff=0.6)
    guess = f" Did you mean {close[0]!r}?" if close else ""
    raise UnknownExercise(f"There is no exercise {exercise_id!r}.{guess} The exercises are: "
                          f"{', '.join(EXERCISES)}.")


def list_exercises(lecture: str | int | None = None) -> list[str]:
    """The exercise ids, all or one lecture's (``list_exercises(2)`` or ``list_exercises("02")``; lectures 01-06)."""
    if lecture is None:
        return list(EXERCISES)
    prefix = f"{int(lecture):02d}" if isinstance(lecture, int) or str(lecture).isdigit() else str(lecture)
    return [name for name, ex in EXERCISES.items() if ex.lecture == prefix]


@contextlib.contextmanager
def _own_random_numbers(seed: int | None):
    """Run a check on its own random numbers, leaving the learner's generators as they were."""
    py_state, np_state = random.getstate(), np.random.get_state()
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(random.SystemRandom().randrange(2**31) if seed is None else seed)
        try:
            yield
        finally:
            random.setstate(py_state)
            np.random.set_state(np_state)


def _unanswered_value(answer) -> bool:
    return answer is None or answer is Ellipsis


def check(exercise_id: str, answer, *, strict: bool = False, quiet: bool = False, seed: int | None = None) -> Result:
    """Check ``answer`` to exercise ``exercise_id`` and print what is right or wrong (lectures 01-06).

    ``answer`` is what the exercise asks for: a function, a class or a value. An answer not given yet
    (a stub raising ``NotImplementedError``, ``...`` or ``None``) prints the task; a wrong one prints
    what is wrong. Neither raises unless ``strict=True``, which raises :class:`ExerciseFailed` (the
    solutions notebooks and the tests use it). ``quiet=True`` prints nothing. ``seed`` fixes the random
    inputs (by default they are fresh every time). Returns a :class:`Result`, true when right.
    """
    exercise = get_exercise(exercise_id)
    try:
        with _own_random_numbers(seed):
            if _unanswered_value(answer):
                raise _Unanswered
            note = exercise.checker(answer)
    except _Unanswered:
        result = Result(exercise.id, "unanswered",
                        f"· {exercise.id} ({exercise.title}) is waiting for your answer.\n{_indented(exercise.task)}\n"
                        f"  Then run the cell again. Stuck? hint({exercise.id!r})")
    except Wrong as wrong:
        result = Result(exercise.id, "wrong",
                        f"✘ {exercise.id} ({exercise.title}): not yet.\n{_indented(str(wrong))}\n"
                        f"  Fix it and run the cell again. A nudge: hint({exercise.id!r})")
    else:
        result = Result(exercise.id, "correct",
                        f"✔ {exercise.id} ({exercise.title}): correct." + (f"\n{_indented(note)}" if note else ""))
    if not quiet:
        print(result.message)
    if strict and not result.passed:
        raise ExerciseFailed(result.message)
    return result


def _indented(text: str, width: int = 110) -> str:
    """Each line of ``text`` wrapped to ``width`` and indented by two spaces."""
    return "\n".join(textwrap.fill(line.strip(), width, initial_indent="  ", subsequent_indent="  ",
                                   break_long_words=False, break_on_hyphens=False) for line in text.splitlines())


def hint(exercise_id: str) -> None:
    """Print a hint for exercise ``exercise_id``: a direction, never the code (lectures 01-06)."""
    exercise = get_exercise(exercise_id)
    print(f"Hint for {exercise.id} ({exercise.title}):\n{_indented(exercise.hint)}")


# --------------------------------------------------------------------------------- small tools


def _call(fn, *args, what: str = "your function", errors: dict[str, str] | None = None):
    """``fn(*args)``; NotImplementedError means not answered yet, any other error becomes feedback."""
    if not callable(fn):
        raise Wrong(f"Expected a function here, got {type(fn).__name__} {_short(fn)}.")
    try:
        out = fn(*args)
    except NotImplementedError:
        raise _Unanswered from None
    except Exception as err:  # the learner's code failed: say how, with a hint where the error is a known one
        text = str(err).strip().splitlines()[0] if str(err).strip() else ""
        extra = next((message for key, message in (errors or {}).items() if key.lower() in str(err).lower()), "")
        raise Wrong(f"{what[0].upper() + what[1:]} raised {type(err).__name__}: {text[:300]}" + (f"\n  {extra}" if extra else "")) from None
    if out is Ellipsis:
        raise _Unanswered
    return out


def _short(value, limit: int = 80) -> str:
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _fmt(x: float) -> str:
    """A number as a learner reads it: 10.98, 0.0213, 1,234,567."""
    if isinstance(x, (int, np.integer)) or (isinstance(x, float) and x.is_integer() and abs(x) >= 1000):
        return f"{int(x):,}"
    return f"{x:.4g}"


def _tensor(value, what: str) -> torch.Tensor:
    """The learner's tensor-like answer as a CPU tensor, or feedback saying what it should be."""
    if value is None:
        raise Wrong(f"{what} is None: did you forget to `return` it?")
    if isinstance(value, torch.Tensor):
        return value.detach().cpu()
    try:
        return torch.as_tensor(np.asarray(value))
    except Exception:
        raise Wrong(f"{what} should be a tensor (or a list of numbers), got {type(value).__name__} "
                    f"{_short(value)}.") from None


def _number(value, what: str) -> float:
    """The learner's answer as one float, or feedback saying what it should be."""
    if value is None:
        raise Wrong(f"{what} is None: did you forget to `return` it?")
    if isinstance(value, bool):
        raise Wrong(f"{what} should be a number, got {value!r}.")
    if isinstance(value, torch.Tensor):
        if value.numel() != 1:
            raise Wrong(f"{what} should be one number, got a tensor of shape {tuple(value.shape)}.")
        return float(value.detach().cpu().reshape(()).item())
    try:
        return float(value)
    except (TypeError, ValueError):
        raise Wrong(f"{what} should be a number, got {type(value).__name__} {_short(value)}.") from None


def _close(a, b, rtol: float = 1e-4, atol: float = 1e-5) -> bool:
    """Same shape and the same values (within float tolerance); False for anything that does not compare."""
    try:
        a, b = torch.as_tensor(a), torch.as_tensor(b)
        if a.shape != b.shape:
            return False
        a, b = a.double(), b.double()
        return bool(torch.allclose(a, b, rtol=rtol, atol=atol))
    except (TypeError, RuntimeError, ValueError):
        return False


def _first_match(got, candidates) -> str | None:
    """The message of the first ``(value, message)`` whose value ``got`` equals."""
    for value, message in candidates:
        if _close(got, value):
            return message
    return None


def _compare(got, expected: torch.Tensor, candidates, what: str) -> None:
    """Feedback unless ``got`` equals ``expected``: a known mistake's message, else shape or values."""
    if _close(got, expected):
        return
    known = _first_match(got, candidates)
    if known:
        raise Wrong(known)
    if tuple(got.shape) != tuple(expected.shape):
        raise Wrong(f"{what} has shape {tuple(got.shape)}, expected {tuple(expected.shape)}.")
    if not torch.isfinite(got.double()).all():
        raise Wrong(f"{what} contains nan or inf where every value should be finite.")
    differ = ~torch.isclose(got.double(), expected.double(), rtol=1e-4, atol=1e-5)
    where = tuple(int(i) for i in differ.nonzero()[0])
    raise Wrong(f"{what} has the right shape {tuple(got.shape)} but {int(differ.sum())} of its {got.numel()} values "
                f"differ: at index {where} it holds {_fmt(float(got[where]))} where {_fmt(float(expected[where]))} "
                "was expected.")


def _module_name(parameter_name: str) -> str:
    """``trf_blocks.0.att.W_query.weight`` -> ``trf_blocks.0``; ``tok_emb.weight`` -> ``tok_emb``."""
    parts = parameter_name.split(".")
    return ".".join(parts[:2]) if parts[0] == "trf_blocks" and len(parts) > 2 else parts[0]


def _tiny_config(**overrides) -> dict:
    """A GPT config small enough to build and train in milliseconds."""
    cfg = {"vocab_size": 61, "context_length": 8, "emb_dim": 16, "n_heads": 2, "n_layers": 1,
           "drop_rate": 0.0, "qkv_bias": False}
    cfg.update(overrides)
    return cfg


def _randomized(model: nn.Module, scale: float = 0.5) -> nn.Module:
    """Every parameter drawn at random (biases and LayerNorm too), so that no mapping is hidden by zeros."""
    with torch.no_grad():
        for p in model.parameters():
            p.copy_(torch.randn_like(p) * scale)
    return model


def _meta_gpt2() -> GPTModel:
    """GPT-2 124M's shapes on the meta device: counting without memory."""
    with torch.device("meta"):
        return GPTModel(get_config("124M"))


class _IdsTokenizer:
    """A stand-in tokenizer whose 'text' is token ids written out ("5 17 3"), to feed the lectures' datasets."""

    def encode(self, text: str, allowed_special=None) -> list[int]:
        return [int(t) for t in text.split()]


def _ids_text(ids) -> str:
    return " ".join(str(int(i)) for i in ids)


class _FixedOutput(nn.Module):
    """A 'model' that returns the given outputs, so the lectures' loss and accuracy helpers can score them."""

    def __init__(self, outputs: torch.Tensor):
        super().__init__()
        self.outputs = outputs

    def forward(self, input_batch):
        return self.outputs


def _lm_loss(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """Lecture 01's loss of given logits: ``helpers.losses.calc_loss_batch`` with a model that returns them."""
    dummy_inputs = torch.zeros(targets.shape, dtype=torch.long)
    return calc_loss_batch(dummy_inputs, targets, _FixedOutput(logits), "cpu")


def _choice(answer, options: dict[str, str]) -> str:
    """A multiple-choice answer ("b", "(b)", "B") as one lower-case letter among ``options``."""
    if not isinstance(answer, str):
        raise Wrong(f"Answer with one of the letters {', '.join(repr(k) for k in options)} (a string), "
                    f"got {_short(answer)}.")
    letter = answer.strip().strip("()").strip().lower()
    if letter not in options:
        raise Wrong(f"{answer!r} is not one of the choices {', '.join(repr(k) for k in options)}.")
    return letter


# ===================================================================================== lecture 01

_WINDOW_ERRORS = {"out of range": "Index errors usually mean the last window runs past the end: a window needs "
                                  "max_length + 1 tokens (its inputs and one more for the last target)."}


@_exercise(
    "01.input_target_pairs", "input/target windows",
    task="""Write my_input_target_pairs(token_ids, max_length, stride): token_ids is a 1-D tensor; return a
    list of (inputs, targets) pairs, one per window of max_length tokens, the windows starting every stride
    tokens, and targets being the next token at every position.""",
    hint="""Window i starts at i * stride. Its targets are the same window moved one token to the right, so
    the last window needs max_length + 1 tokens of text. Count the windows with range(start, stop, stride).""",
)
def _check_input_target_pairs(fn) -> str:
    # windows up to the last token; a last start at exactly n - max_length; overlap; gaps; one window; stride 1
    cases = [(33, 8, 8), (40, 8, 8), (41, 8, 4), (33, 5, 7), (9, 8, 3), (25, 6, 1)]
    for n, max_length, stride in cases:
        ids = torch.randint(0, 50257, (n,))
        dataset = GPTDatasetV1(_ids_text(ids), _IdsTokenizer(), max_length, stride)
        expected = [(dataset[i][0], dataset[i][1]) for i in range(len(dataset))]
        got = _call(fn, ids.clone(), max_length, stride, errors=_WINDOW_ERRORS)
        where = f"(for {n} tokens, max_length={max_length}, stride={stride})"
        try:
            got = [(_tensor(x, "an input window").long(), _tensor(y, "a target window").long()) for x, y in got]
        except (TypeError, ValueError):
            raise Wrong("Return a list of (inputs, targets) pairs, one pair per window.") from None
        if got and all(torch.equal(x, y) for x, y in got):
            raise Wrong(f"Your targets are the same as your inputs: the targets are not shifted by one {where}. "
                        "At every position the model must predict the *next* token.")
        if got and len(got) == len(expected) and all(
                torch.equal(x, ey) and torch.equal(y, ex) for (x, y), (ex, ey) in zip(got, expected, strict=True)):
            raise Wrong("Inputs and targets are swapped: the model reads the inputs and predicts the targets, "
                        "which come one token later.")
        if len(got) != len(expected):
            detail = ""
            if len(got) > len(expected):
                short = [i for i, (x, y) in enumerate(got) if len(x) != max_length or len(y) != max_length]
                detail = (f" Window {short[0]} is shorter than max_length: the last window needs max_length + 1 "
                          "tokens." if short else "")
                if len(got) >= (n - max_length) and stride > 1:
                    detail += " Did you move the window by 1 token instead of by stride?"
            elif len(got) == len(expected) - 1:
                detail = " You stop one window early: the last window may end exactly at the last token."
            raise Wrong(f"You made {len(got)} windows, expected {len(expected)} {where}.{detail}")
        for i, ((x, y), (ex, ey)) in enumerate(zip(got, expected, strict=True)):
            if not torch.equal(x, ex):
                raise Wrong(f"Window {i}'s inputs are wrong {where}: they should start at token {i * stride} "
                            f"(= {i} * stride) and hold max_length tokens.")
            if not torch.equal(y, ey):
                if len(y) == len(ey) and torch.equal(y, ids[i * stride + 2: i * stride + 2 + max_length]):
                    raise Wrong(f"Window {i}'s targets are shifted by two tokens, not one {where}.")
                raise Wrong(f"Window {i}'s targets are wrong {where}: they should be its inputs shifted by one token.")
    return "That is GPTDatasetV1 (helpers.data): lecture 01's loaders are built from these windows."


@_exercise(
    "01.target_probas", "probability of each correct token",
    task="""Write my_target_probas(logits, targets): logits has shape (batch, tokens, vocab), targets (batch,
    tokens). Return, for every position, the probability the model gives to the correct next token: shape
    (batch, tokens).""",
    hint="""Softmax turns each position's scores over the vocabulary (the last dimension) into probabilities.
    Then pick, at every position, the entry whose index is the target: torch.gather along the last dimension
    (it needs the index with one more dimension: targets.unsqueeze(-1)).""",
)
def _check_target_probas(fn) -> str:
    for batch, tokens, vocab, dtype in [(2, 3, 11, torch.float32), (1, 5, 7, torch.float64), (3, 1, 13, torch.float32)]:
        logits = torch.randn(batch, tokens, vocab, dtype=dtype) * 2
        targets = torch.randint(0, vocab, (batch, tokens))
        probas = torch.softmax(logits, dim=-1)
        expected = probas.gather(-1, targets.unsqueeze(-1)).squeeze(-1)
        got = _tensor(_call(fn, logits.clone(), targets.clone()), "Your result")
        candidates = [
            (logits.gather(-1, targets.unsqueeze(-1)).squeeze(-1),
             "These are the logits at the targets, not probabilities: apply softmax over the vocabulary first."),
            (torch.log_softmax(logits, -1).gather(-1, targets.unsqueeze(-1)).squeeze(-1),
             "These are log-probabilities (all negative): the exercise asks for the probabilities themselves."),
            (probas.max(dim=-1).values,
             "That is the probability of the model's favourite token at each position (the max), not of the "
             "correct next token: pick the entry at the target's index."),
            (expected.unsqueeze(-1), "Right values, but keep the shape (batch, tokens): squeeze the last dimension."),
        ]
        if tokens > 1:
            candidates.append((torch.softmax(logits, dim=1).gather(-1, targets.unsqueeze(-1)).squeeze(-1),
                               "Your softmax runs over the token dimension (dim=1); each position's probabilities "
                               "are over the vocabulary: softmax(logits, dim=-1)."))
        _compare(got, expected, candidates, "Your result")
    return "These are the bars of lecture 01's plot; training pushes them towards 1."


_CE_ERRORS = {
    "expected target size": "cross_entropy wants logits of shape (N, vocab) and targets of shape (N,): did you "
                            "flatten the logits (logits.flatten(0, 1)) and the targets before cross_entropy?",
    "to match target batch_size": "Logits and targets must be flattened alike: logits (batch * tokens, vocab), "
                                  "targets (batch * tokens,).",
    "out of bounds": "A target is not a valid index into the vocabulary.",
}


@_exercise(
    "01.cross_entropy", "cross entropy by hand",
    task="""Write my_cross_entropy(logits, targets): logits (batch, tokens, vocab), targets (batch, tokens).
    Return the mean cross-entropy loss over all positions, as one number (or 0-dim tensor), computed step by
    step: probabilities, the correct token's probability, log, mean, negative.""",
    hint="""Lecture 01, section 3: softmax over the last dimension, gather the target's probability, take the
    natural log (torch.log), average over every position of every sequence, and flip the sign so that lower
    is better. F.cross_entropy gives the same number when both are flattened.""",
)
def _check_cross_entropy(fn) -> str:
    for batch, tokens, vocab, dtype in [(2, 4, 50, torch.float32), (3, 2, 17, torch.float64), (1, 1, 5, torch.float32)]:
        logits = torch.randn(batch, tokens, vocab, dtype=dtype) * 1.5
        targets = torch.randint(0, vocab, (batch, tokens))
        expected = _lm_loss(logits, targets)
        got_value = _number(_call(fn, logits.clone(), targets.clone(), errors=_CE_ERRORS), "Your loss")
        logp = torch.log_softmax(logits, -1).gather(-1, targets.unsqueeze(-1)).squeeze(-1)
        e, got = float(expected), got_value
        said = f"Your loss is {_fmt(got)}, expected {_fmt(e)}"
        candidates = [
            (-e, f"{said}: the log-probabilities are negative, so the loss is *minus* their mean."),
            (-float(logp.sum()), f"{said}: you added up the {logp.numel()} positions; the loss is their mean."),
            (e / math.log(10), f"{said}: that is log base 10; cross entropy uses the natural log (torch.log)."),
            (e / math.log(2), f"{said}: that is log base 2 (bits); cross entropy uses the natural log (torch.log)."),
            (-float(logits.gather(-1, targets.unsqueeze(-1)).mean()),
             f"{said}: you averaged the raw logits at the targets; turn them into log-probabilities first "
             "(softmax, then log)."),
            (-float(torch.softmax(logits, -1).gather(-1, targets.unsqueeze(-1)).mean()),
             f"{said}: you averaged the probabilities; the loss averages their logarithms."),
        ]
        if batch > 1:
            candidates.append((float(_lm_loss(logits[:1], targets[:1])),
                               f"{said}: that is the loss of the first sequence only; flatten the batch and token "
                               "dimensions together so that every position of every sequence counts."))
            candidates.append((float(F.cross_entropy(logits.flatten(0, 1), targets.T.flatten())),
                               f"{said}: your targets are not lined up with the logits; flatten both the same "
                               "way (batch first, then tokens), e.g. logits.flatten(0, 1) and targets.flatten()."))
        if tokens > 1:
            candidates.append((float(F.cross_entropy(logits[:, -1], targets[:, -1])),
                               f"{said}: that is the loss at the last position only; every position predicts a "
                               "token and counts. Did you flatten the logits before cross_entropy?"))
            candidates.append((float(-torch.log_softmax(logits, 1).gather(-1, targets.unsqueeze(-1)).mean()),
                               f"{said}: your softmax runs over the tokens (dim=1), not the vocabulary (dim=-1)."))
        if not math.isclose(got, e, rel_tol=1e-4, abs_tol=1e-5):
            known = next((m for v, m in candidates if math.isclose(got, v, rel_tol=1e-4, abs_tol=1e-5)), None)
            raise Wrong(known or f"{said} (for logits of shape {tuple(logits.shape)}).")
    return "The same number as F.cross_entropy and helpers.losses.calc_loss_batch."


@_exercise(
    "01.perplexity", "perplexity",
    task="""Write my_perplexity(loss): turn a cross-entropy loss (a float or a 0-dim tensor) into the
    perplexity, as a number.""",
    hint="""The perplexity undoes the logarithm of the loss: it is e to the power of the loss (math.exp).
    Loss 0 means perplexity 1: the model is sure.""",
)
def _check_perplexity(fn) -> str:
    losses = [0.0, 1.0, float(torch.rand(()) * 5 + 1), math.log(50257), torch.tensor(float(torch.rand(()) * 3))]
    for loss in losses:
        value = float(loss)
        expected = perplexity(loss)
        got = _number(_call(fn, loss), "Your perplexity")
        if math.isclose(got, expected, rel_tol=1e-5, abs_tol=1e-8):
            continue
        said = f"For loss {_fmt(value)} your perplexity is {_fmt(got)}, expected {_fmt(expected)}"
        candidates = [
            (math.exp(-value), f"{said}: e^-loss is 1 / perplexity (the geometric mean of the correct tokens' probabilities)."),
            (2 ** value, f"{said}: the loss is measured with the natural log, so the perplexity is e^loss, not 2^loss."),
            (10 ** value, f"{said}: the loss is measured with the natural log, so the perplexity is e^loss, not 10^loss."),
            (value, f"{said}: you returned the loss itself."),
        ]
        known = next((m for v, m in candidates if math.isclose(got, v, rel_tol=1e-5, abs_tol=1e-8)), None)
        raise Wrong(known or f"{said}.")
    return f"A uniform guess over GPT-2's 50,257 tokens: loss {math.log(50257):.2f}, perplexity 50,257."


@_exercise(
    "01.uniform_loss", "the loss of a uniform guess",
    task="""Set uniform_loss to the cross-entropy loss (a number) of a model that gives every one of GPT-2's 50,257
    tokens the same probability, at every position.""",
    hint="""If every token gets the same probability p, the correct token gets p too, and the loss is -ln p.
    What is p for 50,257 tokens?""",
)
def _check_uniform_loss(answer) -> str:
    vocab = 50257
    expected = float(_lm_loss(torch.zeros(1, 1, vocab), torch.zeros(1, 1, dtype=torch.long)))   # equal logits
    got = _number(answer, "uniform_loss")
    if math.isclose(got, expected, rel_tol=1e-3):
        return "An untrained model scores about this: lecture 01's untrained loss is close to 10.8."
    said = f"Your answer is {_fmt(got)}, expected {_fmt(expected)}"
    candidates = [
        (vocab, f"{said}: {vocab:,} is the perplexity of the uniform guess; the loss is its natural log."),
        (1 / vocab, f"{said}: 1/{vocab:,} is the probability of each token; the loss is minus its natural log."),
        (math.log10(vocab), f"{said}: that is log base 10; the loss uses the natural log."),
        (math.log2(vocab), f"{said}: that is log base 2 (bits); the loss uses the natural log."),
        (-expected, f"{said}: mind the sign: the loss is *minus* the log-probability, a positive number."),
    ]
    known = next((m for v, m in candidates if math.isclose(got, v, rel_tol=1e-3)), None)
    raise Wrong(known or f"{said}.")


# ===================================================================================== lecture 02


class _RecordingOptimizer:
    """An optimizer that notes when zero_grad() and step() are called, and passes everything on."""

    def __init__(self, optimizer, log: list[str]):
        self._optimizer, self._log = optimizer, log

    def zero_grad(self, *args, **kwargs):
        self._log.append("zero_grad")
        return self._optimizer.zero_grad(*args, **kwargs)

    def step(self, *args, **kwargs):
        self._log.append("step")
        return self._optimizer.step(*args, **kwargs)

    def __getattr__(self, name):
        return getattr(self._optimizer, name)


def _adamw(model: nn.Module):
    return torch.optim.AdamW(model.parameters(), lr=0.01, weight_decay=0.1, foreach=False)


@_exercise(
    "02.train_step", "the inner training step",
    task="""Write my_train_step(model, optimizer, input_batch, target_batch, device): one optimizer step on one
    batch, as lecture 02's loop does it, returning the batch's loss.""",
    hint="""Three moves, in this order: forget the previous gradients, compute the loss (calc_loss_batch) and
    its gradients (backward), move the weights (the optimizer's step). Return the loss.""",
)
def _check_train_step(fn) -> str:
    cfg = _tiny_config()
    base = GPTModel(cfg)
    reference, mine = copy.deepcopy(base), copy.deepcopy(base)
    reference_optimizer = _adamw(reference)
    log: list[str] = []
    recorder = _RecordingOptimizer(_adamw(mine), log)
    plain_zero_grad = mine.zero_grad
    mine.zero_grad = lambda *a, **k: (log.append("zero_grad"), plain_zero_grad(*a, **k))[1]
    mine.tok_emb.weight.register_hook(lambda grad: log.append("backward"))
    batches = [torch.randint(0, cfg["vocab_size"], (2, cfg["context_length"] + 1)) for _ in range(3)]
    for call, ids in enumerate(batches):
        x, y = ids[:, :-1], ids[:, 1:]
        with torch.no_grad():                                   # the usual wrong losses, before the step
            logits = reference(x)
            wrong_losses = [
                (float(F.cross_entropy(logits[:, -1], y[:, -1])), "that is the loss at the last position only: did "
                 "you flatten the logits before cross_entropy? calc_loss_batch does it for you."),
                (float(_lm_loss(logits, x)), "that is the loss against the inputs: the targets are the batch's "
                 "target_batch, the inputs shifted by one."),
                (float(_lm_loss(logits[:1], y[:1])), "that is the loss of the first sequence only."),
            ]
        expected_loss = float(train_step(reference, reference_optimizer, [(x, y)], "cpu"))
        start = len(log)
        got = _call(fn, mine, recorder, x.clone(), y.clone(), "cpu",
                    errors={"does not require grad": "The loss has no gradient: compute it with gradients on "
                                                     "(not inside torch.no_grad())."})
        events = log[start:]
        which = "first" if call == 0 else "second" if call == 1 else "third"
        if "backward" not in events:
            raise Wrong("Your step never called loss.backward(): without it there are no gradients, and "
                        "optimizer.step() has nothing to follow.")
        if "step" not in events:
            raise Wrong("Your step never called optimizer.step(): the gradients are computed but the weights "
                        "never move.")
        if events.count("step") > 1:
            raise Wrong(f"Your step called optimizer.step() {events.count('step')} times: one step per batch.")
        if events.index("step") < events.index("backward"):
            raise Wrong("optimizer.step() ran before loss.backward(): each step would follow the previous "
                        "batch's gradients (or none). Compute the gradients first, then step.")
        between = events[len(events) - 1 - events[::-1].index("backward"): events.index("step")]
        if "zero_grad" in between:
            raise Wrong("You cleared the gradients after loss.backward() and before optimizer.step(), so the step "
                        "had no gradients to follow. zero_grad() comes first, before the loss.")
        if call > 0:
            before = log[:start]
            since_last_backward = before[len(before) - before[::-1].index("backward"):] + events[:events.index("backward")]
            if "zero_grad" not in since_last_backward:
                raise Wrong(f"On the {which} call the gradients of the previous batch were still there: PyTorch adds "
                            "new gradients to the old ones. Call optimizer.zero_grad() at the start of every step.")
        loss = _number(got, "The loss your step returned")
        if not math.isclose(loss, expected_loss, rel_tol=1e-4, abs_tol=1e-5):
            known = next((m for v, m in wrong_losses if math.isclose(loss, v, rel_tol=1e-4, abs_tol=1e-5)),
                         "compute it with calc_loss_batch(input_batch, target_batch, model, device) (lecture 01's loss).")
            raise Wrong(f"Your step's loss is {_fmt(loss)}, expected {_fmt(expected_loss)} for this batch: {known}")
        for (name, p), q in zip(mine.named_parameters(), reference.parameters(), strict=True):
            if not torch.allclose(p, q, rtol=1e-4, atol=1e-6):
                raise Wrong(f"After the {which} call your weights differ from one AdamW step on this batch "
                            f"(first in {name}): step once, on the gradients of this batch's loss.")
    return "train_loop (helpers.training) runs exactly this, once per batch, via train_step."


_COMPONENTS = ("tok_emb", "pos_emb", "trf_blocks", "final_norm", "out_head")


@_exercise(
    "02.parameter_counts", "parameters per component",
    task="""Write my_parameter_counts(model): for a GPTModel return a dict with the number of parameters (the
    numbers, not the tensors) in each of "tok_emb", "pos_emb", "trf_blocks", "final_norm" and "out_head".""",
    hint="""Every component is a module with .parameters(); a parameter tensor holds p.numel() numbers. Count
    every tensor, biases and LayerNorm scale/shift included, in all the blocks.""",
)
def _check_parameter_counts(fn) -> str:
    for cfg in (_tiny_config(n_layers=3, qkv_bias=True), _tiny_config(n_layers=2, emb_dim=8, vocab_size=97)):
        model = GPTModel(cfg)
        expected = {name: count_parameters(getattr(model, name)) for name in _COMPONENTS}
        got = _call(fn, model)
        if not isinstance(got, dict):
            raise Wrong(f"Return a dict such as {{'tok_emb': ..., 'pos_emb': ...}}, got {type(got).__name__}.")
        missing = [name for name in _COMPONENTS if name not in got]
        if missing:
            raise Wrong(f"Your dict lacks {missing}; it needs one count for each of {list(_COMPONENTS)}.")
        for name in _COMPONENTS:
            value = _number(got[name], f"Your count for {name!r}")
            module = getattr(model, name)
            params = list(module.parameters())
            if value == expected[name]:
                continue
            said = f"Your count for {name!r} is {_fmt(value)}, expected {_fmt(expected[name])}"
            candidates = [
                (len(params), f"{said}: you counted the parameter tensors, not the numbers in them (p.numel())."),
                (sum(p.numel() for p in params if p.dim() > 1),
                 f"{said}: you left out the 1-D parameters: the biases and the LayerNorms' scale and shift."),
                (0, f"{said}: our GPTModel keeps out_head as a matrix of its own (no weight tying), so it counts."),
            ]
            if name == "trf_blocks":
                candidates.append((count_parameters(module[0]),
                                   f"{said}: that is one block; trf_blocks holds {cfg['n_layers']} of them."))
            swapped = {"tok_emb": "pos_emb", "pos_emb": "tok_emb"}.get(name)
            if swapped:
                candidates.append((expected[swapped], f"{said}: that is the count of {swapped}."))
            raise Wrong(next((m for v, m in candidates if v == value), f"{said}."))
    with torch.device("meta"):
        course = GPTModel(get_config("pretrain-124M"))
    try:
        counts = {k: int(_number(v, k)) for k, v in fn(course).items() if k in _COMPONENTS}
    except Exception:
        return ""
    return ("For the course's model: " + ", ".join(f"{k} {v:,}" for k, v in counts.items())
            + f"; total {sum(counts.values()):,}. tok_emb and out_head hold 38.6M each: with weight tying "
              "they count once, which is GPT-2's '124M'.")


_TEMPERATURE_ERRORS = {"division by zero": "Temperature 0 cannot divide the logits; treat it apart: greedy, all "
                                           "the probability on the most likely token."}


@_exercise(
    "02.temperature", "temperature 0 and very high",
    task="""Write my_probabilities(logits, temperature): logits has shape (batch, vocab); return the
    distribution (batch, vocab) that generate() samples from at this temperature. Temperature 0 means
    greedy decoding: all the probability on the most likely token.""",
    hint="""Divide the logits by the temperature, then softmax over the vocabulary. Temperature 0 needs its own
    case: a one-hot row (torch.nn.functional.one_hot of the argmax, as floats). What happens to the rows at
    temperature 1000?""",
)
def _check_temperature(fn) -> str:
    batch, vocab = 3, 9
    logits = torch.randn(batch, vocab) * 3
    for temperature in (1.0, 2.0, 0.5, 0.0, 1000.0):
        expected = apply_temperature_and_top_k(logits, temperature)
        got = _call(fn, logits.clone(), temperature, errors=_TEMPERATURE_ERRORS)
        got = _tensor(got, f"Your distribution at temperature {temperature}")
        at = f"At temperature {temperature:g}"
        if temperature == 0.0:
            argmax = logits.argmax(-1)
            if _close(got, argmax) or _close(got, argmax.unsqueeze(-1)):
                raise Wrong(f"{at} you returned the token ids; return a probability for every token: 1.0 at the "
                            "argmax, 0 elsewhere (one-hot).")
            if got.shape == expected.shape and not torch.isfinite(got.double()).all():
                raise Wrong(f"{at} your probabilities are nan or inf: dividing the logits by 0 does not work. "
                            "Temperature 0 means greedy: put all the probability on the most likely token.")
        candidates = [
            (torch.softmax(logits * temperature, -1) if temperature else None,
             f"{at} your distribution is {'sharper' if temperature > 1 else 'flatter'} than at temperature 1: "
             "divide the logits by the temperature; you multiplied."),
            (logits / temperature if temperature else None,
             f"{at} your rows do not sum to 1: these are scaled logits; apply softmax to get probabilities."),
            (torch.softmax(logits / temperature, dim=0) if temperature else None,
             f"{at} your columns sum to 1, not your rows: softmax over the vocabulary (dim=-1)."),
            (torch.log_softmax(logits / temperature, -1) if temperature else None,
             f"{at} these are log-probabilities; return the probabilities (softmax)."),
            (torch.softmax(logits, -1), f"{at} your distribution is the temperature-1 one: the temperature is ignored."),
        ]
        _compare(got, expected, [(v, m) for v, m in candidates if v is not None], f"Your distribution at {at[3:]}")
    spread = apply_temperature_and_top_k(logits[:1], 1000.0)
    return (f"At temperature 1000 the largest probability is {float(spread.max()):.4f}, against 1/{vocab} = "
            f"{1 / vocab:.4f}: almost uniform, so sampling picks nearly any token; at 0 it is greedy.")


@_exercise(
    "02.top_k", "top-k",
    task="""Write my_top_k(logits, k): logits (batch, vocab); return the probabilities (batch, vocab) after
    keeping only the k largest logits of each row (temperature 1): the other tokens get probability 0.""",
    hint="""Find each row's k-th largest logit (torch.topk), set every logit below it to -inf (masked_fill),
    then softmax. Why -inf and not 0?""",
)
def _check_top_k(fn) -> str:
    for batch, vocab, k in [(2, 10, 3), (3, 7, 1), (1, 6, 6), (2, 12, 5)]:
        logits = torch.randn(batch, vocab) * 2
        expected = apply_temperature_and_top_k(logits, 1.0, top_k=k)
        got = _tensor(_call(fn, logits.clone(), k), "Your probabilities")
        kth = torch.topk(logits, k).values[:, -1:]
        zeroed = torch.softmax(logits.masked_fill(logits < kth, 0.0), -1)
        cut_after = torch.softmax(logits, -1).masked_fill(logits < kth, 0.0)
        nonzero = (got > 0).sum(-1) if got.shape == expected.shape else None
        candidates = [
            (zeroed, f"With k={k} the tokens outside the top k still get probability: their logits were set to 0, "
                     "and e^0 is not 0. Set them to -inf before the softmax."),
            (cut_after, f"With k={k} your rows sum to less than 1: you zeroed the probabilities after the softmax "
                        "without renormalising. Mask the logits (to -inf) before the softmax."),
            (torch.softmax(logits.masked_fill(logits > torch.topk(logits, k, largest=False).values[:, -1:],
                                              -torch.inf), -1),
             f"With k={k} you kept the k *smallest* logits; keep the k largest."),
        ]
        if nonzero is not None and not _close(got, expected) and not _first_match(got, candidates):
            if bool((nonzero == k + 1).all()):
                raise Wrong(f"With k={k} your rows keep {k + 1} tokens: one too many.")
            if k > 1 and bool((nonzero == k - 1).all()):
                raise Wrong(f"With k={k} your rows keep {k - 1} tokens: one too few.")
        _compare(got, expected, candidates, f"Your probabilities (k={k})")
    return "generate(..., top_k=k) samples from exactly this distribution."


@_exercise(
    "02.same_seed", "two runs, one seed",
    task="""Write my_two_models(cfg): build two GPTModel(cfg) whose weights are identical, both the weights
    that seed 123 gives (runtime.set_seed(123)), and return them as a pair.""",
    hint="""A seed sets where PyTorch's pseudo-random generator starts; every draw moves it on. Building a model
    draws its initial weights. So where must you seed, if the second model is to get the same draws?""",
)
def _check_same_seed(fn) -> str:
    cfg = _tiny_config(n_layers=1, emb_dim=8)
    runtime.set_seed(123)
    first = GPTModel(cfg)
    second_without_reseed = GPTModel(cfg)
    torch.manual_seed(random.SystemRandom().randrange(2**31))   # the learner's function starts from anywhere
    got = _call(fn, dict(cfg))
    if not (isinstance(got, (tuple, list)) and len(got) == 2 and all(isinstance(m, nn.Module) for m in got)):
        raise Wrong(f"Return the two models as a pair: (model_a, model_b); got {_short(got)}.")
    a, b = got

    def same(m1, m2):
        s1, s2 = m1.state_dict(), m2.state_dict()
        return s1.keys() == s2.keys() and all(torch.equal(s1[k], s2[k]) for k in s1)

    if a is b:
        raise Wrong("You returned the same model object twice; build two models.")
    if same(a, first) and same(b, first):
        return ("Why: a seed fixes where the pseudo-random generator starts. Everything that draws from it (initial "
                "weights, the batch order, dropout masks) gets the same numbers in the same order, so two runs "
                "that seed in the same places agree to the last digit.")
    if same(a, first) and same(b, second_without_reseed):
        raise Wrong("Your first model has seed 123's weights, your second does not: building the first model drew "
                    "numbers from the generator, so the second build continued the sequence. Seed again right "
                    "before the second build.")
    if same(a, b):
        raise Wrong("Your two models agree with each other, but they are not the weights seed 123 gives. Seed with "
                    "123 (runtime.set_seed(123)) right before each build.")
    raise Wrong("Your two models have different weights: seed right before each build "
                "(runtime.set_seed(123), then GPTModel(cfg); again for the second).")


# ===================================================================================== lecture 03


def _gpt2_like_params(n_layers: int = 1, emb_dim: int = 12):
    """A tiny GPT-2-shaped checkpoint in OpenAI's layout: ``(cfg, params)`` with every value random."""
    cfg = _tiny_config(n_layers=n_layers, emb_dim=emb_dim, n_heads=3, vocab_size=37, context_length=6,
                       qkv_bias=True)
    _, params = params_from_model(_randomized(GPTModel(cfg)))
    params.pop("out_head", None)   # GPT-2 ties its output layer to wte
    return cfg, params


_BLOCK_SOURCES = {
    "att.W_query.weight": "the first third of attn/c_attn/w (split along its last axis), transposed",
    "att.W_key.weight": "the middle third of attn/c_attn/w (split along its last axis), transposed",
    "att.W_value.weight": "the last third of attn/c_attn/w (split along its last axis), transposed",
    "att.W_query.bias": "the first third of attn/c_attn/b",
    "att.W_key.bias": "the middle third of attn/c_attn/b",
    "att.W_value.bias": "the last third of attn/c_attn/b",
    "att.out_proj.weight": "attn/c_proj/w, transposed",
    "att.out_proj.bias": "attn/c_proj/b",
    "ff.layers.0.weight": "mlp/c_fc/w, transposed",
    "ff.layers.0.bias": "mlp/c_fc/b",
    "ff.layers.2.weight": "mlp/c_proj/w, transposed",
    "ff.layers.2.bias": "mlp/c_proj/b",
    "norm1.scale": "ln_1/g",
    "norm1.shift": "ln_1/b",
    "norm2.scale": "ln_2/g",
    "norm2.shift": "ln_2/b",
}

_SHAPE_ERRORS = {"size": "A shape does not fit: OpenAI stores a weight as [in, out], nn.Linear as [out, in]; "
                         "transpose it (.T).",
                 "shape": "A shape does not fit: OpenAI stores a weight as [in, out], nn.Linear as [out, in]; "
                          "transpose it (.T)."}


@_exercise(
    "03.split_qkv", "splitting c_attn",
    task="""Write my_split_qkv(c_attn_w): c_attn_w is a block's attn/c_attn/w, a NumPy array of shape
    (emb_dim, 3 * emb_dim) in OpenAI's layout. Return (query, key, value) weights in nn.Linear's layout,
    each (emb_dim, emb_dim).""",
    hint="""Query, key and value sit side by side along the last axis (np.split into 3 along axis=-1). OpenAI
    stores [in, out]; nn.Linear stores [out, in].""",
)
def _check_split_qkv(fn) -> str:
    for emb_dim in (12, 24):
        cfg, params = _gpt2_like_params(emb_dim=emb_dim)
        model = load_weights_into_gpt(GPTModel(cfg), params)
        att = model.trf_blocks[0].att
        expected = [att.W_query.weight.detach(), att.W_key.weight.detach(), att.W_value.weight.detach()]
        w = params["blocks"][0]["attn"]["c_attn"]["w"]
        got = _call(fn, w.copy())
        if not (isinstance(got, (tuple, list)) and len(got) == 3):
            raise Wrong(f"Return three weights, (query, key, value); got {_short(got)}.")
        got = [_tensor(g, name).float() for g, name in zip(got, ("Your query", "Your key", "Your value"), strict=True)]
        names = ("query", "key", "value")
        for i, (g, e) in enumerate(zip(got, expected, strict=True)):
            if _close(g, e):
                continue
            if _close(g, e.T):
                raise Wrong(f"Your {names[i]} weight is transposed: OpenAI stores [in, out], nn.Linear [out, in] "
                            "(take .T of each part).")
            if g.shape == (emb_dim // 3, 3 * emb_dim) or g.shape == (3 * emb_dim, emb_dim // 3):
                raise Wrong(f"Your {names[i]} weight has shape {tuple(g.shape)}: you split along the first axis. "
                            "The three projections sit side by side along the last axis (3 * emb_dim columns).")
            other = next((names[j] for j in range(3) if j != i and (_close(g, expected[j]) or _close(g, expected[j].T))),
                         None)
            if other:
                raise Wrong(f"Your {names[i]} weight is the {other}'s: the order in c_attn is query, key, value.")
            raise Wrong(f"Your {names[i]} weight has shape {tuple(g.shape)} and is not the {names[i]} part of c_attn; "
                        f"expected shape {tuple(e.shape)}.")
    return "load_weights_into_gpt (helpers.weights) does this for every block."


@_exercise(
    "03.load_block", "one transformer block from params",
    task="""Write my_load_block(block, p): copy one block of the checkpoint, p = params["blocks"][i] (OpenAI's
    layout), into block = model.trf_blocks[i] of our GPTModel (with qkv_bias=True): attention, feed-forward and
    both LayerNorms, every weight and bias.""",
    hint="""Sixteen tensors. c_attn holds query, key and value side by side (split it in three along the last
    axis, the biases too); every weight matrix is transposed, because OpenAI stores [in, out] and nn.Linear
    [out, in]; ln_1 and ln_2 hold g (our scale) and b (our shift). helpers.weights.assign(param, array, name)
    copies one array and checks its shape.""",
)
def _check_load_block(fn) -> str:
    cfg, params = _gpt2_like_params(n_layers=2)
    reference = load_weights_into_gpt(GPTModel(cfg), params)
    for index in (1, 0):
        model = GPTModel(cfg)
        block = model.trf_blocks[index]
        before = {k: v.clone() for k, v in block.state_dict().items()}
        _call(fn, block, copy.deepcopy(params["blocks"][index]), errors=_SHAPE_ERRORS)
        got = block.state_dict()
        expected = reference.trf_blocks[index].state_dict()
        if set(got) != set(expected):
            raise Wrong("Your block's parameters changed names; copy values into the existing parameters "
                        "(or replace each with an nn.Parameter of the same name).")
        problems = []
        for name, value in expected.items():
            mine = got[name].detach()
            if _close(mine, value):
                continue
            source = _BLOCK_SOURCES.get(name, "?")
            if _close(mine, before[name]):
                problems.append(f"{name} was not copied (it still holds its random start); it comes from {source}")
            elif value.dim() == 2 and _close(mine, value.T):
                problems.append(f"{name} is transposed: nn.Linear stores [out, in]; it comes from {source}")
            else:
                other = next((n for n, v in expected.items() if n != name and _close(mine, v)), None)
                problems.append(f"{name} holds what belongs in {other}; {name} comes from {source}" if other else
                                f"{name} differs from the checkpoint; it comes from {source}")
        if problems:
            raise Wrong(f"In block {index}: " + "\n  ".join(problems[:4])
                        + (f"\n  ... and {len(problems) - 4} more." if len(problems) > 4 else ""))
    return "That is load_weights_into_gpt's loop body; with the embeddings and final LayerNorm it loads all of GPT-2."


@_exercise(
    "03.weight_tying", "is the output layer tied?",
    task="""Write my_is_tied(model): return True when the model's output layer (out_head) has the same weights
    as its token embedding (tok_emb), as GPT-2's weight tying does, and False otherwise.""",
    hint="""Compare the two matrices' values, every one of them; a single True or False, not a tensor of them.
    After load_weights_into_gpt the two hold equal values but are different tensors.""",
)
def _check_weight_tying(fn) -> str:
    cfg, params = _gpt2_like_params()
    loaded = load_weights_into_gpt(GPTModel(cfg), params)            # tied by value, two tensors
    untied = GPTModel(cfg)                                           # two independent random matrices
    shared = GPTModel(cfg)
    shared.out_head.weight = shared.tok_emb.weight                   # one tensor in two places
    almost = load_weights_into_gpt(GPTModel(cfg), params)
    with torch.no_grad():
        almost.out_head.weight[3, 5] += 0.5                          # one number differs
    answers = {}
    for name, model in (("loaded", loaded), ("untied", untied), ("shared", shared), ("almost", almost)):
        got = _call(fn, model)
        if isinstance(got, torch.Tensor):
            if got.numel() != 1:
                raise Wrong(f"Your function returned a tensor of shape {tuple(got.shape)}; return one True or "
                            "False for the whole matrix (torch.equal compares all values at once).")
            got = bool(got)
        if not isinstance(got, (bool, np.bool_)):
            raise Wrong(f"Return True or False, got {_short(got)}.")
        answers[name] = bool(got)
    if not answers["loaded"] and answers["shared"]:
        raise Wrong("Your function says the model loaded from GPT-2's checkpoint is not tied. load_weights_into_gpt "
                    "copies wte into both tok_emb and out_head: equal values in two different tensors. Compare the "
                    "values (torch.equal), not whether they are the same object.")
    if not answers["loaded"]:
        raise Wrong("Your function says a model loaded from GPT-2's checkpoint is not tied, but its out_head and "
                    "tok_emb hold exactly the same values.")
    if answers["untied"]:
        raise Wrong("Your function says a freshly built GPTModel is tied. Its two matrices have the same shape but "
                    "different random values: compare the values, not just the shapes.")
    if answers["almost"]:
        raise Wrong("Your function says two matrices that differ in one number are tied: compare every value "
                    "(torch.equal), not a part or a summary of them.")
    if not answers["shared"]:
        raise Wrong("Your function says a model whose out_head uses the very same tensor as tok_emb is not tied.")
    report = parameter_report(loaded)
    return (f"parameter_report counts such a model both ways: {report['total']:,} parameters, "
            f"{report['with_weight_tying']:,} with weight tying.")


@_exercise(
    "03.config", "a config from hparams.json",
    task="""Write my_config(settings): settings is GPT-2's hparams.json as a dict (n_vocab, n_ctx, n_embd,
    n_head, n_layer). Return the config dict GPTModel needs to load these weights: vocab_size, context_length,
    emb_dim, n_heads, n_layers, drop_rate and qkv_bias.""",
    hint="""Five values come from the settings. Two do not: does GPT-2's c_attn have a bias (look at
    params["blocks"][0]["attn"]["c_attn"])? And the lectures load GPT-2 without dropout.""",
)
def _check_config(fn) -> str:
    samples = [{"n_vocab": 50257, "n_ctx": 1024, "n_embd": 768, "n_head": 12, "n_layer": 12},
               {"n_vocab": 50257, "n_ctx": 1024, "n_embd": 1024, "n_head": 16, "n_layer": 24},
               {"n_vocab": int(torch.randint(50, 500, ())), "n_ctx": int(torch.randint(8, 64, ())),
                "n_embd": 24, "n_head": 3, "n_layer": int(torch.randint(1, 5, ()))}]
    messages = {
        "qkv_bias": "GPT-2's query, key and value projections have biases (c_attn has a 'b'): qkv_bias=True.",
        "drop_rate": "Load GPT-2 without dropout: drop_rate=0.0 (as the lectures do).",
        "context_length": "context_length comes from n_ctx: GPT-2 reads {n_ctx} positions, not lecture 02's 256.",
        "vocab_size": "vocab_size comes from n_vocab.",
        "emb_dim": "emb_dim comes from n_embd.",
        "n_heads": "n_heads comes from n_head.",
        "n_layers": "n_layers comes from n_layer.",
    }
    for settings in samples:
        expected = config_from_settings(settings)
        got = _call(fn, dict(settings))
        if not isinstance(got, dict):
            raise Wrong(f"Return a dict, got {type(got).__name__}.")
        missing = [k for k in expected if k not in got]
        if missing:
            raise Wrong(f"Your config lacks {missing}; GPTModel needs {list(expected)}.")
        for key, value in expected.items():
            if got[key] != value:
                raise Wrong(f"Your {key} is {got[key]!r}, expected {value!r} for {settings}. "
                            + messages[key].format(**settings))
    return "config_from_settings (helpers.weights) does this; with it, load_weights_into_gpt fits every GPT-2 size."


# ===================================================================================== lecture 04


@_exercise(
    "04.pad", "padding messages",
    task="""Write my_pad(messages, pad_token_id, max_length=None): messages is a list of token-id lists of
    different lengths. Return them as a (messages, length) tensor (or list of lists): with max_length=None pad
    every message to the longest one; with a max_length (say the full context) cut longer messages to it and
    pad the others up to it. Padding goes on the right.""",
    hint="""The length is max(len(m) for m in messages) or max_length. Each row is the message's first `length`
    tokens, then pad_token_id repeated until the row has `length` tokens.""",
)
def _check_pad(fn) -> str:
    pad = END_OF_TEXT_ID
    lengths = [int(n) for n in torch.randint(1, 9, (4,))] + [0, 12]
    messages = [[int(t) for t in torch.randint(0, 50000, (n,))] for n in lengths]
    for max_length in (None, 20, 6):
        df = pd.DataFrame({"Label": [0] * len(messages), "Text": [_ids_text(m) for m in messages]})
        expected = torch.tensor(SpamDataset(df, _IdsTokenizer(), max_length, pad).encoded_texts)
        got = _call(fn, [list(m) for m in messages], pad, max_length)
        if isinstance(got, list) and len({len(row) for row in got}) > 1:
            raise Wrong(f"With max_length={max_length} your rows have different lengths "
                        f"({sorted({len(row) for row in got})}): "
                        + ("cut longer messages to max_length." if max_length else "pad every one to the longest."))
        got = _tensor(got, "Your padded batch").long()
        width = expected.shape[1]
        candidates = [
            (torch.tensor([[pad] * (width - len(m[:width])) + m[:width] for m in messages]),
             "You padded on the left; the lectures pad on the right: the message first, then the padding."),
            (torch.tensor([m[:width] + [0] * (width - len(m[:width])) for m in messages]),
             f"You padded with 0, but token 0 is a real token ('!'); pad with pad_token_id ({pad}), the "
             "end-of-text token."),
        ]
        longest = max(lengths)
        if max_length is not None and max_length != longest:
            candidates.append((torch.tensor([m + [pad] * (longest - len(m)) for m in messages]),
                               f"With max_length={max_length} you padded to the longest message ({longest}); pad or "
                               f"cut every message to exactly max_length."))
        if max_length is None:
            candidates.append((torch.tensor([m + [pad] * (longest + 1 - len(m)) for m in messages]),
                               "Your rows are one token longer than the longest message: no extra padding needed."))
        _compare(got, expected, candidates, f"Your padded batch (max_length={max_length})")
    return ("Lecture 04 pads to the longest training message (120 tokens); padding to GPT-2's full context would "
            "make every step process 1024 positions per message instead, 8.5 times as many, for the same messages.")


@_exercise(
    "04.last_token", "which token's output decides",
    task="""Write my_class_scores(outputs): outputs is the classifier's output, shape (batch, tokens,
    num_classes). Return the scores (batch, num_classes) that decide each message's class: the last token's.""",
    hint="""Causal attention lets each position see only itself and earlier positions; which one has seen the
    whole message? Index the token dimension, not the batch.""",
)
def _check_last_token(fn) -> str:
    for batch, tokens, classes in [(4, 6, 2), (2, 9, 3), (1, 5, 2)]:
        outputs = torch.randn(batch, tokens, classes)
        expected = classifier_logits(_FixedOutput(outputs), torch.zeros(batch, tokens, dtype=torch.long), "last")
        got = _tensor(_call(fn, outputs.clone()), "Your scores")
        candidates = [
            (outputs[:, 0, :], "You read the first token. Causal attention lets it see only itself; only the last "
                               "token has seen the whole message."),
            (outputs.mean(dim=1), "You averaged over the tokens; the lecture reads the last token, the only one that "
                                  "has seen every other token."),
            (outputs[:, -1, :].argmax(-1), "You returned the predicted classes; return the scores (the logits)."),
        ]
        if batch > 1:
            candidates.append((outputs[-1], "You took the last *message* of the batch (outputs[-1]); index the "
                                            "token dimension: the last token of every message."))
        _compare(got, expected, candidates, "Your scores")
    return "classifier_logits(model, batch, position='last') (helpers.classifier) reads exactly these."


@_exercise(
    "04.last_real_token", "the last real token before the padding",
    task="""Write my_last_real_scores(outputs, input_ids, pad_token_id): outputs (batch, tokens, num_classes),
    input_ids (batch, tokens) padded on the right with pad_token_id. Return (batch, num_classes): each
    message's scores at its own last token, the one just before the padding starts (or the last position
    when a message has no padding).""",
    hint="""For each row find the index of the last token that is not pad_token_id: e.g. the number of real
    tokens minus one. Then pick outputs[row, index] for every row (advanced indexing with torch.arange).""",
)
def _check_last_real_token(fn) -> str:
    pad = END_OF_TEXT_ID
    tokens, classes = 7, 2
    lengths = [3, 7, 1, 5]
    input_ids = torch.tensor([[int(t) for t in torch.randint(0, 50000, (n,))] + [pad] * (tokens - n) for n in lengths])
    outputs = torch.randn(len(lengths), tokens, classes)
    expected = classifier_logits(_FixedOutput(outputs), input_ids, "last_non_pad", pad)
    got = _tensor(_call(fn, outputs.clone(), input_ids.clone(), pad), "Your scores")
    rows = torch.arange(len(lengths))
    first_pad = torch.tensor([min(n, tokens - 1) for n in lengths])
    candidates = [
        (outputs[rows, first_pad], "You read the first padding token: the last real token is the one just before it "
                                   "(index = number of real tokens - 1)."),
        (outputs[:, -1, :], "You read the last position, which is padding for the shorter messages; find each "
                            "message's own last token."),
        (outputs[:, 0, :], "You read the first token of every message."),
    ]
    _compare(got, expected, candidates, "Your scores")
    return "That is position='last_non_pad' in helpers.classifier (POSITION in lecture 04's config cell)."


@_exercise(
    "04.train_all", "train all layers",
    task="""Write my_train_all(model): model is lecture 04's classifier, built with add_classification_head(...,
    trainable="head"), so everything but the new head is frozen. Make every layer of it trainable, without
    changing any weight.""",
    hint="""A parameter trains when its requires_grad is True. 'All layers' means all: the embeddings, every
    block, the final LayerNorm and the head. model.train() switches dropout on; it does not unfreeze anything.""",
)
def _check_train_all(fn) -> str:
    model = add_classification_head(GPTModel(_tiny_config(n_layers=2)), 2, trainable="head")
    weights = {k: v.clone() for k, v in model.state_dict().items()}
    got = _call(fn, model)
    result = got if isinstance(got, nn.Module) else model
    if result.out_head.out_features != 2:
        raise Wrong("The model lost its 2-class head; only change what trains.")
    state = result.state_dict()
    if set(state) != set(weights) or any(not torch.equal(state[k], weights[k]) for k in weights):
        raise Wrong("Some weights changed: only switch requires_grad, do not rebuild or re-initialise layers.")
    frozen = [name for name, p in result.named_parameters() if not p.requires_grad]
    if not frozen:
        trainable = parameter_report(set_trainable(add_classification_head(_meta_gpt2(), 2, "head"), "all"))
        return (f"For GPT-2 124M with a 2-class head that is {trainable['trainable']:,} trainable parameters, "
                "against 7,090,946 with lecture 04's trainable='last_block'.")
    modules = sorted({_module_name(n) for n in frozen}, key=lambda m: [int(t) if t.isdigit() else t for t in m.split(".")])
    if len(frozen) == len(list(result.parameters())) - len(list(result.out_head.parameters())):
        raise Wrong("Nothing was unfrozen (only the head trains). model.train() switches training mode (dropout); "
                    "set requires_grad = True on the parameters.")
    extra = ""
    if {"tok_emb", "pos_emb"} & set(modules):
        extra = " The embeddings are layers too."
    raise Wrong(f"Still frozen: {', '.join(modules)}.{extra}")


@_exercise(
    "04.accuracy", "classification accuracy",
    task="""Write my_accuracy(logits, labels): logits are the last-token scores (batch, num_classes), labels the
    true class ids (batch,). Return the fraction of messages whose highest-scoring class is the true one, a
    number between 0 and 1.""",
    hint="""The predicted class is the argmax over the classes (the last dimension). Compare with the labels,
    count the matches and divide by the number of messages.""",
)
def _check_accuracy(fn) -> str:
    for batch, classes in [(8, 2), (5, 3), (1, 2)]:
        logits = torch.randn(batch, classes)
        labels = torch.randint(0, classes, (batch,))
        if batch > 1 and bool((logits.argmax(-1) == labels).all()):   # keep a wrong prediction in the batch
            labels[0] = (logits[0].argmax() + 1) % classes
        expected = calc_accuracy_loader([(torch.zeros(batch, 1, dtype=torch.long), labels)],
                                        _FixedOutput(logits.unsqueeze(1)), "cpu")
        got = _number(_call(fn, logits.clone(), labels.clone()), "Your accuracy")
        if math.isclose(got, expected, abs_tol=1e-6):
            continue
        right = int((logits.argmax(-1) == labels).sum())
        said = f"Your accuracy is {_fmt(got)}, expected {_fmt(expected)} ({right} of {batch} right)"
        candidates = [
            (100 * expected, f"{said}: that is a percentage; return a fraction between 0 and 1."),
            (right, f"{said}: that is the number right; divide by the number of messages."),
            (1 - expected, f"{said}: that is the fraction wrong."),
        ]
        if batch == classes or batch > 1:
            predicted0 = logits.argmax(0)
            if predicted0.shape == labels.shape:
                candidates.append((float((predicted0 == labels).float().mean()),
                                   f"{said}: the argmax runs over the messages (dim 0); take it over the classes."))
        known = next((m for v, m in candidates if math.isclose(got, v, abs_tol=1e-6)), None)
        raise Wrong(known or f"{said}.")
    return "calc_accuracy_loader (helpers.classifier) computes this over a whole loader."


# ===================================================================================== lecture 05


def _phi3_text(entry: dict) -> str:
    """Phi-3's chat style, as the exercise defines it: user turn, optional input, assistant turn."""
    text = f"<|user|>\n{entry['instruction']}"
    if entry.get("input"):
        text += f"\n{entry['input']}"
    return text + f"\n<|assistant|>\n{entry['output']}"


@_exercise(
    "05.phi3_format", "Phi-3's prompt style",
    task="""Write my_format_phi3(entry): the whole training text of an entry in Phi-3's chat style instead of
    Alpaca's: "<|user|>", a newline, the instruction; then, only when the entry has an input, a newline and
    the input; then a newline, "<|assistant|>", a newline and the output. No preamble, no ### markers.""",
    hint="""Build it in two parts as format_input and format_response do: the user part, where the input line is
    added only when entry["input"] is not empty, then the assistant part. Print your text for an entry with
    and one without input and compare with the example in the exercise.""",
)
def _check_phi3_format(fn) -> str:
    entries = [
        {"instruction": "Rewrite the sentence in the passive voice.", "input": "The chef cooks the meal.",
         "output": "The meal is cooked by the chef."},
        {"instruction": "Name a primary colour.", "input": "", "output": "Blue."},
        {"instruction": f"Add {int(torch.randint(2, 99, ()))} and {int(torch.randint(2, 99, ()))}.",
         "input": "", "output": "The sum."},
    ]
    for entry in entries:
        expected = _phi3_text(entry)
        got = _call(fn, dict(entry))
        if not isinstance(got, str):
            raise Wrong(f"Return the text (a str), got {type(got).__name__}.")
        if got == expected:
            continue
        with_input = "with an input" if entry["input"] else "without an input"
        if got == format_input(entry) + format_response(entry):
            raise Wrong("That is the Alpaca style (lecture 05's format_input + format_response); write Phi-3's.")
        if "###" in got or "Below is an instruction" in got:
            raise Wrong("Phi-3's style has no preamble and no ### markers: only <|user|> and <|assistant|> turns.")
        if not entry["input"] and got == expected.replace("\n<|assistant|>", "\n\n<|assistant|>"):
            raise Wrong("For an entry without an input your text has an empty line: add the input line only when "
                        "there is an input.")
        if entry["output"] not in got:
            raise Wrong("Your text lacks the output: the training text is prompt and response together.")
        if got == expected.replace("<|assistant|>\n", "<|assistant|>:\n"):
            raise Wrong("No colon after <|assistant|>: the marker stands alone on its line.")
        want, have = expected.split("\n"), got.split("\n")
        line = next((i for i, (a, b) in enumerate(zip(want, have, strict=False)) if a != b), min(len(want), len(have)))
        shown_have = repr(have[line]) if line < len(have) else "(nothing: your text ends here)"
        shown_want = repr(want[line]) if line < len(want) else "(nothing: the text should end before it)"
        raise Wrong(f"For an entry {with_input}, line {line + 1} of your text is {shown_have}, expected {shown_want}.")
    return ("With this format in InstructionDataset, the rest of lecture 05 (batching, training, extracting the "
            "answer after the assistant marker) works the same way.")


@_exercise(
    "05.collate", "padding and -100 in the targets",
    task="""Write my_collate(batch, pad_token_id=50256, ignore_index=-100): batch is a list of token-id lists.
    Return (inputs, targets) tensors: append one end-of-text token to every sequence, pad with more of them to
    a common length, take inputs = all but the last position and targets = all but the first; in the targets,
    replace every padding token except the first end-of-text of each sequence with ignore_index.""",
    hint="""Every row is padded to (longest + 1) tokens, so inputs and targets are each as long as the longest
    sequence. In a sequence of n tokens, targets[n - 1] is its first end-of-text token (keep it: it teaches the
    model to stop); targets[n:] are padding.""",
)
def _check_collate(fn) -> str:
    pad, ignore = END_OF_TEXT_ID, IGNORE_INDEX
    for lengths in ([5, 2, 3], [4, 4], [1, 6], [3]):
        batch = [[int(t) for t in torch.randint(0, 50000, (n,))] for n in lengths]
        inputs, targets = custom_collate_fn([list(b) for b in batch])
        got = _call(fn, [list(b) for b in batch], pad, ignore)
        if not (isinstance(got, (tuple, list)) and len(got) == 2):
            raise Wrong(f"Return the pair (inputs, targets), got {_short(got)}.")
        got_inputs, got_targets = (_tensor(t, name).long() for t, name in zip(got, ("Your inputs", "Your targets"),
                                                                              strict=True))
        padded = torch.tensor([b + [pad] * (max(lengths) + 1 - len(b)) for b in batch])
        if (got_inputs == ignore).any():
            raise Wrong("Your inputs contain -100: the model reads inputs, which must be token ids. ignore_index "
                        "belongs in the targets only.")
        if got_inputs.shape == inputs.shape and got_targets.shape == targets.shape and torch.equal(got_targets, got_inputs) \
                and not torch.equal(targets, inputs):
            raise Wrong("Your targets equal your inputs: the targets are not shifted by one.")
        if got_inputs.shape[1] == inputs.shape[1] - 1 and len(set(lengths)) > 0:
            raise Wrong(f"Your rows are {got_inputs.shape[1]} positions long, expected {inputs.shape[1]}: append one "
                        "end-of-text token to every sequence before padding to the longest (length + 1).")
        _compare(got_inputs, inputs, [], "Your inputs")
        kept_all = padded[:, 1:]
        all_masked = targets.clone()
        for row, n in enumerate(lengths):
            all_masked[row, n - 1:] = ignore
        candidates = [
            (kept_all, "Your targets still contain every padding token: replace the padding (all but the first "
                       "end-of-text of each sequence) by -100, which cross_entropy skips."),
            (all_masked, "You replaced the first end-of-text target too: keep it (it teaches the model to stop "
                         "after its answer); only the padding after it becomes -100."),
            (padded[:, :-1].masked_fill(targets == ignore, ignore), "Your targets are not shifted by one: "
                                                                     "targets = padded sequence without its first token."),
        ]
        _compare(got_targets, targets, candidates, "Your targets")
    return "That is custom_collate_fn (helpers.instruction), which lecture 05's loaders batch with."


def _masked_prefix(targets: torch.Tensor, prompt_lengths: list[int], shift: int) -> torch.Tensor:
    """``targets`` with the first ``prompt_length + shift`` positions of each row set to -100."""
    out = targets.clone()
    for row, p in enumerate(prompt_lengths):
        out[row, : max(p + shift, 0)] = IGNORE_INDEX
    return out


@_exercise(
    "05.mask_prompt", "masking the prompt in the targets",
    task="""Write my_mask_prompt(targets, prompt_lengths): targets (batch, tokens) come from custom_collate_fn
    (shifted by one, padding already -100); prompt_lengths[i] is how many tokens of sequence i are prompt.
    Return targets in which every target that is a prompt token is -100 too, so the loss counts only the
    response (and the end-of-text).""",
    hint="""targets[t] is token t + 1 of the sequence (they are shifted). Which targets are prompt tokens, then,
    for a prompt of P tokens: how many, and where does the first response token sit?""",
)
def _check_mask_prompt(fn) -> str:
    for sizes in ([(6, 3), (4, 4), (9, 2)], [(5, 1), (7, 5)]):
        batch = [([int(t) for t in torch.randint(0, 50000, (n,))], p) for n, p in sizes]
        _, targets = custom_collate_fn([ids for ids, _ in batch])
        _, expected = custom_collate_fn([(ids, p) for ids, p in batch], mask_prompt=True)
        prompt_lengths = [p for _, p in batch]
        got = _tensor(_call(fn, targets.clone(), list(prompt_lengths)), "Your targets").long()
        candidates = [
            (_masked_prefix(targets, prompt_lengths, 0), "You masked one target too many: with the shift by one, the prompt's P tokens appear as "
                        "only P - 1 targets (the first token is never a target), and targets[P - 1] is the first "
                        "response token, which must stay."),
            (_masked_prefix(targets, prompt_lengths, -2), "You masked one target too few: the last prompt token's target (at P - 2) is still counted."),
            (targets, "Nothing changed: set the prompt's targets to -100."),
        ]
        zeroed = targets.clone()
        for row, p in enumerate(prompt_lengths):
            zeroed[row, : p - 1] = 0
        candidates.append((zeroed, "You set the prompt's targets to 0, a real token id; use -100, which "
                                   "cross_entropy skips."))
        _compare(got, expected, candidates, "Your targets")
    return "custom_collate_fn(..., mask_prompt=True) does this; SETTINGS['mask_prompt'] in lecture 05 switches it on."


@_exercise(
    "05.masked_loss", "the loss over the kept targets",
    task="""Write my_masked_loss(logits, targets): logits (batch, tokens, vocab), targets (batch, tokens) where
    some targets are -100. Return the mean cross entropy over the targets that are not -100, as one number,
    without passing ignore_index (compute which positions count yourself).""",
    hint="""Keep a boolean mask of the positions whose target is not -100. Average -log p(target) over those
    positions only: divide by how many there are, not by all positions.""",
)
def _check_masked_loss(fn) -> str:
    for batch, tokens, vocab in [(2, 6, 13), (3, 4, 9)]:
        logits = torch.randn(batch, tokens, vocab)
        targets = torch.randint(0, vocab, (batch, tokens))
        targets[0, -2:] = IGNORE_INDEX
        targets[-1, :1] = IGNORE_INDEX
        expected = float(_lm_loss(logits, targets))
        got = _number(_call(fn, logits.clone(), targets.clone(),
                            errors={"out of bounds": "A -100 target went into cross_entropy (or an index): leave the "
                                                     "-100 positions out before picking probabilities."}),
                      "Your loss")
        keep = targets != IGNORE_INDEX
        logp = torch.log_softmax(logits, -1).gather(-1, targets.clamp(min=0).unsqueeze(-1)).squeeze(-1)
        said = f"Your loss is {_fmt(got)}, expected {_fmt(expected)}"
        candidates = [
            (float(-(logp * keep).sum() / keep.numel()),
             f"{said}: you divided by all {keep.numel()} positions, the ignored ones included; divide by the "
             f"{int(keep.sum())} kept targets."),
            (float(-logp.mean()), f"{said}: the -100 positions were counted (as token 0); leave them out."),
            (float(-(logp * keep).sum()), f"{said}: that is the sum over the kept targets; take their mean."),
            (-expected, f"{said}: mind the sign: the loss is minus the mean log-probability."),
        ]
        if not math.isclose(got, expected, rel_tol=1e-4, abs_tol=1e-5):
            known = next((m for v, m in candidates if math.isclose(got, v, rel_tol=1e-4, abs_tol=1e-5)), None)
            raise Wrong(known or f"{said}.")
    return "F.cross_entropy skips -100 targets by default (ignore_index=-100); calc_loss_batch relies on it."


@_exercise(
    "05.alpaca_steps", "one epoch of the full Alpaca data",
    task="""Stanford's Alpaca data has 52,002 entries in the same format as lecture 05's. Set alpaca_steps to the
    number of optimizer steps in one epoch if you split it with split_data (85% for training) and train with
    batch_size 8 (the training loader drops an incomplete last batch).""",
    hint="""First the number of training entries (split_data keeps int(52,002 * 0.85)), then how many whole
    batches of 8 fit in it.""",
)
def _check_alpaca_steps(answer) -> str:
    n, batch_size = 52002, 8
    train = split_data(list(range(n))).train
    expected = len(DataLoader(train, batch_size=batch_size, drop_last=True))
    got = _number(answer, "alpaca_steps")
    if got == expected:
        return (f"{expected:,} steps: about {expected / 116:.0f} times lecture 05's 116 steps per epoch of its 1,100 "
                "entries: one epoch takes that many times as long as one epoch of lecture 05's full profile.")
    said = f"Your answer is {_fmt(got)}, expected {expected:,}"
    candidates = [
        (n // batch_size, f"{said}: only the training part (85%) is trained on."),
        (math.ceil(len(train) / batch_size), f"{said}: the training loader drops the incomplete last batch "
                                             "(drop_last=True)."),
        (len(train) / batch_size, f"{said}: steps come in whole batches."),
        (len(train), f"{said}: that is the number of training entries; a step takes a batch of 8."),
    ]
    raise Wrong(next((m for v, m in candidates if math.isclose(got, v)), f"{said}."))


# ===================================================================================== lecture 06


@_exercise(
    "06.lora_forward", "LinearWithLoRA.forward",
    task="""Write the forward method of a subclass of helpers.lora.LinearWithLoRA: class MyLinearWithLoRA
    (LinearWithLoRA) with forward(self, x) returning the frozen layer's output plus the LoRA update. Pass the
    class itself to check. (self.linear is the frozen nn.Linear; self.lora holds A, B and scaling.)""",
    hint="""h = W0 x + (alpha / r) * B A x. In our layout (row vectors) the update is x @ A @ B times
    self.lora.scaling, and self.linear(x) computes W0 x plus the bias.""",
)
def _check_lora_forward(cls) -> str:
    if not (isinstance(cls, type) and issubclass(cls, nn.Module)):
        raise Wrong(f"Pass the class (MyLinearWithLoRA, not an instance or a function), got {_short(cls)}.")
    for in_dim, out_dim, rank, alpha in [(6, 4, 2, 6.0), (5, 5, 3, 1.5)]:
        linear = nn.Linear(in_dim, out_dim)
        try:
            layer = cls(linear, rank, alpha)
        except NotImplementedError:
            raise _Unanswered from None
        except Exception as err:
            raise Wrong(f"Building MyLinearWithLoRA(linear, rank, alpha) raised {type(err).__name__}: {err}. Keep "
                        "LinearWithLoRA's __init__ (write only forward).") from None
        with torch.no_grad():
            layer.lora.B.copy_(torch.randn_like(layer.lora.B))   # B starts at zero, which would hide mistakes
        x = torch.randn(2, 3, in_dim)
        expected = LinearWithLoRA.forward(layer, x).detach()
        got = _tensor(_call(layer, x, what="Your forward"), "Your output")
        update = x @ layer.lora.A @ layer.lora.B
        base = layer.linear(x)
        candidates = [
            (base, "Your output is the frozen layer's alone: add the LoRA update."),
            (layer.lora.scaling * update, "Your output is the LoRA update alone: add the frozen layer's output."),
            (base + update, f"You left out the scaling: multiply the update by alpha / rank "
                            f"(self.lora.scaling = {layer.lora.scaling:g})."),
            (base + alpha * update, f"You scaled by alpha ({alpha:g}); our LoRA scales by alpha / rank "
                                    f"(self.lora.scaling = {layer.lora.scaling:g})."),
            (x @ layer.linear.weight.T + layer.lora.scaling * update,
             "The frozen layer's bias is missing: self.linear(x) includes it."),
        ]
        _compare(got, expected.detach(), [(v.detach(), m) for v, m in candidates], "Your output")
    return "That is LinearWithLoRA.forward: self.linear(x) + self.lora(x)."


@_exercise(
    "06.lora_count", "counting LoRA parameters",
    task="""Write my_lora_count(cfg, rank, targets): the number of trainable LoRA parameters when a GPTModel(cfg)
    gets a rank-`rank` LoRA update on the layers named in targets, a list drawn from "W_query", "W_key",
    "W_value", "out_proj", "ff.layers.0", "ff.layers.2" (all in every block) and "out_head" (once). Count from
    the config; do not build the model.""",
    hint="""A rank-r update of a layer with k inputs and d outputs has r * (k + d) parameters (A is k x r, B is
    r x d). The attention layers are emb_dim -> emb_dim, ff.layers.0 is emb_dim -> 4 * emb_dim, ff.layers.2 the
    reverse, out_head emb_dim -> vocab_size. Block layers exist once per block.""",
)
def _check_lora_count(fn) -> str:
    choices = ["W_query", "W_key", "W_value", "out_proj", "ff.layers.0", "ff.layers.2", "out_head"]
    cases = [(_tiny_config(n_layers=3, emb_dim=12, n_heads=3, vocab_size=50), 4, ["W_query", "W_value"]),
             (_tiny_config(n_layers=2, emb_dim=8, vocab_size=30), 2, list(choices)),
             (_tiny_config(n_layers=4, emb_dim=16, vocab_size=40), 8, ["ff.layers.0", "ff.layers.2", "out_proj"])]
    picked = [c for c in choices if bool(torch.rand(()) < 0.5)] or ["out_head"]
    cases.append((_tiny_config(n_layers=2, emb_dim=12, n_heads=3, vocab_size=70), 3, picked))
    for cfg, rank, targets in cases:
        with torch.device("meta"):
            model = apply_lora(GPTModel(cfg), rank=rank, alpha=1, targets=targets)
        expected = parameter_report(model)["lora"]
        got = _number(_call(fn, dict(cfg), rank, list(targets)), "Your count")
        if got == expected:
            continue
        d, v, n = cfg["emb_dim"], cfg["vocab_size"], cfg["n_layers"]
        dims = {"W_query": (d, d), "W_key": (d, d), "W_value": (d, d), "out_proj": (d, d),
                "ff.layers.0": (d, 4 * d), "ff.layers.2": (4 * d, d), "out_head": (d, v)}
        per_block = [t for t in targets if t != "out_head"]
        head = rank * sum(dims["out_head"]) if "out_head" in targets else 0
        said = f"Your count is {_fmt(got)}, expected {_fmt(expected)} for rank {rank} on {targets} (n_layers={n})"
        candidates = [
            (sum(rank * sum(dims[t]) for t in per_block) + head,
             f"{said}: that counts each block layer once; every one of the {n} blocks has its own."),
            (n * sum(rank * sum(dims[t]) for t in targets),
             f"{said}: out_head exists once, not once per block."),
            (n * sum(rank * dims[t][0] * dims[t][1] for t in per_block) + (rank * d * v if head else 0),
             f"{said}: a rank-r update has r * (in + out) parameters, not r * in * out."),
            (n * sum(dims[t][0] * dims[t][1] for t in per_block) + (d * v if head else 0),
             f"{said}: that is the size of the full weights; LoRA trains only r * (in + out) per layer."),
            (n * sum(2 * rank * d for t in per_block) + (2 * rank * d if head else 0),
             f"{said}: not every layer is emb_dim x emb_dim: the feed-forward layers widen to 4 * emb_dim, and "
             "out_head goes to vocab_size."),
        ]
        raise Wrong(next((m for v_, m in candidates if v_ == got), f"{said}."))
    classifier = apply_lora(add_classification_head(_meta_gpt2(), 2, trainable="head"), rank=16, alpha=16)
    return (f"Lecture 06's LoRA classifier (GPT-2 124M, rank 16 on every linear layer, its 2-class head included) "
            f"trains {parameter_report(classifier)['lora']:,} LoRA parameters; parameter_report counts them for any "
            "model.")


@_exercise(
    "06.merge", "merging the LoRA update",
    task="""Write my_merge(layer): layer is a helpers.lora.LinearWithLoRA. Return a new plain nn.Linear that
    computes the same outputs, its weight being the frozen weight plus the LoRA update, the bias kept. Leave
    `layer` itself unchanged.""",
    hint="""The update for x @ A @ B in nn.Linear's [out, in] layout is scaling * (A @ B).T. Make an nn.Linear of
    the same sizes and copy in W0 + that, and the bias, under torch.no_grad().""",
)
def _check_merge(fn) -> str:
    for in_dim, out_dim, rank, alpha in [(6, 4, 2, 6.0), (5, 5, 3, 1.5)]:
        layer = LinearWithLoRA(nn.Linear(in_dim, out_dim), rank, alpha)
        with torch.no_grad():
            layer.lora.B.copy_(torch.randn_like(layer.lora.B))
        original = copy.deepcopy(layer)
        expected = layer.merge()
        got = _call(fn, layer, errors={"size": "A shape does not fit: x @ A @ B in nn.Linear's [out, in] layout is "
                                               "(A @ B).T."})
        if not isinstance(got, nn.Linear):
            raise Wrong(f"Return a plain nn.Linear, got {type(got).__name__}.")
        if not torch.equal(layer.linear.weight, original.linear.weight):
            raise Wrong("You changed the wrapped layer's weight in place: its LoRA update would now be counted twice "
                        "(once in W0, once in the update). Build a new nn.Linear.")
        w, w0, a, b, s = got.weight.detach(), original.linear.weight, original.lora.A, original.lora.B, original.lora.scaling
        candidates = [
            (w0, "Your merged weight is the frozen W0 alone: add the LoRA update."),
            (w0 + (a @ b).T, f"You left out the scaling (alpha / rank = {s:g})."),
            (w0 + alpha * (a @ b).T, f"You scaled by alpha ({alpha:g}); our LoRA scales by alpha / rank ({s:g})."),
        ]
        if in_dim == out_dim:
            candidates.append((w0 + s * (a @ b), "The update is transposed: nn.Linear's weight is [out, in], so add "
                                                 "scaling * (A @ B).T."))
        _compare(w, expected.weight.detach(), [(v.detach(), m) for v, m in candidates], "Your merged weight")
        if got.bias is None or not torch.equal(got.bias.detach(), original.linear.bias.detach()):
            raise Wrong("The merged layer lost the frozen layer's bias: copy it too.")
        x = torch.randn(3, in_dim)
        if not torch.allclose(got(x), original(x), atol=1e-5):
            raise Wrong("Your merged layer computes other outputs than the LoRA layer.")
    return "merge_lora(model) (helpers.lora) does this for every wrapped layer: inference without extra matmuls."


_B_ZERO = {
    "a": "so that a freshly wrapped layer computes exactly what the pretrained layer computes",
    "b": "to save memory: a zero matrix is stored without its values",
    "c": "because zero is B's best value, which training keeps",
    "d": "so that only A trains while B stays frozen",
}


@_exercise(
    "06.b_zero", "why B starts at zero",
    task="""LoRA initialises B with zeros and A at random. Why? Set b_zero_choice to "a", "b", "c" or "d": (a) """
         + _B_ZERO["a"] + "; (b) " + _B_ZERO["b"] + "; (c) " + _B_ZERO["c"] + "; (d) " + _B_ZERO["d"] + ".",
    hint="""What is B A x when B = 0? And what does the wrapped model then compute before its first training
    step?""",
)
def _check_b_zero(answer) -> str:
    letter = _choice(answer, _B_ZERO)
    messages = {
        "b": "A zero matrix takes as much memory as any other: rank x out_dim numbers.",
        "c": "B does not stay zero: training changes it from the first step (its gradient is not zero, since A "
             "is random).",
        "d": "Both A and B train; B is just where the update starts.",
    }
    if letter != "a":
        raise Wrong(f"({letter}) is not it. {messages[letter]}")
    return ("With B = 0 the update B A x is 0, so finetuning starts from the pretrained behaviour (lecture 06 checks "
            "it: 'same output as the plain layer'). Why not both zero? Then both gradients would be zero and "
            "nothing would ever train.")


__all__ = ["EXERCISES", "Exercise", "ExerciseFailed", "Result", "UnknownExercise", "check", "get_exercise", "hint",
           "list_exercises"]

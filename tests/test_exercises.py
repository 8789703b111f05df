"""The exercise checker (helpers.exercises): right answers pass, typical wrong answers get their own message,
unanswered exercises say what to do without raising, and the learner's random generators are left alone.

The worked solutions themselves run in tests/test_notebooks.py (the solutions notebooks, strict checks)."""

from __future__ import annotations

import copy
import math
import random

import numpy as np
import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F

from helpers import exercises, runtime
from helpers.exercises import ExerciseFailed, UnknownExercise, check, hint
from helpers.lora import LinearWithLoRA
from helpers.losses import calc_loss_batch
from helpers.model import GPTModel, count_parameters
from helpers.weights import assign

# ------------------------------------------------------------------------- right answers, short ones


def _pairs(ids, max_length, stride):
    return [(ids[i:i + max_length], ids[i + 1:i + max_length + 1]) for i in range(0, len(ids) - max_length, stride)]


def _target_probas(logits, targets):
    return torch.softmax(logits, -1).gather(-1, targets.unsqueeze(-1)).squeeze(-1)


def _cross_entropy(logits, targets):
    return -torch.log(_target_probas(logits, targets)).mean()


def _train_step(model, optimizer, x, y, device):
    optimizer.zero_grad()
    loss = calc_loss_batch(x, y, model, device)
    loss.backward()
    optimizer.step()
    return loss


def _counts(model):
    return {name: count_parameters(getattr(model, name))
            for name in ("tok_emb", "pos_emb", "trf_blocks", "final_norm", "out_head")}


def _probabilities(logits, temperature):
    if temperature == 0:
        return F.one_hot(logits.argmax(-1), logits.shape[-1]).float()
    return torch.softmax(logits / temperature, -1)


def _top_k(logits, k):
    kth = torch.topk(logits, k).values[:, -1:]
    return torch.softmax(logits.masked_fill(logits < kth, -torch.inf), -1)


def _two_models(cfg):
    runtime.set_seed(123)
    a = GPTModel(cfg)
    runtime.set_seed(123)
    return a, GPTModel(cfg)


def _split_qkv(w):
    return [part.T for part in np.split(w, 3, axis=-1)]


def _load_block(block, p):
    q, k, v = np.split(p["attn"]["c_attn"]["w"], 3, axis=-1)
    qb, kb, vb = np.split(p["attn"]["c_attn"]["b"], 3, axis=-1)
    att = block.att
    for layer, w, b in ((att.W_query, q, qb), (att.W_key, k, kb), (att.W_value, v, vb),
                        (att.out_proj, p["attn"]["c_proj"]["w"], p["attn"]["c_proj"]["b"]),
                        (block.ff.layers[0], p["mlp"]["c_fc"]["w"], p["mlp"]["c_fc"]["b"]),
                        (block.ff.layers[2], p["mlp"]["c_proj"]["w"], p["mlp"]["c_proj"]["b"])):
        assign(layer.weight, w.T, "w")
        assign(layer.bias, b, "b")
    for norm, key in ((block.norm1, "ln_1"), (block.norm2, "ln_2")):
        assign(norm.scale, p[key]["g"], "g")
        assign(norm.shift, p[key]["b"], "b")


def _config(s):
    return {"vocab_size": s["n_vocab"], "context_length": s["n_ctx"], "emb_dim": s["n_embd"], "n_heads": s["n_head"],
            "n_layers": s["n_layer"], "drop_rate": 0.0, "qkv_bias": True}


def _pad(messages, pad, max_length=None):
    n = max_length if max_length is not None else max(len(m) for m in messages)
    return [m[:n] + [pad] * (n - len(m[:n])) for m in messages]


def _last_real(outputs, ids, pad):
    last = (ids != pad).sum(1) - 1
    return outputs[torch.arange(len(ids)), last]


def _train_all(model):
    for p in model.parameters():
        p.requires_grad = True


def _phi3(entry):
    text = f"<|user|>\n{entry['instruction']}" + (f"\n{entry['input']}" if entry["input"] else "")
    return text + f"\n<|assistant|>\n{entry['output']}"


def _collate(batch, pad=50256, ignore=-100):
    n = max(len(b) for b in batch) + 1
    inputs, targets = [], []
    for b in batch:
        row = torch.tensor(b + [pad] * (n - len(b)))
        t = row[1:].clone()
        t[len(b):] = ignore
        inputs.append(row[:-1])
        targets.append(t)
    return torch.stack(inputs), torch.stack(targets)


def _mask_prompt(targets, prompt_lengths):
    targets = targets.clone()
    for row, p in enumerate(prompt_lengths):
        targets[row, :p - 1] = -100
    return targets


def _masked_loss(logits, targets):
    keep = targets != -100
    logp = torch.log_softmax(logits, -1)[keep]
    return -logp.gather(-1, targets[keep].unsqueeze(-1)).mean()


class _LoRA(LinearWithLoRA):
    def forward(self, x):
        return self.linear(x) + self.lora.scaling * (x @ self.lora.A @ self.lora.B)


_DIMS = {"ff.layers.0": (1, 4), "ff.layers.2": (4, 1)}


def _lora_count(cfg, rank, targets):
    d, total = cfg["emb_dim"], 0
    for t in targets:
        if t == "out_head":
            total += rank * (d + cfg["vocab_size"])
        else:
            a, b = _DIMS.get(t, (1, 1))
            total += cfg["n_layers"] * rank * (a * d + b * d)
    return total


def _merge(layer):
    merged = nn.Linear(layer.in_features, layer.out_features)
    with torch.no_grad():
        merged.weight.copy_(layer.linear.weight + layer.lora.scaling * (layer.lora.A @ layer.lora.B).T)
        merged.bias.copy_(layer.linear.bias)
    return merged


CORRECT = {
    "01.input_target_pairs": _pairs,
    "01.target_probas": _target_probas,
    "01.cross_entropy": _cross_entropy,
    "01.perplexity": lambda loss: math.exp(float(loss)),
    "01.uniform_loss": math.log(50257),
    "02.train_step": _train_step,
    "02.parameter_counts": _counts,
    "02.temperature": _probabilities,
    "02.top_k": _top_k,
    "02.same_seed": _two_models,
    "03.split_qkv": _split_qkv,
    "03.load_block": _load_block,
    "03.weight_tying": lambda m: torch.equal(m.out_head.weight, m.tok_emb.weight),
    "03.config": _config,
    "04.pad": _pad,
    "04.last_token": lambda out: out[:, -1, :],
    "04.last_real_token": _last_real,
    "04.train_all": _train_all,
    "04.accuracy": lambda logits, labels: (logits.argmax(-1) == labels).float().mean().item(),
    "05.phi3_format": _phi3,
    "05.collate": _collate,
    "05.mask_prompt": _mask_prompt,
    "05.masked_loss": _masked_loss,
    "05.alpaca_steps": int(52002 * 0.85) // 8,
    "06.lora_forward": _LoRA,
    "06.lora_count": _lora_count,
    "06.merge": _merge,
    "06.b_zero": "a",
}


# ------------------------------------------------------------------------- typical wrong answers


def _no_zero_grad(model, optimizer, x, y, device):
    loss = calc_loss_batch(x, y, model, device)
    loss.backward()
    optimizer.step()
    return loss


def _zero_grad_late(model, optimizer, x, y, device):
    loss = calc_loss_batch(x, y, model, device)
    loss.backward()
    optimizer.zero_grad()
    optimizer.step()
    return loss


def _unflattened_loss_step(model, optimizer, x, y, device):
    optimizer.zero_grad()
    loss = F.cross_entropy(model(x)[:, -1], y[:, -1])
    loss.backward()
    optimizer.step()
    return loss


def _seed_once(cfg):
    runtime.set_seed(123)
    return GPTModel(cfg), GPTModel(cfg)


def _load_block_without_transpose(block, p):
    q, k, v = np.split(p["attn"]["c_attn"]["w"], 3, axis=-1)
    for layer, w in ((block.att.W_query, q), (block.att.W_key, k), (block.att.W_value, v)):
        with torch.no_grad():
            layer.weight.copy_(torch.as_tensor(w))


def _load_block_norms_swapped(block, p):
    _load_block(block, p)
    assign(block.norm1.scale, p["ln_1"]["b"], "g")
    assign(block.norm1.shift, p["ln_1"]["g"], "b")


def _collate_keep_all_padding(batch, pad=50256, ignore=-100):
    inputs, targets = _collate(batch, pad, ignore)
    return inputs, targets.masked_fill(targets == ignore, pad)


def _collate_mask_first_eot(batch, pad=50256, ignore=-100):
    inputs, targets = _collate(batch, pad, ignore)
    for row, b in enumerate(batch):
        targets[row, len(b) - 1] = ignore
    return inputs, targets


def _collate_not_shifted(batch, pad=50256, ignore=-100):
    inputs, targets = _collate(batch, pad, ignore)
    return inputs, inputs.masked_fill(targets == ignore, ignore)


def _mask_one_too_many(targets, prompt_lengths):
    targets = targets.clone()
    for row, p in enumerate(prompt_lengths):
        targets[row, :p] = -100
    return targets


def _masked_loss_all_positions(logits, targets):
    keep = targets != -100
    logp = torch.log_softmax(logits, -1).gather(-1, targets.clamp(min=0).unsqueeze(-1)).squeeze(-1)
    return -(logp * keep).sum() / keep.numel()


class _LoRANoScaling(LinearWithLoRA):
    def forward(self, x):
        return self.linear(x) + x @ self.lora.A @ self.lora.B


class _LoRACourseScaling(LinearWithLoRA):
    def forward(self, x):
        return self.linear(x) + self.lora.alpha * (x @ self.lora.A @ self.lora.B)


def _lora_count_one_block(cfg, rank, targets):
    return _lora_count({**cfg, "n_layers": 1}, rank, [t for t in targets if t != "out_head"]) + (
        _lora_count(cfg, rank, ["out_head"]) if "out_head" in targets else 0)


def _lora_count_full_matrices(cfg, rank, targets):
    d, total = cfg["emb_dim"], 0
    for t in targets:
        if t == "out_head":
            total += rank * d * cfg["vocab_size"]
        else:
            a, b = _DIMS.get(t, (1, 1))
            total += cfg["n_layers"] * rank * (a * d) * (b * d)
    return total


def _merge_in_place(layer):
    with torch.no_grad():
        layer.linear.weight += layer.lora.scaling * (layer.lora.A @ layer.lora.B).T
    return layer.linear


def _merge_no_scaling(layer):
    merged = nn.Linear(layer.in_features, layer.out_features)
    with torch.no_grad():
        merged.weight.copy_(layer.linear.weight + (layer.lora.A @ layer.lora.B).T)
        merged.bias.copy_(layer.linear.bias)
    return merged


def _first_pad(outputs, ids, pad):
    return outputs[torch.arange(len(ids)), ((ids != pad).sum(1)).clamp(max=ids.shape[1] - 1)]


def _train_only_blocks(model):
    for p in model.trf_blocks.parameters():
        p.requires_grad = True
    for p in model.final_norm.parameters():
        p.requires_grad = True


# (exercise, wrong answer, a piece of the message it must get)
WRONG = [
    ("01.input_target_pairs", lambda ids, n, s: [(ids[i:i + n], ids[i:i + n]) for i in range(0, len(ids) - n, s)],
     "not shifted by one"),
    ("01.input_target_pairs", lambda ids, n, s: _pairs(ids, n, 1), "instead of by stride"),
    ("01.input_target_pairs", lambda ids, n, s: [(ids[i:i + n], ids[i + 1:i + n + 1])
                                                  for i in range(0, len(ids) - n - 1, s)], "You stop one window early"),
    ("01.input_target_pairs", lambda ids, n, s: [(ids[i:i + n], ids[i + 1:i + n + 1])
                                                  for i in range(0, len(ids) - n + 1, s)], "max_length + 1"),
    ("01.target_probas", lambda logits, t: logits.gather(-1, t.unsqueeze(-1)).squeeze(-1), "not probabilities"),
    ("01.target_probas", lambda logits, t: torch.softmax(logits, -1).max(-1).values, "favourite token"),
    ("01.cross_entropy", lambda logits, t: torch.log(_target_probas(logits, t)).mean(), "*minus* their mean"),
    ("01.cross_entropy", lambda logits, t: -torch.log(_target_probas(logits, t)).sum(), "their mean"),
    ("01.cross_entropy", lambda logits, t: F.cross_entropy(logits, t), "did you flatten the logits"),
    ("01.cross_entropy", lambda logits, t: F.cross_entropy(logits[:, -1], t[:, -1]),
     "Did you flatten the logits before cross_entropy?"),
    ("01.cross_entropy", lambda logits, t: -torch.log10(_target_probas(logits, t)).mean(), "natural log"),
    ("01.perplexity", lambda loss: math.exp(-float(loss)), "1 / perplexity"),
    ("01.perplexity", lambda loss: 2 ** float(loss), "not 2^loss"),
    ("01.uniform_loss", 50257, "perplexity of the uniform guess"),
    ("01.uniform_loss", math.log10(50257), "log base 10"),
    ("02.train_step", _no_zero_grad, "optimizer.zero_grad() at the start"),
    ("02.train_step", _zero_grad_late, "after loss.backward() and before optimizer.step()"),
    ("02.train_step", lambda m, o, x, y, d: (o.zero_grad(), calc_loss_batch(x, y, m, d))[1], "never called loss.backward"),
    ("02.train_step", lambda m, o, x, y, d: (o.zero_grad(), calc_loss_batch(x, y, m, d).backward())[1],
     "never called optimizer.step"),
    ("02.train_step", _unflattened_loss_step, "did you flatten the logits before cross_entropy?"),
    ("02.parameter_counts", lambda m: {k: len(list(getattr(m, k).parameters())) for k in _counts(m)},
     "not the numbers in them"),
    ("02.parameter_counts", lambda m: {**_counts(m), "trf_blocks": count_parameters(m.trf_blocks[0])}, "that is one block"),
    ("02.parameter_counts", lambda m: {k: sum(p.numel() for p in getattr(m, k).parameters() if p.dim() > 1)
                                       for k in _counts(m)}, "biases"),
    ("02.temperature", lambda logits, t: torch.softmax(logits / t, -1), "Temperature 0"),
    ("02.temperature", lambda logits, t: torch.softmax(logits * t, -1), "you multiplied"),
    ("02.temperature", lambda logits, t: _probabilities(logits, t) if t == 0 else logits / t, "apply softmax"),
    ("02.temperature", lambda logits, t: logits.argmax(-1) if t == 0 else torch.softmax(logits / t, -1), "one-hot"),
    ("02.top_k", lambda logits, k: torch.softmax(logits.masked_fill(logits < torch.topk(logits, k).values[:, -1:], 0.0), -1),
     "-inf before the softmax"),
    ("02.top_k", lambda logits, k: torch.softmax(logits, -1).masked_fill(logits < torch.topk(logits, k).values[:, -1:], 0),
     "without renormalising"),
    ("02.same_seed", _seed_once, "Seed again right before the second build"),
    ("02.same_seed", lambda cfg: (lambda m: (m, m))(GPTModel(cfg)), "same model object twice"),
    ("03.split_qkv", lambda w: np.split(w, 3, axis=-1), "transposed"),
    ("03.split_qkv", lambda w: [p.T for p in np.split(w, 3, axis=0)], "split along the first axis"),
    ("03.split_qkv", lambda w: (lambda q, k, v: [k, q, v])(*_split_qkv(w)), "order in c_attn is query, key, value"),
    ("03.load_block", _load_block_without_transpose, "transposed"),
    ("03.load_block", _load_block_norms_swapped, "norm1.scale holds what belongs in norm1.shift"),
    ("03.load_block", lambda block, p: None, "was not copied"),
    ("03.weight_tying", lambda m: m.out_head.weight is m.tok_emb.weight, "not whether they are the same object"),
    ("03.weight_tying", lambda m: m.out_head.weight.shape == m.tok_emb.weight.shape, "not just the shapes"),
    ("03.weight_tying", lambda m: m.out_head.weight == m.tok_emb.weight, "one True or False"),
    ("03.config", lambda s: {**_config(s), "qkv_bias": False}, "qkv_bias=True"),
    ("03.config", lambda s: {**_config(s), "context_length": 256}, "not lecture 02's 256"),
    ("04.pad", lambda msgs, pad, n=None: [[pad] * (len(r) - len(m[:len(r)])) + m[:len(r)]
                                          for m, r in zip(msgs, _pad(msgs, pad, n), strict=True)], "on the left"),
    ("04.pad", lambda msgs, pad, n=None: _pad(msgs, 0, n), "pad with pad_token_id"),
    ("04.pad", lambda msgs, pad, n=None: _pad(msgs, pad, None), "exactly max_length"),
    ("04.last_token", lambda out: out[:, 0, :], "only the last token has seen the whole message"),
    ("04.last_token", lambda out: out[-1], "last *message* of the batch"),
    ("04.last_real_token", _first_pad, "first padding token"),
    ("04.last_real_token", lambda out, ids, pad: out[:, -1, :], "padding for the shorter messages"),
    ("04.train_all", _train_only_blocks, "The embeddings are layers too"),
    ("04.train_all", lambda model: model.train(), "Nothing was unfrozen"),
    ("04.accuracy", lambda logits, labels: 100 * (logits.argmax(-1) == labels).float().mean().item(), "percentage"),
    ("04.accuracy", lambda logits, labels: int((logits.argmax(-1) == labels).sum()), "number right"),
    ("05.phi3_format", lambda e: f"<|user|>\n{e['instruction']}\n{e['input']}\n<|assistant|>\n{e['output']}",
     "add the input line only when"),
    ("05.phi3_format", lambda e: f"<|user|>\n{e['instruction']}" + (f"\n{e['input']}" if e["input"] else "")
     + f"\n<|assistant|>:\n{e['output']}", "No colon"),
    ("05.collate", _collate_keep_all_padding, "still contain every padding token"),
    ("05.collate", _collate_mask_first_eot, "first end-of-text target too"),
    ("05.collate", _collate_not_shifted, "not shifted by one"),
    ("05.mask_prompt", _mask_one_too_many, "one target too many"),
    ("05.mask_prompt", lambda t, p: t, "Nothing changed"),
    ("05.masked_loss", _masked_loss_all_positions, "ignored ones included"),
    ("05.masked_loss", lambda logits, t: F.cross_entropy(logits.flatten(0, 1), t.flatten(), ignore_index=-1),
     "-100 target"),
    ("05.alpaca_steps", 52002 // 8, "only the training part"),
    ("05.alpaca_steps", math.ceil(int(52002 * 0.85) / 8), "drops the incomplete last batch"),
    ("06.lora_forward", _LoRANoScaling, "left out the scaling"),
    ("06.lora_forward", _LoRACourseScaling, "scales by alpha / rank"),
    ("06.lora_count", _lora_count_one_block, "every one of the"),
    ("06.lora_count", _lora_count_full_matrices, "r * (in + out)"),
    ("06.merge", _merge_in_place, "in place"),
    ("06.merge", _merge_no_scaling, "left out the scaling"),
    ("06.b_zero", "c", "training changes it"),
    ("06.b_zero", "d", "Both A and B train"),
]


# ------------------------------------------------------------------------- the tests


def test_every_exercise_has_a_right_and_a_wrong_answer_here():
    assert set(CORRECT) == set(exercises.EXERCISES)
    assert {name for name, _, _ in WRONG} == set(exercises.EXERCISES)


def test_four_to_six_exercises_per_lecture():
    for lecture in ("01", "02", "03", "04", "05", "06"):
        assert 4 <= len(exercises.list_exercises(lecture)) <= 6, lecture


@pytest.mark.parametrize("exercise_id", list(CORRECT))
def test_right_answer_passes(exercise_id, capsys):
    result = check(exercise_id, CORRECT[exercise_id], strict=True)
    assert result and result.status == "correct"
    assert capsys.readouterr().out.startswith(f"✔ {exercise_id}")


@pytest.mark.parametrize("exercise_id, answer, message", WRONG, ids=[f"{w[0]}-{i}" for i, w in enumerate(WRONG)])
def test_wrong_answer_gets_its_own_message(exercise_id, answer, message, capsys):
    result = check(exercise_id, answer)
    out = capsys.readouterr().out
    assert not result and result.status == "wrong"
    assert message in " ".join(result.message.split()), result.message
    assert out.startswith(f"✘ {exercise_id}")


def test_strict_raises_for_a_wrong_answer_with_the_message():
    with pytest.raises(ExerciseFailed, match="not shifted by one"):
        check("05.collate", _collate_not_shifted, strict=True, quiet=True)


def _stub(*args):
    raise NotImplementedError  # your code


class _StubLoRA(LinearWithLoRA):
    def forward(self, x):
        raise NotImplementedError


@pytest.mark.parametrize("exercise_id", list(CORRECT))
def test_unanswered_prints_the_task_and_does_not_raise(exercise_id, capsys):
    stub = _StubLoRA if exercise_id == "06.lora_forward" else _stub if callable(CORRECT[exercise_id]) else ...
    result = check(exercise_id, stub)
    out = capsys.readouterr().out
    assert result.status == "unanswered" and not result
    assert "waiting for your answer" in out
    assert exercises.get_exercise(exercise_id).task in " ".join(out.split())
    with pytest.raises(ExerciseFailed):
        check(exercise_id, None, strict=True, quiet=True)


def test_an_error_in_the_learners_code_is_feedback_not_a_crash(capsys):
    result = check("01.perplexity", lambda loss: undefined_name)  # noqa: F821
    assert result.status == "wrong"
    assert "raised NameError" in capsys.readouterr().out


def test_a_wrong_value_is_located_when_no_known_slip_matches():
    result = check("04.last_token", lambda out: out[:, -1, :] + (torch.arange(out.shape[-1]) == 1), quiet=True)
    assert "values differ: at index (0, 1)" in " ".join(result.message.split())


def test_a_forgotten_return_is_named(capsys):
    result = check("01.cross_entropy", lambda logits, targets: None)
    assert "forget to `return`" in " ".join(result.message.split())


def test_hint_prints_a_hint_without_code(capsys):
    hint("02.train_step")
    out = capsys.readouterr().out
    assert out.startswith("Hint for 02.train_step") and "zero_grad()" not in out and "backward" in out


def test_unknown_id_lists_the_exercises():
    with pytest.raises(UnknownExercise) as err:
        check("02.train", print)
    text = str(err.value)
    assert "Did you mean '02.train_step'?" in text
    assert all(name in text for name in exercises.EXERCISES)
    with pytest.raises(UnknownExercise):
        hint("07.nothing")


def test_the_learners_random_generators_are_untouched():
    runtime.set_seed(5)
    expected = (torch.rand(3), np.random.rand(), random.random())
    runtime.set_seed(5)
    check("02.same_seed", CORRECT["02.same_seed"], quiet=True)   # seeds inside, and draws a lot
    check("01.cross_entropy", CORRECT["01.cross_entropy"], quiet=True)
    assert torch.equal(torch.rand(3), expected[0])
    assert np.random.rand() == expected[1] and random.random() == expected[2]


def test_fresh_inputs_each_time_but_a_seed_repeats_them():
    seen = []
    check("01.target_probas", lambda logits, t: seen.append(logits) or _target_probas(logits, t), quiet=True)
    check("01.target_probas", lambda logits, t: seen.append(logits) or _target_probas(logits, t), quiet=True)
    check("01.target_probas", lambda logits, t: seen.append(logits) or _target_probas(logits, t), quiet=True, seed=1)
    check("01.target_probas", lambda logits, t: seen.append(logits) or _target_probas(logits, t), quiet=True, seed=1)
    per_call = len(seen) // 4
    assert not torch.equal(seen[0], seen[per_call])
    assert torch.equal(seen[2 * per_call], seen[3 * per_call])


def test_the_checked_objects_are_copies_where_the_learner_might_change_them():
    """A learner's function that writes into its inputs cannot change the reference it is compared with."""
    def scribble(targets, prompt_lengths):
        out = _mask_prompt(targets, prompt_lengths)
        targets.fill_(7)
        return out

    assert check("05.mask_prompt", scribble, quiet=True)


def test_the_result_shows_nothing_more_in_a_notebook():
    result = check("06.b_zero", "a", quiet=True)
    assert result._ipython_display_() is None and repr(result) == "Result('06.b_zero', 'correct')"
    assert copy.copy(result).passed

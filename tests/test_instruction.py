"""Lecture 05 data path: prompt format, split, dataset, collate, response extraction and generation."""

from __future__ import annotations

import json

import pytest
import torch
from torch.utils.data import DataLoader

from helpers import instruction as ins
from helpers.tokenizer import get_tokenizer
from helpers.training import rng_state

P = 50256  # end-of-text, the padding token
X = -100  # ignore_index

PREAMBLE = (
    "Below is an instruction that describes a task. Write a response that appropriately completes the request."
)
WITH_INPUT = {"instruction": "Rewrite the sentence in passive voice.", "input": "The chef cooks the meal every day.",
              "output": "The meal is cooked by the chef every day."}
WITHOUT_INPUT = {"instruction": "Name an antonym for 'happiness.'", "input": "",
                 "output": "An antonym for 'happiness' is 'sadness.'"}


# --------------------------------------------------------------------------- format and split


def test_format_input_with_input():
    assert ins.format_input(WITH_INPUT) == (
        PREAMBLE
        + "\n\n### Instruction:\nRewrite the sentence in passive voice."
        + "\n\n### Input:\nThe chef cooks the meal every day."
    )


def test_format_input_without_input_has_no_input_section():
    text = ins.format_input(WITHOUT_INPUT)
    assert text == PREAMBLE + "\n\n### Instruction:\nName an antonym for 'happiness.'"
    assert "### Input:" not in text


def test_format_response_and_example():
    assert ins.format_response(WITH_INPUT) == "\n\n### Response:\nThe meal is cooked by the chef every day."
    assert ins.format_example(WITH_INPUT) == ins.format_input(WITH_INPUT) + ins.format_response(WITH_INPUT)


def test_real_data_loads_and_splits_935_110_55():
    data = ins.load_instruction_data()
    assert len(data) == 1100
    assert all(set(e) == {"instruction", "input", "output"} for e in data)
    splits = ins.split_data(data)
    train, test, val = splits  # the course's order
    assert (len(train), len(test), len(val)) == (935, 110, 55)
    assert (splits.train, splits.test, splits.val) == (train, test, val)
    assert train + test + val == data  # contiguous, in file order, nothing lost
    # The lecture's "before finetuning" example is the first validation entry.
    assert val[0]["instruction"] == "Convert the active sentence to passive: 'The chef cooks the meal every day.'"
    assert test[0]["instruction"] == "Rewrite the sentence using a simile."


def test_split_data_other_fractions_and_errors():
    parts = ins.split_data(list(range(20)), train_frac=0.5, test_frac=0.25)
    assert parts == ([*range(10)], [*range(10, 15)], [*range(15, 20)])
    with pytest.raises(ValueError, match="train_frac"):
        ins.split_data(list(range(20)), train_frac=0.9, test_frac=0.2)


# --------------------------------------------------------------------------- collate

BATCH = [[1, 2, 3, 4, 5], [6, 7], [8, 9, 10]]


def test_collate_pads_shifts_and_masks_all_but_first_pad():
    inputs, targets = ins.custom_collate_fn(BATCH)
    assert inputs.tolist() == [
        [1, 2, 3, 4, 5],
        [6, 7, P, P, P],
        [8, 9, 10, P, P],
    ]
    assert targets.tolist() == [
        [2, 3, 4, 5, P],
        [7, P, X, X, X],
        [9, 10, P, X, X],
    ]
    assert inputs.dtype == targets.dtype == torch.long


def test_collate_custom_pad_and_ignore_values():
    inputs, targets = ins.custom_collate_fn([[1, 2], [3]], pad_token_id=0, ignore_index=-1)
    assert inputs.tolist() == [[1, 2], [3, 0]]
    assert targets.tolist() == [[2, 0], [0, -1]]


def test_collate_truncates_to_allowed_max_length():
    inputs, targets = ins.custom_collate_fn(BATCH, allowed_max_length=3)
    assert inputs.tolist() == [[1, 2, 3], [6, 7, P], [8, 9, 10]]
    assert targets.tolist() == [[2, 3, 4], [7, P, X], [9, 10, P]]


def test_collate_masks_prompt_targets():
    # prompt lengths 2, 1 and 3: the first (length - 1) targets are prompt tokens.
    batch = [(BATCH[0], 2), (BATCH[1], 1), (BATCH[2], 3)]
    inputs, targets = ins.custom_collate_fn(batch, mask_prompt=True)
    assert inputs.tolist() == [[1, 2, 3, 4, 5], [6, 7, P, P, P], [8, 9, 10, P, P]]
    assert targets.tolist() == [
        [X, 3, 4, 5, P],
        [7, P, X, X, X],
        [X, X, P, X, X],
    ]
    # Without mask_prompt the lengths are ignored and the result is the plain one.
    assert [t.tolist() for t in ins.custom_collate_fn(batch)] == [t.tolist() for t in ins.custom_collate_fn(BATCH)]


def test_collate_keeps_end_of_text_inside_a_text():
    # Padding is found by position, so a real end-of-text token in a sequence remains a target.
    _, targets = ins.custom_collate_fn([[1, P, 2], [3]])
    assert targets.tolist() == [[P, 2, P], [P, X, X]]


def test_collate_errors():
    with pytest.raises(ValueError, match="with_prompt_length=True"):
        ins.custom_collate_fn(BATCH, mask_prompt=True)
    with pytest.raises(ValueError, match="empty"):
        ins.custom_collate_fn([])


def test_make_collate_fn_fills_in_options():
    collate = ins.make_collate_fn(device="cpu", allowed_max_length=2)
    inputs, targets = collate(BATCH)
    assert inputs.tolist() == [[1, 2], [6, 7], [8, 9]]
    assert targets.tolist() == [[2, 3], [7, P], [9, 10]]


# --------------------------------------------------------------------------- dataset


def test_dataset_tokenizes_prompt_plus_response():
    tok = get_tokenizer()
    data = [WITH_INPUT, WITHOUT_INPUT]
    ds = ins.InstructionDataset(data, tok)
    assert len(ds) == 2
    for i, entry in enumerate(data):
        assert isinstance(ds[i], list)
        assert tok.decode(ds[i]) == ins.format_example(entry)
        assert tok.decode(ds[i][: ds.prompt_lengths[i]]) == ins.format_input(entry)

    ds_len = ins.InstructionDataset(data, tok, with_prompt_length=True)
    ids, prompt_length = ds_len[0]
    assert ids == ds[0] and prompt_length == ds.prompt_lengths[0]


def test_masked_batch_trains_only_on_response_and_end_of_text():
    tok = get_tokenizer()
    data = [WITH_INPUT, WITHOUT_INPUT]
    ds = ins.InstructionDataset(data, tok, with_prompt_length=True)
    loader = DataLoader(ds, batch_size=2, shuffle=False, collate_fn=ins.make_collate_fn(mask_prompt=True))
    inputs, targets = next(iter(loader))
    assert inputs.shape == targets.shape == (2, max(len(ds[i][0]) for i in range(2)))
    for row, entry in zip(targets, data, strict=True):
        kept = row[row != X].tolist()
        assert tok.decode(kept) == ins.format_response(entry) + "<|endoftext|>"


def test_instruction_loaders_shuffle_repeatably_truncate_and_mask():
    tok = get_tokenizer()
    train = [dict(WITH_INPUT, output=f"Answer number {i}.") for i in range(10)]
    val = [WITH_INPUT, WITHOUT_INPUT, WITH_INPUT]

    def first_batches(**options):
        train_loader, val_loader = ins.create_instruction_loaders(train, val, tok, batch_size=4, **options)
        return train_loader, val_loader, next(iter(train_loader)), next(iter(val_loader))

    train_loader, val_loader, (x, y), (vx, _) = first_batches(seed=1)
    assert len(train_loader) == 2 and len(val_loader) == 1  # 10 // 4 (last incomplete batch dropped); 3 in one
    assert isinstance(train_loader.dataset, ins.InstructionDataset) and train_loader.dataset.data is train
    torch.manual_seed(0)  # the training order comes from the loader's own generator, not the global one
    assert torch.equal(first_batches(seed=1)[2][0], x)
    assert any(not torch.equal(first_batches(seed=s)[2][0], x) for s in (2, 3, 4))
    expected_val, _ = ins.custom_collate_fn([ins.InstructionDataset(val, tok)[i] for i in range(3)])
    assert torch.equal(vx, expected_val)  # validation in file order, every entry
    _, _, (x, y), _ = first_batches(allowed_max_length=20)
    assert x.shape == y.shape == (4, 20)
    _, val_loader, _, _ = first_batches(mask_prompt=True)
    _, targets = next(iter(val_loader))
    kept = targets[1][targets[1] != X].tolist()
    assert tok.decode(kept) == ins.format_response(WITHOUT_INPUT) + "<|endoftext|>"


# --------------------------------------------------------------------------- batching by length


def epoch_batches(sampler, epochs=1):
    return [[list(batch) for batch in sampler] for _ in range(epochs)]


def wide_lengths(n=203, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.randint(5, 400, (n,), generator=g).tolist()


@pytest.mark.parametrize("n, drop_last", [(200, True), (203, True), (203, False)])
def test_length_grouped_batches_use_every_example_once_per_epoch(n, drop_last):
    sampler = ins.LengthGroupedBatchSampler(wide_lengths(n), 8, drop_last=drop_last, pool_batches=4, seed=1)
    assert len(sampler) == (n // 8 if drop_last else -(-n // 8))
    for batches in epoch_batches(sampler, 3):
        assert len(batches) == len(sampler)
        used = [i for batch in batches for i in batch]
        assert len(used) == len(set(used))                       # nothing twice
        assert len(used) == (n - n % 8 if drop_last else n)       # the dropped rest: fewer than one batch
        assert sorted(len(b) for b in batches)[1:] == [8] * (len(batches) - 1)  # at most one short batch
        if not drop_last:
            assert sorted(used) == list(range(n))


def test_length_grouped_batches_pad_less_than_random_batches():
    lengths = wide_lengths(400)
    torch.manual_seed(0)
    random_batches = torch.utils.data.BatchSampler(torch.utils.data.RandomSampler(range(400)), 8, drop_last=True)
    plain = ins.count_padding(random_batches, lengths)
    grouped = ins.count_padding(ins.LengthGroupedBatchSampler(lengths, 8, pool_batches=10, seed=0), lengths)
    whole = ins.count_padding(ins.LengthGroupedBatchSampler(lengths, 8, pool_batches=None, seed=0), lengths)
    assert plain["batches"] == grouped["batches"] == 50 and plain["real"] + plain["padding"] == plain["total"]
    assert grouped["padding"] < plain["padding"] / 4
    assert whole["padding"] <= grouped["padding"]
    assert ins.count_padding([[0, 1], [2]], [3, 5, 2]) == {
        "batches": 2, "real": 10, "padding": 2, "total": 12, "padding_fraction": 2 / 12}


def test_length_grouped_batches_are_seeded_and_change_from_epoch_to_epoch():
    lengths = wide_lengths(120)

    def run(seed):
        return epoch_batches(ins.LengthGroupedBatchSampler(lengths, 4, seed=seed), 2)

    first, second = run(7)
    assert run(7) == [first, second]                               # the same seed: the same epochs
    assert first != second                                         # a new order every epoch ...
    assert {tuple(b) for b in first} != {tuple(b) for b in second}  # ... and new neighbours
    assert run(8)[0] != first
    torch.manual_seed(3)                                           # seed=None: the global generator
    from_global = run(None)
    torch.manual_seed(3)
    assert run(None) == from_global
    after_two_epochs = torch.rand(1)
    torch.manual_seed(3)
    for _ in range(2):                                             # one number per epoch, as RandomSampler draws
        torch.empty((), dtype=torch.int64).random_()
    assert torch.equal(torch.rand(1), after_two_epochs)


def test_instruction_loaders_can_group_by_length():
    tok = get_tokenizer()
    train = [dict(WITH_INPUT, output="Yes. " * (1 + i % 7 * 9)) for i in range(30)]
    options = {"batch_size": 4, "seed": 2, "allowed_max_length": 80}
    plain, _ = ins.create_instruction_loaders(train, [WITH_INPUT], tok, **options)
    grouped, val = ins.create_instruction_loaders(train, [WITH_INPUT], tok, group_by_length=True, **options)
    assert len(grouped) == len(plain) == 7 and len(val) == 1
    assert isinstance(grouped.batch_sampler, ins.LengthGroupedBatchSampler)
    lengths = ins.example_lengths(grouped.dataset, 80)
    assert max(lengths) == 80 and min(lengths) < 80
    shapes = [x.shape[1] for x, _ in grouped]
    assert len(shapes) == 7 and max(shapes) == 80
    assert sum(shapes) < sum(x.shape[1] for x, _ in plain)
    assert len(rng_state(grouped)["loader"]) == 1                  # a resumed run gets the sampler's generator back
    default, _ = ins.create_instruction_loaders(train, [WITH_INPUT], tok, batch_size=4)
    assert type(default.batch_sampler) is torch.utils.data.BatchSampler  # off by default: the course's loader


@pytest.mark.parametrize("kwargs, message", [
    ({"batch_size": 0}, "batch_size must be a whole number >= 1"),
    ({"pool_batches": 0}, "pool_batches must be a whole number >= 1 or None"),
    ({"seed": 1.5}, "seed must be an int or None"),
    ({"lengths": [3, -1, 4]}, "entry 1 is -1"),
    ({"lengths": [3, 4]}, "2 examples make no batch of 4 .an incomplete batch is dropped."),
    ({"lengths": []}, "0 examples make no batch of 4"),
])
def test_length_grouped_sampler_refuses_bad_input(kwargs, message):
    arguments = {"lengths": [5] * 10, "batch_size": 4, **kwargs}
    with pytest.raises(ValueError, match=message):
        ins.LengthGroupedBatchSampler(arguments.pop("lengths"), arguments.pop("batch_size"), **arguments)


# --------------------------------------------------------------------------- responses

PROMPT = ins.format_input(WITH_INPUT)


@pytest.mark.parametrize(
    "generated, expected",
    [
        (PROMPT + "\n\n### Response:\nThe meal is cooked by the chef every day.", "The meal is cooked by the chef every day."),
        (PROMPT + "\nThe meal is cooked.  \n", "The meal is cooked."),  # marker left out
        (PROMPT + "\n\n### Response:\n### Response:\nCooked it is.", "Cooked it is."),  # marker repeated
        (PROMPT + "\n\n### Response:\nThe meal is cooked.\n\n### Instruction:\nAnother task", "The meal is cooked."),
        (PROMPT + "\n\n### Response:\nDone.\n\n" + PROMPT, "Done."),  # the model repeats the prompt after answering
        (PROMPT + "\n\n### Response:\n" + PROMPT, ""),  # the model only repeats the prompt: no answer
        (PROMPT + "\n\n### Response:\nDone.<|endoftext|>junk", "Done."),
        ("garbled start\n\n### Response:\nStill found.", "Still found."),  # prompt not at the start
    ],
)
def test_extract_response(generated, expected):
    assert ins.extract_response(generated, PROMPT) == expected


def test_generate_test_responses_stores_and_saves_json(tmp_path, monkeypatch):
    calls = []

    def fake_respond(model, tokenizer, entry, device, max_new_tokens=256, context_size=None):
        calls.append((max_new_tokens, context_size))
        return ins.Response("answer to " + entry["instruction"], entry is entries[0], 3)

    monkeypatch.setattr(ins, "respond", fake_respond)
    entries = [dict(WITH_INPUT), dict(WITHOUT_INPUT)]
    path = tmp_path / "out" / "responses.json"
    result = ins.generate_test_responses(None, None, entries, "cpu", max_new_tokens=7, context_size=9,
                                         path=path, progress=False)
    assert result is entries
    assert [e["model_response"] for e in entries] == ["answer to " + e["instruction"] for e in entries]
    assert [e["model_response_ended"] for e in entries] == [True, False]
    assert calls == [(7, 9), (7, 9)]
    assert json.loads(path.read_text(encoding="utf-8")) == entries
    assert [p.name for p in path.parent.iterdir()] == ["responses.json"]  # no .part file left


class ScriptedModel(torch.nn.Module):
    """Predicts a fixed continuation of a prompt of known length, then end-of-text, greedily."""

    def __init__(self, prompt_length: int, script: list[int], vocab_size: int = 50257):
        super().__init__()
        self.prompt_length, self.script, self.vocab_size = prompt_length, script, vocab_size
        self.dummy = torch.nn.Parameter(torch.zeros(1))

    def forward(self, idx, *args, **kwargs):
        b, t = idx.shape
        k = t - self.prompt_length
        nxt = self.script[k] if k < len(self.script) else P
        logits = torch.zeros(b, t, self.vocab_size)
        logits[:, -1, nxt] = 10.0
        return logits


def test_generate_response_stops_at_end_of_text_and_extracts():
    import helpers.generation  # noqa: F401  (must exist: the test exercises it)
    tok = get_tokenizer()
    prompt_ids = tok.encode(PROMPT)
    script = tok.encode("\n\n### Response:\nThe meal is cooked by the chef every day.")
    model = ScriptedModel(len(prompt_ids), script)
    model.train()
    out = ins.generate_response(model, tok, WITH_INPUT, "cpu", max_new_tokens=50, context_size=1024)
    assert out == "The meal is cooked by the chef every day."
    assert model.training  # handed back in the mode it came in
    response = ins.respond(model, tok, WITH_INPUT, "cpu", max_new_tokens=50, context_size=1024)
    assert response == ins.Response(out, True, len(script) + 1)  # the end-of-text token counts as written


def test_respond_says_when_the_model_ran_out_of_tokens():
    """A model that has not learned to stop writes until max_new_tokens: not ended, however the text reads."""
    tok = get_tokenizer()
    prompt_ids = tok.encode(PROMPT)
    script = tok.encode("\n\n### Response:\nThe meal is cooked by the chef every day.")
    model = ScriptedModel(len(prompt_ids), script)
    response = ins.respond(model, tok, WITH_INPUT, "cpu", max_new_tokens=len(script), context_size=1024)
    assert response == ins.Response("The meal is cooked by the chef every day.", False, len(script))
    cut = ins.respond(model, tok, WITH_INPUT, "cpu", max_new_tokens=6, context_size=1024)
    assert not cut.ended and cut.new_tokens == 6


# --------------------------------------------------------------------------- bad entries (issue 15)


@pytest.mark.parametrize("entry, problem", [
    ({"input": "", "output": "y"}, "lacks the key 'instruction'"),
    ({"instruction": "x", "input": ""}, "lacks the key 'output'"),
    ({"instruction": 3, "output": "y"}, "holds a int under 'instruction'"),
    ({"instruction": "x", "input": ["a"], "output": "y"}, "holds a list under 'input'"),
    ({"instruction": "x", "output": None}, "holds a NoneType under 'output'"),
    ("just a string", "is a str, not a dict"),
], ids=["no-instruction", "no-output", "int-instruction", "list-input", "none-output", "not-a-dict"])
def test_bad_entries_name_the_index_and_key(entry, problem):
    data = [WITH_INPUT, WITHOUT_INPUT, entry]
    with pytest.raises(ValueError, match=f"Entry 2 of the data {problem}"):
        ins.InstructionDataset(data, get_tokenizer())
    with pytest.raises(ValueError, match=f"Entry 2 of the data {problem}"):
        ins.create_instruction_loaders(data, [WITH_INPUT], get_tokenizer(), batch_size=1)


def test_single_entries_and_lists_are_checked_too():
    with pytest.raises(ValueError, match="The entry lacks the key 'instruction'"):
        ins.format_input({"output": "y"})
    with pytest.raises(ValueError, match="The entry lacks the key 'output'"):
        ins.format_response({"instruction": "x"})
    assert ins.format_input({"instruction": "x", "input": None}).endswith("x")  # no input: fine
    with pytest.raises(TypeError, match="list of entries"):
        ins.InstructionDataset({"instruction": "x", "output": "y"}, get_tokenizer())
    with pytest.raises(ValueError, match="Entry 1 of entries lacks the key 'instruction'"):
        ins.generate_test_responses(None, get_tokenizer(), [WITH_INPUT, {"output": "y"}], "cpu", progress=False)


def test_the_data_file_itself_is_checked(monkeypatch):
    monkeypatch.setattr(ins, "read_text", lambda name: json.dumps([WITH_INPUT, {"instruction": "x", "output": "y"}]))
    with pytest.raises(ValueError, match="Entry 1 of instruction-data.json lacks the key 'input'"):
        ins.load_instruction_data()


def test_loaders_without_batches_and_bad_lengths_are_refused():
    with pytest.raises(ValueError, match="train_data has 2 entries, fewer than batch_size=8"):
        ins.create_instruction_loaders([WITH_INPUT, WITHOUT_INPUT], [WITH_INPUT], get_tokenizer(), batch_size=8)
    with pytest.raises(ValueError, match="val_data is empty"):
        ins.create_instruction_loaders([WITH_INPUT], [], get_tokenizer(), batch_size=1)
    with pytest.raises(ValueError, match="allowed_max_length must be at least 1"):
        ins.custom_collate_fn([[1, 2, 3]], allowed_max_length=0)

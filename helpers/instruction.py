"""Instruction finetuning data (lecture 05): Alpaca prompts, padded batches, and extracting responses.

The path from a JSON entry to a training batch:

1. :func:`format_input` writes an entry's instruction (and input, if any) as an Alpaca-style prompt;
   :func:`format_response` writes the answer the model should learn to continue with.
2. :class:`InstructionDataset` tokenizes prompt + response once per entry.
3. :func:`custom_collate_fn` pads a batch to a common length and builds the shifted targets, with
   the padding (all but one end-of-text token) replaced by ``-100`` so the loss ignores it.

:func:`create_instruction_loaders` puts steps 2 and 3 together into the training and validation loaders.
With ``group_by_length=True`` its training loader batches examples of similar length together
(:class:`LengthGroupedBatchSampler`), which wastes less compute on padding; :func:`count_padding`
counts how much.

After finetuning, :func:`generate_response` writes the model's answer to an entry (:func:`respond` also
says whether the model ended it with the end-of-text token) and :func:`extract_response` cuts the answer out
of the generated text.
"""

from __future__ import annotations

import functools
import json
import re
from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path
from typing import NamedTuple

import torch
from torch.utils.data import DataLoader, Dataset, Sampler
from tqdm.auto import tqdm

from .data import read_text
from .files import atomic_write_json
from .generation import generate
from .model import context_length
from .tokenizer import END_OF_TEXT, END_OF_TEXT_ID

PREAMBLE = (
    "Below is an instruction that describes a task. "
    "Write a response that appropriately completes the request."
)
INSTRUCTION_MARKER = "### Instruction:"
INPUT_MARKER = "### Input:"
RESPONSE_MARKER = "### Response:"
IGNORE_INDEX = -100  # the target value torch.nn.functional.cross_entropy skips by default


# --------------------------------------------------------------------------- the data

ENTRY_KEYS = ("instruction", "input", "output")


def entry_problem(entry, keys=("instruction", "output")) -> str | None:
    """What is wrong with one entry, or None: it must be a dict holding ``keys``, with text values (lecture 05).

    ``input`` may also be missing or None (no input); every other value present must be a str.
    """
    if not isinstance(entry, dict):
        return f"is a {type(entry).__name__}, not a dict with the keys {list(ENTRY_KEYS)}"
    for key in keys:
        if key not in entry:
            return f"lacks the key {key!r}"
    for key in ENTRY_KEYS:
        value = entry.get(key)
        if key in entry and not isinstance(value, str) and not (key == "input" and value is None):
            return f"holds a {type(value).__name__} under {key!r}, where text (a str) belongs"
    return None


def check_entries(entries, keys=("instruction", "output"), what: str = "the data") -> None:
    """Raise a clear error for the first bad entry, naming its index and key (lecture 05's data is checked so).

    ``entries`` must be a list of dicts (as ``json.load`` gives); ``keys`` are the keys each must hold.
    """
    if not isinstance(entries, (list, tuple)):
        raise TypeError(f"{what} must be a list of entries (dicts), got a {type(entries).__name__}.")
    for i, entry in enumerate(entries):
        problem = entry_problem(entry, keys)
        if problem is not None:
            shown = repr(entry)
            raise ValueError(f"Entry {i} of {what} {problem}: {shown[:200]}{'...' if len(shown) > 200 else ''}")


def _check_entry(entry, keys) -> None:
    problem = entry_problem(entry, keys)
    if problem is not None:
        raise ValueError(f"The entry {problem}: {repr(entry)[:200]}")


def load_instruction_data() -> list[dict]:
    """Lecture 05's 1,100 entries, each a dict with ``instruction``, ``input`` (often "") and ``output``."""
    entries = json.loads(read_text("instruction-data"))
    check_entries(entries, ENTRY_KEYS, "instruction-data.json")
    return entries


def format_input(entry: dict) -> str:
    """The Alpaca-style prompt: a fixed preamble, the instruction, and the input only when there is one.

    Lecture 05 formats every entry with it; lecture 06 asks its finetuned model through it.

    >>> print(format_input({"instruction": "Add the numbers.", "input": "2 and 3", "output": "5"}))
    Below is an instruction that describes a task. Write a response that appropriately completes the request.
    <BLANKLINE>
    ### Instruction:
    Add the numbers.
    <BLANKLINE>
    ### Input:
    2 and 3
    """
    _check_entry(entry, ("instruction",))
    text = f"{PREAMBLE}\n\n{INSTRUCTION_MARKER}\n{entry['instruction']}"
    if entry.get("input"):
        text += f"\n\n{INPUT_MARKER}\n{entry['input']}"
    return text


def format_response(entry: dict) -> str:
    """The text the model learns to write after the prompt: the response marker, then the output (lecture 05)."""
    _check_entry(entry, ("output",))
    return f"\n\n{RESPONSE_MARKER}\n{entry['output']}"


def format_example(entry: dict) -> str:
    """Prompt and response together: one complete training text of lecture 05."""
    return format_input(entry) + format_response(entry)


class Splits(NamedTuple):
    """The three parts of lecture 05's data, in the course's order: ``train, test, val = split_data(data)``."""

    train: list
    test: list
    val: list


def split_data(data: list, train_frac: float = 0.85, test_frac: float = 0.10) -> Splits:
    """Split ``data`` in file order: the first 85% to train, the next 10% to test, the rest (5%) to val (lecture 05).

    For the lecture's 1,100 entries this gives 935 / 110 / 55, as in the course. The parts are
    returned as a named tuple (``.train``, ``.test``, ``.val``) in that order, so
    ``train_data, test_data, val_data = split_data(data)`` reads as the course does.
    """
    if not (0 < train_frac < 1 and 0 <= test_frac < 1 and train_frac + test_frac <= 1):
        raise ValueError(
            f"Need 0 < train_frac < 1, 0 <= test_frac < 1 and train_frac + test_frac <= 1; "
            f"got train_frac={train_frac}, test_frac={test_frac}."
        )
    n_train = int(len(data) * train_frac)
    n_test = int(len(data) * test_frac)
    return Splits(
        train=data[:n_train],
        test=data[n_train : n_train + n_test],
        val=data[n_train + n_test :],
    )


# --------------------------------------------------------------------------- batching


class InstructionDataset(Dataset):
    """Token ids of each entry's prompt + response, tokenized once when the dataset is built (lecture 05).

    ``dataset[i]`` is a list of token ids. With ``with_prompt_length=True`` it is the pair
    ``(ids, prompt_length)`` instead, where the first ``prompt_length`` ids are the prompt: what
    :func:`custom_collate_fn` needs to mask the prompt out of the loss (``mask_prompt=True``).
    """

    def __init__(self, data: list[dict], tokenizer, with_prompt_length: bool = False):
        check_entries(data, ("instruction", "output"), "the data")
        self.data = data
        self.with_prompt_length = with_prompt_length
        self.encoded_texts: list[list[int]] = []
        self.prompt_lengths: list[int] = []
        for entry in data:
            ids = tokenizer.encode(format_example(entry))
            prompt_ids = tokenizer.encode(format_input(entry))
            self.encoded_texts.append(ids)
            self.prompt_lengths.append(_common_prefix_length(ids, prompt_ids))

    def __len__(self) -> int:
        return len(self.encoded_texts)

    def __getitem__(self, index: int):
        if self.with_prompt_length:
            return self.encoded_texts[index], self.prompt_lengths[index]
        return self.encoded_texts[index]


def _common_prefix_length(a: list[int], b: list[int]) -> int:
    """How many leading ids ``a`` and ``b`` share.

    The prompt is tokenized on its own and compared with the full text: byte-pair encoding could in
    principle merge the last prompt characters with the first response characters into one token,
    and such a token belongs to the response. (For the lecture's data the prompt's ids are always
    an exact prefix.)
    """
    n = 0
    for x, y in zip(a, b, strict=False):
        if x != y:
            break
        n += 1
    return n


def custom_collate_fn(
    batch,
    pad_token_id: int = END_OF_TEXT_ID,
    ignore_index: int = IGNORE_INDEX,
    allowed_max_length: int | None = None,
    device: str | torch.device = "cpu",
    mask_prompt: bool = False,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Turn a list of token-id sequences of different lengths into ``(inputs, targets)`` tensors (lecture 05).

    Each sequence gets one end-of-text token (``pad_token_id``) appended, then more of them up to
    the longest length in the batch plus one. Inputs are all but the last position, targets all but
    the first (the next-token shift). In the targets, the first end-of-text token of each sequence
    stays, so the model learns to stop; every later padding position becomes ``ignore_index``, which
    the cross-entropy loss skips.

    Padding is recognised by position (everything after the sequence's own tokens), not by value,
    so an end-of-text id inside a text would still be learned from.

    ``allowed_max_length`` truncates inputs and targets to that many positions (the model's
    context length). With ``mask_prompt=True`` the items must be ``(ids, prompt_length)`` pairs
    (``InstructionDataset(..., with_prompt_length=True)``) and the targets that are prompt tokens
    (the first ``prompt_length - 1`` targets) become ``ignore_index`` too: the loss then only
    measures the response.
    """
    if len(batch) == 0:
        raise ValueError("custom_collate_fn got an empty batch.")
    if allowed_max_length is not None and allowed_max_length < 1:
        raise ValueError(f"allowed_max_length must be at least 1 (or None), got {allowed_max_length}.")
    sequences, prompt_lengths = [], []
    for item in batch:
        if isinstance(item, tuple):
            ids, prompt_length = item
        else:
            ids, prompt_length = item, None
        sequences.append([int(t) for t in ids])
        prompt_lengths.append(prompt_length)
    if mask_prompt and any(p is None for p in prompt_lengths):
        raise ValueError(
            "mask_prompt=True needs (ids, prompt_length) pairs; build the dataset with "
            "InstructionDataset(data, tokenizer, with_prompt_length=True)."
        )

    padded_length = max(len(ids) for ids in sequences) + 1  # room for at least one end-of-text token
    inputs_list, targets_list = [], []
    for ids, prompt_length in zip(sequences, prompt_lengths, strict=True):
        padded = ids + [pad_token_id] * (padded_length - len(ids))
        inputs = torch.tensor(padded[:-1])
        targets = torch.tensor(padded[1:])
        # targets[len(ids) - 1] is the first end-of-text token; everything after it is padding.
        targets[len(ids) :] = ignore_index
        if mask_prompt and prompt_length > 1:
            targets[: prompt_length - 1] = ignore_index
        if allowed_max_length is not None:
            inputs, targets = inputs[:allowed_max_length], targets[:allowed_max_length]
        inputs_list.append(inputs)
        targets_list.append(targets)
    return torch.stack(inputs_list).to(device), torch.stack(targets_list).to(device)


def make_collate_fn(
    device: str | torch.device = "cpu",
    allowed_max_length: int | None = 1024,
    mask_prompt: bool = False,
    pad_token_id: int = END_OF_TEXT_ID,
    ignore_index: int = IGNORE_INDEX,
):
    """:func:`custom_collate_fn` with its options filled in, ready for ``DataLoader(collate_fn=...)`` (lecture 05).

    The course's recipe: ``functools.partial(custom_collate_fn, device=device, allowed_max_length=1024)``.
    """
    return functools.partial(
        custom_collate_fn,
        pad_token_id=pad_token_id,
        ignore_index=ignore_index,
        allowed_max_length=allowed_max_length,
        device=device,
        mask_prompt=mask_prompt,
    )



# --------------------------------------------------------------------------- batching by length


def _whole(value) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


class LengthGroupedBatchSampler(Sampler[list[int]]):
    """Batches of examples of similar length, the batches in a random order: less padding (lecture 05).

    :func:`custom_collate_fn` pads every batch to its longest example, so a batch that mixes a short
    and a long example spends most of its compute on padding. Each epoch this sampler

    1. shuffles all example indices (and, with ``drop_last``, leaves out the last ``len % batch_size``
       of that random order, as a shuffling ``DataLoader`` with ``drop_last=True`` leaves out a random
       incomplete batch);
    2. cuts the shuffled indices into pools of ``pool_batches * batch_size`` examples and sorts each
       pool by length (ties keep their random order), so neighbours have similar lengths;
    3. cuts each sorted pool into batches and shuffles the order of all the epoch's batches.

    Every example therefore appears at most once per epoch (exactly once when ``drop_last`` is False
    or the batch size divides the number of examples), and which examples share a batch changes from
    epoch to epoch. Smaller pools mix more, larger ones pad less; ``pool_batches=None`` sorts the whole
    epoch at once.

    Random numbers: with ``seed=None`` each epoch draws one number from PyTorch's global generator (as
    ``DataLoader(shuffle=True)`` does), so ``torch.manual_seed`` before training fixes the order; with
    a ``seed``, the sampler's own ``generator`` is seeded once and moves on with every epoch.
    ``lengths`` are the examples' lengths in tokens (cut to the longest allowed length, if any).
    """

    def __init__(self, lengths: Sequence[int], batch_size: int, *, drop_last: bool = True,
                 pool_batches: int | None = 32, seed: int | None = None):
        if not _whole(batch_size) or batch_size < 1:
            raise ValueError(f"batch_size must be a whole number >= 1, got {batch_size!r}.")
        if pool_batches is not None and (not _whole(pool_batches) or pool_batches < 1):
            raise ValueError(f"pool_batches must be a whole number >= 1 or None (sort the whole epoch), "
                             f"got {pool_batches!r}.")
        if seed is not None and not _whole(seed):
            raise ValueError(f"seed must be an int or None, got {seed!r}.")
        lengths = list(lengths)
        bad = next((i for i, n in enumerate(lengths) if not _whole(n) or n < 0), None)
        if bad is not None:
            raise ValueError(f"lengths must be whole numbers >= 0; entry {bad} is {lengths[bad]!r}.")
        if not lengths or (drop_last and len(lengths) < batch_size):
            raise ValueError(f"{len(lengths)} examples make no batch of {batch_size}"
                             f"{' (an incomplete batch is dropped)' if drop_last else ''}.")
        self.lengths, self.batch_size, self.drop_last = lengths, batch_size, drop_last
        self.pool_batches, self.seed = pool_batches, seed
        self.generator = None if seed is None else torch.Generator().manual_seed(seed)

    def __len__(self) -> int:
        n, b = len(self.lengths), self.batch_size
        return n // b if self.drop_last else -(-n // b)

    def __iter__(self) -> Iterator[list[int]]:
        generator = self.generator
        if generator is None:  # one draw from the global generator, as torch's RandomSampler makes
            generator = torch.Generator().manual_seed(int(torch.empty((), dtype=torch.int64).random_().item()))
        order = torch.randperm(len(self.lengths), generator=generator).tolist()
        if self.drop_last:
            order = order[: len(self) * self.batch_size]
        pool = len(order) if self.pool_batches is None else self.pool_batches * self.batch_size
        batches = []
        for start in range(0, len(order), pool):
            ranked = sorted(order[start : start + pool], key=self.lengths.__getitem__)  # stable: ties stay random
            batches += [ranked[i : i + self.batch_size] for i in range(0, len(ranked), self.batch_size)]
        for k in torch.randperm(len(batches), generator=generator).tolist():
            yield batches[k]


def example_lengths(dataset: InstructionDataset, allowed_max_length: int | None = None) -> list[int]:
    """Each example's length in tokens as a batch holds it: cut to ``allowed_max_length`` (lecture 05)."""
    cap = allowed_max_length if allowed_max_length is not None else float("inf")
    return [min(len(ids), cap) for ids in dataset.encoded_texts]


def count_padding(batches: Iterable[Sequence[int]], lengths: Sequence[int]) -> dict:
    """How many of the positions in ``batches`` hold real tokens and how many padding (lecture 05).

    ``batches`` are lists of example indices (a loader's ``batch_sampler``, or any list of them) and
    ``lengths`` the examples' lengths (:func:`example_lengths`). A batch is as long as its longest
    example, as :func:`custom_collate_fn` pads the inputs: an example of n tokens fills n positions of
    its row, the rest of the row is padding. Returns ``batches``, ``real``, ``padding`` and ``total``
    positions and ``padding_fraction``.
    """
    n_batches = real = total = 0
    for batch in batches:
        sizes = [lengths[i] for i in batch]
        if not sizes:
            raise ValueError("count_padding got an empty batch.")
        n_batches += 1
        real += sum(sizes)
        total += max(sizes) * len(sizes)
    return {"batches": n_batches, "real": real, "padding": total - real, "total": total,
            "padding_fraction": (total - real) / total if total else 0.0}



class InstructionLoaders(NamedTuple):
    """Lecture 05's loaders, in the course's order: ``train_loader, val_loader = create_instruction_loaders(...)``."""

    train: DataLoader
    val: DataLoader


def create_instruction_loaders(
    train_data: list[dict],
    val_data: list[dict],
    tokenizer,
    batch_size: int = 8,
    *,
    device: str | torch.device = "cpu",
    allowed_max_length: int | None = 1024,
    mask_prompt: bool = False,
    num_workers: int = 0,
    seed: int | None = None,
    group_by_length: bool = False,
    pool_batches: int | None = 32,
) -> InstructionLoaders:
    """The training and validation loaders of lecture 05: :class:`InstructionDataset` batched by
    :func:`custom_collate_fn` (through :func:`make_collate_fn`, with these options).

    The training loader shuffles and drops a last incomplete batch; the validation loader keeps the
    order and every entry. As in the course, the training order is drawn from PyTorch's global random
    generator each time the loader is iterated, so ``torch.manual_seed(123)`` (``runtime.set_seed``)
    right before training fixes it, and it is the course's order for the same data. With ``seed``,
    the loader shuffles with its own generator seeded with it instead: the same order whatever else
    drew random numbers before, but no longer the course's.

    ``group_by_length=True`` batches the training examples by length instead
    (:class:`LengthGroupedBatchSampler` with ``pool_batches`` and ``seed``; the same number of batches,
    the last incomplete one dropped), so that less of each batch is padding. Off by default: the
    batches then differ from the course's, and so do the losses.

    ``allowed_max_length`` should not exceed the model's context length. With ``mask_prompt=True`` the
    datasets carry the prompt lengths the collate function needs to mask the prompt. Each loader's
    ``.dataset`` is its :class:`InstructionDataset`.
    """
    if batch_size < 1:
        raise ValueError(f"batch_size must be at least 1, got {batch_size}.")
    if len(train_data) < batch_size:
        raise ValueError(f"train_data has {len(train_data)} entries, fewer than batch_size={batch_size}: the training "
                         f"loader drops an incomplete batch, so it would have no batches at all. Use a smaller batch_size.")
    if len(val_data) == 0:
        raise ValueError("val_data is empty: the validation loader would have no batches.")
    collate = make_collate_fn(device=device, allowed_max_length=allowed_max_length, mask_prompt=mask_prompt)
    train_set = InstructionDataset(train_data, tokenizer, with_prompt_length=mask_prompt)
    val_set = InstructionDataset(val_data, tokenizer, with_prompt_length=mask_prompt)
    if group_by_length:
        sampler = LengthGroupedBatchSampler(example_lengths(train_set, allowed_max_length), batch_size,
                                            drop_last=True, pool_batches=pool_batches, seed=seed)
        train_loader = DataLoader(train_set, batch_sampler=sampler, collate_fn=collate, num_workers=num_workers)
    else:
        generator = None if seed is None else torch.Generator().manual_seed(seed)
        train_loader = DataLoader(train_set, batch_size=batch_size, collate_fn=collate, shuffle=True,
                                  drop_last=True, num_workers=num_workers, generator=generator)
    return InstructionLoaders(
        train_loader,
        DataLoader(val_set, batch_size=batch_size, collate_fn=collate, shuffle=False, drop_last=False,
                   num_workers=num_workers),
    )


# --------------------------------------------------------------------------- responses

# Where a response ends when the model goes on writing: a new prompt section or a new prompt
# (lecture 05 prints these next to extract_response's code).
SECTION_MARKERS = (INSTRUCTION_MARKER, INPUT_MARKER, RESPONSE_MARKER, PREAMBLE)
SECTION_START = re.compile("|".join(re.escape(m) for m in SECTION_MARKERS))
LEADING_RESPONSE_MARKERS = re.compile(rf"^(?:\s*{re.escape(RESPONSE_MARKER)})+")


def extract_response(generated_text: str, input_text: str) -> str:
    """The model's answer inside ``generated_text``, which began with the prompt ``input_text`` (lecture 05).

    Steps: drop the prompt (or, if the text does not start with it, everything up to its last
    occurrence, or else up to the last response marker); stop at an end-of-text token; drop the
    ``### Response:`` marker (also when repeated, and fine when the model left it out); stop where
    the model starts a new prompt section (``### Instruction:`` and friends); trim whitespace.
    """
    text = generated_text
    if input_text and text.startswith(input_text):
        text = text[len(input_text) :]
    elif input_text and input_text in text:
        text = text.rsplit(input_text, 1)[1]
    elif RESPONSE_MARKER in text:
        text = text.rsplit(RESPONSE_MARKER, 1)[1]
    text = text.split(END_OF_TEXT, 1)[0]
    text = LEADING_RESPONSE_MARKERS.sub("", text)
    match = SECTION_START.search(text)
    if match:
        text = text[: match.start()]
    return text.strip()


class Response(NamedTuple):
    """One generated answer of lecture 05: what :func:`respond` returns."""

    text: str        #: the answer, cut out of the generated text by :func:`extract_response`
    ended: bool      #: True when the model wrote the end-of-text token before ``max_new_tokens`` ran out
    new_tokens: int  #: how many tokens the model generated (the end-of-text token included)


def respond(
    model,
    tokenizer,
    entry: dict,
    device: str | torch.device,
    max_new_tokens: int = 256,
    context_size: int | None = None,
) -> Response:
    """Greedy-decode ``model``'s answer to ``entry``'s prompt, stopping at end-of-text (lecture 05).

    Returns a :class:`Response`: the extracted answer, whether the model ended it itself with the
    end-of-text token (a finetuned model has learned to; a base model mostly runs until
    ``max_new_tokens``), and how many tokens it wrote. Lecture 02's generation loop does the decoding.
    ``context_size`` defaults to the model's context length. The model is put in eval mode for the
    generation and given back in the mode it came in.
    """
    if context_size is None:
        context_size = context_length(model)
    input_text = format_input(entry)
    prompt_ids = tokenizer.encode(input_text)
    idx = torch.tensor(prompt_ids, device=device).unsqueeze(0)
    # generate() switches to eval mode and gives the model back in the mode it came in.
    out = generate(
        model, idx, max_new_tokens=max_new_tokens, context_size=context_size,
        temperature=0.0, top_k=None, eos_id=END_OF_TEXT_ID,
    )
    new_ids = out[0, len(prompt_ids) :].tolist()
    ended = END_OF_TEXT_ID in new_ids
    if ended:  # generate() keeps the stop token: the answer is what came before it
        new_ids = new_ids[: new_ids.index(END_OF_TEXT_ID) + 1]
    text = extract_response(input_text + tokenizer.decode(new_ids), input_text)
    return Response(text, ended, len(new_ids))


def generate_response(
    model,
    tokenizer,
    entry: dict,
    device: str | torch.device,
    max_new_tokens: int = 256,
    context_size: int | None = None,
) -> str:
    """Greedy-decode ``model``'s answer to ``entry``'s prompt, stopping at end-of-text (lecture 05).

    The answer's text only: :func:`respond` also says whether the model ended it itself.
    """
    return respond(model, tokenizer, entry, device, max_new_tokens=max_new_tokens, context_size=context_size).text


def generate_test_responses(
    model,
    tokenizer,
    entries: list[dict],
    device: str | torch.device,
    max_new_tokens: int = 256,
    context_size: int | None = None,
    path: str | Path | None = None,
    response_key: str = "model_response",
    progress: bool = True,
) -> list[dict]:
    """Generate a response for every entry, store it under ``entry[response_key]``, and return ``entries``.

    Lecture 05 answers its whole test set with it (with the base model and the finetuned one). Next to
    each response, ``entry[response_key + "_ended"]`` says whether the model ended it with the
    end-of-text token (:attr:`Response.ended`) rather than running out of ``max_new_tokens``. The
    entries are updated in place (as in the course). With ``path``, the list is then written as
    indented JSON, atomically (:func:`helpers.files.atomic_write_json`). Every entry is checked
    before the first is answered.
    """
    check_entries(entries, ("instruction",), "entries")
    for entry in tqdm(entries, desc="Generating responses", disable=not progress):
        response = respond(model, tokenizer, entry, device, max_new_tokens=max_new_tokens, context_size=context_size)
        entry[response_key] = response.text
        entry[f"{response_key}_ended"] = response.ended
    if path is not None:
        atomic_write_json(path, entries, indent=4)
    return entries


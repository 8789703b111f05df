"""Finetuning GPT for classification (lecture 04): SMS spam data, a class head, and its evaluation.

The path from the raw file to a spam classifier:

1. :func:`load_sms_spam` reads the UCI SMS Spam Collection (5,572 messages as the course reads it);
   :func:`create_balanced_dataset` keeps as many ham messages as there are spam (747 each), and
   :func:`random_split` shuffles and splits them 70 / 10 / 20. :func:`prepare_spam_csvs` does all of
   this once and writes ``train.csv``, ``validation.csv`` and ``test.csv``.
2. :class:`SpamDataset` tokenizes each message and pads (or truncates) it to one common length, so
   that messages stack into batches; :func:`create_spam_loaders` makes the three loaders.
3. :func:`add_classification_head` swaps the 50,257-way output layer for a ``num_classes``-way one
   and freezes what should not train.
4. The model still returns one output vector per token. :func:`classifier_logits` keeps one of them
   per message: the last token's (which, thanks to causal attention, is the only one that has seen
   the whole message) or the last real token's before the padding.
5. :func:`calc_loss_batch`, :func:`calc_loss_loader` and :func:`calc_accuracy_loader` measure the
   classifier; :func:`classify_review` labels any new text; :func:`save_classifier` and
   :func:`load_classifier` keep the result.

The label ids come from the data: the class names in sorted order (``ham`` -> 0, ``spam`` -> 1).
"""

from __future__ import annotations

import csv
import json
import os
from collections.abc import Sequence
from pathlib import Path
from typing import NamedTuple

import pandas as pd
import torch
import torch.nn as nn
import torch.nn.functional as F
from torch.utils.data import DataLoader, Dataset

from . import runtime
from .checkpoints import atomic_torch_save, read_torch_file
from .generation import eval_mode
from .model import GPTModel
from .tokenizer import END_OF_TEXT_ID

LABEL_COLUMN = "Label"
TEXT_COLUMN = "Text"
POSITIONS = ("last", "last_non_pad")
TRAINABLE_CHOICES = ("head", "last_block", "all")  # or an int: the number of last blocks to train
FORMAT = "llm-lectures-classifier/1"

# --------------------------------------------------------------------------- the data


def load_sms_spam(all_messages: bool = False) -> pd.DataFrame:
    """The UCI SMS Spam Collection as a DataFrame with columns ``Label`` (``ham``/``spam``) and ``Text``.

    The file has one ``label<TAB>message`` per line, without a header. How the quote character is
    treated changes the count:

    * ``all_messages=False`` (default, as the course reads it): pandas' default CSV quoting. A field
      that starts with ``"`` is read as a quoted field up to the closing quote, and that quote is
      removed. Line 5,082 opens a quote that closes only at the end of line 5,084, so those three ham
      lines become one message: **5,572 messages (4,825 ham, 747 spam)**. This keeps the course's
      numbers (1,494 balanced messages, 1,045 / 149 / 300 split, 120 tokens in the longest training
      message).
    * ``all_messages=True``: ``quoting=csv.QUOTE_NONE``, every line is one message and quotes stay part
      of the text: **5,574 messages (4,827 ham, 747 spam)**. The spam count is the same, so the
      balanced set still has 1,494 messages, but a different ham sample ends up in it.

    The file itself comes from :func:`helpers.data.fetch`, which has checked its SHA-256.
    """
    from .data import fetch  # data imports the download code; only needed here

    path = fetch("sms-spam")
    options = {"quoting": csv.QUOTE_NONE} if all_messages else {}
    df = pd.read_csv(path, sep="\t", header=None, names=[LABEL_COLUMN, TEXT_COLUMN],
                     keep_default_na=False, dtype=str, **options)
    return df


def class_names_of(df: pd.DataFrame) -> list[str]:
    """The class names found in ``df[Label]``, sorted: their positions are the label ids.

    For the SMS data: ``["ham", "spam"]``, so ham is 0 and spam is 1.
    """
    return sorted(df[LABEL_COLUMN].astype(str).unique())


def encode_labels(df: pd.DataFrame, class_names: Sequence[str] | None = None) -> pd.DataFrame:
    """A copy of ``df`` whose ``Label`` column holds the class ids (the index in ``class_names``).

    ``class_names`` defaults to :func:`class_names_of` (``df``). A label missing from ``class_names``
    is an error rather than a silent NaN.
    """
    class_names = list(class_names) if class_names is not None else class_names_of(df)
    to_id = {name: i for i, name in enumerate(class_names)}
    unknown = sorted(set(df[LABEL_COLUMN].astype(str)) - set(to_id))
    if unknown:
        raise ValueError(f"Labels {unknown} are not among the class names {class_names}.")
    out = df.copy()
    out[LABEL_COLUMN] = out[LABEL_COLUMN].astype(str).map(to_id).astype("int64")
    return out


def create_balanced_dataset(df: pd.DataFrame, seed: int = 123) -> pd.DataFrame:
    """Undersample: keep a random ``n`` messages of every class, where ``n`` is the rarest class's count.

    For the SMS data, 747 of the 4,825 ham messages are drawn (``DataFrame.sample`` with
    ``random_state=seed``) and all 747 spam messages kept: 1,494 messages, half of each. A model
    that always answers "ham" now scores 50%, not 87%, so accuracy means something.

    Rows come class by class (in :func:`class_names_of` order); :func:`random_split` shuffles them.
    """
    counts = df[LABEL_COLUMN].value_counts()
    n = int(counts.min())
    parts = []
    for name in class_names_of(df):
        rows = df[df[LABEL_COLUMN].astype(str) == name]
        parts.append(rows.sample(n, random_state=seed) if len(rows) > n else rows)
    return pd.concat(parts)


class SpamSplits(NamedTuple):
    train: pd.DataFrame
    validation: pd.DataFrame
    test: pd.DataFrame


def random_split(df: pd.DataFrame, train_frac: float = 0.7, validation_frac: float = 0.1,
                 seed: int = 123) -> SpamSplits:
    """Shuffle the rows (``random_state=seed``), then cut: the first ``train_frac`` to train, the next
    ``validation_frac`` to validation, the rest to test.

    For 1,494 messages: ``int(1494 * 0.7) = 1045`` / ``int(1494 * 0.1) = 149`` / 300.
    """
    if not (0 < train_frac < 1 and 0 <= validation_frac < 1 and train_frac + validation_frac <= 1):
        raise ValueError(
            f"Need 0 < train_frac < 1, 0 <= validation_frac < 1 and train_frac + validation_frac <= 1; "
            f"got train_frac={train_frac}, validation_frac={validation_frac}."
        )
    df = df.sample(frac=1, random_state=seed).reset_index(drop=True)
    train_end = int(len(df) * train_frac)
    validation_end = train_end + int(len(df) * validation_frac)
    return SpamSplits(df[:train_end], df[train_end:validation_end], df[validation_end:])


class SpamCSVs(NamedTuple):
    """The paths :func:`prepare_spam_csvs` wrote; unpacks as ``train_csv, val_csv, test_csv``."""

    train: Path
    validation: Path
    test: Path

    @property
    def manifest(self) -> dict:
        return json.loads((self.train.parent / "manifest.json").read_text())

    @property
    def class_names(self) -> list[str]:
        """The class names, in label-id order (``["ham", "spam"]``)."""
        return self.manifest["class_names"]

    @property
    def num_classes(self) -> int:
        return len(self.class_names)


def _write_text_atomic(path: Path, text: str) -> None:
    tmp = path.with_name(path.name + ".part")
    tmp.write_text(text, encoding="utf-8")
    os.replace(tmp, path)


def prepare_spam_csvs(folder: str | Path | None = None, *, seed: int = 123, train_frac: float = 0.7,
                      validation_frac: float = 0.1, all_messages: bool = False) -> SpamCSVs:
    """Balance, split and write ``train.csv`` / ``validation.csv`` / ``test.csv`` (columns Label, Text).

    ``folder`` defaults to ``LECTURES_CACHE/sms_spam``. Labels are written as ids (0 = ham, 1 = spam);
    the names and the settings go to ``manifest.json`` beside them. Each file is written atomically and
    the manifest last, so a run that is interrupted is simply redone. When the three files and a
    manifest with the same settings are already there, nothing is rewritten (idempotent); other
    settings rewrite them.
    """
    folder = Path(folder) if folder is not None else runtime.cache_dir() / "sms_spam"
    paths = SpamCSVs(folder / "train.csv", folder / "validation.csv", folder / "test.csv")
    settings = {"seed": seed, "train_frac": train_frac, "validation_frac": validation_frac,
                "all_messages": all_messages}
    manifest_path = folder / "manifest.json"
    if manifest_path.is_file() and all(p.is_file() for p in paths):
        try:
            if json.loads(manifest_path.read_text()).get("settings") == settings:
                return paths
        except json.JSONDecodeError:
            pass  # a damaged manifest: rewrite everything

    df = load_sms_spam(all_messages=all_messages)
    balanced = create_balanced_dataset(df, seed=seed)
    class_names = class_names_of(balanced)
    splits = random_split(encode_labels(balanced, class_names), train_frac, validation_frac, seed=seed)
    folder.mkdir(parents=True, exist_ok=True)
    manifest_path.unlink(missing_ok=True)  # the old manifest must not vouch for new files
    for path, part in zip(paths, splits, strict=True):
        _write_text_atomic(path, part.to_csv(index=False))
    manifest = {"settings": settings, "class_names": class_names,
                "sizes": {name: len(part) for name, part in zip(SpamSplits._fields, splits, strict=True)}}
    _write_text_atomic(manifest_path, json.dumps(manifest, indent=1) + "\n")
    return paths


# --------------------------------------------------------------------------- dataset and loaders


def context_length_of(model: nn.Module) -> int:
    """How many positions ``model`` can read (its position-embedding table)."""
    cfg = getattr(model, "cfg", None)
    if isinstance(cfg, dict) and "context_length" in cfg:
        return int(cfg["context_length"])
    return int(model.pos_emb.weight.shape[0])


def cap_max_length(max_length: int, context_length: int | nn.Module) -> int:
    """``min(max_length, context_length)``: a model cannot read more positions than it has embeddings for.

    ``context_length`` may be a number or the model itself.
    """
    if not isinstance(context_length, int):
        context_length = context_length_of(context_length)
    if max_length < 1 or context_length < 1:
        raise ValueError(f"max_length and context_length must be positive, got {max_length} and {context_length}.")
    return min(max_length, context_length)


class SpamDataset(Dataset):
    """Messages as equal-length token-id tensors, with their class ids.

    ``csv_file`` (a path, or a DataFrame with the same columns) holds ``Label`` (class ids) and
    ``Text``. Every text is tokenized once, then

    * with ``max_length=None``, padded to the longest message of this file (``.max_length``);
    * with a ``max_length``, cut to its first ``max_length`` tokens, or padded up to it.

    Pass the training set's ``.max_length`` to the validation and test sets so that all three agree.
    ``context_length`` (keyword) caps the length at what the model can read, whichever way it was set.
    Padding is ``pad_token_id`` (GPT-2's end-of-text token) appended on the right.

    ``dataset[i]`` is ``(input_ids, label)``, both ``torch.long``.
    """

    def __init__(self, csv_file, tokenizer, max_length: int | None = None, pad_token_id: int = END_OF_TEXT_ID,
                 *, context_length: int | None = None):
        self.data = csv_file.copy() if isinstance(csv_file, pd.DataFrame) else pd.read_csv(
            csv_file, keep_default_na=False, dtype={TEXT_COLUMN: str})
        missing = {LABEL_COLUMN, TEXT_COLUMN} - set(self.data.columns)
        if missing:
            raise ValueError(f"{csv_file} lacks the column(s) {sorted(missing)}; expected {LABEL_COLUMN}, {TEXT_COLUMN}.")
        if not pd.api.types.is_integer_dtype(self.data[LABEL_COLUMN]):
            raise ValueError(
                f"The {LABEL_COLUMN} column of {csv_file} must hold class ids (0, 1, ...), not "
                f"{self.data[LABEL_COLUMN].dtype} values like {self.data[LABEL_COLUMN].iloc[0]!r}; "
                "convert them with encode_labels(df) (prepare_spam_csvs does)."
            )
        self.pad_token_id = pad_token_id
        encoded = [tokenizer.encode(text) for text in self.data[TEXT_COLUMN]]
        self.longest_length = max((len(ids) for ids in encoded), default=0)
        if max_length is None:
            max_length = self.longest_length
        if context_length is not None:
            max_length = cap_max_length(max_length, context_length)
        if max_length < 1:
            raise ValueError(f"max_length must be at least 1, got {max_length} (an empty file?).")
        self.max_length = max_length
        self.num_truncated = sum(len(ids) > max_length for ids in encoded)
        self.encoded_texts = [ids[:max_length] + [pad_token_id] * (max_length - len(ids)) for ids in encoded]
        self.labels = [int(label) for label in self.data[LABEL_COLUMN]]

    def __len__(self) -> int:
        return len(self.encoded_texts)

    def __getitem__(self, index: int):
        return (torch.tensor(self.encoded_texts[index], dtype=torch.long),
                torch.tensor(self.labels[index], dtype=torch.long))

    def _longest_encoded_length(self) -> int:  # the course's name
        return self.longest_length


class SpamLoaders(NamedTuple):
    train: DataLoader
    validation: DataLoader
    test: DataLoader


def create_spam_loaders(train_ds: Dataset, val_ds: Dataset, test_ds: Dataset, batch_size: int = 8,
                        num_workers: int = 0, seed: int = 123) -> SpamLoaders:
    """Three DataLoaders: training shuffled (its own generator seeded with ``seed``) and without the
    last incomplete batch; validation and test in order and complete.

    Dropping the last training batch keeps every step the same size (1,045 messages -> 130 batches
    of 8); the evaluation sets keep every message.
    """
    generator = torch.Generator().manual_seed(seed)
    return SpamLoaders(
        DataLoader(train_ds, batch_size=batch_size, shuffle=True, drop_last=True, num_workers=num_workers,
                   generator=generator),
        DataLoader(val_ds, batch_size=batch_size, shuffle=False, drop_last=False, num_workers=num_workers),
        DataLoader(test_ds, batch_size=batch_size, shuffle=False, drop_last=False, num_workers=num_workers),
    )


# --------------------------------------------------------------------------- the model


def _blocks_to_train(trainable, n_layers: int) -> int | None:
    """How many of the last blocks train; None means everything (``"all"``)."""
    if trainable == "all":
        return None
    if trainable == "head":
        return -1  # not even final_norm
    if trainable == "last_block":
        return 1
    if isinstance(trainable, int) and not isinstance(trainable, bool) and 0 <= trainable <= n_layers:
        return trainable
    raise ValueError(
        f"trainable must be 'head', 'last_block', 'all' or a number of last blocks from 0 to {n_layers}; "
        f"got {trainable!r}."
    )


def set_trainable(model: GPTModel, trainable="last_block") -> GPTModel:
    """Freeze ``model`` except the part named by ``trainable``:

    * ``"head"``: only ``out_head``;
    * ``"last_block"`` (the course): ``out_head``, the last transformer block and ``final_norm``;
    * an int ``k``: ``out_head``, the last ``k`` blocks and ``final_norm`` (``k=0``: head and norm);
    * ``"all"``: every parameter, embeddings included.
    """
    k = _blocks_to_train(trainable, len(model.trf_blocks))
    for param in model.parameters():
        param.requires_grad = k is None
    if k is None:
        return model
    for param in model.out_head.parameters():
        param.requires_grad = True
    if k >= 0:
        for param in model.final_norm.parameters():
            param.requires_grad = True
        for block in list(model.trf_blocks)[len(model.trf_blocks) - k:]:
            for param in block.parameters():
                param.requires_grad = True
    return model


def add_classification_head(model: GPTModel, num_classes: int, trainable="last_block") -> GPTModel:
    """Turn a language model into a classifier, in place, and return it.

    ``model.out_head`` (``emb_dim`` -> 50,257 token scores) is replaced by a new, randomly initialised
    ``nn.Linear(emb_dim, num_classes)`` on the same device and dtype; then :func:`set_trainable`
    freezes everything except ``trainable``. The rest of the network keeps its pretrained weights.
    Seed (``runtime.set_seed``) first for a reproducible head.
    """
    if not isinstance(num_classes, int) or num_classes < 2:
        raise ValueError(f"num_classes must be an int of at least 2, got {num_classes!r}.")
    _blocks_to_train(trainable, len(model.trf_blocks))  # check before changing the model
    old = model.out_head.weight
    model.out_head = nn.Linear(old.shape[1], num_classes, device=old.device, dtype=old.dtype)
    return set_trainable(model, trainable)


def trainable_report(model: nn.Module) -> dict:
    """Which parameters train: their ``names``, the ``modules`` they belong to (``trf_blocks.11``,
    ``final_norm``, ``out_head``...), the counts ``trainable`` and ``total``, and a one-line ``text``."""
    names, modules, trainable, total = [], [], 0, 0
    for name, param in model.named_parameters():
        total += param.numel()
        if param.requires_grad:
            names.append(name)
            trainable += param.numel()
            parts = name.split(".")
            module = ".".join(parts[:2]) if parts[0] == "trf_blocks" else parts[0]
            if module not in modules:
                modules.append(module)
    text = (f"trainable parameters: {trainable:,} of {total:,} ({100 * trainable / max(total, 1):.2f}%) "
            f"in {', '.join(modules) or 'nothing'}")
    return {"names": names, "modules": modules, "trainable": trainable, "total": total, "text": text}


# --------------------------------------------------------------------------- reading the prediction


def classifier_logits(model: nn.Module, input_batch: torch.Tensor, position: str = "last",
                      pad_token_id: int = END_OF_TEXT_ID) -> torch.Tensor:
    """Class scores (batch, num_classes): the model's output at one position per message.

    * ``"last"`` (the course): the last position, padding or not. Causal attention lets only this
      position see every token of the sequence.
    * ``"last_non_pad"``: each row's last token that is not ``pad_token_id`` (the message's own last
      token). Padding sits on the right, and GPT-2's tokenizer only emits the end-of-text id for the
      special string, so a message never ends in it. A row of padding only reads position 0.
    """
    logits = model(input_batch)  # (batch, tokens, num_classes)
    if position == "last":
        return logits[:, -1, :]
    if position == "last_non_pad":
        positions = torch.arange(input_batch.shape[1], device=input_batch.device)
        last = torch.where(input_batch != pad_token_id, positions, -1).max(dim=1).values.clamp(min=0)
        return logits[torch.arange(input_batch.shape[0], device=logits.device), last.to(logits.device)]
    raise ValueError(f"position must be one of {POSITIONS}, got {position!r}.")


def calc_loss_batch(input_batch, target_batch, model, device, position: str = "last",
                    pad_token_id: int = END_OF_TEXT_ID):
    """Cross entropy between the class scores at ``position`` and the true class ids of one batch."""
    input_batch, target_batch = input_batch.to(device), target_batch.to(device)
    logits = classifier_logits(model, input_batch, position, pad_token_id)
    return F.cross_entropy(logits, target_batch)


def calc_loss_loader(data_loader, model, device, num_batches=None, position: str = "last",
                     pad_token_id: int = END_OF_TEXT_ID):
    """Average :func:`calc_loss_batch` over the first ``num_batches`` batches (default: all), without
    gradients. Returns ``nan`` for an empty loader."""
    from functools import partial

    from . import losses

    with torch.no_grad():
        return losses.calc_loss_loader(data_loader, model, device, num_batches,
                                       loss_fn=partial(calc_loss_batch, position=position, pad_token_id=pad_token_id))


def calc_accuracy_loader(data_loader, model, device, num_batches=None, position: str = "last",
                         pad_token_id: int = END_OF_TEXT_ID) -> float:
    """The fraction of messages whose highest-scoring class is the true one, over the first
    ``num_batches`` batches (default: all). Runs in eval mode without gradients and restores the
    model's previous mode. Returns ``nan`` for an empty loader."""
    if len(data_loader) == 0:
        return float("nan")
    num_batches = len(data_loader) if num_batches is None else min(num_batches, len(data_loader))
    correct, seen = 0, 0
    with eval_mode(model):
        for i, (input_batch, target_batch) in enumerate(data_loader):
            if i >= num_batches:
                break
            logits = classifier_logits(model, input_batch.to(device), position, pad_token_id)
            predicted = logits.argmax(dim=-1)
            correct += (predicted == target_batch.to(device)).sum().item()
            seen += predicted.shape[0]
    return correct / seen


def classify_review(text: str, model, tokenizer, device, max_length: int | None = None,
                    pad_token_id: int = END_OF_TEXT_ID, class_names: Sequence[str] = ("not spam", "spam"),
                    position: str = "last") -> str:
    """The class name the model picks for ``text`` (any text, not only reviews: the course's name).

    The text is prepared like the dataset: cut to ``min(max_length, context length)`` tokens, then
    padded up to that length. Without ``max_length`` it is only cut to the context length. Pass the
    training set's ``max_length``: the model learnt to read the class at that position.
    """
    ids = tokenizer.encode(text)
    limit = context_length_of(model) if max_length is None else cap_max_length(max_length, model)
    ids = ids[:limit]
    if max_length is not None:
        ids = ids + [pad_token_id] * (limit - len(ids))
    if not ids:
        raise ValueError("The text is empty: there is no token to classify.")
    with eval_mode(model):
        logits = classifier_logits(model, torch.tensor([ids], device=device), position, pad_token_id)
    if logits.shape[-1] != len(class_names):
        raise ValueError(f"The model scores {logits.shape[-1]} classes but {len(class_names)} class_names were "
                         f"given: {list(class_names)}.")
    return class_names[int(logits.argmax(dim=-1).item())]


# --------------------------------------------------------------------------- saving and loading


class LoadedClassifier(NamedTuple):
    model: GPTModel
    class_names: list[str]
    max_length: int
    pad_token_id: int
    position: str
    meta: dict


def save_classifier(path: str | Path, model: GPTModel, class_names: Sequence[str], max_length: int,
                    pad_token_id: int = END_OF_TEXT_ID, position: str = "last", **meta) -> Path:
    """Save a finetuned classifier atomically: weights, config, ``num_classes`` and how to feed it.

    ``meta`` holds anything else worth keeping (accuracies, epochs...): plain numbers, strings, lists
    and dicts, so that the file loads with ``weights_only=True``.
    """
    cfg = getattr(model, "cfg", None)
    if cfg is None:
        raise ValueError("The model has no .cfg; save_classifier needs a helpers.model.GPTModel.")
    num_classes = model.out_head.out_features
    if num_classes != len(class_names):
        raise ValueError(f"The head has {num_classes} outputs but {len(class_names)} class_names were given.")
    if position not in POSITIONS:
        raise ValueError(f"position must be one of {POSITIONS}, got {position!r}.")
    return atomic_torch_save({
        "format": FORMAT, "cfg": dict(cfg), "num_classes": num_classes, "class_names": list(class_names),
        "max_length": int(max_length), "pad_token_id": int(pad_token_id), "position": position,
        "trainable": [name for name, p in model.named_parameters() if p.requires_grad],
        "model_state": {k: v.detach().cpu() for k, v in model.state_dict().items()}, "meta": meta,
    }, path)


def load_classifier(path: str | Path, map_location="cpu") -> LoadedClassifier:
    """Rebuild a classifier saved by :func:`save_classifier`: a ``GPTModel`` from the saved config, a
    ``num_classes`` head, the saved weights and which parameters were trainable.

    Returns ``(model, class_names, max_length, pad_token_id, position, meta)`` as a named tuple.
    """
    saved = read_torch_file(path, FORMAT, "a saved classifier", "helpers.classification.save_classifier",
                            map_location)
    model = add_classification_head(GPTModel(saved["cfg"]), saved["num_classes"], trainable="all")
    model.load_state_dict(saved["model_state"])
    trainable = set(saved["trainable"])
    for name, param in model.named_parameters():
        param.requires_grad = name in trainable
    return LoadedClassifier(model, saved["class_names"], saved["max_length"], saved["pad_token_id"],
                            saved["position"], saved["meta"])


__all__ = [
    "LABEL_COLUMN", "TEXT_COLUMN", "POSITIONS", "load_sms_spam", "class_names_of", "encode_labels",
    "create_balanced_dataset", "random_split", "SpamSplits", "SpamCSVs", "prepare_spam_csvs",
    "context_length_of", "cap_max_length", "SpamDataset", "SpamLoaders", "create_spam_loaders",
    "set_trainable", "add_classification_head", "trainable_report", "classifier_logits", "calc_loss_batch",
    "calc_loss_loader", "calc_accuracy_loader", "classify_review", "LoadedClassifier", "save_classifier",
    "load_classifier",
]


# --------------------------------------------------------------------------- training


def train_classifier_simple(model, train_loader, val_loader, optimizer, device, num_epochs, eval_freq, eval_iter,
                            position: str = "last", pad_token_id: int = END_OF_TEXT_ID, **kwargs):
    """The course's classifier training: lecture 02's ``train_loop`` with the classification loss.

    It counts examples instead of tokens and, after each epoch, records the training and validation
    accuracy over ``eval_iter`` batches in ``history.extra["train_acc"]`` / ``["val_acc"]``. Extra
    keyword arguments (``progress``, ``verbose``, ``live_plot``, ``config``) go to ``train_loop``.
    Returns the :class:`helpers.training.History`.
    """
    from functools import partial

    from .training import train_loop

    verbose = kwargs.get("verbose", True)
    options = {"position": position, "pad_token_id": pad_token_id}

    def record_accuracy(epoch, history):
        for name, loader in (("train_acc", train_loader), ("val_acc", val_loader)):
            accuracy = calc_accuracy_loader(loader, model, device, num_batches=eval_iter, **options)
            history.extra.setdefault(name, []).append(accuracy)
        if verbose:
            print(f"Training accuracy: {history.extra['train_acc'][-1] * 100:.2f}% | "
                  f"Validation accuracy: {history.extra['val_acc'][-1] * 100:.2f}%")

    return train_loop(
        model, train_loader, val_loader, optimizer, device, num_epochs, eval_freq, eval_iter,
        loss_fn=partial(calc_loss_batch, **options), eval_loss_fn=partial(calc_loss_loader, **options),
        count_fn=lambda input_batch, target_batch: input_batch.shape[0], seen_unit="examples",
        on_epoch_end=record_accuracy, **kwargs,
    )

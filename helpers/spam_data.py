"""The SMS Spam Collection for lecture 04's classifier (and lecture 06's comparison): from the raw file to loaders.

1. :func:`load_sms_spam` reads the UCI SMS Spam Collection (5,572 messages as the course reads it);
   :func:`create_balanced_dataset` keeps as many ham messages as there are spam (747 each), and
   :func:`random_split` shuffles and splits them 70 / 10 / 20. :func:`prepare_spam_csvs` does all of
   this once and writes ``train.csv``, ``validation.csv`` and ``test.csv``.
2. :class:`SpamDataset` tokenizes each message and pads (or truncates) it to one common length, so
   that messages stack into batches; :func:`build_spam_datasets` makes the three datasets with the
   training set's length, and :func:`create_spam_loaders` the three loaders.

The label ids come from the data: the class names in sorted order (``ham`` -> 0, ``spam`` -> 1).
The model side (the class head, accuracy, training) is in :mod:`helpers.classifier`.
"""

from __future__ import annotations

import csv
import json
from collections.abc import Sequence
from pathlib import Path
from typing import NamedTuple

import pandas as pd
import torch
import torch.nn as nn
from torch.utils.data import DataLoader, Dataset, Subset

from . import runtime
from .data import fetch
from .files import atomic_write_json, atomic_write_text
from .model import context_length as model_context_length
from .tokenizer import END_OF_TEXT_ID

LABEL_COLUMN = "Label"
TEXT_COLUMN = "Text"

# --------------------------------------------------------------------------- the file, balanced and split


def load_sms_spam(all_messages: bool = False) -> pd.DataFrame:
    """The UCI SMS Spam Collection as a DataFrame with columns ``Label`` (``ham``/``spam``) and ``Text``.

    Lecture 04 starts from it. The file has one ``label<TAB>message`` per line, without a header. How
    the quote character is treated changes the count:

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
    options = {"quoting": csv.QUOTE_NONE} if all_messages else {}
    return pd.read_csv(fetch("sms-spam"), sep="\t", header=None, names=[LABEL_COLUMN, TEXT_COLUMN],
                       keep_default_na=False, dtype=str, **options)


def class_names_of(df: pd.DataFrame) -> list[str]:
    """The class names found in ``df[Label]``, sorted: their positions are the label ids (lecture 04).

    For the SMS data: ``["ham", "spam"]``, so ham is 0 and spam is 1.
    """
    return sorted(df[LABEL_COLUMN].astype(str).unique())


def encode_labels(df: pd.DataFrame, class_names: Sequence[str] | None = None) -> pd.DataFrame:
    """A copy of ``df`` whose ``Label`` column holds the class ids (the index in ``class_names``; lecture 04).

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
    """Undersample: keep a random ``n`` messages of every class, ``n`` being the rarest class's count (lecture 04).

    For the SMS data, 747 of the 4,825 ham messages are drawn (``DataFrame.sample`` with
    ``random_state=seed``) and all 747 spam messages kept: 1,494 messages, half of each. A model
    that always answers "ham" now scores 50%, not 87%, so accuracy means something.

    Rows come class by class (in :func:`class_names_of` order); :func:`random_split` shuffles them.
    """
    n = int(df[LABEL_COLUMN].value_counts().min())
    parts = []
    for name in class_names_of(df):
        rows = df[df[LABEL_COLUMN].astype(str) == name]
        parts.append(rows.sample(n, random_state=seed) if len(rows) > n else rows)
    return pd.concat(parts)


class SpamSplits(NamedTuple):
    """The three parts :func:`random_split` cuts (lecture 04); unpacks as ``train, validation, test``."""

    train: pd.DataFrame
    validation: pd.DataFrame
    test: pd.DataFrame


def random_split(df: pd.DataFrame, train_frac: float = 0.7, validation_frac: float = 0.1,
                 seed: int = 123) -> SpamSplits:
    """Shuffle the rows (``random_state=seed``), then cut (lecture 04): the first ``train_frac`` to train,
    the next ``validation_frac`` to validation, the rest to test.

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
    """The paths :func:`prepare_spam_csvs` wrote (lecture 04); unpacks as ``train_csv, val_csv, test_csv``."""

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


def prepare_spam_csvs(folder: str | Path | None = None, *, seed: int = 123, train_frac: float = 0.7,
                      validation_frac: float = 0.1, all_messages: bool = False) -> SpamCSVs:
    """Balance, split and write ``train.csv`` / ``validation.csv`` / ``test.csv`` (columns Label, Text).

    Lectures 04 and 06 read their data from these files. ``folder`` defaults to
    ``LECTURES_CACHE/sms_spam``. Labels are written as ids (0 = ham, 1 = spam); the names and the
    settings go to ``manifest.json`` beside them. Each file is written atomically (``helpers.files``)
    and the manifest last, so a run that is interrupted is simply redone. When the three files and a
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
    manifest_path.unlink(missing_ok=True)  # the old manifest must not vouch for new files
    for path, part in zip(paths, splits, strict=True):
        atomic_write_text(path, part.to_csv(index=False))
    manifest = {"settings": settings, "class_names": class_names,
                "sizes": {name: len(part) for name, part in zip(SpamSplits._fields, splits, strict=True)}}
    atomic_write_json(manifest_path, manifest)
    return paths


# --------------------------------------------------------------------------- datasets and loaders


def cap_max_length(max_length: int, context_length: int | nn.Module) -> int:
    """``min(max_length, context_length)``: a model cannot read more positions than it has embeddings for.

    ``context_length`` may be a number or the model itself (``helpers.model.context_length``).
    Lecture 04's datasets and ``classify_review`` cut messages with it.
    """
    if not isinstance(context_length, int):
        context_length = model_context_length(context_length)
    if max_length < 1 or context_length < 1:
        raise ValueError(f"max_length and context_length must be positive, got {max_length} and {context_length}.")
    return min(max_length, context_length)


class SpamDataset(Dataset):
    """Messages as equal-length token-id tensors, with their class ids (lecture 04).

    ``csv_file`` (a path, or a DataFrame with the same columns) holds ``Label`` (class ids) and
    ``Text``. Every text is tokenized once, then

    * with ``max_length=None``, padded to the longest message of this file (``.max_length``);
    * with a ``max_length``, cut to its first ``max_length`` tokens, or padded up to it.

    Pass the training set's ``.max_length`` to the validation and test sets so that all three agree
    (:func:`build_spam_datasets` does). ``context_length`` (keyword) caps the length at what the model
    can read, whichever way it was set. Padding is ``pad_token_id`` (GPT-2's end-of-text token)
    appended on the right.

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


class SpamDatasets(NamedTuple):
    """The three :class:`SpamDataset` of :func:`build_spam_datasets` (lecture 04), padded to one length."""

    train: SpamDataset
    validation: SpamDataset
    test: SpamDataset


def build_spam_datasets(csvs: Sequence, tokenizer, *, context_length: int | None = None,
                        max_length: int | None = None, pad_token_id: int = END_OF_TEXT_ID) -> SpamDatasets:
    """The training, validation and test :class:`SpamDataset` from ``csvs`` (lectures 04 and 06).

    ``csvs`` is what :func:`prepare_spam_csvs` returns (or any three paths or DataFrames). The training
    set is padded to its longest message (or to ``max_length``), capped at ``context_length``;
    validation and test are cut and padded to the training set's length, so that the class is always
    read at the position the model was trained on.
    """
    train_csv, validation_csv, test_csv = csvs
    train = SpamDataset(train_csv, tokenizer, max_length, pad_token_id, context_length=context_length)
    return SpamDatasets(train,
                        SpamDataset(validation_csv, tokenizer, train.max_length, pad_token_id),
                        SpamDataset(test_csv, tokenizer, train.max_length, pad_token_id))


class SpamLoaders(NamedTuple):
    """The three loaders of :func:`create_spam_loaders` (lecture 04); unpacks as ``train, validation, test``."""

    train: DataLoader
    validation: DataLoader
    test: DataLoader


def create_spam_loaders(train_ds: Dataset, val_ds: Dataset, test_ds: Dataset, batch_size: int = 8,
                        num_workers: int = 0, seed: int | None = None,
                        train_examples: int | None = None) -> SpamLoaders:
    """Three DataLoaders (lectures 04 and 06): training shuffled and without the last incomplete batch;
    validation and test in order and complete.

    Dropping the last training batch keeps every step the same size (1,045 messages -> 130 batches
    of 8); the evaluation sets keep every message. ``train_examples`` trains on the first that many
    training messages only (a shorter run; lecture 06's quick profile).

    The training order is drawn as in the course: from PyTorch's global random generator, each time
    the loader is iterated. ``torch.manual_seed(123)`` (``runtime.set_seed``) right before training
    therefore fixes the order, and then it is the course's order for the same data. With ``seed``,
    the loader shuffles with its own generator seeded with it instead: the same order whatever else
    drew random numbers before, but no longer the course's.
    """
    if train_examples is not None:
        if not 1 <= train_examples <= len(train_ds):
            raise ValueError(f"train_examples must be between 1 and the {len(train_ds)} training messages, "
                             f"got {train_examples}.")
        train_ds = Subset(train_ds, range(train_examples))
    generator = None if seed is None else torch.Generator().manual_seed(seed)
    return SpamLoaders(
        DataLoader(train_ds, batch_size=batch_size, shuffle=True, drop_last=True, num_workers=num_workers,
                   generator=generator),
        DataLoader(val_ds, batch_size=batch_size, shuffle=False, drop_last=False, num_workers=num_workers),
        DataLoader(test_ds, batch_size=batch_size, shuffle=False, drop_last=False, num_workers=num_workers),
    )


__all__ = [
    "LABEL_COLUMN", "TEXT_COLUMN", "load_sms_spam", "class_names_of", "encode_labels", "create_balanced_dataset",
    "SpamSplits", "random_split", "SpamCSVs", "prepare_spam_csvs", "cap_max_length", "SpamDataset",
    "SpamDatasets", "build_spam_datasets", "SpamLoaders", "create_spam_loaders",
]

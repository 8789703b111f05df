"""Lecture 05 scores: ROUGE-L, embedding similarity, and the Ollama judge (offline paths and parsing)."""

from __future__ import annotations

import json
import math
import socket

import pytest

from helpers import evaluation as ev

# --------------------------------------------------------------------------- ROUGE-L


def test_rouge_l_identical_and_disjoint():
    assert ev.rouge_l("The meal is cooked by the chef.", "The meal is cooked by the chef.") == pytest.approx(1.0)
    assert ev.rouge_l("Paris, France.", "Seven plus two equals nine") == 0.0
    assert ev.rouge_l("", "anything") == 0.0


def test_rouge_l_partial_overlap_by_hand():
    # Prediction: 7 words; reference: 9 words. Longest common subsequence: all 7 prediction words
    # ("the meal is cooked by the chef"), so precision = 7/7, recall = 7/9 and
    # F = 2 * 1 * (7/9) / (1 + 7/9) = 14/16 = 0.875.
    assert ev.rouge_l("The meal is cooked by the chef.", "The meal is cooked every day by the chef.") == pytest.approx(0.875)
    # Word order matters. After stemming: prediction "the chef cook the meal" (5 words), reference
    # "the meal is cook by the chef" (7 words). Their longest common subsequence is "the cook the"
    # (3 words), so precision = 3/5, recall = 3/7 and F = 2 * (9/35) / (36/35) = 0.5.
    assert ev.rouge_l("The chef cooks the meal", "The meal is cooked by the chef") == pytest.approx(0.5)


def test_rouge_l_stemming():
    # With the Porter stemmer "cooks" and "cooked" are both "cook": all 5 words match.
    assert ev.rouge_l("the chef cooks the meal", "the chef cooked the meal") == pytest.approx(1.0)
    # Without it 4 of 5 words match in order: F = 0.8.
    assert ev.rouge_l("the chef cooks the meal", "the chef cooked the meal", use_stemmer=False) == pytest.approx(0.8)


def test_rouge_l_scores_pairs_and_checks_lengths():
    assert ev.rouge_l_scores(["a b", "c"], ["a b", "d"]) == pytest.approx([1.0, 0.0])
    with pytest.raises(ValueError, match="pairs"):
        ev.rouge_l_scores(["a"], ["a", "b"])


# --------------------------------------------------------------------------- embedding similarity


@pytest.fixture(scope="module")
def embedder():
    return ev.load_embedding_model()


def test_embedding_similarity_identical_paraphrase_unrelated(embedder):
    reference = "The chef cooks the meal every day."
    sims = ev.embedding_similarity(
        [reference, "Every day the meal is cooked by the chef.", "The stock market fell sharply on Monday."],
        [reference] * 3,
        model=embedder,
    )
    identical, paraphrase, unrelated = sims
    assert identical == pytest.approx(1.0, abs=1e-5)
    assert paraphrase > 0.7
    assert unrelated < 0.3
    assert paraphrase > unrelated
    assert ev.embedding_similarity([], []) == []


def test_embedding_model_is_cached(embedder):
    assert ev.load_embedding_model() is embedder


ENTRIES = [
    {"instruction": "Rewrite in passive voice.", "input": "The chef cooks the meal every day.",
     "output": "The meal is cooked by the chef every day.",
     "model_response": "The meal is cooked by the chef every day."},
    {"instruction": "Name an antonym for 'happiness.'", "input": "",
     "output": "An antonym for 'happiness' is 'sadness.'", "model_response": "Sadness."},
    {"instruction": "What is the capital of France?", "input": "",
     "output": "The capital of France is Paris.", "model_response": "I like turtles."},
]


def test_score_responses(embedder):
    scores = ev.score_responses(ENTRIES)
    assert scores["n"] == 3
    expected_rouge = [ev.rouge_l(e["model_response"], e["output"]) for e in ENTRIES]
    assert scores["rouge_l"] == pytest.approx(expected_rouge)
    assert scores["rouge_l"][0] == pytest.approx(1.0) and scores["rouge_l"][2] == 0.0
    assert scores["rouge_l_mean"] == pytest.approx(sum(expected_rouge) / 3)
    sims = scores["embedding_similarity"]
    assert sims[0] == pytest.approx(1.0, abs=1e-5)
    assert sims[1] > sims[2]
    assert scores["embedding_similarity_mean"] == pytest.approx(sum(sims) / 3)

    table = ev.scores_table(ENTRIES, scores)
    assert list(table.columns) == ["instruction", "reference", "response", "rouge_l", "embedding_similarity"]
    assert len(table) == 3


def test_score_responses_without_embeddings_and_missing_key():
    scores = ev.score_responses(ENTRIES, embeddings=False)
    assert scores["embedding_similarity"] is None and scores["embedding_similarity_mean"] is None
    assert "embedding_similarity" not in ev.scores_table(ENTRIES, scores).columns
    with pytest.raises(KeyError, match="generate_test_responses"):
        ev.score_responses([{"instruction": "x", "input": "", "output": "y"}])
    assert math.isnan(ev.score_responses([], embeddings=False)["rouge_l_mean"])


# --------------------------------------------------------------------------- LLM judge


def _dead_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]  # closed again on exit: nothing listens there


def test_ollama_unavailable_on_dead_port(capsys):
    host = f"127.0.0.1:{_dead_port()}"
    assert ev.ollama_available(host, timeout=1.0) is False
    assert ev.ollama_models(host, timeout=1.0) is None
    assert ev.generate_model_scores(ENTRIES, host=host, timeout=1.0, progress=False) is None
    out = capsys.readouterr().out
    assert "No Ollama server answered" in out and "ollama serve" in out


def test_ollama_silent_server_times_out():
    # A socket that accepts connections (the kernel's backlog) but never answers: must not hang.
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen(1)
        assert ev.ollama_available(f"127.0.0.1:{s.getsockname()[1]}", timeout=0.5) is False


def test_ollama_server_without_the_model(http_server, capsys):
    listing = {"models": [{"name": "mistral:latest", "model": "mistral:latest"}]}
    http_server.routes["/api/tags"] = (200, json.dumps(listing).encode(), {})
    assert ev.ollama_available(http_server.url) is True
    assert ev.ollama_models(http_server.url) == ["mistral:latest"]
    assert ev.generate_model_scores(ENTRIES, host=http_server.url, model="llama3", progress=False) is None
    assert "ollama pull llama3" in capsys.readouterr().out


@pytest.mark.parametrize(
    "reply, score",
    [("85", 85), (" 85.\n", 85), ("Score: 70/100", 70), ("**92**", 92), ("0", 0), ("100", 100),
     ("66.6", 67), ("excellent", None), ("", None), ("150", None), ("-3", None)],
)
def test_parse_score(reply, score):
    assert ev.parse_score(reply) == score


class FakeClient:
    """Stands in for ollama.Client: replies from a list, and records what it was asked."""

    def __init__(self, replies):
        self.replies, self.requests = list(replies), []

    def chat(self, model, messages, options):
        self.requests.append((model, messages, options))
        return {"message": {"role": "assistant", "content": self.replies.pop(0)}}


def test_generate_model_scores_with_fake_client(capsys):
    client = FakeClient(["85", "The score is 70.", "I cannot rate this."])
    result = ev.generate_model_scores(ENTRIES, model="llama3", client=client, progress=False)
    assert result["scores"] == [85, 70, None]
    assert result["mean"] == pytest.approx(77.5)
    assert (result["n_scored"], result["n_unparsable"]) == (2, 1)
    assert result["replies"][2] == "I cannot rate this."
    assert "1 of 3 judge replies" in capsys.readouterr().out

    model, messages, options = client.requests[1]
    assert model == "llama3" and options["temperature"] == 0
    prompt = messages[0]["content"]
    assert ENTRIES[1]["output"] in prompt and ENTRIES[1]["model_response"] in prompt
    assert "Name an antonym" in prompt and "0 to 100" in prompt


def test_query_model_returns_reply_text():
    client = FakeClient(["hello"])
    assert ev.query_model("Say hello", model="m", client=client) == "hello"
    assert client.requests[0][1] == [{"role": "user", "content": "Say hello"}]


# --------------------------------------------------------------------------- bad entries (issue 15)


def test_bad_entries_name_the_index_and_the_key():
    good = {"instruction": "x", "input": "", "output": "y", "model_response": "y"}
    with pytest.raises(KeyError, match="Entry 1 has no 'output'"):
        ev.score_responses([good, {"instruction": "x", "model_response": "y"}], embeddings=False)
    with pytest.raises(TypeError, match="Entry 0 holds a NoneType under 'model_response'"):
        ev.score_responses([{**good, "model_response": None}], embeddings=False)
    with pytest.raises(TypeError, match="list of dicts"):
        ev.score_responses("not a list", embeddings=False)
    with pytest.raises(KeyError, match="generate_test_responses"):
        ev.judge_prompt({"instruction": "x", "output": "y"})
    with pytest.raises(ValueError, match="1 scores for 2 entries"):
        ev.scores_table([good, good], {"rouge_l": [1.0]})
    with pytest.raises(KeyError, match="Entry 0 has no 'output'"):
        ev.generate_model_scores([{"instruction": "x", "model_response": "y"}], client=object(), progress=False)

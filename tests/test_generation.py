import copy

import pytest
import torch

from helpers import model as M
from helpers.generation import apply_temperature_and_top_k, generate, generate_text_simple


@pytest.fixture
def tiny():
    torch.manual_seed(0)
    return M.GPTModel(M.get_config("tiny", context_length=16))


def test_greedy_generate_equals_generate_text_simple(tiny):
    idx = torch.randint(0, 50257, (2, 5))
    assert torch.equal(generate(tiny, idx, 8, 16), generate_text_simple(tiny, idx, 8, 16))


@pytest.mark.parametrize("prompt_len", [3, 16, 25])  # short, exactly the context, longer than the context
def test_kv_cache_gives_identical_greedy_output(tiny, prompt_len):
    idx = torch.randint(0, 50257, (2, prompt_len))
    with_cache = generate(tiny, idx, 20, 16, use_cache=True)
    without = generate(tiny, idx, 20, 16, use_cache=False)
    assert with_cache.shape == (2, prompt_len + 20)
    assert torch.equal(with_cache, without)


def test_generation_restores_training_mode(tiny):
    tiny.train()
    generate(tiny, torch.zeros(1, 2, dtype=torch.long), 2, 16)
    assert tiny.training
    tiny.eval()
    generate_text_simple(tiny, torch.zeros(1, 2, dtype=torch.long), 2, 16)
    assert not tiny.training


def test_top_k_keeps_only_k_candidates():
    logits = torch.tensor([[4.0, 1.0, 3.0, 2.0, 0.5]])
    probs = apply_temperature_and_top_k(logits, temperature=1.0, top_k=2)
    assert (probs > 0).sum().item() == 2 and probs[0, 0] > probs[0, 2] > 0
    assert probs.sum().item() == pytest.approx(1.0)
    torch.manual_seed(0)
    samples = {int(torch.multinomial(probs, 1)) for _ in range(200)}
    assert samples == {0, 2}


def test_temperature():
    logits = torch.tensor([[2.0, 1.0, 0.0]])
    greedy = apply_temperature_and_top_k(logits, 0.0)
    assert greedy.tolist() == [[1.0, 0.0, 0.0]]
    sharp, flat = apply_temperature_and_top_k(logits, 0.5), apply_temperature_and_top_k(logits, 5.0)
    assert sharp[0, 0] > torch.softmax(logits, -1)[0, 0] > flat[0, 0] > 1 / 3
    with pytest.raises(ValueError):
        apply_temperature_and_top_k(logits, -1.0)
    with pytest.raises(ValueError):
        apply_temperature_and_top_k(logits, 1.0, top_k=0)
    assert torch.equal(apply_temperature_and_top_k(logits, 1.0, top_k=10), torch.softmax(logits, -1))


def test_temperature_zero_is_greedy_even_with_top_k(tiny):
    idx = torch.randint(0, 50257, (2, 4))
    greedy = generate_text_simple(tiny, idx, 6, 16)
    assert torch.equal(generate(tiny, idx, 6, 16, temperature=0.0, top_k=5), greedy)


def test_sampling_is_reproducible_with_a_seed(tiny):
    idx = torch.zeros(1, 3, dtype=torch.long)
    torch.manual_seed(5)
    a = generate(tiny, idx, 10, 16, temperature=1.4, top_k=25)
    torch.manual_seed(5)
    b = generate(tiny, idx, 10, 16, temperature=1.4, top_k=25)
    assert torch.equal(a, b)


def test_eos_stops_generation(tiny):
    idx = torch.randint(0, 50257, (1, 4))
    free = generate(tiny, idx, 10, 16)
    eos = int(free[0, 6])  # the third generated token
    stopped = generate(tiny, idx, 10, 16, eos_id=eos)
    first_eos = (free[0, 4:] == eos).nonzero()[0].item() + 4
    assert torch.equal(stopped, free[:, : first_eos + 1])  # stops right after producing eos_id


class NextIsPlusOne(torch.nn.Module):
    """A stub model whose most likely next token is always the last token + 1."""

    def forward(self, idx):
        logits = torch.zeros(*idx.shape, 100)
        return logits.scatter(-1, ((idx + 1) % 100).unsqueeze(-1), 1.0)


def test_eos_waits_for_every_sequence_in_a_batch():
    stub = NextIsPlusOne()
    both = generate(stub, torch.tensor([[10], [10]]), 6, 8, eos_id=13)
    assert both.tolist() == [[10, 11, 12, 13]] * 2
    one = generate(stub, torch.tensor([[10], [20]]), 6, 8, eos_id=13)  # the first row is padded with eos
    assert one.tolist() == [[10, 11, 12, 13, 13, 13, 13], [20, 21, 22, 23, 24, 25, 26]]
    assert generate(stub, torch.tensor([[10]]), 6, 8).tolist() == [[10, 11, 12, 13, 14, 15, 16]]


def test_the_cache_feeds_one_token_per_step_until_the_context_is_full(tiny):
    lengths = []
    hook = tiny.register_forward_pre_hook(lambda module, args: lengths.append(args[0].shape[1]))
    try:
        generate(tiny, torch.randint(0, 50257, (1, 10)), 9, 16, use_cache=True)
        cached, lengths[:] = list(lengths), []
        generate(tiny, torch.randint(0, 50257, (1, 10)), 9, 16, use_cache=False)
    finally:
        hook.remove()
    # prompt once, then one position per token while 10 + n <= 16; then the cropped 16-token window
    assert cached == [10, 1, 1, 1, 1, 1, 1, 16, 16]
    assert lengths == [10, 11, 12, 13, 14, 15, 16, 16, 16]


def test_generate_and_print_sample(tiny, capsys):
    from helpers.generation import generate_and_print_sample
    from helpers.tokenizer import get_tokenizer

    tiny.train()
    text = generate_and_print_sample(tiny, get_tokenizer(), "cpu", "Every effort moves you", max_new_tokens=5)
    assert text.startswith("Every effort moves you") and "\n" not in text
    assert capsys.readouterr().out == text + "\n"
    assert tiny.training


@pytest.mark.parametrize("idx, kwargs, message", [
    (torch.tensor([1, 2, 3]), {}, r"shape \(batch, tokens\).*unsqueeze\(0\)"),
    (torch.zeros(1, 0, dtype=torch.long), {}, "at least one token"),
    (torch.tensor([[1.0, 2.0]]), {}, "integer token ids"),
    (torch.tensor([[1, 50257]]), {}, "token id 50257, outside the model's vocabulary"),
    (torch.tensor([[-1, 2]]), {}, "token id -1"),
    ([[1, 2]], {}, "tensor of token ids"),
    (torch.tensor([[1, 2]]), {"temperature": float("nan")}, "finite number >= 0"),
    (torch.tensor([[1, 2]]), {"temperature": -1.0}, "finite number >= 0"),
    (torch.tensor([[1, 2]]), {"top_k": 0}, "top_k must be a whole number >= 1"),
    (torch.tensor([[1, 2]]), {"top_k": 2.5}, "top_k must be a whole number >= 1"),
    (torch.tensor([[1, 2]]), {"max_new_tokens": -3}, "max_new_tokens must be a whole number"),
    (torch.tensor([[1, 2]]), {"context_size": 0}, "context_size must be a whole number >= 1"),
    (torch.tensor([[1, 2]]), {"eos_id": "x"}, "eos_id must be a token id"),
])
def test_bad_generation_inputs_get_clear_errors(tiny, idx, kwargs, message):
    args = {"max_new_tokens": 3, "context_size": 16, **kwargs}
    with pytest.raises((ValueError, TypeError), match=message):
        generate(tiny, idx, **args)


def test_generate_text_simple_checks_its_prompt(tiny):
    with pytest.raises(ValueError, match="unsqueeze"):
        generate_text_simple(tiny, torch.tensor([1, 2]), 2, 16)


def test_zero_new_tokens_returns_the_prompt(tiny):
    idx = torch.tensor([[5, 6]])
    assert torch.equal(generate(tiny, idx, 0, 16), idx)


@pytest.mark.parametrize("impl", ["fast", "teaching"])
def test_teaching_and_fast_paths_generate_the_same_tokens_with_and_without_cache(tiny, impl):
    idx = torch.randint(0, 50257, (2, 4))
    reference = generate_text_simple(tiny, idx, 14, 16)       # the course's loop: full logits, no cache
    M.set_impl(tiny, impl)
    assert torch.equal(generate(tiny, idx, 14, 16, use_cache=True), reference)
    assert torch.equal(generate(tiny, idx, 14, 16, use_cache=False), reference)


def test_generate_computes_the_output_head_for_the_last_position_only(tiny):
    rows = []
    hook = tiny.out_head.register_forward_hook(lambda module, args, out: rows.append(args[0].shape[1]))
    try:
        generate(tiny, torch.randint(0, 50257, (1, 10)), 9, 16, use_cache=True)
        generate(tiny, torch.randint(0, 50257, (1, 10)), 3, 16, use_cache=False)
    finally:
        hook.remove()
    assert rows == [1] * 12


def test_a_bfloat16_model_generates_with_the_cache(tiny):
    idx = torch.randint(0, 50257, (1, 5), generator=torch.Generator().manual_seed(3))
    with torch.no_grad():
        reference = tiny.eval()(idx)[:, -1]
    half = copy.deepcopy(tiny).to(torch.bfloat16)
    out = generate(half, idx, 10, 16, use_cache=True)
    assert out.shape == (1, 15) and out.dtype == torch.long and torch.equal(out[:, :5], idx)
    assert half.tok_emb.weight.dtype == torch.bfloat16              # generation leaves the dtype alone
    with torch.no_grad():
        logits = half(idx)[:, -1].float()
    torch.testing.assert_close(logits, reference, atol=0.05, rtol=0.05)   # bfloat16 rounding, nothing more

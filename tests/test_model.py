import pytest
import torch

from helpers import model as M
from helpers.losses import calc_loss_batch, calc_loss_loader, perplexity


@pytest.fixture
def tiny():
    torch.manual_seed(0)
    return M.GPTModel(M.get_config("tiny", qkv_bias=True)).eval()


def test_output_shape(tiny):
    x = torch.randint(0, 50257, (3, 10))
    assert tiny(x).shape == (3, 10, 50257)


def test_parameter_counts_course_and_gpt2():
    with torch.device("meta"):  # no memory or init time needed to count
        pre = M.GPTModel(M.GPT_CONFIG_124M)
        small = M.GPTModel(M.get_config("gpt2-small"))
    assert M.count_parameters(pre) == 162_419_712  # course config, context 256
    assert M.parameter_report(small)["total"] == 163_037_184
    assert M.parameter_report(small)["with_weight_tying"] == 124_439_808  # GPT-2's "124M"


def test_parameter_report_of_a_language_model():
    with torch.device("meta"):
        small = M.GPTModel(M.get_config("gpt2-small"))
    report = M.parameter_report(small)
    assert report["trainable"] == report["total"] == 163_037_184 and report["fraction"] == 1.0
    assert report["lora"] == 0 and report["size_mb_float32"] == pytest.approx(163_037_184 * 4 / 2**20)
    assert report["trainable_modules"] == ["tok_emb", "pos_emb", *[f"trf_blocks.{i}" for i in range(12)],
                                           "final_norm", "out_head"]
    assert report["text"] == ("163,037,184 parameters (124,439,808 with weight tying), 621.9 MB in float32; "
                              "all of them trainable")


def test_parameter_report_of_a_partly_frozen_classifier():
    torch.manual_seed(0)
    model = M.GPTModel(M.get_config("tiny"))
    model.out_head = torch.nn.Linear(32, 2)
    model.requires_grad_(False)
    model.out_head.requires_grad_(True)
    model.final_norm.requires_grad_(True)
    report = M.parameter_report(model)
    total = sum(p.numel() for p in model.parameters())
    assert report["total"] == total and report["trainable"] == 2 * 32 + 2 + 2 * 32
    assert report["fraction"] == pytest.approx(report["trainable"] / total)
    assert report["with_weight_tying"] is None  # a 2-class head shares nothing with tok_emb
    assert report["trainable_names"] == ["final_norm.scale", "final_norm.shift", "out_head.weight", "out_head.bias"]
    assert report["text"].endswith(f"trainable: 130 of {total:,} ({100 * 130 / total:.2f}%) in final_norm, out_head")


def test_parameter_report_counts_marked_modules_as_lora():
    """helpers.model knows LoRA layers only by their marker attribute (it does not import helpers.lora)."""

    class Update(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.A = torch.nn.Parameter(torch.zeros(3, 2))

    marked = Update()
    setattr(marked, M.LORA_MARKER, True)
    net = torch.nn.ModuleDict({"base": torch.nn.Linear(3, 3).requires_grad_(False), "lora_part": marked,
                               "head": torch.nn.Linear(3, 1), "plain": Update()})
    report = M.parameter_report(net)
    assert (report["total"], report["trainable"], report["lora"]) == (12 + 6 + 4 + 6, 6 + 4 + 6, 6)
    assert report["text"].endswith("LoRA 6, fully trained 10 in head, plain")
    assert report["with_weight_tying"] is None


@pytest.mark.parametrize("name,layers,heads,emb", [("gpt2-medium", 24, 16, 1024), ("1558M", 48, 25, 1600)])
def test_presets(name, layers, heads, emb):
    cfg = M.get_config(name)
    assert (cfg["n_layers"], cfg["n_heads"], cfg["emb_dim"], cfg["context_length"], cfg["qkv_bias"]) == (
        layers, heads, emb, 1024, True)


def test_config_errors():
    with pytest.raises(KeyError, match="gpt2-small"):
        M.get_config("gpt3")
    with pytest.raises(KeyError, match="emb_size"):
        M.get_config("tiny", emb_size=3)
    with pytest.raises(KeyError, match="n_heads"):
        M.GPTModel({"vocab_size": 10})
    with pytest.raises(ValueError, match="divisible"):
        M.GPTModel(M.get_config("tiny", n_heads=5))


def test_teaching_and_fast_code_agree(tiny):
    x = torch.randint(0, 50257, (2, 16))
    fast = tiny(x)
    M.set_impl(tiny, "teaching")
    switched = [m for m in tiny.modules() if isinstance(m, (M.MultiHeadAttention, M.LayerNorm, M.GELU))]
    assert len(switched) == 2 * 4 + 1 and all(m.impl == "teaching" for m in switched)
    torch.testing.assert_close(tiny(x), fast, atol=1e-5, rtol=1e-5)
    with pytest.raises(ValueError, match="teaching"):
        M.set_impl(tiny, "slow")


@pytest.mark.parametrize("module", [M.LayerNorm(8), M.GELU()])
def test_teaching_layernorm_and_gelu_match_fused(module):
    x = torch.randn(3, 5, 8) * 3 + 1
    if isinstance(module, M.LayerNorm):
        with torch.no_grad():
            module.scale.uniform_(0.5, 1.5)
            module.shift.uniform_(-1, 1)
    fast = module(x)
    module.impl = "teaching"
    torch.testing.assert_close(module(x), fast, atol=1e-5, rtol=1e-5)


def test_dropout_only_in_training_mode():
    torch.manual_seed(0)
    model = M.GPTModel(M.get_config("tiny", drop_rate=0.5))
    x = torch.randint(0, 50257, (1, 8))
    model.eval()
    assert torch.equal(model(x), model(x))
    model.train()
    assert not torch.equal(model(x), model(x))


def test_attention_is_causal(tiny):
    x = torch.randint(0, 50257, (1, 12))
    y = x.clone()
    y[0, 8:] = (y[0, 8:] + 1) % 50257  # change only later tokens
    for impl in ("fast", "teaching"):
        M.set_impl(tiny, impl)
        torch.testing.assert_close(tiny(x)[:, :8], tiny(y)[:, :8])


@pytest.mark.parametrize("impl", ["fast", "teaching"])
def test_kv_cache_matches_full_forward(tiny, impl):
    M.set_impl(tiny, impl)
    x = torch.randint(0, 50257, (2, 20))
    full = tiny(x)
    cache = tiny.new_kv_cache()
    parts = [tiny(x[:, :7], kv_cache=cache)]  # prefill several tokens, then one at a time
    for t in range(7, 20):
        parts.append(tiny(x[:, t : t + 1], kv_cache=cache))
    assert len(cache) == 20
    torch.testing.assert_close(torch.cat(parts, dim=1), full, atol=1e-5, rtol=1e-5)
    cache2 = tiny.new_kv_cache()  # a chunk of several new tokens after a prefix also works
    torch.testing.assert_close(
        torch.cat([tiny(x[:, :5], kv_cache=cache2), tiny(x[:, 5:], kv_cache=cache2)], 1), full, atol=1e-5, rtol=1e-5)


def test_context_overflow_is_a_clear_error(tiny):
    with pytest.raises(ValueError, match="context length"):
        tiny(torch.zeros(1, 33, dtype=torch.long))


def test_loss_matches_manual_cross_entropy(tiny):
    x = torch.randint(0, 50257, (2, 6))
    y = torch.randint(0, 50257, (2, 6))
    with torch.no_grad():
        probs = torch.softmax(tiny(x), dim=-1)
        target_probs = probs.gather(-1, y.unsqueeze(-1)).squeeze(-1)
        manual = -torch.log(target_probs).mean()
        loss = calc_loss_batch(x, y, tiny, "cpu")
    torch.testing.assert_close(loss, manual, atol=1e-5, rtol=1e-5)
    assert perplexity(loss) == pytest.approx(torch.exp(manual).item(), rel=1e-5)


def test_calc_loss_loader(tiny):
    batches = [(torch.randint(0, 50257, (2, 6)), torch.randint(0, 50257, (2, 6))) for _ in range(4)]
    with torch.no_grad():
        each = [calc_loss_batch(x, y, tiny, "cpu").item() for x, y in batches]
        assert calc_loss_loader(batches, tiny, "cpu") == pytest.approx(sum(each) / 4)
        assert calc_loss_loader(batches, tiny, "cpu", num_batches=2) == pytest.approx(sum(each[:2]) / 2)
        assert calc_loss_loader(batches, tiny, "cpu", num_batches=99) == pytest.approx(sum(each) / 4)
    assert calc_loss_loader([], tiny, "cpu") != calc_loss_loader([], tiny, "cpu")  # nan


def test_untrained_course_model_loss_is_the_courses(verdict_text):
    """Seed 123 gives the course's untrained-model losses (10.98758 train, 10.98111 val)."""
    from helpers import data

    torch.manual_seed(123)
    model = M.GPTModel(M.GPT_CONFIG_124M).eval()
    _, val = data.train_val_split(verdict_text)
    val_loader = data.create_dataloader(val, batch_size=2, max_length=256, stride=256, drop_last=False, shuffle=False)
    with torch.no_grad():
        assert calc_loss_loader(val_loader, model, "cpu") == pytest.approx(10.98110580444336, abs=1e-4)


@pytest.mark.parametrize("impl", ["fast", "teaching"])
def test_last_only_gives_the_last_positions_logits(tiny, impl):
    M.set_impl(tiny, impl)
    x = torch.randint(0, 50257, (2, 12))
    full = tiny(x)
    torch.testing.assert_close(tiny(x, last_only=True), full[:, -1:], atol=1e-5, rtol=1e-5)
    cache = tiny.new_kv_cache()  # with a cache: prefill, then one token, then a chunk, each last-only
    parts = [tiny(x[:, :5], kv_cache=cache, last_only=True), tiny(x[:, 5:6], kv_cache=cache, last_only=True),
             tiny(x[:, 6:], kv_cache=cache, last_only=True)]
    assert [p.shape[1] for p in parts] == [1, 1, 1] and len(cache) == 12
    torch.testing.assert_close(torch.cat(parts, 1), full[:, [4, 5, 11]], atol=1e-5, rtol=1e-5)


def test_run_blocks_in_two_parts_is_the_forward(tiny):
    x = torch.randint(0, 50257, (2, 9))
    hidden = tiny.run_blocks(tiny.embed(x), 0, 1)           # the first block ...
    torch.testing.assert_close(tiny.logits(tiny.run_blocks(hidden, start=1)), tiny(x))   # ... then the rest
    torch.testing.assert_close(tiny.logits(tiny.run_blocks(hidden, start=1, last_only=True)), tiny(x)[:, -1:])
    no_blocks = tiny.run_blocks(hidden, start=2, last_only=True)   # nothing to run: just the last position
    assert torch.equal(no_blocks, hidden[:, -1:])


def test_kv_cache_writes_into_one_buffer_per_block(tiny):
    cache = tiny.new_kv_cache()
    x = torch.randint(0, 50257, (1, 20))
    tiny(x[:, :4], kv_cache=cache)
    buffers = [(k.data_ptr(), v.data_ptr()) for k, v in zip(cache.keys, cache.values, strict=True)]
    assert cache.keys[0].shape == (1, 4, 32, 8)               # (batch, heads, context length, head_dim)
    for t in range(4, 20):
        tiny(x[:, t : t + 1], kv_cache=cache)
    assert [(k.data_ptr(), v.data_ptr()) for k, v in zip(cache.keys, cache.values, strict=True)] == buffers
    assert cache.lengths == [20, 20] and len(cache) == 20


def test_kv_cache_without_a_size_grows():
    cache = M.KVCache(1)
    k = torch.arange(2 * 3 * 40 * 4, dtype=torch.float).view(2, 3, 40, 4)
    for start in range(0, 40, 10):
        keys, values = cache.update(0, k[:, :, start : start + 10], -k[:, :, start : start + 10])
    assert torch.equal(keys, k) and torch.equal(values, -k) and cache.keys[0].shape[2] >= 40

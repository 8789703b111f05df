"""LoRA: exact start, merging, gradients, parameter counts, agreement with peft, saving and loading."""

from __future__ import annotations

import copy

import pytest
import torch
import torch.nn as nn

from helpers import lora
from helpers.model import LORA_MARKER, GPTModel, get_config, parameter_report

RANK, ALPHA = 4, 8  # alpha != rank, so a wrong scaling (alpha alone) would show


def tiny_model(seed: int = 0) -> GPTModel:
    torch.manual_seed(seed)
    return GPTModel(get_config("tiny")).eval()


def tokens(seed: int = 1) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.randint(0, 50257, (2, 12), generator=g)


def perturb_lora(model: nn.Module, seed: int = 2, scale: float = 0.05) -> None:
    """Give every B (and A) random values, as training would."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for layer in lora.lora_layers(model).values():
            layer.lora.A.add_(scale * torch.randn(layer.lora.A.shape, generator=g))
            layer.lora.B.copy_(scale * torch.randn(layer.lora.B.shape, generator=g))


def linear_names(model: nn.Module) -> list[str]:
    return [n for n, m in model.named_modules() if isinstance(m, nn.Linear)]


# ------------------------------------------------------------------------------- LoRALayer


def test_lora_layer_initialisation_and_formula():
    torch.manual_seed(0)
    layer = lora.LoRALayer(in_dim=64, out_dim=24, rank=RANK, alpha=ALPHA)
    assert layer.A.shape == (64, RANK) and layer.B.shape == (RANK, 24)
    assert torch.count_nonzero(layer.B) == 0
    bound = 1 / 64**0.5  # nn.Linear's kaiming_uniform_(a=sqrt(5)) range for fan_in = in_dim
    assert layer.A.abs().max() <= bound and layer.A.abs().max() > 0.5 * bound
    with torch.no_grad():
        layer.B.normal_()
    x = torch.randn(3, 64)
    torch.testing.assert_close(layer(x), (ALPHA / RANK) * x @ layer.A @ layer.B)
    with pytest.raises(ValueError, match="rank"):
        lora.LoRALayer(8, 8, rank=0, alpha=1)


def test_lora_parameter_count_matches_lecture_example():
    assert lora.lora_parameter_count(1000, 1000, 2) == 4_000
    layer = lora.LinearWithLoRA(nn.Linear(1000, 1000, bias=False), rank=2, alpha=2)
    report = parameter_report(layer)
    assert report["trainable"] == 4_000 and report["total"] == 1_004_000
    assert "4,000" in report["text"]


def test_linear_with_lora_freezes_base_and_merges_with_bias():
    torch.manual_seed(0)
    base = nn.Linear(10, 6)
    wrapped = lora.LinearWithLoRA(base, rank=3, alpha=5)
    assert not base.weight.requires_grad and not base.bias.requires_grad
    assert wrapped.linear is base and wrapped.weight is base.weight and wrapped.out_features == 6
    with torch.no_grad():
        wrapped.lora.B.normal_()
    merged = wrapped.merge()
    assert type(merged) is nn.Linear
    torch.testing.assert_close(merged.bias, base.bias)
    expected_w = base.weight + (5 / 3) * (wrapped.lora.A @ wrapped.lora.B).T
    torch.testing.assert_close(merged.weight, expected_w)
    x = torch.randn(4, 10)
    torch.testing.assert_close(merged(x), wrapped(x), atol=1e-6, rtol=1e-5)
    with pytest.raises(TypeError, match="nn.Linear"):
        lora.LinearWithLoRA(nn.Conv1d(3, 3, 1), 2, 2)


# ------------------------------------------------------------------------------- a whole GPTModel


@pytest.mark.parametrize("targets", ["all", "attention", ["W_query", "W_value"], ["trf_blocks.1.*"]])
def test_fresh_lora_model_gives_exactly_the_base_outputs(targets):
    model = tiny_model()
    x = tokens()
    with torch.no_grad():
        before = model(x)
        lora.apply_lora(model, RANK, ALPHA, targets=targets)
        after = model(x)
    assert lora.lora_layers(model)
    assert torch.equal(before, after)


def test_targets_select_the_right_layers():
    model = lora.apply_lora(tiny_model(), RANK, ALPHA, targets="all")
    wrapped = set(lora.lora_layers(model))
    blocks = [f"trf_blocks.{i}" for i in range(2)]
    expected = {f"{b}.att.{n}" for b in blocks for n in ("W_query", "W_key", "W_value", "out_proj")}
    expected |= {f"{b}.ff.layers.{i}" for b in blocks for i in (0, 2)}
    assert wrapped == expected | {"out_head"}

    model = lora.apply_lora(tiny_model(), RANK, ALPHA, targets="attention")
    assert set(lora.lora_layers(model)) == {n for n in expected if ".att." in n}

    model = lora.apply_lora(tiny_model(), RANK, ALPHA, targets=["ff.layers.0", "trf_blocks.1.att.W_key"])
    assert set(lora.lora_layers(model)) == {"trf_blocks.0.ff.layers.0", "trf_blocks.1.ff.layers.0",
                                            "trf_blocks.1.att.W_key"}


def test_merged_and_unmerged_models_agree():
    model = lora.apply_lora(tiny_model(), RANK, ALPHA)
    perturb_lora(model)
    x = tokens()
    with torch.no_grad():
        unmerged = model(x)
        assert not torch.allclose(unmerged, tiny_model()(x), atol=1e-3)  # the update does something
        lora.merge_lora(model)
        merged = model(x)
    assert not lora.lora_layers(model)
    assert set(model.state_dict()) == set(tiny_model().state_dict())  # a plain GPTModel again
    torch.testing.assert_close(merged, unmerged, atol=1e-5, rtol=0)


def test_only_lora_parameters_receive_gradients():
    model = lora.apply_lora(tiny_model(), RANK, ALPHA)
    perturb_lora(model)  # with B = 0, A's gradient would be exactly zero
    logits = model(tokens())
    logits.float().pow(2).mean().backward()
    for name, p in model.named_parameters():
        is_lora = ".lora.A" in name or ".lora.B" in name
        assert p.requires_grad == is_lora, name
        if is_lora:
            assert p.grad is not None and p.grad.abs().sum() > 0, name
        else:
            assert p.grad is None, name


def test_trainable_counts_equal_the_formula():
    cfg = get_config("tiny")
    d, v, n = cfg["emb_dim"], cfg["vocab_size"], cfg["n_layers"]
    per_block = 4 * lora.lora_parameter_count(d, d, RANK) + 2 * lora.lora_parameter_count(4 * d, d, RANK)
    model = tiny_model()
    total_base = sum(p.numel() for p in model.parameters())
    report = parameter_report(lora.apply_lora(model, RANK, ALPHA))
    expected = n * per_block + lora.lora_parameter_count(v, d, RANK)
    assert report["trainable"] == report["lora"] == expected
    assert report["total"] == total_base + expected
    assert report["fraction"] == pytest.approx(expected / (total_base + expected))

    attention_only = parameter_report(lora.apply_lora(tiny_model(), RANK, ALPHA, "attention"))
    assert attention_only["trainable"] == n * 4 * lora.lora_parameter_count(d, d, RANK)


def test_lora_layers_carry_the_marker_the_parameter_report_counts():
    assert getattr(lora.LoRALayer(4, 4, rank=1, alpha=1), LORA_MARKER) is True
    layer = lora.LinearWithLoRA(nn.Linear(6, 5), rank=2, alpha=2)
    report = parameter_report(layer)
    assert report["lora"] == report["trainable"] == 2 * (6 + 5)
    assert report["trainable_modules"] == ["lora"] and "LoRA 22" in report["text"]


def test_fully_trainable_classification_head():
    model = tiny_model()
    model.out_head = nn.Linear(get_config("tiny")["emb_dim"], 2)
    lora.apply_lora(model, RANK, ALPHA, trainable=["out_head", "final_norm"])
    assert "out_head" not in lora.lora_layers(model)
    assert all(p.requires_grad for p in model.out_head.parameters())
    assert all(p.requires_grad for p in model.final_norm.parameters())
    assert not model.tok_emb.weight.requires_grad
    report = parameter_report(model)
    assert report["trainable"] - report["lora"] == 2 * 32 + 2 + 2 * 32
    model(tokens())[:, -1, :].sum().backward()
    assert model.out_head.weight.grad is not None and model.tok_emb.weight.grad is None


def test_course_parameter_counts_for_gpt2_on_meta_device():
    """The course's numbers, without allocating GPT-2: 2.67M (classifier, 124M) and 7.9M (355M)."""
    with torch.device("meta"):
        small = GPTModel(get_config("gpt2-small"))
        small.out_head = nn.Linear(768, 2)
        medium = GPTModel(get_config("gpt2-medium"))
    assert parameter_report(lora.apply_lora(small, 16, 16))["trainable"] == 2_666_528
    assert parameter_report(lora.apply_lora(medium, 16, 16))["trainable"] == 7_898_384


def test_works_on_any_module():
    torch.manual_seed(0)
    net = nn.Sequential(nn.Linear(5, 7), nn.ReLU(), nn.Sequential(nn.Linear(7, 3)))
    x = torch.randn(4, 5)
    before = net(x)
    lora.replace_linear_with_lora(net, rank=2, alpha=2)
    assert set(lora.lora_layers(net)) == {"0", "2.0"}
    assert torch.equal(net(x), before)
    with pytest.raises(TypeError, match="LinearWithLoRA"):
        lora.apply_lora(nn.Linear(3, 3), 2, 2)


# ------------------------------------------------------------------------------- agreement with peft


def test_matches_peft_lora_on_the_same_weights():
    peft = pytest.importorskip("peft")
    base = tiny_model()
    ours = lora.apply_lora(copy.deepcopy(base), RANK, ALPHA, targets="all")
    perturb_lora(ours)

    targets = ["W_query", "W_key", "W_value", "out_proj", "ff.layers.0", "ff.layers.2", "out_head"]
    config = peft.LoraConfig(r=RANK, lora_alpha=ALPHA, target_modules=targets, lora_dropout=0.0)
    theirs = peft.inject_adapter_in_model(config, copy.deepcopy(base)).eval()
    peft_layers = {n: m for n, m in theirs.named_modules() if hasattr(m, "lora_A") and "default" in m.lora_A}
    assert set(peft_layers) == set(lora.lora_layers(ours))
    with torch.no_grad():
        for name, layer in lora.lora_layers(ours).items():
            peft_layer = peft_layers[name]
            assert peft_layer.scaling["default"] == layer.lora.scaling
            peft_layer.lora_A["default"].weight.copy_(layer.lora.A.T)  # peft: (r, in), ours (in, r)
            peft_layer.lora_B["default"].weight.copy_(layer.lora.B.T)  # peft: (out, r), ours (r, out)
        x = tokens()
        torch.testing.assert_close(ours(x), theirs(x), atol=1e-5, rtol=0)


# ------------------------------------------------------------------------------- saving and loading


def test_save_and_load_round_trip(tmp_path):
    base = tiny_model()
    trained = lora.apply_lora(copy.deepcopy(base), RANK, ALPHA, trainable=["final_norm"])
    perturb_lora(trained)
    with torch.no_grad():
        trained.final_norm.scale.mul_(1.5)
    path = lora.save_lora(tmp_path / "adapter.pt", trained)
    assert path.is_file() and not (tmp_path / "adapter.pt.part").exists()
    saved = torch.load(path, weights_only=True)["state"]
    assert all(".lora." in k for k in saved if not k.startswith("final_norm"))
    assert "tok_emb.weight" not in saved and "final_norm.scale" in saved

    restored = lora.apply_lora(copy.deepcopy(base), RANK, ALPHA, trainable=["final_norm"])
    x = tokens()
    with torch.no_grad():
        assert not torch.allclose(restored(x), trained(x))
        lora.load_lora(path, restored)
        torch.testing.assert_close(restored(x), trained(x), atol=0, rtol=0)


# ------------------------------------------------------------------------------- clear errors


def test_bad_targets_give_clear_errors():
    with pytest.raises(ValueError, match="'W_nope' matches no nn.Linear"):
        lora.apply_lora(tiny_model(), RANK, ALPHA, targets=["W_query", "W_nope"])
    with pytest.raises(ValueError, match="not nn.Linear: .*MultiHeadAttention"):
        lora.apply_lora(tiny_model(), RANK, ALPHA, targets=["att"])
    with pytest.raises(ValueError, match="trainable pattern 'head' matches no module"):
        lora.apply_lora(tiny_model(), RANK, ALPHA, trainable=["head"])
    with pytest.raises(ValueError, match="both a LoRA target and fully trainable"):
        lora.apply_lora(tiny_model(), RANK, ALPHA, targets=["out_head"], trainable=["out_head"])
    with pytest.raises(ValueError, match="found no nn.Linear"):
        lora.apply_lora(nn.Sequential(nn.ReLU()), RANK, ALPHA, targets="attention")
    with pytest.raises(TypeError, match="list of non-empty strings"):
        lora.apply_lora(tiny_model(), RANK, ALPHA, targets=[3])
    model = lora.apply_lora(tiny_model(), RANK, ALPHA)
    with pytest.raises(ValueError, match="already has LoRA layers"):
        lora.apply_lora(model, RANK, ALPHA)
    # A failed call leaves the model untouched.
    untouched = tiny_model()
    with pytest.raises(ValueError):
        lora.apply_lora(untouched, RANK, ALPHA, targets=["W_nope"])
    assert all(p.requires_grad for p in untouched.parameters()) and not lora.lora_layers(untouched)


def test_bad_files_give_clear_errors(tmp_path):
    path = lora.save_lora(tmp_path / "a.pt", lora.apply_lora(tiny_model(), RANK, ALPHA, targets="attention"))
    with pytest.raises(ValueError, match="Missing in the file: .*ff.layers.0.lora.A"):
        lora.load_lora(path, lora.apply_lora(tiny_model(), RANK, ALPHA, targets="all"))
    with pytest.raises(ValueError, match="Unexpected in the file: .*W_key.lora.A"):
        lora.load_lora(path, lora.apply_lora(tiny_model(), RANK, ALPHA, targets=["W_query"]))
    with pytest.raises(ValueError, match="same rank and alpha"):
        lora.load_lora(path, lora.apply_lora(tiny_model(), RANK * 2, ALPHA, targets="attention"))
    with pytest.raises(ValueError, match="same rank and alpha"):
        lora.load_lora(path, lora.apply_lora(tiny_model(), RANK, ALPHA + 1, targets="attention"))
    with pytest.raises(ValueError, match="same rank and alpha"):
        lora.load_lora(path, lora.apply_lora(tiny_model(), RANK, ALPHA, targets="attention", convention="course"))
    with pytest.raises(ValueError, match="convention must be one of"):
        lora.apply_lora(tiny_model(), RANK, ALPHA, convention="peft")
    # A file written before the convention was recorded is a paper-convention file.
    old_style = torch.load(path, weights_only=True)
    old_style["layers"] = {n: {"rank": s["rank"], "alpha": s["alpha"]} for n, s in old_style["layers"].items()}
    torch.save(old_style, tmp_path / "old_style.pt")
    lora.load_lora(tmp_path / "old_style.pt", lora.apply_lora(tiny_model(), RANK, ALPHA, targets="attention"))

    with pytest.raises(FileNotFoundError):
        lora.load_lora(tmp_path / "missing.pt", tiny_model())
    garbage = tmp_path / "garbage.pt"
    garbage.write_bytes(b"not a torch file")
    with pytest.raises(ValueError, match="could not be read"):
        lora.load_lora(garbage, lora.apply_lora(tiny_model(), RANK, ALPHA))
    other = tmp_path / "other.pt"
    torch.save({"weights": torch.zeros(2)}, other)
    with pytest.raises(ValueError, match="not a file written by helpers.lora.save_lora"):
        lora.load_lora(other, lora.apply_lora(tiny_model(), RANK, ALPHA))

    # Same names and settings but a different shape (another model size).
    payload = torch.load(path, weights_only=True)
    name = "trf_blocks.0.att.W_query.lora.A"
    payload["state"][name] = torch.zeros(7, RANK)
    torch.save(payload, tmp_path / "shape.pt")
    with pytest.raises(ValueError, match="shapes differ.*W_query.lora.A"):
        lora.load_lora(tmp_path / "shape.pt", lora.apply_lora(tiny_model(), RANK, ALPHA, targets="attention"))


@pytest.mark.parametrize("rank, alpha, message", [
    (0, 16, "rank must be a positive integer"),
    (2.5, 16, "rank must be a positive integer"),
    (True, 16, "rank must be a positive integer"),
    ("8", 16, "rank must be a positive integer"),
    (4, 0, "alpha = 0 would keep it at zero"),
    (4, float("nan"), "finite number other than 0"),
    (4, "16", "finite number other than 0"),
])
def test_lora_settings_that_would_train_nothing_are_refused(rank, alpha, message):
    with pytest.raises(ValueError, match=message):
        lora.LoRALayer(32, 16, rank, alpha)

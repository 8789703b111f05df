import io

import pytest
from matplotlib.figure import Figure

from helpers import plotting
from helpers.history import History

H = History([9.0, 6.0, 4.0], [9.5, 7.0, 6.5], [512, 2560, 4608], [0, 4, 8], [1 / 9, 5 / 9, 1.0],
            extra={"val_acc": [0.6, 0.8]})


def test_plot_losses_returns_a_figure_with_both_curves_and_a_tokens_axis():
    fig = plotting.plot_losses(H)
    assert isinstance(fig, Figure)
    ax = fig.axes[0]
    assert [line.get_label() for line in ax.get_lines()] == ["Training loss", "Validation loss"]
    assert list(ax.get_lines()[1].get_ydata()) == H.val_losses
    assert [a.get_xlabel() for a in ax.child_axes] == ["Tokens seen"]
    fig2 = plotting.plot_losses(H.epochs, H.tokens_seen, H.train_losses, H.val_losses)
    assert list(fig2.axes[0].get_lines()[0].get_ydata()) == H.train_losses


def test_plot_runs_overlays_labelled_runs():
    other = History([8.0, 5.0], [9.0, 6.8], [512, 2560], [0, 4], [0.1, 0.5])
    fig = plotting.plot_runs([H, other], ["lr=4e-4", "lr=1e-3"])
    labels = [line.get_label() for line in fig.axes[0].get_lines()]
    assert labels == ["lr=4e-4 (train)", "lr=4e-4 (val)", "lr=1e-3 (train)", "lr=1e-3 (val)"]
    acc = plotting.plot_runs([H], ["a"], metric="val_acc")
    assert list(acc.axes[0].get_lines()[0].get_ydata()) == [0.6, 0.8]
    with pytest.raises(KeyError, match="val_acc"):
        plotting.plot_runs([other], ["b"], metric="val_acc")
    with pytest.raises(ValueError):
        plotting.plot_runs([H, other], ["only one"])


def test_plot_values_for_accuracy():
    fig = plotting.plot_values([1, 2], [100, 200], [0.7, 0.9], [0.6, 0.85], label="accuracy", seen_unit="examples")
    assert fig.axes[0].get_ylabel() == "Accuracy"


def test_live_plot_is_a_no_op_outside_notebooks():
    live = plotting.LiveLossPlot()
    assert live.update(H) is None


def test_plot_values_accepts_tensors_and_no_second_axis():
    import torch

    fig = plotting.plot_values(torch.linspace(0, 2, 3), torch.tensor([0, 40, 80]), [0.5, 0.7, 0.9],
                               [0.4, 0.6, 0.7], label="accuracy", seen_unit="examples")
    top = fig.axes[0].child_axes[0]
    assert top.get_xlabel() == "Examples seen"
    fig.savefig(io.BytesIO(), format="png")  # drawing sets the second axis's limits
    assert top.get_xlim() == pytest.approx(tuple(40 * x for x in fig.axes[0].get_xlim()))  # 40 per epoch
    assert list(fig.axes[0].get_lines()[0].get_xdata()) == [0.0, 1.0, 2.0]
    bare = plotting.plot_values([1, 2], None, [3.0, 2.0], [3.5, 3.0])
    assert bare.axes[0].child_axes == []


def test_plot_token_probabilities_shows_what_top_k_keeps():
    import torch

    from helpers.tokenizer import get_tokenizer

    logits = torch.tensor([5.0, 4.0, 3.0, 2.0, 1.0, 0.0] + [-5.0] * 50)
    fig = plotting.plot_token_probabilities(logits, get_tokenizer(), settings=[(1.0, None), (1.0, 2), (0.1, None)],
                                            top=5)
    heights = [[bar.get_height() for bar in ax.patches] for ax in fig.axes]
    assert [len(h) for h in heights] == [6, 6, 6]  # the 5 most likely tokens and "all others"
    assert all(sum(h) == pytest.approx(1.0) for h in heights)
    assert heights[1][2:] == [0.0, 0.0, 0.0, 0.0]  # top-k 2: nothing left for the others
    assert heights[2][0] > heights[0][0] > heights[0][1]  # low temperature sharpens
    assert fig.axes[0].get_xticklabels()[-1].get_text() == f"other {len(logits) - 5:,}"
    assert [ax.get_title() for ax in fig.axes] == ["temperature 1", "temperature 1, top-k 2", "temperature 0.1"]


def test_live_plot_redraws_one_figure_in_one_output(monkeypatch):
    import IPython.display

    calls = []

    class Handle:
        def update(self, obj):
            calls.append(("update", obj))

    def fake_display(obj, display_id=False):
        calls.append(("display", obj))
        return Handle()

    monkeypatch.setattr(plotting, "_in_notebook", lambda: True)
    monkeypatch.setattr(IPython.display, "display", fake_display)
    live = plotting.LiveLossPlot()
    assert live.update(History()) is None  # nothing to draw before the first evaluation
    first = live.update(History(H.train_losses[:2], H.val_losses[:2], H.tokens_seen[:2], H.steps[:2], H.epochs[:2]))
    second = live.update(H)
    assert first is second and [kind for kind, _ in calls] == ["display", "update"]
    assert all(obj is first for _, obj in calls)
    assert len(second.axes[0].get_lines()) == 2 and list(second.axes[0].get_lines()[0].get_ydata()) == H.train_losses


def test_plot_runs_by_pattern(monkeypatch, tmp_path):
    from helpers import checkpoints

    monkeypatch.setenv("LECTURES_CACHE", str(tmp_path))
    for i, name in enumerate(["lecture02-quick", "lecture02-quick-lr0.001-abcdef12", "other"]):
        checkpoints.save_run(name, History([3.0 - i, 2.0], [3.5, 3.0], [10, 20], [0, 1], [0.5, 1.0],
                                           config={"i": i}))
    fig = plotting.plot_runs(match="lecture02-*")
    labels = [t.get_text() for t in fig.axes[0].get_legend().get_texts()]
    assert labels == ["lecture02-quick (train)", "lecture02-quick (val)",
                      "lecture02-quick-lr0.001-abcdef12 (train)", "lecture02-quick-lr0.001-abcdef12 (val)"]
    with pytest.raises(ValueError, match="No runs to plot.*saved: lecture02-quick"):
        plotting.plot_runs(match="nothing-*")

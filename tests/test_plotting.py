import pytest
from matplotlib.figure import Figure

from helpers import plotting
from helpers.training import History

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

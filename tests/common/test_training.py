"""Training pieces: schedules, clipping, early stopping, best checkpoint, history, metrics, loss curve, fit."""
from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest
import torch
from matplotlib.figure import Figure

from multimodal_suite.common.training import (
    BestCheckpoint,
    BestTracker,
    EarlyStopping,
    FitResult,
    clip_and_step,
    epoch_row,
    fit,
    history_frame,
    history_metrics,
    is_better,
    loss_curve_figure,
    lr_factor,
    optimizer_step,
    warmup_schedule,
)

# ---------------------------------------------------------------------------------------------------------------
# schedules
# ---------------------------------------------------------------------------------------------------------------


def test_warmup_ramps_linearly_to_one() -> None:
    factor = lr_factor(warmup_steps=4, total_steps=20)
    assert [factor(step) for step in range(4)] == [0.25, 0.5, 0.75, 1.0]


def test_cosine_starts_at_one_halves_midway_and_ends_at_zero() -> None:
    factor = lr_factor(warmup_steps=4, total_steps=24, schedule="cosine")
    assert factor(4) == pytest.approx(1.0)
    assert factor(14) == pytest.approx(0.5)
    assert factor(24) == pytest.approx(0.0, abs=1e-12)
    assert factor(100) == pytest.approx(0.0, abs=1e-12)  # stays at zero past the end


def test_inverse_sqrt_decays_with_the_square_root_of_the_step() -> None:
    factor = lr_factor(warmup_steps=4, total_steps=10, schedule="inverse_sqrt")
    assert factor(3) == 1.0
    assert factor(4) == pytest.approx(math.sqrt(4 / 5))
    assert factor(15) == pytest.approx(0.5)  # sqrt(4 / 16)
    assert factor(399) == pytest.approx(0.1)


def test_no_warmup_starts_at_full_rate() -> None:
    assert lr_factor(warmup_steps=0, total_steps=10)(0) == pytest.approx(1.0)


def test_unknown_schedule_names_the_choices() -> None:
    with pytest.raises(ValueError, match="cosine.*inverse_sqrt.*'linear'"):
        lr_factor(2, 10, "linear")  # type: ignore[arg-type]


def test_warmup_schedule_sets_the_optimizer_rate_at_each_step() -> None:
    parameter = torch.nn.Parameter(torch.zeros(1))
    optimizer = torch.optim.SGD([parameter], lr=0.1)
    scheduler = warmup_schedule(optimizer, warmup_steps=2, total_steps=6)
    factor = lr_factor(2, 6)
    rates = [optimizer.param_groups[0]["lr"]]
    for _ in range(6):
        optimizer.step()
        scheduler.step()
        rates.append(optimizer.param_groups[0]["lr"])
    np.testing.assert_allclose(rates, [0.1 * factor(step) for step in range(7)])
    assert rates[0] == pytest.approx(0.05) and rates[-1] == pytest.approx(0.0, abs=1e-12)


# ---------------------------------------------------------------------------------------------------------------
# optimizer step
# ---------------------------------------------------------------------------------------------------------------


def _grad_norm(parameters: list[torch.nn.Parameter]) -> float:
    return float(torch.linalg.vector_norm(torch.cat([p.grad.flatten() for p in parameters])))


def test_clipping_bounds_the_gradient_norm_and_the_update() -> None:
    torch.manual_seed(0)
    layer = torch.nn.Linear(8, 4)
    parameters = list(layer.parameters())
    before = [p.detach().clone() for p in parameters]
    optimizer = torch.optim.SGD(parameters, lr=1.0)
    loss = (layer(torch.randn(16, 8) * 100.0) ** 2).mean()
    norm = optimizer_step(loss, optimizer, parameters, max_grad_norm=0.5)
    assert float(norm) > 0.5  # the raw gradient was larger than the bound ...
    assert _grad_norm(parameters) == pytest.approx(0.5, rel=1e-4)  # ... and was scaled down to it
    step = torch.cat([(b - p.detach()).flatten() for b, p in zip(before, parameters)])
    assert float(torch.linalg.vector_norm(step)) <= 0.5 + 1e-5  # SGD lr=1 moves by exactly the gradient


def test_small_gradients_are_left_alone() -> None:
    parameter = torch.nn.Parameter(torch.tensor([1.0, 2.0]))
    optimizer = torch.optim.SGD([parameter], lr=0.1)
    norm = optimizer_step((parameter * torch.tensor([0.3, 0.4])).sum(), optimizer, [parameter], max_grad_norm=10.0)
    assert float(norm) == pytest.approx(0.5)
    torch.testing.assert_close(parameter.grad, torch.tensor([0.3, 0.4]))
    torch.testing.assert_close(parameter.detach(), torch.tensor([0.97, 1.96]))


def test_step_zeroes_old_gradients_and_steps_the_scheduler() -> None:
    parameter = torch.nn.Parameter(torch.tensor([1.0]))
    optimizer = torch.optim.SGD([parameter], lr=1.0)
    scheduler = warmup_schedule(optimizer, warmup_steps=4, total_steps=8)
    for _ in range(2):
        optimizer_step(parameter.sum(), optimizer, [parameter], max_grad_norm=math.inf, scheduler=scheduler)
    torch.testing.assert_close(parameter.grad, torch.tensor([1.0]))  # not accumulated to 2
    assert scheduler.last_epoch == 2 and optimizer.param_groups[0]["lr"] == pytest.approx(0.75)


def test_clip_and_step_after_accumulated_backwards() -> None:
    parameter = torch.nn.Parameter(torch.tensor([0.0, 0.0]))
    optimizer = torch.optim.SGD([parameter], lr=1.0)
    for _ in range(4):  # four micro-batches add up to a gradient of norm 4 * 5
        (parameter * torch.tensor([3.0, 4.0])).sum().backward()
    norm = clip_and_step(optimizer, [parameter], max_grad_norm=1.0)
    assert float(norm) == pytest.approx(20.0)
    torch.testing.assert_close(parameter.detach(), torch.tensor([-0.6, -0.8]))


# ---------------------------------------------------------------------------------------------------------------
# trackers, early stopping, checkpoint
# ---------------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("value", "best", "mode", "min_delta", "expected"),
    [
        (0.9, 1.0, "min", 0.0, True),
        (1.0, 1.0, "min", 0.0, False),  # equal is not better
        (0.95, 1.0, "min", 0.1, False),  # better, but not by min_delta
        (1.2, 1.0, "max", 0.1, True),
        (1.05, 1.0, "max", 0.1, False),
        (math.nan, 1.0, "min", 0.0, False),
        (math.nan, -math.inf, "max", 0.0, False),
    ],
)
def test_is_better(value: float, best: float, mode: str, min_delta: float, expected: bool) -> None:
    assert is_better(value, best, mode, min_delta) is expected  # type: ignore[arg-type]


def test_tracker_counts_updates_since_the_best() -> None:
    tracker = BestTracker("max")
    assert tracker.value == -math.inf and tracker.epoch == -1
    assert [tracker.update(v, e) for e, v in enumerate([0.2, 0.5, 0.4, 0.5, 0.6, 0.1])] == [
        True, True, False, False, True, False]
    assert (tracker.value, tracker.epoch, tracker.since_best) == (0.6, 4, 1)


def test_bad_mode_and_patience_are_errors() -> None:
    with pytest.raises(ValueError, match="mode must be one of \\['min', 'max'\\]"):
        EarlyStopping("val_loss", patience=3, mode="lowest")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="patience"):
        EarlyStopping("val_loss", patience=-1)
    with pytest.raises(ValueError, match="mode"):
        BestCheckpoint("val_f1", mode="up")  # type: ignore[arg-type]


class Scripted:
    """A one-parameter model whose weight is set to the epoch number; metrics come from fixed lists."""

    def __init__(self, **series: list[float]) -> None:
        self.model = torch.nn.Linear(1, 1, bias=False)
        self.series = series
        self.trained: list[int] = []

    def train_epoch(self, epoch: int) -> dict[str, float]:
        with torch.no_grad():
            self.model.weight.fill_(float(epoch))
        self.trained.append(epoch)
        return {"train_loss": 1.0 / (epoch + 1)}

    def evaluate(self, epoch: int) -> dict[str, float]:
        return {name: values[epoch] for name, values in self.series.items()}


def test_early_stop_after_exactly_patience_non_improving_epochs() -> None:
    # best at epoch 1; 0.49995 beats it by less than min_delta, so epochs 2, 3 and 4 do not improve
    run = Scripted(val_loss=[1.0, 0.5, 0.49995, 0.6, 0.5, 0.1, 0.1])
    result = fit(epochs=7, train_epoch=run.train_epoch, evaluate=run.evaluate,
                 early_stopping=EarlyStopping("val_loss", patience=3, mode="min", min_delta=1e-4))
    assert result.stopped_early and result.epochs_run == 5
    assert run.trained == [0, 1, 2, 3, 4]
    assert result.history["epoch"].tolist() == [0, 1, 2, 3, 4]


def test_improvement_resets_patience_and_max_mode() -> None:
    run = Scripted(val_f1=[0.1, 0.2, 0.1, 0.3, 0.2, 0.1, 0.0])
    result = fit(epochs=7, train_epoch=run.train_epoch, evaluate=run.evaluate,
                 early_stopping=EarlyStopping("val_f1", patience=2, mode="max"))
    assert result.stopped_early and result.epochs_run == 6  # epochs 4 and 5 fail to beat epoch 3


def test_no_early_stop_runs_every_epoch() -> None:
    run = Scripted(val_loss=[1.0, 2.0, 3.0])
    result = fit(epochs=3, train_epoch=run.train_epoch, evaluate=run.evaluate,
                 early_stopping=EarlyStopping("val_loss", patience=5))
    assert not result.stopped_early and result.epochs_run == 3


def test_best_checkpoint_restores_the_best_weights() -> None:
    run = Scripted(val_loss=[3.0, 2.0, 1.0, 1.5, 1.4], val_f1=[0.1, 0.7, 0.6, 0.7, 0.2])
    result = fit(epochs=5, train_epoch=run.train_epoch, evaluate=run.evaluate, model=run.model,
                 early_stopping=EarlyStopping("val_loss", patience=10), checkpoint=BestCheckpoint("val_f1"))
    # strictly greater: the tie at epoch 3 keeps epoch 1
    assert (result.best_epoch, result.best_value) == (1, 0.7)
    assert run.model.weight.item() == 4.0  # training went on past the best epoch
    assert result.best_state is not None and result.best_state["weight"].device.type == "cpu"
    run.model.load_state_dict(result.best_state)
    assert run.model.weight.item() == 1.0
    with torch.no_grad():
        run.model.weight.fill_(9.0)
    assert float(result.best_state["weight"]) == 1.0  # a copy, not a view of the live weights


def test_checkpoint_by_min_metric_and_custom_state() -> None:
    run = Scripted(val_loss=[3.0, 2.0, 1.0, 1.5])
    result = fit(epochs=4, train_epoch=run.train_epoch, evaluate=run.evaluate, checkpoint=BestCheckpoint(
        "val_loss", mode="min"), state_dict=lambda: {"only": run.model.weight * 10})
    assert result.best_epoch == 2 and set(result.best_state or {}) == {"only"}
    assert float((result.best_state or {})["only"]) == 20.0


def test_checkpoint_epoch_that_stops_training_can_be_the_best() -> None:
    run = Scripted(val_loss=[1.0, 1.0], val_f1=[0.1, 0.9])
    result = fit(epochs=5, train_epoch=run.train_epoch, evaluate=run.evaluate, model=run.model,
                 early_stopping=EarlyStopping("val_loss", patience=1), checkpoint=BestCheckpoint("val_f1"))
    assert result.stopped_early and result.epochs_run == 2 and result.best_epoch == 1


def test_rules_need_their_metric_and_the_checkpoint_needs_weights() -> None:
    run = Scripted(val_loss=[1.0])
    with pytest.raises(KeyError, match="'val_f1'.*'train_loss', 'val_loss'"):
        fit(epochs=1, train_epoch=run.train_epoch, evaluate=run.evaluate, model=run.model,
            checkpoint=BestCheckpoint("val_f1"))
    with pytest.raises(ValueError, match="needs the model"):
        fit(epochs=1, train_epoch=run.train_epoch, evaluate=run.evaluate, checkpoint=BestCheckpoint("val_loss"))


def test_without_checkpoint_nothing_is_kept() -> None:
    run = Scripted(val_loss=[1.0, 0.5])
    result = fit(epochs=2, train_epoch=run.train_epoch, evaluate=run.evaluate, model=run.model)
    assert result.best_state is None and result.best_epoch == -1 and math.isnan(result.best_value)


# ---------------------------------------------------------------------------------------------------------------
# history, metrics, figure
# ---------------------------------------------------------------------------------------------------------------


def test_history_columns_in_order_with_the_learning_rate_last() -> None:
    run = Scripted(val_loss=[1.0, 0.8, 0.7], val_f1=[0.2, 0.3, 0.4])
    optimizer = torch.optim.SGD(run.model.parameters(), lr=0.25)
    result = fit(epochs=3, train_epoch=run.train_epoch, evaluate=run.evaluate, optimizer=optimizer)
    history = result.history
    assert list(history.columns) == ["epoch", "train_loss", "val_loss", "val_f1", "learning_rate"]
    assert history.shape == (3, 5) and history["epoch"].dtype == np.int64
    assert history["learning_rate"].tolist() == [0.25, 0.25, 0.25]
    assert history["val_f1"].tolist() == [0.2, 0.3, 0.4]


def test_a_metric_reported_twice_is_an_error() -> None:
    with pytest.raises(ValueError, match=r"\['val_loss'\] are reported twice"):
        epoch_row(0, {"val_loss": 1.0}, {"val_loss": 2.0})


def test_empty_history_still_has_the_epoch_column() -> None:
    assert list(history_frame([]).columns) == ["epoch"]
    result = fit(epochs=0, train_epoch=lambda e: {}, evaluate=lambda e: {})
    assert isinstance(result, FitResult) and result.epochs_run == 0 and len(result.history) == 0


def test_history_metrics_one_entry_per_epoch_per_metric() -> None:
    history = pd.DataFrame({"epoch": [0, 1, 2], "train_loss": [0.9, 0.5, 0.4], "val_loss": [1.0, 0.7, 0.8],
                            "learning_rate": [1e-3, 1e-3, 5e-4]})
    metrics = history_metrics(history, ["train_loss", "val_loss"])
    assert set(metrics) == {"train_loss", "val_loss"}
    assert metrics["val_loss"] == [{"value": 1.0, "step": 0}, {"value": 0.7, "step": 1}, {"value": 0.8, "step": 2}]
    assert all(type(e["value"]) is float and type(e["step"]) is int for e in metrics["train_loss"])
    with pytest.raises(KeyError, match="val_f1"):
        history_metrics(history, ["val_f1"])


def _line_labels(axes) -> list[str]:
    return [line.get_label() for line in axes.get_lines()]


def test_loss_curve_has_losses_metric_on_a_twin_axis_and_the_best_epoch() -> None:
    history = pd.DataFrame({"epoch": [0, 1, 2], "train_loss": [0.9, 0.5, 0.4], "val_loss": [1.0, 0.7, 0.8],
                            "val_macro_f1": [0.2, 0.5, 0.4]})
    figure = loss_curve_figure(history, 1, metric="val_macro_f1", metric_label="val macro-F1", title="BookBERT")
    assert isinstance(figure, Figure)
    axis, twin = figure.axes
    assert _line_labels(axis) == ["train loss", "val loss", "best checkpoint"]
    assert _line_labels(twin) == ["val macro-F1"] and twin.get_ylabel() == "val macro-F1"
    np.testing.assert_array_equal(axis.get_lines()[1].get_ydata(), [1.0, 0.7, 0.8])
    np.testing.assert_array_equal(axis.get_lines()[2].get_xdata(), [1, 1])  # the vertical line at epoch 1
    assert axis.get_title() == "BookBERT"
    legend = [text.get_text() for text in axis.get_legend().get_texts()]
    assert legend == ["train loss", "val loss", "best checkpoint", "val macro-F1"]


def test_loss_curve_without_metric_or_best_epoch() -> None:
    history = pd.DataFrame({"epoch": [0, 1], "train_loss": [0.9, 0.5]})
    figure = loss_curve_figure(history, losses=["train_loss"])
    assert len(figure.axes) == 1 and _line_labels(figure.axes[0]) == ["train loss"]


# ---------------------------------------------------------------------------------------------------------------
# fit on a real (tiny) problem
# ---------------------------------------------------------------------------------------------------------------


def test_fit_on_a_tiny_regression_decreases_the_loss() -> None:
    torch.manual_seed(0)
    true_weight = torch.tensor([[2.0, -1.0, 0.5]])
    x_train, x_val = torch.randn(64, 3), torch.randn(32, 3)
    y_train = x_train @ true_weight.T + 0.01 * torch.randn(64, 1)
    y_val = x_val @ true_weight.T
    model = torch.nn.Linear(3, 1)
    optimizer = torch.optim.AdamW(model.parameters(), lr=0.05, weight_decay=0.0)
    epochs, batch = 30, 16
    scheduler = warmup_schedule(optimizer, warmup_steps=4, total_steps=epochs * (64 // batch))
    loss_fn = torch.nn.MSELoss()

    def train_epoch(epoch: int) -> dict[str, float]:
        model.train()
        total = 0.0
        for first in range(0, 64, batch):
            loss = loss_fn(model(x_train[first : first + batch]), y_train[first : first + batch])
            optimizer_step(loss, optimizer, model.parameters(), max_grad_norm=1.0, scheduler=scheduler)
            total += loss.item()
        return {"train_loss": total / (64 // batch)}

    def evaluate(epoch: int) -> dict[str, float]:
        model.eval()
        with torch.inference_mode():
            return {"val_loss": float(loss_fn(model(x_val), y_val))}

    result = fit(epochs=epochs, train_epoch=train_epoch, evaluate=evaluate, model=model, optimizer=optimizer,
                 early_stopping=EarlyStopping("val_loss", patience=5, min_delta=1e-6),
                 checkpoint=BestCheckpoint("val_loss", mode="min"))
    history = result.history
    assert history["train_loss"].iloc[-1] < 0.1 * history["train_loss"].iloc[0]
    assert result.best_value < 0.1 * history["val_loss"].iloc[0]
    assert result.best_value == history["val_loss"].min()
    model.load_state_dict(result.best_state)
    torch.testing.assert_close(model.weight.detach(), true_weight, atol=0.2, rtol=0)

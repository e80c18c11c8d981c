"""What every trainer needs: warm-up learning-rate schedules, a clipped optimizer step, early stopping and the
best checkpoint by a chosen metric, per-epoch history rows, MLflow metric histories and the loss-curve figure.

:func:`fit` runs the epochs. The trainer supplies ``train_epoch(epoch)`` and ``evaluate(epoch)``, each
returning ``{metric: value}``; ``fit`` calls them in that order once per epoch and draws no random numbers
itself, so a trainer written on top of it consumes its generators exactly as its own loop would.
"""
from __future__ import annotations

import logging
import math
import time
import typing
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Literal

import pandas as pd
import torch
from matplotlib.figure import Figure
from tqdm.auto import tqdm

logger = logging.getLogger(__name__)

Schedule = Literal["cosine", "inverse_sqrt"]
Mode = Literal["min", "max"]
SCHEDULES: tuple[str, ...] = typing.get_args(Schedule)
MODES: tuple[str, ...] = typing.get_args(Mode)
EPOCH_COLUMN = "epoch"
LR_COLUMN = "learning_rate"

StateDict = dict[str, torch.Tensor]
Metrics = Mapping[str, float]


# ----------------------------------------------------------------------------------------------------------------
# schedules and the optimizer step
# ----------------------------------------------------------------------------------------------------------------


def lr_factor(warmup_steps: int, total_steps: int, schedule: Schedule = "cosine") -> Callable[[int], float]:
    """The multiplier of the base learning rate at optimizer step ``step`` (0-based), for ``LambdaLR``.

    A linear warm-up to 1 over ``warmup_steps`` steps, then ``cosine`` decay to 0 at ``total_steps`` (and 0
    after), or ``inverse_sqrt`` decay ``sqrt(warmup_steps / (step + 1))``.

    Raises:
        ValueError: for a schedule other than ``cosine`` or ``inverse_sqrt``.
    """
    if schedule not in SCHEDULES:
        raise ValueError(f"schedule must be one of {list(SCHEDULES)}, got {schedule!r}")
    warmup = max(1, warmup_steps)

    def factor(step: int) -> float:
        if step < warmup_steps:
            return (step + 1) / warmup
        if schedule == "inverse_sqrt":
            return math.sqrt(warmup / (step + 1))
        progress = (step - warmup_steps) / max(1, total_steps - warmup_steps)
        return 0.5 * (1.0 + math.cos(math.pi * min(1.0, progress)))

    return factor


def warmup_schedule(
    optimizer: torch.optim.Optimizer, *, warmup_steps: int, total_steps: int, schedule: Schedule = "cosine"
) -> torch.optim.lr_scheduler.LambdaLR:
    """A ``LambdaLR`` over ``optimizer`` following :func:`lr_factor`; step it once per optimizer step."""
    return torch.optim.lr_scheduler.LambdaLR(optimizer, lr_factor(warmup_steps, total_steps, schedule))


def clip_and_step(
    optimizer: torch.optim.Optimizer,
    parameters: Iterable[torch.Tensor],
    *,
    max_grad_norm: float,
    scheduler: torch.optim.lr_scheduler.LRScheduler | None = None,
    scaler: torch.amp.GradScaler | None = None,
) -> torch.Tensor:
    """Clip the gradients of ``parameters`` to total L2 norm ``max_grad_norm``, step the optimizer, then the
    scheduler. Call after ``backward()`` (once per accumulated batch group).

    With a ``GradScaler`` the gradients are unscaled first, so the bound applies to the true gradients.
    ``max_grad_norm=math.inf`` measures without clipping.

    Returns:
        The total gradient norm before clipping, as a 0-d tensor (no device sync until it is read).
    """
    if scaler is not None:
        scaler.unscale_(optimizer)
    norm = torch.nn.utils.clip_grad_norm_(parameters, max_grad_norm)
    if scaler is not None:
        scaler.step(optimizer)
        scaler.update()
    else:
        optimizer.step()
    if scheduler is not None:
        scheduler.step()
    return norm


def optimizer_step(
    loss: torch.Tensor,
    optimizer: torch.optim.Optimizer,
    parameters: Iterable[torch.Tensor],
    *,
    max_grad_norm: float,
    scheduler: torch.optim.lr_scheduler.LRScheduler | None = None,
    scaler: torch.amp.GradScaler | None = None,
) -> torch.Tensor:
    """One training step on ``loss``: zero the gradients, backward, then :func:`clip_and_step`.

    Returns:
        The total gradient norm before clipping, as a 0-d tensor.
    """
    optimizer.zero_grad(set_to_none=True)
    (scaler.scale(loss) if scaler is not None else loss).backward()
    return clip_and_step(optimizer, parameters, max_grad_norm=max_grad_norm, scheduler=scheduler, scaler=scaler)


# ----------------------------------------------------------------------------------------------------------------
# early stopping and the best checkpoint
# ----------------------------------------------------------------------------------------------------------------


def _check_mode(mode: str) -> None:
    if mode not in MODES:
        raise ValueError(f"mode must be one of {list(MODES)}, got {mode!r}")


def is_better(value: float, best: float, mode: Mode, min_delta: float = 0.0) -> bool:
    """Whether ``value`` beats ``best`` by more than ``min_delta`` (lower for ``min``, higher for ``max``).

    NaN never beats anything, so a diverged epoch counts as no improvement.
    """
    _check_mode(mode)
    return value < best - min_delta if mode == "min" else value > best + min_delta


@dataclass
class BestTracker:
    """The best value of one metric seen so far and how many updates ago it was.

    Attributes:
        mode: ``min`` or ``max``.
        min_delta: how much a value must beat the best by to count as an improvement.
        value: the best value (``inf`` for ``min`` / ``-inf`` for ``max`` before the first improvement).
        epoch: the epoch of the best value, -1 before the first improvement.
        since_best: updates since the last improvement.
    """

    mode: Mode = "min"
    min_delta: float = 0.0
    value: float = field(init=False)
    epoch: int = field(init=False, default=-1)
    since_best: int = field(init=False, default=0)

    def __post_init__(self) -> None:
        _check_mode(self.mode)
        if self.min_delta < 0:
            raise ValueError(f"min_delta must be >= 0, got {self.min_delta}")
        self.value = math.inf if self.mode == "min" else -math.inf

    def update(self, value: float, epoch: int) -> bool:
        """Record ``value`` of ``epoch``; True when it is a new best."""
        if is_better(value, self.value, self.mode, self.min_delta):
            self.value, self.epoch, self.since_best = float(value), int(epoch), 0
            return True
        self.since_best += 1
        return False


@dataclass(frozen=True)
class EarlyStopping:
    """Stop when ``metric`` has not improved by more than ``min_delta`` for ``patience`` epochs in a row.

    Args:
        metric: a column of the epoch rows (``val_loss``).
        patience: non-improving epochs tolerated; training stops at the ``patience``-th.
        mode: ``min`` (lower is better) or ``max``.
        min_delta: the smallest change that counts as an improvement.
    """

    metric: str
    patience: int
    mode: Mode = "min"
    min_delta: float = 0.0

    def __post_init__(self) -> None:
        _check_mode(self.mode)
        if self.patience < 0:
            raise ValueError(f"patience must be >= 0, got {self.patience}")

    def tracker(self) -> BestTracker:
        """A fresh tracker for one run."""
        return BestTracker(self.mode, self.min_delta)

    def should_stop(self, tracker: BestTracker, improved: bool) -> bool:
        """Whether the epoch just recorded in ``tracker`` ends training."""
        return not improved and tracker.since_best >= self.patience


@dataclass(frozen=True)
class BestCheckpoint:
    """Keep a CPU copy of the weights of the epoch with the best ``metric``.

    Args:
        metric: a column of the epoch rows (``val_macro_f1``).
        mode: ``max`` (higher is better) or ``min``.
        min_delta: the smallest change that counts as better; 0 keeps every strict improvement.
    """

    metric: str
    mode: Mode = "max"
    min_delta: float = 0.0

    def __post_init__(self) -> None:
        _check_mode(self.mode)

    def tracker(self) -> BestTracker:
        """A fresh tracker for one run."""
        return BestTracker(self.mode, self.min_delta)


def cpu_state_dict(state: Mapping[str, torch.Tensor]) -> StateDict:
    """A detached CPU copy of ``state`` that later training steps cannot change."""
    return {name: tensor.detach().cpu().clone() for name, tensor in state.items()}


# ----------------------------------------------------------------------------------------------------------------
# history, MLflow metrics, loss curve
# ----------------------------------------------------------------------------------------------------------------


def epoch_row(epoch: int, *parts: Metrics) -> dict[str, float]:
    """One history row: ``epoch`` then the metrics of each part, in order.

    Raises:
        ValueError: when two parts (or a part and ``epoch``) name the same metric.
    """
    row: dict[str, float] = {EPOCH_COLUMN: epoch}
    for part in parts:
        clash = sorted(set(part) & set(row))
        if clash:
            raise ValueError(f"epoch {epoch}: metric names {clash} are reported twice; give each one name")
        row.update({name: float(value) for name, value in part.items()})
    return row


def history_frame(rows: Sequence[Mapping[str, float]]) -> pd.DataFrame:
    """The per-epoch rows as a table, one row per epoch (``epoch`` first); an empty run has only ``epoch``."""
    return pd.DataFrame(list(rows)) if rows else pd.DataFrame({EPOCH_COLUMN: pd.Series([], dtype="int64")})


def history_metrics(
    history: pd.DataFrame, names: Iterable[str], *, step: str = EPOCH_COLUMN
) -> dict[str, list[dict[str, float | int]]]:
    """``{name: [{"value", "step"}, ...]}`` per metric, as ``kedro_mlflow``'s ``MlflowMetricsHistoryDataset``
    saves it, one entry per history row.

    Raises:
        KeyError: naming a metric the history does not have.
    """
    names = list(names)
    unknown = [name for name in [*names, step] if name not in history.columns]
    if unknown:
        raise KeyError(f"history has no column {unknown}; columns are {list(history.columns)}")
    steps = [int(value) for value in history[step]]
    return {name: [{"value": float(value), "step": s} for value, s in zip(history[name], steps)] for name in names}


def _label(column: str) -> str:
    return column.replace("_", " ")


def loss_curve_figure(
    history: pd.DataFrame,
    best_epoch: int | None = None,
    *,
    losses: Sequence[str] = ("train_loss", "val_loss"),
    metric: str | None = None,
    metric_label: str | None = None,
    title: str = "training",
) -> Figure:
    """Loss per epoch, ``metric`` on a twin axis (dashed), the best epoch as a dotted vertical line.

    Args:
        history: the per-epoch table (``epoch`` and the named columns).
        best_epoch: the epoch of the kept checkpoint; no line when None or negative.
        losses: loss columns drawn on the left axis, labelled by their name with spaces.
        metric: a column drawn on the right axis, or None for none.
        metric_label: its legend and axis label (default: its name with spaces).
        title: the axes title.
    """
    figure = Figure(figsize=(7, 4))
    axis = figure.subplots()
    for column in losses:
        axis.plot(history[EPOCH_COLUMN], history[column], label=_label(column))
    twin = None
    if metric is not None:
        label = metric_label or _label(metric)
        twin = axis.twinx()
        twin.plot(history[EPOCH_COLUMN], history[metric], color="tab:green", linestyle="--", label=label)
        twin.set_ylabel(label)
    if best_epoch is not None and best_epoch >= 0:
        axis.axvline(best_epoch, color="grey", linestyle=":", label="best checkpoint")
    axis.set_xlabel(EPOCH_COLUMN)
    axis.set_ylabel("loss")
    axis.set_title(title)
    handles = axis.get_legend_handles_labels()[0] + (twin.get_legend_handles_labels()[0] if twin else [])
    axis.legend(handles, [handle.get_label() for handle in handles], loc="upper right")
    figure.tight_layout()
    return figure


# ----------------------------------------------------------------------------------------------------------------
# the epoch loop
# ----------------------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class FitResult:
    """What :func:`fit` returns.

    Attributes:
        history: one row per epoch run: ``epoch``, the training then evaluation metrics, ``learning_rate``.
        best_state: CPU copy of the best checkpoint's weights; None without a checkpoint rule or improvement.
        best_epoch: its epoch, -1 when none.
        best_value: its metric value, NaN when none.
        epochs_run: epochs completed.
        stopped_early: whether early stopping ended the run.
    """

    history: pd.DataFrame
    best_state: StateDict | None
    best_epoch: int
    best_value: float
    epochs_run: int
    stopped_early: bool


def _metric_of(row: Mapping[str, float], metric: str, rule: str) -> float:
    if metric not in row:
        raise KeyError(f"{rule} watches {metric!r} but the epoch reports only {sorted(row)}")
    return row[metric]


def fit(
    *,
    epochs: int,
    train_epoch: Callable[[int], Metrics],
    evaluate: Callable[[int], Metrics],
    model: torch.nn.Module | None = None,
    optimizer: torch.optim.Optimizer | None = None,
    early_stopping: EarlyStopping | None = None,
    checkpoint: BestCheckpoint | None = None,
    state_dict: Callable[[], Mapping[str, torch.Tensor]] | None = None,
    desc: str = "train",
) -> FitResult:
    """Run up to ``epochs`` epochs of ``train_epoch`` then ``evaluate``, keeping the best checkpoint and
    stopping early by the given rules.

    Each epoch's row is ``epoch``, the metrics of ``train_epoch``, those of ``evaluate``, then
    ``learning_rate`` (the first parameter group's, after the epoch) when ``optimizer`` is given. The
    checkpoint is taken before the early-stopping check, so the epoch that stops training can still be the best.

    Args:
        epochs: the most epochs to run.
        train_epoch: trains one epoch (0-based) and returns its metrics (``{"train_loss": ...}``).
        evaluate: evaluates after that epoch and returns its metrics (``{"val_loss": ..., ...}``).
        model: whose ``state_dict()`` the checkpoint copies.
        optimizer: whose learning rate each row records.
        early_stopping: when to stop; None runs every epoch.
        checkpoint: which epoch's weights to keep; None keeps none.
        state_dict: the weights to keep instead of ``model.state_dict()`` (e.g. only adapter weights).
        desc: the progress bar's label.

    Raises:
        ValueError: a checkpoint rule without ``model`` or ``state_dict``, or a metric reported twice.
        KeyError: a rule's metric that the epoch does not report.
    """
    if checkpoint is not None and state_dict is None:
        if model is None:
            raise ValueError("a BestCheckpoint needs the model (or a state_dict callable) to copy weights from")
        state_dict = model.state_dict
    stop_tracker = early_stopping.tracker() if early_stopping is not None else None
    best_tracker = checkpoint.tracker() if checkpoint is not None else None
    best_state: StateDict | None = None
    rows: list[dict[str, float]] = []
    stopped_early = False
    started = time.perf_counter()
    with tqdm(total=epochs, desc=desc, unit="epoch") as bar:
        for epoch in range(epochs):
            trained = train_epoch(epoch)
            evaluated = evaluate(epoch)
            extra = {LR_COLUMN: optimizer.param_groups[0]["lr"]} if optimizer is not None else {}
            row = epoch_row(epoch, trained, evaluated, extra)
            rows.append(row)
            bar.update(1)
            bar.set_postfix({name: f"{value:.4g}" for name, value in row.items() if name != EPOCH_COLUMN})
            if checkpoint is not None and best_tracker is not None and state_dict is not None:
                if best_tracker.update(_metric_of(row, checkpoint.metric, "BestCheckpoint"), epoch):
                    best_state = cpu_state_dict(state_dict())
            if early_stopping is not None and stop_tracker is not None:
                improved = stop_tracker.update(_metric_of(row, early_stopping.metric, "EarlyStopping"), epoch)
                if early_stopping.should_stop(stop_tracker, improved):
                    logger.info("Early stop after epoch %d: %s has not improved by more than %g for %d epochs",
                                epoch, early_stopping.metric, early_stopping.min_delta, early_stopping.patience)
                    stopped_early = True
                    break
    elapsed = time.perf_counter() - started
    best_epoch = best_tracker.epoch if best_tracker is not None else -1
    best_value = best_tracker.value if best_tracker is not None and best_epoch >= 0 else math.nan
    logger.info("%s: %d of %d epochs in %.1f s (%.3f epochs/s)%s%s", desc, len(rows), epochs, elapsed,
                len(rows) / max(elapsed, 1e-9), ", stopped early" if stopped_early else "",
                f"; best {checkpoint.metric} {best_value:.4g} at epoch {best_epoch}" if checkpoint else "")
    return FitResult(history=history_frame(rows), best_state=best_state, best_epoch=best_epoch,
                     best_value=best_value, epochs_run=len(rows), stopped_early=stopped_early)

"""`ProgressBar`: Keras's progress bar, showing the penalty terms a person reads, one row per epoch.

A `PenaltyLogger` adds up to 20 keys to the logs (the terms, their validation
copies, per-layer terms); printed in the order the logs hold them, they bury
`loss` and `accuracy`, and Keras's line (300 characters) wraps: in a
terminal each redraw of the live bar leaves its wrapped rows behind. This bar
prints

    <Keras's own training values>  data_loss  l1_weight … penalty  [sparsity_*]
    <Keras's own validation values>  val_data_loss

and leaves the other penalty keys out of the line only: they stay in the
logs, so `History`, `CSVLogger`, `TensorBoard` and the monitors see them all.
In a terminal the line is drawn by this module, short names and three
significant digits, and holds the most important of those values that fit
in the terminal's width (`shutil.get_terminal_size()`): one row per epoch.
"""

from __future__ import annotations

import math
import re
import shutil
import sys
import time
from typing import Any, Iterable

import keras
import numpy as np

__all__ = ["ProgressBar", "SHORT_NAMES"]

#: The names the line gives the penalty keys in a terminal (`val_` copies: `val_data`); the logs keep the full names.
SHORT_NAMES = {
    "data_loss": "data",
    "penalty": "pen",
    "l1_weight": "l1w",
    "l1_bias": "l1b",
    "l2_weight": "l2w",
    "l2_bias": "l2b",
    "group_weight": "gw",
    "group_bias": "gb",
    "l2_anchor_weight": "l2aw",
    "l2_anchor_bias": "l2ab",
    "live_groups": "live",
    "sparsity_weight": "sp_w",
    "sparsity_bias": "sp_b",
}
_INTERVAL = 0.05  # seconds between two redraws of the live line, as Keras's Progbar


def _short_name(key: str) -> str:
    if key.startswith("val_"):
        return "val_" + _short_name(key[4:])
    if key.startswith("lambda_"):
        return "lam_" + SHORT_NAMES.get(key[7:], key[7:])
    return SHORT_NAMES.get(key, key)


def _short_number(value: Any) -> str:
    """Three significant digits: `0.711`, `0.0438`, `2.30`, `2.14e-5`."""
    try:
        number = float(np.mean(value))
    except (TypeError, ValueError):
        return str(value)
    if number == 0 or not math.isfinite(number):
        return f"{number:g}"
    size = abs(number)
    if 1e-3 <= size < 1e4:
        return f"{number:.{max(0, 2 - math.floor(math.log10(size)))}f}"
    mantissa, exponent = f"{number:.2e}".split("e")
    return f"{mantissa}e{int(exponent)}"


def _duration(seconds: float) -> str:
    if seconds >= 3600:
        return "%d:%02d:%02d" % (seconds // 3600, (seconds % 3600) // 60, seconds % 60)
    if seconds >= 60:
        return "%d:%02d" % (seconds // 60, seconds % 60)
    return "%ds" % seconds


def _per_step(seconds: float) -> str:
    if seconds >= 1 or seconds == 0:
        return f"{seconds:.0f}s/step"
    if seconds >= 1e-3:
        return f"{seconds * 1e3:.0f}ms/step"
    return f"{seconds * 1e6:.0f}us/step"


def fit_line(parts: list[tuple[float, str, int]], width: int) -> str:
    """The parts `(rank, text, columns)`, in their order, of lowest rank that fit in `width` columns together.

    Parts are taken by rank (ties: in order) until the next one does not
    fit. Should even the first not fit, its text is cut (escape sequences
    are not counted in `columns`: a cut part is given without them).
    """
    kept, used = set(), 0
    for index in sorted(range(len(parts)), key=lambda i: parts[i][0]):
        if used + parts[index][2] > width:
            break
        kept.add(index)
        used += parts[index][2]
    if not kept and parts:
        first = min(parts, key=lambda part: part[0])
        return _plain(first[1])[: max(width, 0)]
    return "".join(text for index, (_, text, _) in enumerate(parts) if index in kept)


def _plain(text: str) -> str:
    return re.sub(r"\x1b\[[0-9;]*m", "", text)


def _terminal_columns() -> int | None:
    """The width of the terminal the line goes to; None when stdout is not a terminal."""
    if not keras.utils.is_interactive_logging_enabled():  # Keras prints through absl logging then
        return None
    try:
        terminal = sys.stdout.isatty()
    except (AttributeError, ValueError):  # no isatty, or a closed stream
        terminal = False
    return shutil.get_terminal_size().columns if terminal else None


class ProgressBar(keras.callbacks.ProgbarLogger):
    """`keras.callbacks.ProgbarLogger` that shows `shown` of the `penalty_keys`, in order, one row per epoch.

    `PenaltyLogger` puts one in place of Keras's default progress bar for the
    `fit` or `evaluate` it runs in (`PenaltyLogger(progress_bar="all")` keeps
    Keras's). Each line holds the keys that are not `penalty_keys` (Keras's
    loss and metrics, other callbacks' values) in the order the logs give
    them, then `shown` in the given order; validation keys (`val_…`) follow
    the same rule after them. Keys of `penalty_keys` not in `shown`, and
    their `val_` copies not in `shown_validation`, are not printed. Every key
    stays in the logs.

    In a terminal (stdout is a tty) the bar draws its line itself so that it
    never wraps: **one row per epoch** (and one for Keras's `Epoch i/n`),
    whatever the terminal's width, read at each redraw. The penalty keys get
    short names (`data`, `pen`, `l1w`, `l1b`, `l2w`, `l2b`, `sp_w`, `sp_b`,
    `lam_l1w`, ...; `val_data`), every value three significant digits
    (`0.711`, `2.14e-5`), each value `name=value`. When the line is wider
    than the terminal, the least important parts are left out, in this
    order of importance: the step count, the bar (live line only), the time,
    `loss`, `data_loss`, Keras's other training values, `val_loss`,
    `val_data_loss`, Keras's other validation values, `penalty`, the weight
    terms, the bias terms, the rest of `shown` (sparsity, λ), the time per
    step, the finished bar (end-of-epoch line). At 80 columns the bar is 10
    wide, from 100 columns Keras's 20. `verbose=2` prints the end-of-epoch
    line only, under the same rule.

    Off a terminal (a file, a pipe, a notebook) Keras's own `ProgbarLogger`
    prints the line, with the full names and every shown key: with
    `verbose=2` (or `verbose=1` in a notebook) one line per epoch.

    Args:
        penalty_keys: every key the penalty metric logs.
        shown: those printed for training, in this order.
        shown_validation: those whose `val_` copy is printed, in this order.
    """

    def __init__(self, penalty_keys: Iterable[str], shown: Iterable[str], shown_validation: Iterable[str]):
        super().__init__()
        self.penalty_keys = frozenset(penalty_keys)
        self.shown = tuple(shown)
        self.shown_validation = tuple(shown_validation)
        unknown = set(self.shown + self.shown_validation) - self.penalty_keys
        if unknown:
            raise ValueError(f"ProgressBar: keys to show that are not penalty keys: {sorted(unknown)}")
        self._in_fit = False
        self._columns = None  # the terminal's width while this bar draws its own line; None: Keras's bar draws
        self._drawn = 0  # columns of the live line on screen, to blank when the next is shorter

    def line(self, logs: dict[str, Any] | None) -> dict[str, Any] | None:
        """The values of `logs` this bar prints, in the order it prints them."""
        if not logs:
            return logs
        ours = self.penalty_keys
        train = {k: v for k, v in logs.items() if not k.startswith("val_") and k not in ours}
        train.update((k, logs[k]) for k in self.shown if k in logs)
        validation = {k: v for k, v in logs.items() if k.startswith("val_") and k[4:] not in ours}
        validation.update((f"val_{k}", logs[f"val_{k}"]) for k in self.shown_validation if f"val_{k}" in logs)
        return {**train, **validation}

    def rank(self, key: str) -> float:
        """Importance of `key` on the terminal line: the lowest rank is left out last (see the class)."""
        validation = key.startswith("val_")
        base = key[4:] if validation else key
        if base == "data_loss" or base not in self.penalty_keys:  # data_loss, Keras's values, others'
            return 3 + (0 if base == "loss" else 1 if base == "data_loss" else 2) + 3 * validation
        if validation:
            return 30 + (self.shown_validation.index(base) if base in self.shown_validation else 0)
        if base == "penalty":
            return 10
        terms = ("l1_weight", "l2_weight", "group_weight", "l1_bias", "l2_bias", "group_bias")
        if base in terms:
            return 11 + terms.index(base)
        return 20 + (self.shown.index(base) if base in self.shown else 0)

    def compact_line(
        self, current: int, values: dict[str, Any] | None, columns: int, *, final: bool, seconds: float, per_step: float
    ) -> str:
        """The terminal line at step `current` (`final`: the end-of-epoch line): at most `columns - 1` wide."""
        target = self.target
        parts: list[tuple[float, str, int]] = []
        count = f"{current:>{len(str(target))}}/{target}" if target else f"{current}/Unknown"
        parts.append((0, count, len(count)))
        if target and self.verbose == 1:
            width = 20 if columns >= 100 else 10
            done = min(width, int(width * current / target))
            bar = f" \x1b[32m{'━' * done}\x1b[0m\x1b[37m{'━' * (width - done)}\x1b[0m"
            parts.append((99 if final else 1, bar, width + 1))
        when = f" {seconds:.0f}s" if final or not target else f" {_duration(per_step * (target - current))}"
        parts.append((2, when, len(when)))
        parts.append((90, f" {_per_step(per_step)}", len(_per_step(per_step)) + 1))
        for key, value in (values or {}).items():
            text = f" {_short_name(key)}={_short_number(value)}"
            parts.append((self.rank(key), text, len(text)))
        return fit_line(parts, columns - 1)

    # The terminal: this bar draws; elsewhere Keras's does.

    def _begin(self) -> None:
        self._columns = _terminal_columns() if self.verbose else None
        self._started = time.time()
        self._first_step_at = None
        self._last_draw = 0.0
        self._drawn = 0
        self._steps = 0

    def _step_seconds(self, current: int, now: float) -> float:
        """Seconds per step; the first step (tracing, compiling) left out once there are others, as Keras does."""
        if not current:
            return 0.0
        if self._first_step_at is not None and current > 1:
            seconds = (now - self._first_step_at) / (current - 1)
        else:
            seconds = (now - self._started) / current
        if current == 1:
            self._first_step_at = now
        return seconds

    def _draw(self, current: int, logs: dict[str, Any] | None, final: bool) -> None:
        now = time.time()
        self._steps = current
        if not final and (self.verbose != 1 or now - self._last_draw < _INTERVAL):
            if current == 1:
                self._step_seconds(current, now)
            return
        self._last_draw = now
        columns = _terminal_columns() or self._columns
        text = self.compact_line(
            current,
            self.line(logs),
            columns,
            final=final,
            seconds=now - self._started,
            per_step=self._step_seconds(current, now),
        )
        shown = len(_plain(text))
        blank = " " * max(0, min(self._drawn, columns - 1) - shown)
        sys.stdout.write("\r" + text + blank + ("\n" if final else ""))
        sys.stdout.flush()
        self._drawn = 0 if final else shown

    def on_train_begin(self, logs=None):
        super().on_train_begin(logs)
        self._in_fit = True

    def on_train_end(self, logs=None):
        super().on_train_end(logs)
        self._in_fit = False

    def on_epoch_begin(self, epoch, logs=None):
        super().on_epoch_begin(epoch, logs)  # Keras's "Epoch i/n"
        self._begin()

    def on_test_begin(self, logs=None):
        super().on_test_begin(logs)
        if not self._in_fit:
            self._begin()

    def on_train_batch_end(self, batch, logs=None):
        if self._columns is None:
            super().on_train_batch_end(batch, self.line(logs))
        else:
            self._draw(batch + 1, logs, final=False)

    def on_test_batch_end(self, batch, logs=None):
        if self._in_fit:
            return  # validation inside fit is silent
        if self._columns is None:
            super().on_test_batch_end(batch, self.line(logs))
        else:
            self._draw(batch + 1, logs, final=False)

    def on_epoch_end(self, epoch, logs=None):
        if self._columns is None:
            super().on_epoch_end(epoch, self.line(logs))
        else:
            self._draw(self.target or self._steps, logs, final=True)

    def on_test_end(self, logs=None):
        if self._in_fit:
            return
        if self._columns is None:
            super().on_test_end(self.line(logs))
        else:
            self._draw(self.target or self._steps, logs, final=True)

"""`ProgressBar`: Keras's progress bar, showing the penalty terms a person reads.

A `PenaltyLogger` adds up to 20 keys to the logs (the terms, their validation
copies, per-layer terms); printed in the order the logs hold them, they bury
`loss` and `accuracy` and wrap over several rows. This bar prints

    <Keras's own training values>  data_loss  l1_weight … penalty  [sparsity_*]
    <Keras's own validation values>  val_data_loss

and leaves the other penalty keys out of the line only: they stay in the
logs, so `History`, `CSVLogger`, `TensorBoard` and the monitors see them all.
"""

from __future__ import annotations

from typing import Any, Iterable

import keras

__all__ = ["ProgressBar"]


class ProgressBar(keras.callbacks.ProgbarLogger):
    """`keras.callbacks.ProgbarLogger` that shows `shown` of the `penalty_keys`, in order.

    `PenaltyLogger` puts one in place of Keras's default progress bar for the
    `fit` or `evaluate` it runs in (`PenaltyLogger(progress_bar="all")` keeps
    Keras's). Each line holds the keys that are not `penalty_keys` (Keras's
    loss and metrics, other callbacks' values) in the order the logs give
    them, then `shown` in the given order; validation keys (`val_…`) follow
    the same rule after them. Keys of `penalty_keys` not in `shown`, and
    their `val_` copies not in `shown_validation`, are not printed.

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

    def on_train_batch_end(self, batch, logs=None):
        super().on_train_batch_end(batch, self.line(logs))

    def on_test_batch_end(self, batch, logs=None):
        super().on_test_batch_end(batch, self.line(logs))

    def on_epoch_end(self, epoch, logs=None):
        super().on_epoch_end(epoch, self.line(logs))

    def on_test_end(self, logs=None):
        super().on_test_end(self.line(logs))

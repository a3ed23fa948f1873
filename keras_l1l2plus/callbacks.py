"""`PenaltyLogger`: every term of the book's loss as a metric during `fit`.

    loss = data_loss + penalty,   penalty = l1_weight + l1_bias + l2_weight + l2_bias
"""

from __future__ import annotations

import warnings
from typing import Any, Union

import keras

from keras_l1l2plus import metrics, proximal
from keras_l1l2plus.regularizer import validate_flag
from keras_l1l2plus.roles import owned_trainable_variables
from keras_l1l2plus.steps import drop_step_functions

__all__ = ["PenaltyLogger", "ProximalL1"]


def _validate_update_freq(update_freq: Any) -> Union[str, int]:
    if update_freq in ("batch", "epoch"):
        return update_freq
    if isinstance(update_freq, int) and not isinstance(update_freq, bool) and update_freq >= 1:
        return update_freq
    raise ValueError(
        'Invalid value for argument `update_freq`: expected "batch", "epoch" or an '
        f"integer ≥ 1 (every N batches). Received: update_freq={update_freq!r}"
    )


class PenaltyLogger(keras.callbacks.Callback):
    """Logs each penalty term, the data loss and the validation data loss.

    Adds to the logs of `fit` (progress bar, `History`, `CSVLogger`,
    `TensorBoard`, `EarlyStopping`, ...):

        l1_weight, l1_bias, l2_weight, l2_bias   the four terms (see `penalty_terms`)
        penalty        every weight penalty: what Keras adds to the loss
        data_loss      loss − penalty
        sparsity_weight, sparsity_bias   fraction of exactly-zero entries among the
                       L1-regularized weights, biases (at the latest step's weights)
        val_data_loss  val_loss − penalty at the evaluated weights (with validation;
                       so are val_penalty and val_<term>)

    They mean what Keras's `loss` means: batch logs hold running means since
    the epoch began, epoch logs the epoch means, each step contributing the
    penalty its own loss used (the weights before that step's update). So
    `loss == data_loss + penalty` at every logged point.

    The terms are computed inside the train step (see
    `keras_l1l2plus.metrics`), so they are in the logs every callback gets,
    whatever the callbacks' order; `TensorBoard` writes them as `epoch_<name>`
    (validation ones under `validation/`) and, when its own `update_freq`
    asks, `batch_<name>`.

    Example:

    ```python
    import keras_l1l2plus as kl
    history = model.fit(x, y, validation_split=0.2, epochs=20,
                        callbacks=[kl.PenaltyLogger(), keras.callbacks.TensorBoard("runs/exp1")])
    history.history["l1_weight"], history.history["val_data_loss"]
    ```

    Args:
        update_freq: `"batch"` (default), `"epoch"` or an integer N, as in
            `TensorBoard`: which batch logs keep the terms for the callbacks
            after this one (every batch, none, every N-th). The terms are
            computed at every step either way, so epoch values are exact
            epoch means whatever it is.
        per_layer: also log `"<term>/<layer>"` for every regularized layer.
    """

    # Its batch hook only drops keys from the logs: Keras may run it off the
    # training thread without waiting for it.
    async_safe = True

    def __init__(self, update_freq: Union[str, int] = "batch", per_layer: bool = False):
        super().__init__()
        self.update_freq = _validate_update_freq(update_freq)
        self.per_layer = validate_flag(per_layer, "per_layer")
        self._keys: tuple[str, ...] = ()
        self._checked_proximal = False

    def on_train_begin(self, logs=None):
        model = self.model
        if not any(o.variable.regularizer is not None for o in owned_trainable_variables(model)):
            warnings.warn(
                f"PenaltyLogger: model {model.name!r} has no regularized trainable variable; "
                "every penalty term is logged as 0 and data_loss equals loss. Add "
                "regularizers with keras_l1l2plus.regularize(model, ...) or L1L2Plus.",
                stacklevel=2,
            )
        self._checked_proximal = False
        metric = metrics.install(model, per_layer=self.per_layer)
        self._keys = metric.keys
        model.make_train_function(force=True)

    def on_epoch_begin(self, epoch, logs=None):
        # After every callback's on_train_begin: ProximalL1 may come later in the list.
        if not self._checked_proximal:
            self._checked_proximal = True
            if proximal.proximal_variables(self.model) and not proximal.installed(self.model):
                warnings.warn(
                    "PenaltyLogger: the model has proximal L1L2Plus regularizers but no ProximalL1 "
                    "callback applies their step, so their L1 term does not act on training. "
                    "Add keras_l1l2plus.ProximalL1() to the callbacks.",
                    stacklevel=2,
                )

    def on_train_batch_end(self, batch, logs=None):
        if logs is None or self.update_freq == "batch":
            return
        if self.update_freq == "epoch" or (batch + 1) % self.update_freq:
            for key in self._keys:
                logs.pop(key, None)

    def on_train_end(self, logs=None):
        metrics.uninstall(self.model)


class ProximalL1(keras.callbacks.Callback):
    """Applies the proximal L1 step of `L1L2Plus(..., proximal=True)` during `fit`.

    After every optimizer update, each variable with a proximal L1L2Plus
    regularizer is soft-thresholded:

        w ← sign(w) · max(|w| − η·l1, 0)

    with η the optimizer's step size at that update (the learning rate for
    SGD, schedules included: exactly proximal gradient descent; a
    per-coordinate step for Adam, RMSprop and Adagrad; see
    `keras_l1l2plus.proximal`). So L1 sets weights exactly to zero.

    The step is installed as the variables' constraint for the length of
    `fit`, so Keras runs it inside the train step, at every step, on every
    replica and under XLA; the variables' own constraints still apply after
    it. The model is left as it was at the end of `fit`.

    Example:

    ```python
    model = kl.regularize(model, l1_weight=1e-3, proximal_weight=True)
    model.fit(x, y, callbacks=[kl.ProximalL1(), kl.PenaltyLogger()])
    ```
    """

    def on_train_begin(self, logs=None):
        if proximal.install(self.model) == 0:
            warnings.warn(
                f"ProximalL1: model {self.model.name!r} has no L1L2Plus regularizer with "
                "proximal=True and l1 > 0; nothing to do.",
                stacklevel=2,
            )
        self.model.make_train_function(force=True)

    def on_train_end(self, logs=None):
        proximal.uninstall(self.model)
        drop_step_functions(self.model)

"""`PenaltyLogger`: every term of the book's loss as a metric during `fit`.

loss = data_loss + penalty,   penalty = l1_weight + l1_bias + l2_weight + l2_bias
"""

from __future__ import annotations

import numbers
import warnings
from typing import Any, Union

import keras

from keras_l1l2plus import _keras
from keras_l1l2plus.factors import validate_flag
from keras_l1l2plus.logger.attachment import Attachment, attachment
from keras_l1l2plus.logger.progress import ProgressBar
from keras_l1l2plus.proximal import takes_proximal_step, uses_proximal_step
from keras_l1l2plus.roles import owned_trainable_variables
from keras_l1l2plus.terms import ANCHOR_TERMS, GROUP_TERMS, TERM_NAMES

__all__ = ["PenaltyLogger"]


def _validate_update_freq(update_freq: Any) -> Union[str, int]:
    if isinstance(update_freq, str) and update_freq in ("batch", "epoch"):
        return update_freq
    if isinstance(update_freq, numbers.Integral) and not isinstance(update_freq, bool) and update_freq >= 1:
        return int(update_freq)
    raise ValueError(
        'Invalid value for argument `update_freq`: expected "batch", "epoch" or an '
        f"integer ≥ 1 (every N batches). Received: update_freq={update_freq!r}"
    )


PROGRESS_BAR_MODES = ("short", "all")


class PenaltyLogger(keras.callbacks.Callback):
    """Logs each penalty term, the data loss and the validation data loss.

    Adds to the logs of `fit` (progress bar, `History`, `CSVLogger`,
    `TensorBoard`, `EarlyStopping`, ...):

        l1_weight, l1_bias, l2_weight, l2_bias   the four terms (see `penalty_terms`)
        group_weight   the group lasso term, where a weight has one (group_bias: a bias)
        l2_anchor_weight   L2 toward w₀ (L2-SP), where a weight has an anchor (l2_anchor_bias: a bias)
        penalty        every weight penalty: what Keras adds to the loss
        data_loss      loss − penalty
        sparsity_weight, sparsity_bias   fraction of exactly-zero entries among the
                       L1-regularized weights, biases, at the weights the latest
                       step's loss used (before that step's update, as for the
                       terms; so after `fit` the model is one update further and
                       may hold more zeros); only for a role whose variables take
                       the proximal step (with subgradient steps it is 0 by
                       construction)
        live_groups    the number of groups (units, features) with an entry that
                       is not exactly 0, among the variables taking the proximal
                       group step, at the same weights; only with that step
        val_data_loss  val_loss − penalty at the evaluated weights (with validation;
                       so are val_penalty and val_<term>)

    The progress bar shows, after Keras's own values, `data_loss`, the four
    terms, `penalty`, `sparsity_*` and `val_data_loss`; the other keys
    (`val_<term>`, `val_penalty`, `val_sparsity_*`, per-layer terms) are in
    the logs but not on the line (`progress_bar="all"` prints them too).
    In a terminal the line is one row per epoch, whatever its width: short
    names, and the least important values left out when it does not fit
    (`progress.ProgressBar` says which).

    They mean what Keras's `loss` means: batch logs hold running means since
    the epoch began, epoch logs the epoch means, each step contributing the
    penalty its own loss used (the weights before that step's update). So
    `loss == data_loss + penalty` at every logged point.

    The terms are computed inside the train step (see
    `keras_l1l2plus.logger.metric`), so they are in the logs every callback gets,
    whatever the callbacks' order; `TensorBoard` writes them as `epoch_<name>`
    (validation ones under `validation/`) and, when its own `update_freq`
    asks, `batch_<name>`. `evaluate(..., callbacks=[PenaltyLogger()])` logs
    them too.

    Nothing of it runs after its `fit` (Keras skips `on_train_end` when `fit`
    raises; the logger does not rely on it): a step runs logged only when
    this logger claimed it just before, and any other call of the model's
    steps gives the model back exactly as it was (see
    `keras_l1l2plus.logger.attachment`, where the states are written).

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
        progress_bar: `"short"` (default): Keras's progress bar for this
            `fit` or `evaluate` is replaced by a `progress.ProgressBar` that
            prints the keys above in that order; `"all"`: Keras's own bar,
            every key. Either way every key is in the logs. (A progress bar
            you pass in `callbacks` before this one, or a subclass of
            `ProgbarLogger`, is yours and kept.)
    """

    @property
    def async_safe(self) -> bool:
        """Whether Keras may run the batch-end hooks off the training thread (read when `fit` starts).

        The hook only drops keys from the logs, so it may, and Keras then
        converts the logs to numbers on a worker thread while the next step
        runs. (Batch-begin hooks, which claim the steps, always run on the
        training thread, right before the step.) Not across JAX processes
        (`_keras.multi_process`): there that worker thread's reads of the
        logs, beside the metric's eager ops on the training thread, left two
        processes waiting on each other, in `fit` and in its validation
        (2 runs of 10 deadlocked, and 3 of 14 with validation, on 2 CPU
        processes, JAX 0.10.2; none of 18 with the hooks on the training
        thread, 10 of them with validation; none of 10 for Keras alone), so
        the hooks run on the training thread there.
        """
        return not _keras.multi_process()

    def __init__(self, update_freq: Union[str, int] = "batch", per_layer: bool = False, progress_bar: str = "short"):
        super().__init__()
        self.update_freq = _validate_update_freq(update_freq)
        self.per_layer = validate_flag(per_layer, "per_layer")
        if progress_bar not in PROGRESS_BAR_MODES:
            raise ValueError(
                f"Invalid value for argument `progress_bar`: expected one of {PROGRESS_BAR_MODES}. "
                f"Received: progress_bar={progress_bar!r}"
            )
        self.progress_bar = progress_bar
        self._keys: tuple[str, ...] = ()
        self._attachment: Attachment | None = None
        self._evaluating_only = False
        self._unchecked = False  # the model was not built when attached: checked at a later batch

    def _check_model(self) -> None:
        """Warns of a model whose terms are all 0, or whose proximal L1 does not act; once it is built.

        A model built at its first step (a `Sequential` without an `Input`)
        has no variables at `on_train_begin`: it is checked at the next batch.
        """
        model = self.model
        self._unchecked = not model.built
        if self._unchecked:
            return
        if not any(o.variable.regularizer is not None for o in owned_trainable_variables(model)):
            warnings.warn(
                f"PenaltyLogger: model {model.name!r} has no regularized trainable variable; "
                "every penalty term is logged as 0 and data_loss equals loss. Add "
                "regularizers with keras_l1l2plus.regularize(model, ...) or L1L2Plus.",
                stacklevel=3,
            )
        if any(takes_proximal_step(o.variable) for o in owned_trainable_variables(model)) and not uses_proximal_step(
            getattr(model, "optimizer", None)
        ):
            warnings.warn(
                "PenaltyLogger: the model has proximal L1L2Plus regularizers but its optimizer is "
                "not a ProximalOptimizer, so their L1 and group terms do not act on training. Compile with "
                "optimizer=keras_l1l2plus.ProximalOptimizer(<your optimizer>).",
                stacklevel=3,
            )

    def _attach(self) -> None:
        model = self.model
        self._check_model()
        self._attachment = attachment(model)
        self._keys = self._attachment.attach(self).keys
        if self.progress_bar == "short":
            _keras.replace_progress_bar(self, self._short_progress_bar)

    @property
    def keys(self) -> tuple[str, ...]:
        """The keys this logger adds to the logs of the call it runs in (empty before its first call)."""
        return self._keys

    def _short_progress_bar(self) -> ProgressBar:
        shown = (
            "data_loss",
            *TERM_NAMES,
            *(k for k in (*GROUP_TERMS, *ANCHOR_TERMS) if k in self._keys),
            "penalty",
            *(k for k in self._keys if k.startswith(("sparsity_", "live_groups", "lambda_"))),
        )
        return ProgressBar(self._keys, shown=shown, shown_validation=("data_loss",))

    def _holds(self) -> bool:
        return self._attachment is not None and self._attachment.logger is self

    def _detach(self, ending_evaluate: bool = False) -> None:
        if self._holds():
            self._attachment.detach(ending_evaluate=ending_evaluate)
        self._attachment = None

    def on_train_begin(self, logs=None):
        self._evaluating_only = False
        self._attach()

    def on_test_begin(self, logs=None):
        # evaluate(callbacks=[PenaltyLogger()]) on its own; inside fit it is attached already.
        if not self._holds():
            self._evaluating_only = True
            self._attach()

    def on_train_batch_begin(self, batch, logs=None):
        if self._unchecked:
            self._check_model()
        if self._holds():
            self._attachment.claim("train")

    def on_test_batch_begin(self, batch, logs=None):
        if self._unchecked:
            self._check_model()
        if self._holds():
            self._attachment.claim("test")

    def on_train_batch_end(self, batch, logs=None):
        if logs is None or self.update_freq == "batch":
            return
        if self.update_freq == "epoch" or (batch + 1) % self.update_freq:
            for key in self._keys:
                logs.pop(key, None)

    def on_test_batch_end(self, batch, logs=None):
        # Nothing to do; defined so that where this logger is not `async_safe`, Keras runs evaluate's
        # batch-end hooks on the training thread too (it keeps its worker thread for hooks no callback defines).
        pass

    def on_epoch_end(self, epoch, logs=None):
        if self._unchecked:  # an epoch of one batch
            self._check_model()

    def on_test_end(self, logs=None):
        if self._unchecked:
            self._check_model()
        if self._evaluating_only:
            self._evaluating_only = False
            self._detach(ending_evaluate=True)

    def on_train_end(self, logs=None):
        self._detach()

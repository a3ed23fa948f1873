"""The penalty terms as metrics computed inside Keras's train and test steps.

Keras's `loss` is a running mean, over the steps of an epoch, of each step's
total loss, weighted by batch size. `PenaltyMetric` keeps the same running
means of

    l1_weight, l1_bias, l2_weight, l2_bias, penalty    (from `penalty_terms`)
    data_loss = loss − penalty

updated in the same step, from the same weights (those the step's loss used,
before the optimizer's update) and with the same batch-size weights, so that
`loss == data_loss + penalty` at every logged point. In evaluation the same
metric gives `val_data_loss = val_loss − penalty` at the evaluated weights.

`install` hooks it into a model: it wraps the model's `compute_loss`, which
Keras's `train_step` and `test_step` call inside the step (on every replica,
under XLA too), and adds the metric to `model.metrics`, so its values are in
the logs Keras hands to every callback, whatever their order.
"""

from __future__ import annotations

import contextlib
import inspect
from typing import Any

import keras
from keras import ops

from keras_l1l2plus.regularizer import recording_terms
from keras_l1l2plus.steps import drop_step_functions
from keras_l1l2plus.terms import penalty_terms, sparsity

try:
    # Keras's EarlyStopping, ModelCheckpoint and ReduceLROnPlateau infer a
    # monitored metric's direction (mode="auto") only from the sub-metrics of
    # this container class; being one lets them monitor "val_data_loss".
    from keras.src.trainers.compile_utils import MetricsList as _MetricContainer
except ImportError:  # pragma: no cover - other Keras layouts: pass mode="min"
    _MetricContainer = keras.metrics.Metric

__all__ = ["PenaltyMetric", "install", "installed", "uninstall"]

_ATTRIBUTE = "_keras_l1l2plus_penalty_metric"


def _num_replicas() -> int:
    """Replicas in sync under `tf.distribute` (1 elsewhere), as Keras counts them."""
    if keras.backend.backend() != "tensorflow":
        return 1
    import tensorflow as tf

    return tf.distribute.get_strategy().num_replicas_in_sync


class _LowerIsBetter(keras.metrics.Metric):
    """A name and a direction: what Keras's monitor callbacks look up."""

    _direction = "down"

    def update_state(self, *args, **kwargs):
        pass

    def result(self):
        return ops.zeros(())


class PenaltyMetric(_MetricContainer):
    """Running means of the penalty terms and the data loss, and the sparsity.

    `update_state(loss, batch_size, recorded)` takes the terms of this step's
    loss (`penalty_terms`, reusing what the `L1L2Plus` calls of the loss
    recorded, so nothing is computed twice), adds `data_loss = loss −
    penalty`, and accumulates every value times `batch_size`; `result()` is
    the dict of totals / Σ batch_size. One vector variable holds all totals. `sparsity_weight` and `sparsity_bias` (see
    `keras_l1l2plus.terms.sparsity`) are not averaged: they are the values at
    the weights of the latest step.
    """

    def __init__(self, model: Any, *, per_layer: bool = False, name: str = "penalty_terms"):
        keras.metrics.Metric.__init__(self, name=name, dtype="float32")
        self._terms = lambda recorded=None: penalty_terms(model, per_layer=per_layer, recorded=recorded)
        self._sparsity = lambda: sparsity(model)
        self.mean_keys = (*self._terms(), "data_loss")
        self.latest_keys = tuple(self._sparsity())
        self.keys = self.mean_keys + self.latest_keys
        # Every value here is lower-is-better for monitoring, but sparsity.
        self.metrics = [_LowerIsBetter(name=key) for key in self.mean_keys]
        self._totals = self.add_variable(shape=(len(self.mean_keys),), initializer="zeros", name="totals")
        self._count = self.add_variable(shape=(), initializer="zeros", name="count")
        self._latest = self.add_variable(
            shape=(len(self.latest_keys),), initializer="zeros", aggregation="mean", name="latest"
        )

    def update_state(self, loss: Any, batch_size: Any, recorded: dict | None = None) -> None:
        """Adds one step: its loss, batch size, and the terms its loss recorded."""
        terms = self._terms(recorded)
        loss = ops.cast(ops.sum(loss), "float32")
        values = ops.stack([*terms.values(), loss - terms["penalty"]])
        batch_size = ops.cast(batch_size, "float32")
        self._totals.assign_add(values * batch_size)
        self._count.assign_add(batch_size)
        self._latest.assign(ops.stack(list(self._sparsity().values())))

    def reset_state(self) -> None:
        for variable in (self._totals, self._count, self._latest):
            variable.assign(ops.zeros_like(variable))

    def result(self) -> dict[str, Any]:
        means = ops.divide(self._totals, ops.maximum(self._count, 1.0))
        result = {key: means[i] for i, key in enumerate(self.mean_keys)}
        result.update({key: self._latest[i] for i, key in enumerate(self.latest_keys)})
        return result

    def get_config(self) -> dict[str, Any]:
        # Lives only while installed by PenaltyLogger; it is not saved.
        return {"name": self.name}


def _batch_size(x: Any, y_pred: Any) -> Any:
    """The batch size Keras weights its loss tracker by: the first input's."""
    for tensor in keras.tree.flatten(x if x is not None else y_pred):
        if tensor is not None:
            return ops.shape(tensor)[0]
    return 1


def installed(model: Any) -> PenaltyMetric | None:
    """The metric installed on `model`, if any."""
    return getattr(model, _ATTRIBUTE, None)


def install(model: Any, *, per_layer: bool = False) -> PenaltyMetric:
    """Computes the penalty terms in `model`'s train and test steps from now on.

    Replaces an earlier installation. The model's compiled step functions are
    dropped so that the next step is traced with the metric in it.
    """
    uninstall(model)
    strategy = getattr(model, "distribute_strategy", None)  # the TensorFlow trainer's
    with strategy.scope() if strategy is not None else contextlib.nullcontext():
        metric = PenaltyMetric(model, per_layer=per_layer)

    compute_loss = model.compute_loss  # the bound method, overrides included
    has_training_arg = "training" in inspect.signature(compute_loss).parameters

    def compute_loss_with_penalty_terms(x=None, y=None, y_pred=None, sample_weight=None, training=True):
        with recording_terms() as recorded:
            if has_training_arg:
                loss = compute_loss(x, y, y_pred, sample_weight, training=training)
            else:
                loss = compute_loss(x, y, y_pred, sample_weight)
        if loss is not None:
            # Keras divides the loss by the replica count; its loss tracker
            # multiplies it back, and so does this metric.
            metric.update_state(loss * _num_replicas(), _batch_size(x, y_pred), recorded)
        return loss

    object.__setattr__(model, "compute_loss", compute_loss_with_penalty_terms)
    object.__setattr__(model, _ATTRIBUTE, metric)
    model._compute_loss_has_training_arg = True
    model._metrics.append(metric)
    drop_step_functions(model)
    return metric


def uninstall(model: Any) -> None:
    """Removes the metric and the `compute_loss` wrapper `install` added."""
    metric = installed(model)
    if metric is None:
        return
    model._metrics[:] = [m for m in model._metrics if m is not metric]
    object.__delattr__(model, "compute_loss")
    object.__delattr__(model, _ATTRIBUTE)
    model._compute_loss_has_training_arg = (
        "training" in inspect.signature(model.compute_loss).parameters
    )
    drop_step_functions(model)

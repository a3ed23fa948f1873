"""The package's one seam to Keras internals.

Every use of a private Keras attribute or a `keras.src` import lives here,
each with why public API cannot do the job and what happens if Keras changes
it. `tests/test_keras_seam.py` checks every one of them against the installed
Keras, so a Keras release that moves one fails those tests loudly instead of
giving wrong numbers.
"""

from __future__ import annotations

import sys
from typing import Any, Iterator

import keras

__all__ = [
    "MetricContainer",
    "add_model_metric",
    "compute_loss_accepts_training",
    "flatten_layers",
    "flatten_results_without",
    "forward_values_escape",
    "fused_gradient_saves_memory",
    "is_running",
    "lower_is_better",
    "micro_steps",
    "num_replicas",
    "optimizer_built_variables",
    "optimizer_own_variables",
    "optimizer_slot",
    "own_trainable_variables",
    "remove_model_metric",
    "replace_progress_bar",
    "restore_flat_results",
    "returns_flat_results",
    "running_call",
    "state_is_threaded",
    "thread_state_variable",
    "without_metric_state",
]

try:
    # Keras's EarlyStopping, ModelCheckpoint and ReduceLROnPlateau infer a
    # monitored metric's direction (mode="auto") only from the sub-metrics of
    # this container class; being one lets them monitor "val_data_loss".
    # Fallback: a plain Metric; monitors then need mode="min".
    from keras.src.trainers.compile_utils import MetricsList as MetricContainer
except ImportError:  # pragma: no cover - other Keras layouts
    MetricContainer = keras.metrics.Metric


class _LowerIsBetter(keras.metrics.Metric):
    """A name and a direction: what Keras's monitor callbacks look up.

    `MonitorCallback` reads the private `_direction` of a container's
    sub-metrics to choose mode="auto"; fallback: monitors need mode="min".
    """

    _direction = "down"

    def update_state(self, *args, **kwargs):
        pass

    def result(self):
        return keras.ops.zeros(())


def lower_is_better(name: str) -> keras.metrics.Metric:
    """A stand-in sub-metric `name` that Keras's monitors read as lower-is-better."""
    return _LowerIsBetter(name=name)


def running_call(model: Any) -> Any:
    """The frame of the Keras `fit` or `evaluate` of `model` that is calling us, if any.

    Python's frames are the one precise signal of whether a call is still
    running after an exception may have ended it without a word; Keras gives
    callbacks none. Found by the method's name and its `self`. Fallback (a
    trainer whose method has another name): None, and calls nested in the
    fit (an `evaluate` from a callback) run the plain step.
    """
    frame = sys._getframe(1)
    while frame is not None:
        if frame.f_code.co_name in ("fit", "evaluate") and frame.f_locals.get("self") is model:
            return frame
        frame = frame.f_back
    return None


def replace_progress_bar(callback: Any, make_bar: Any) -> Any:
    """Puts `make_bar()` in place of Keras's progress bar in the call running `callback`.

    A callback has no public handle on the other callbacks of its `fit` or
    `evaluate`, and `ProgbarLogger` prints every key of the logs. The
    `keras.callbacks.CallbackList` dispatching the hook that called us is
    found on the stack (by its `self`). Its progress bar, `_progbar`, when it
    is exactly Keras's `ProgbarLogger` and comes after `callback` (Keras
    appends its default one last), is swapped, in `_progbar` and in the
    `callbacks` list, before its own begin hook runs. That list is built anew
    for every call of `fit` or `evaluate`. A subclass, or a bar placed before
    `callback` (its begin hook has run), is left alone. Returns the new bar,
    or None when nothing was replaced. Fallback, when Keras changes this:
    None, and Keras's own bar shows every key.
    """
    frame = sys._getframe(1)
    while frame is not None:
        owner = frame.f_locals.get("self")
        if isinstance(owner, keras.callbacks.CallbackList) and any(c is callback for c in owner.callbacks):
            break
        frame = frame.f_back
    else:
        return None
    old = getattr(owner, "_progbar", None)
    if type(old) is not keras.callbacks.ProgbarLogger:
        return None
    order = [id(c) for c in owner.callbacks]
    if id(old) not in order or order.index(id(old)) < order.index(id(callback)):
        return None
    bar = make_bar()
    bar.set_model(callback.model)
    bar.set_params(owner.params)  # ProgbarLogger keeps none of its own
    owner.callbacks[order.index(id(old))] = bar
    owner._progbar = bar
    return bar


_FLATTEN = "_flatten_metrics_in_order"


def flatten_results_without(model: Any, keys: Any, once: bool = False) -> None:
    """Makes `evaluate`, `train_on_batch` and `test_on_batch` return what they would without `keys`.

    Without `return_dict=True` those return
    `model._flatten_metrics_in_order(logs)`: the compiled metrics in order,
    then every other key of the logs, sorted, and a lone value as a float.
    While a logger is attached the logs hold the penalty keys (for the
    callbacks and `return_dict=True`); this puts on the instance a
    `_flatten_metrics_in_order` that flattens the logs without `keys`, so a
    loss-only model still returns a float and a custom metric stays last.
    `once=True`: it removes itself at its first call (a standalone `evaluate`
    detaches its logger in `on_test_end`, just before Keras flattens).
    `restore_flat_results` removes it. Fallback, if Keras renames the
    method: the list returned holds the penalty keys too (the seam test
    fails first).
    """
    keys = frozenset(keys)
    flatten = getattr(type(model), _FLATTEN)

    def flatten_without(logs):
        if once:
            restore_flat_results(model)
        if isinstance(logs, dict):
            logs = {key: value for key, value in logs.items() if key not in keys}
        return flatten(model, logs)

    object.__setattr__(model, _FLATTEN, flatten_without)


def restore_flat_results(model: Any) -> None:
    """Removes what `flatten_results_without` put on `model`, if anything."""
    if _FLATTEN in vars(model):
        object.__delattr__(model, _FLATTEN)


def returns_flat_results(frame: Any) -> bool:
    """Whether the `evaluate` running in `frame` (see `running_call`) returns a flat list, not a dict.

    Read from its `return_dict` argument. Fallback (no such local): True.
    """
    return not (frame is not None and frame.f_locals.get("return_dict", False))


class _StateHolder:
    """What `Layer.variables` reads from `_seed_generators`: an object with `.state`."""

    def __init__(self, variable: Any):
        self.state = variable


def thread_state_variable(model: Any, variable: Any) -> None:
    """Makes `variable` part of the state Keras's JAX trainer threads through the train step.

    The JAX trainer passes `model.trainable_variables` and
    `model.non_trainable_variables` into the jitted step and maps them in
    `stateless_call`, where the regularizers run; any other variable is read
    there as a constant fixed at tracing. Those lists come from
    `Layer.variables`, which also takes `.state` of each entry of
    `model._seed_generators` (Keras's own per-step state, the random seeds)
    without counting it in `model.weights`, `get_weights()` or the saved
    weights. A variable registered here is therefore read afresh at every
    step, and the model saves and loads as before. Fallback, when Keras
    changes this: `thread_state_variable` raises, and `PenaltySchedule` with
    it, rather than training with a λ that does not change.
    """
    holders = model._seed_generators
    if not any(getattr(h, "state", None) is variable for h in holders):
        holders.append(_StateHolder(variable))
    if not any(v is variable for v in model.non_trainable_variables):
        raise RuntimeError(
            "keras_l1l2plus could not add a variable to the model's state in this Keras version "
            f"({keras.__version__}): a schedule would not reach the train step."
        )


def state_is_threaded() -> bool:
    """Whether the backend's trainer passes state into a compiled step explicitly (JAX).

    There, a variable an optimizer reads in its update must be among the
    optimizer's variables (`stateless_apply` maps those and the trainable
    ones only); TensorFlow and PyTorch read every variable where it is.
    """
    return keras.backend.backend() == "jax"


def is_running(frame: Any) -> bool:
    """Whether `frame` is on the current call stack (its call has not ended)."""
    current = sys._getframe(1)
    while current is not None:
        if current is frame:
            return True
        current = current.f_back
    return False


def flatten_layers(layer: Any) -> Iterator[Any]:
    """The direct sublayers of `layer`, in Keras's tracking order.

    `Layer._flatten_layers` is what Keras itself walks to collect weights and
    losses; there is no public equivalent for the direct children of a
    layer (`Model.layers` exists for models only). Fallback: none needed
    while Keras keeps it; the seam test fails if it goes.
    """
    return layer._flatten_layers(include_self=False, recursive=False)


def own_trainable_variables(layer: Any) -> list:
    """The trainable variables `layer` itself created, whether or not it is frozen.

    `layer.trainable_weights` is empty for a frozen layer and includes the
    sublayers' variables; `_trainable_variables` is the layer's own list,
    which `regularize` needs to reach frozen layers for fine-tuning.
    """
    return list(layer._trainable_variables)


def add_model_metric(model: Any, metric: Any) -> None:
    """Appends `metric` to the metrics Keras updates and logs for `model`.

    `model._metrics` is the list `model.metrics` reads its custom metrics
    from (what a subclassed model's attribute assignment fills); public API
    has no way to add a metric to an existing model instance.
    """
    model._metrics.append(metric)


def remove_model_metric(model: Any, metric: Any) -> None:
    """Removes `metric` (by identity) from `model._metrics`."""
    model._metrics[:] = [m for m in model._metrics if m is not metric]


def compute_loss_accepts_training(model: Any, value: bool) -> None:
    """Tells Keras's `train_step` whether `model.compute_loss` takes `training=`.

    Keras caches the answer at `Model.__init__` in
    `_compute_loss_has_training_arg` and reads it in `_compute_loss`; a
    `compute_loss` replaced on the instance must update it.
    """
    model._compute_loss_has_training_arg = value


def optimizer_slot(optimizer: Any, name: str, variable: Any) -> Any:
    """The optimizer's state variable `name` for `variable` (e.g. Adam's `_velocities`).

    Keras optimizers keep their per-variable state in private lists indexed
    by `_get_variable_index`; the proximal step's per-coordinate step size
    needs it. Fallback: `ProximalOptimizer(threshold="decoupled")` reads only
    the learning rate.
    """
    return getattr(optimizer, name)[optimizer._get_variable_index(variable)]


def optimizer_own_variables(optimizer: Any) -> list:
    """The variables an optimizer wrapper created itself (iterations, learning rate).

    `Optimizer._variables`, as Keras's `LossScaleOptimizer` lists them before
    its inner optimizer's in `variables`; public `variables` of a wrapper is
    what the wrapper defines, so it cannot be used to define it.
    """
    return list(optimizer._variables)


def optimizer_built_variables(optimizer: Any) -> list:
    """The trainable variables the optimizer was built with, in order.

    `Optimizer._trainable_variables`: what `apply(grads)` without variables
    and `stateless_apply` pair the gradients with (as `LossScaleOptimizer` does).
    """
    return list(optimizer._trainable_variables)


def micro_steps(optimizer: Any) -> Any:
    """Every `apply` the optimizer has run, accumulate-only ones included.

    With `gradient_accumulation_steps`, the public `iterations` counts real
    updates only; Keras decides whether an `apply` is a real update from the
    raw counter `_iterations`, and so must the proximal step.
    """
    return optimizer._iterations


def without_metric_state(args: tuple, positions: list[int]) -> tuple:
    """A JAX step's arguments with the metrics' variables at `positions` left out.

    Keras's JAX trainer calls its step functions as `fn(state, data)`, the
    last part of `state` being the values of `model.metrics_variables` when
    the state was gathered. A step traced without a metric must not get that
    metric's values. Other backends' steps take the data only: unchanged.
    """
    if keras.backend.backend() != "jax" or not positions:
        return args
    state, *rest = args
    *parts, metrics = state
    skip = set(positions)
    metrics = [value for i, value in enumerate(metrics) if i not in skip]
    return (type(state)((*parts, metrics)), *rest)


def num_replicas() -> int:
    """Replicas in sync under `tf.distribute` (1 elsewhere), as Keras counts them.

    Keras divides each replica's loss by this count before summing; the
    logged terms multiply it back, as Keras's own loss tracker does.
    """
    if keras.backend.backend() != "tensorflow":
        return 1
    import tensorflow as tf

    return tf.distribute.get_strategy().num_replicas_in_sync


def forward_values_escape() -> bool:
    """Whether a value computed in a custom gradient's forward pass may be used outside it.

    TensorFlow's `custom_gradient` runs the forward function in the caller's
    graph (or eagerly), and PyTorch's in its `autograd.Function.forward`:
    the tensors made there are ordinary tensors. JAX traces it in a trace of
    its own (`custom_vjp`) when no gradient is taken (a test step), and a
    value that leaves it raises `UnexpectedTracerError`. `L1L2Plus` keeps the
    sums of its forward pass for the logs only where this is True; elsewhere
    the logs compute them again (under XLA, the same computation, merged).
    """
    return keras.backend.backend() != "jax"


def fused_gradient_saves_memory() -> bool:
    """Whether one custom gradient for both penalty terms costs no more memory than two.

    `regularizer.penalty` computes `(u·l1)·s(x) + (u·2·l2)·x` in one custom
    gradient: fewer ops, and on JAX (XLA fuses it) and PyTorch (eager, one
    buffer freed as the next is made) no more memory than Keras's `L1L2`.
    TensorFlow's graph executor (without XLA) keeps both full-size halves
    alive at once, and the first train step of a 20 M-parameter `Dense`
    peaked one kernel-sized copy (76 MiB) above Keras's `L1L2`
    (`benchmarks/memory.py`); there the L2 term's gradient is left to
    autodiff, which Grappler schedules in place. Not a private name: a
    backend fact, kept here with the others.
    """
    return keras.backend.backend() != "tensorflow"

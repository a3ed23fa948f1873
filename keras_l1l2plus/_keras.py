"""The package's one seam to Keras internals.

Every use of a private Keras attribute or a `keras.src` import lives here,
each with why public API cannot do the job and what happens if Keras changes
it. `tests/test_keras_seam.py` checks every one of them against the installed
Keras, so a Keras release that moves one fails those tests loudly instead of
giving wrong numbers.
"""

from __future__ import annotations

import contextlib
import sys
from typing import Any, Iterator

import keras

__all__ = [
    "MetricContainer",
    "add_model_metric",
    "add_product",
    "add_to",
    "assign_to",
    "count_nonzero",
    "distribution_scope",
    "ema_average",
    "entries_for_logs",
    "flatten_layers",
    "flatten_results_without",
    "forward_values_escape",
    "materialize",
    "fused_gradient_saves_memory",
    "gradients",
    "hook_compute_loss",
    "is_running",
    "layout_like",
    "mean_gradient",
    "micro_steps",
    "model_state",
    "multi_process",
    "num_replicas",
    "optimizer_built_variables",
    "optimizer_own_variables",
    "own_trainable_variables",
    "release_state_variable",
    "remove_model_metric",
    "replace_progress_bar",
    "restore_flat_results",
    "returns_flat_results",
    "running_call",
    "SaveableVariables",
    "same_call",
    "second_moment",
    "set_step_function",
    "stack_scalars",
    "state_is_threaded",
    "step_function",
    "synced_model",
    "tensors_outlive_the_step",
    "thread_state_variable",
    "unhook_compute_loss",
    "without_metric_state",
]

try:
    # Keras's EarlyStopping, ModelCheckpoint and ReduceLROnPlateau infer a
    # monitored metric's direction (mode="auto") only from the sub-metrics of
    # this container class; being one lets them monitor "val_data_loss".
    # Fallback: a plain Metric; monitors then need mode="min".
    from keras.src.trainers.compile_utils import MetricsList as _MetricsList
except ImportError:  # pragma: no cover - other Keras layouts
    _MetricsList = keras.metrics.Metric


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


class MetricContainer(_MetricsList):
    """A float32 metric whose `lower_is_better` keys Keras's monitors read as lower-is-better.

    The container's sub-metrics (`self.metrics`, `MetricsList`'s own
    attribute) are stand-ins that only carry a name and a direction; the
    subclass computes every value in its own `result()`.
    """

    def __init__(self, name: str, lower_is_better: Any):
        keras.metrics.Metric.__init__(self, name=name, dtype="float32")  # not MetricsList's: no sub-metrics to own
        self.metrics = [_LowerIsBetter(name=key) for key in lower_is_better]


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


def release_state_variable(model: Any, variable: Any) -> None:
    """Undoes `thread_state_variable(model, variable)` (a no-op where it was not threaded)."""
    holders = model._seed_generators
    holders[:] = [h for h in holders if not (isinstance(h, _StateHolder) and h.state is variable)]


def state_is_threaded() -> bool:
    """Whether the backend's trainer passes state into a compiled step explicitly (JAX).

    There, a variable an optimizer reads in its update must be among the
    optimizer's variables (`stateless_apply` maps those and the trainable
    ones only); TensorFlow and PyTorch read every variable where it is.
    """
    return keras.backend.backend() == "jax"


def is_running(frame: Any) -> bool:
    """Whether `frame` is on a call stack of any thread (its call has not ended).

    Every thread: Keras may run an `async_safe` callback's batch-end hook on
    a worker thread, and a call it makes (a `test_on_batch`) is still nested
    in the fit running on the main thread.
    """
    if frame is None:
        return False
    for current in sys._current_frames().values():
        while current is not None:
            if current is frame:
                return True
            current = current.f_back
    return False


def same_call(callback: Any, other: Any) -> bool:
    """Whether two callbacks were given to the same call of `fit` or `evaluate`.

    Keras's `CallbackList` hands one `params` dict (epochs, steps, verbose) to
    every callback of a call, and a new one to the next call; a
    `CallbackList` built by hand without params gives them none, and then
    no two callbacks count as one call's.
    """
    return bool(callback.params) and callback.params is other.params


def distribution_scope(model: Any) -> Any:
    """The scope new variables of `model` are made in: its `tf.distribute` strategy's, else none."""
    strategy = getattr(model, "distribute_strategy", None)  # the TensorFlow trainer's
    return strategy.scope() if strategy is not None else contextlib.nullcontext()


def layout_like(reference: Any) -> dict:
    """Keyword arguments of `keras.Variable` that lay a new variable out as `reference` is: `{"layout": ...}`, or {}.

    Under a `keras.distribution` (JAX's `ModelParallel`, `DataParallel`) a
    new variable takes the layout the distribution gives its own path: a
    copy of a sharded kernel (`L1L2Plus`'s anchor w₀, a variable named
    `anchor`, which no `LayoutMap` entry names) would be replicated, whole
    on every device, beside a kernel split over them.
    `Distribution.get_variable_layout(reference)` gives the reference's
    layout and `keras.Variable(layout=...)` puts the copy there: public
    API, but `layout` is an argument of recent Keras only (3.15.1 has it,
    3.8.0 not), read from the signature. {} where there is no distribution,
    `reference` is not a `keras.Variable`, or this Keras's `Variable` takes no
    `layout`: the copy is then laid out as the distribution lays out its
    path (replicated unless the `LayoutMap` names it).
    """
    distribution = keras.distribution.distribution()
    if distribution is None or not isinstance(reference, keras.Variable) or not _VARIABLE_TAKES_LAYOUT:
        return {}
    return {"layout": distribution.get_variable_layout(reference)}


def _takes_layout() -> bool:
    import inspect

    try:
        return "layout" in inspect.signature(keras.Variable.__init__).parameters
    except (TypeError, ValueError):  # pragma: no cover - a signature Python cannot read
        return False


_VARIABLE_TAKES_LAYOUT = _takes_layout()


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


def _slot(optimizer: Any, name: str, variable: Any) -> Any:
    """The optimizer's state variable `name` for `variable` (its private per-variable list, by Keras's index)."""
    return getattr(optimizer, name)[optimizer._get_variable_index(variable)]


def second_moment(optimizer: Any, variable: Any) -> Any:
    """The per-coordinate second moment the update divided by: Adam's v (v̂max with amsgrad), RMSprop's v,
    Adagrad's accumulator a.

    Keras optimizers keep their per-variable state in private lists
    (`_velocities`, `_velocity_hats`, `_accumulators`) indexed by
    `_get_variable_index`; the proximal step's per-coordinate step size
    needs it. Fallback: `ProximalOptimizer(threshold="decoupled")` reads
    only the learning rate.
    """
    if isinstance(optimizer, keras.optimizers.Adam):  # AdamW and subclasses too
        return _slot(optimizer, "_velocity_hats" if optimizer.amsgrad else "_velocities", variable)
    if isinstance(optimizer, keras.optimizers.RMSprop):
        return _slot(optimizer, "_velocities", variable)
    if isinstance(optimizer, keras.optimizers.Adagrad):
        return _slot(optimizer, "_accumulators", variable)
    raise TypeError(f"no second moment known for {type(optimizer).__name__}")


def mean_gradient(optimizer: Any, variable: Any) -> Any:
    """A centered RMSprop's running mean of the gradient, ḡ (`_average_gradients`)."""
    return _slot(optimizer, "_average_gradients", variable)


def ema_average(optimizer: Any, variable: Any) -> Any:
    """The optimizer's EMA of `variable` (`_model_variables_moving_average`, with `use_ema=True`).

    The proximal step keeps it exactly 0 where the weight is; public API has
    no handle on it.
    """
    return _slot(optimizer, "_model_variables_moving_average", variable)


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


def multi_process() -> bool:
    """Whether this process is one of several running one computation: JAX's multi-controller runtime.

    After `keras.distribution.initialize(...)` (or `jax.distributed.initialize`)
    with more than one process, every process runs the same program on its
    own devices and its part of each global array. Not a private name: a
    backend fact, kept here with the others; TensorFlow and PyTorch: False.
    """
    if keras.backend.backend() != "jax":
        return False
    import jax

    return jax.process_count() > 1


def count_nonzero(x: Any) -> Any:
    """The number of nonzero entries of a tensor or variable (True ones of a boolean), as an integer scalar tensor.

    Exact at any size: counted in integers. NaN is not zero. On PyTorch
    `torch.count_nonzero` itself: its integer sum of a 10 M-entry mask took
    20 ms on CPU against 1.5 ms (the logger counts a proximal model's exact
    zeros at every step), and Keras's `ops.count_nonzero` transposes its 0-d
    result there, which warns at every call. Not a private name: a backend
    fact, kept here with the others. Counts above 2^31 − 1 are out of reach
    elsewhere (an int32 sum).
    """
    x = x.value if isinstance(x, keras.Variable) else x  # the value in a StatelessScope too
    if keras.backend.backend() == "torch":
        import torch

        return torch.count_nonzero(x)
    # A cast to bool is x != 0. Not `not_equal(x, 0)`: on TensorFlow's CPU the logged proximal step of
    # the 0.1 M MLP cost 1.20–1.28× the plain one with it, 1.10–1.15× with the cast (benchmarks/run.py).
    return keras.ops.sum(keras.ops.cast(keras.ops.cast(x, "bool"), "int32"))


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


def materialize(x: Any) -> Any:
    """`x`, computed on its own before what reads it: `jax.lax.optimization_barrier` on JAX, `x` elsewhere.

    XLA on CPU fuses a reduction of a reduction (Σ_g sqrt(Σ_{i∈g} x_i²), the
    group lasso's value) into one nested loop that ran 2–3× slower than the
    two reductions apart (784×512 kernel: 172 µs against 85 µs, Σ|x| and Σx²
    alone 75 µs; benchmarks/BENCHMARKS.md, "Group lasso"). The barrier keeps
    the inner sums a buffer of their own. Not a private name: a backend
    fact, kept here with the others; elsewhere eager or graph execution
    computes them apart anyway.
    """
    if keras.backend.backend() != "jax":
        return x
    import jax

    return jax.lax.optimization_barrier(x)


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


def hook_compute_loss(model: Any, make_hook: Any) -> Any:
    """Puts `make_hook(compute_loss, takes_training)` on the instance as `model.compute_loss`.

    `compute_loss` is what Keras's train and test steps call for the loss;
    a hook on the instance sees every step's loss, overrides included.
    Keras caches at `Model.__init__` whether `compute_loss` takes
    `training=` (`_compute_loss_has_training_arg`, read in `_compute_loss`):
    the hook takes it, so the cache is set. Returns what `unhook_compute_loss`
    needs to put things back.
    """
    saved = vars(model).get("compute_loss", _ABSENT)
    compute_loss = model.compute_loss  # the bound method, overrides included
    object.__setattr__(model, "compute_loss", make_hook(compute_loss, _takes_training(compute_loss)))
    model._compute_loss_has_training_arg = True
    return saved


def unhook_compute_loss(model: Any, saved: Any) -> None:
    """Gives `model` back its own `compute_loss` (and Keras's cached answer about `training=`)."""
    if saved is _ABSENT:
        object.__delattr__(model, "compute_loss")
    else:
        object.__setattr__(model, "compute_loss", saved)
    model._compute_loss_has_training_arg = _takes_training(model.compute_loss)


def _takes_training(compute_loss: Any) -> bool:
    import inspect

    return "training" in inspect.signature(compute_loss).parameters


_ABSENT = object()


def step_function(model: Any, kind: str) -> Any:
    """`model.train_function` or `model.test_function` (what `fit`/`evaluate` call per step), or None."""
    return getattr(model, f"{kind}_function", None)


def set_step_function(model: Any, kind: str, function: Any) -> None:
    """Sets `model.<kind>_function`, the cached step Keras calls (public attributes, set by `make_*_function`)."""
    setattr(model, f"{kind}_function", function)


def model_state(model: Any, key: str, make: Any = None) -> Any:
    """The plugin's own state `key` kept on `model`, or on any layer (created by `make()` when given and
    absent), or None.

    Stored as `model._keras_l1l2plus_<key>`, past Keras's attribute
    tracking (`object.__setattr__`), so it is neither a weight, nor a
    sublayer, nor saved: the logger's attachment, the schedule's λ vector
    state, and on a layer which `regularize` rule left a variable without a
    regularizer (`describe`'s source). Nothing of it changes what Keras computes unless the plugin puts
    it in place.
    """
    name = f"_keras_l1l2plus_{key}"
    found = vars(model).get(name)
    if found is None and make is not None:
        found = make()
        object.__setattr__(model, name, found)
    return found


def synced_model(callback: Any) -> Any:
    """`callback.model`, its variables holding the trainer's current state (on JAX).

    Keras's JAX trainer keeps the step's state outside the variables during
    an epoch, and `Callback.model`'s getter calls `model.jax_state_sync()`
    to write it back (keras/src/callbacks/callback.py); after that the
    trainer takes its state from the variables again. A callback that
    assigns a variable the next step reads (a λ) must read the model this
    way first. The seam test checks that the getter syncs; fallback, if it
    stops: assigned λs would be lost on JAX, which the schedule tests catch.
    """
    return callback.model


def tensors_outlive_the_step() -> bool:
    """Whether a tensor made during one train step may be used by the next (PyTorch: eager).

    TensorFlow and JAX trace the step: a tensor made while tracing belongs to
    that trace, so what is kept from step to step is kept as numpy there
    (and becomes a constant of each trace); PyTorch runs every step eagerly,
    and a tensor made once saves its conversion at every step.
    """
    return keras.backend.backend() == "torch"


def entries_for_logs(vector: Any) -> list:
    """The entries of a 1-d tensor, as a metric's `result()` gives them to Keras's logs.

    On PyTorch, Python floats, in one transfer: Keras's PyTorch step turns
    every result into a float right after `result()` (`get_metrics_result`,
    `pythonify_logs`: one device-to-host copy and one `convert_to_numpy` per
    key, 3–4 µs each at every step); this is the same read, once for the
    whole vector. Not while `torch.compile` traces the step (tensors there).
    Elsewhere the step is traced and the entries stay tensors.
    """
    if keras.backend.backend() == "torch":
        import torch

        if not torch.compiler.is_compiling():
            return vector.tolist()
        return list(torch.unbind(vector))
    return keras.ops.unstack(vector)


def add_to(variable: Any, delta: Any) -> None:
    """`variable.assign_add(delta)`; on PyTorch, in place, without Keras's Python around it.

    Keras's `assign_add` on PyTorch adds, converts the sum, checks its shape
    and copies it back: 11 µs a call against 3 µs for the in-place add, at
    every step for the logger's running sums. Inside a `keras.StatelessScope`
    (`stateless_compute_loss`), Keras's own, which records the update in the
    scope instead. Private name: `in_stateless_scope` (Keras has no public
    test for the scope); fallback where it moved: Keras's `assign_add` always.
    """
    if _in_place_is_safe():
        import torch

        with torch.no_grad():
            variable.value.add_(delta)
    else:
        variable.assign_add(delta)


def add_product(variable: Any, matrix: Any, vector: Any, weight: Any) -> None:
    """`variable += weight · matrix @ vector`, the product as a broadcast multiply and a sum.

    Elementwise, not `matmul`: a float32 matmul may run at reduced precision
    on accelerators (TF32 on GPUs, bfloat16 passes on TPUs). On PyTorch, with
    a Python-number weight, one in-place `addmv_` (TF32 there applies only to
    matrix-matrix products on CUDA, and only when enabled): the logger's
    running sums at every step, in one op where Keras's ops take five
    Python calls. Inside a `keras.StatelessScope`, as `add_to`.
    """
    if isinstance(weight, (int, float)) and _in_place_is_safe():
        import torch

        with torch.no_grad():
            variable.value.addmv_(matrix, vector, alpha=weight)
        return
    add_to(variable, keras.ops.sum(matrix * vector, axis=1) * weight)


def assign_to(variable: Any, value: Any) -> None:
    """`variable.assign(value)`; on PyTorch, a copy in place, as `add_to` (Keras's: 6 µs against 2 µs)."""
    if _in_place_is_safe():
        import torch

        with torch.no_grad():
            variable.value.copy_(value)
    else:
        variable.assign(value)


def _in_place_is_safe() -> bool:
    if keras.backend.backend() != "torch" or _in_stateless_scope is None:
        return False
    return not _in_stateless_scope()


try:
    from keras.src.backend.common.stateless_scope import in_stateless_scope as _in_stateless_scope
except ImportError:  # pragma: no cover - other Keras layouts: Keras's assignments
    _in_stateless_scope = None


def stack_scalars(values: list) -> Any:
    """`ops.stack` of scalar tensors, with PyTorch's own `torch.stack` on PyTorch.

    Keras's `ops.stack` converts each element through `convert_to_tensor` in
    Python before stacking (tens of µs for a dozen scalars, at every eager
    step); the values here are tensors already.
    """
    if keras.backend.backend() == "torch":
        import torch

        return torch.stack(values)
    return keras.ops.stack(values)


def gradients(loss_fn: Any, variables: list, others: list = ()) -> Any:
    """A function `g(*args)`: ∂loss_fn(*args)/∂v for each variable, the backend's way, outside a train step.

    Keras has no backend-neutral gradient: TensorFlow's `GradientTape`,
    `jax.grad` of the loss as a function of the variables' values (in a
    `keras.StatelessScope` that maps them), compiled once with `jax.jit`
    (an untraced `jax.grad` runs op by op, 30 times a train step), PyTorch's
    `torch.autograd.grad`. `args` are arrays (a batch). A variable the loss
    does not reach gets zeros. `others`: the other variables the loss reads
    (on JAX a `StatelessScope` must map every variable a layer's `losses`
    read; they are passed at their current values). Public APIs of each
    backend; the path's λ_max uses it, not a train step.
    """
    backend = keras.backend.backend()
    if backend == "tensorflow":
        import tensorflow as tf

        def grads_of(*args):
            with tf.GradientTape() as tape:
                loss = loss_fn(*args)
            return tape.gradient(loss, variables)

    elif backend == "jax":
        import jax

        others = list(others)

        def of_values(values, other_values, *args):
            mapping = list(zip(variables, values)) + list(zip(others, other_values))
            with keras.StatelessScope(state_mapping=mapping):
                return loss_fn(*args)

        compiled = jax.jit(jax.grad(of_values))

        def grads_of(*args):
            return compiled([v.value for v in variables], [v.value for v in others], *args)

    elif backend == "torch":
        import torch

        def grads_of(*args):
            loss = loss_fn(*args)
            return torch.autograd.grad(loss, [v.value for v in variables], allow_unused=True)

    else:  # pragma: no cover - a backend Keras may add
        raise NotImplementedError(f"gradients: the {backend} backend")

    def gradient(*args):
        grads = grads_of(*args)
        return [keras.ops.zeros(v.shape, v.dtype) if g is None else g for g, v in zip(grads, variables)]

    return gradient


def _saveable_base() -> type:
    try:
        from keras.src.saving.keras_saveable import KerasSaveable
    except ImportError:  # pragma: no cover - a Keras that moved it
        return object
    return KerasSaveable


class SaveableVariables(_saveable_base()):
    """A base that makes Keras's saving visit an object's own variables: Keras's `KerasSaveable`.

    `.keras` files and `save_weights` walk a model's layers and, in each,
    every attribute that is a `KerasSaveable` (layers, optimizers, metrics),
    calling its `save_own_variables` / `load_own_variables` under the
    attribute's path (keras/src/saving/saving_lib.py, `_save_state`). An
    `L1L2Plus` with an anchor (L2-SP) keeps w₀ in a variable of its own;
    as a `KerasSaveable`, held in the layer's `kernel_regularizer`, its w₀
    is saved at `layers/<layer>/kernel_regularizer/vars` and loaded back
    into the regularizer Keras rebuilds from the config. No public base
    does this (a `Layer` attribute would change the layer's own weights,
    and a layer rebuilt from its config would not have it).

    `_obj_type()` is `KerasSaveable`'s private hook: Keras's saving accepts
    only its own kinds there and uses the kind to skip a reference object's
    attributes when it walks this one for saveable children (a regularizer
    has none); "Loss" is the nearest kind. Subclasses define
    `save_own_variables`/`load_own_variables` only on the objects that have
    variables, and their own `__reduce__` (`KerasSaveable`'s pickles a whole
    model). Fallback, when Keras moves it: a plain base, and an anchored
    regularizer's w₀ is not saved (the seam test fails first).
    """

    def _obj_type(self) -> str:
        return "Loss"

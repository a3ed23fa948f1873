"""`PenaltySchedule`: the λs on a schedule, without tracing the train step again.

The loss at optimizer step t (epoch e) is

    Loss(t) = DataLoss + λ1w(t)·Σ|w| + λ1b(t)·Σ|b| + λ2w(t)·Σw² + λ2b(t)·Σb²
              (+ λgw(t)·Σ_g‖w_g‖ + λgb(t)·Σ_g‖b_g‖ where a group term is on)
              (+ λaw(t)·Σ(w − w₀)² + λab(t)·Σ(b − b₀)² where an anchor is)

where each λ is a constant, a `keras.optimizers.schedules.LearningRateSchedule`
of the optimizer's iteration count t (`PolynomialDecay`, `CosineDecay`,
`PiecewiseConstantDecay`, ..., as for a learning rate), or a Python callable
of the epoch e. Uses: a warm-up of regularization (a strong penalty from
step 0 slows early training), annealing, and gradual sparsity (raise the
proximal λ1 until a target fraction of the weights is exactly 0).

How: the scheduled λs of a model are the entries of one non-trainable
float32 `keras.Variable` of 8 (`lambdas`, in the order l1_weight, l1_bias,
l2_weight, l2_bias, group_weight, group_bias, l2_anchor_weight, l2_anchor_bias).
The `L1L2Plus` regularizers of a role read their entry in the step
(`L1L2Plus.factor("l1")` is a `Factor` of that entry), so a new value reaches the
next step with no new trace, under `jit_compile`, `steps_per_execution` and
`tf.distribute`. On JAX the variable is part of the state the trainer threads
through the jitted step (and of a `ProximalOptimizer`'s, for the proximal
step's threshold). The callback assigns the schedule's value before each
step (per-step schedules, tabulated once per epoch: Keras's schedules are
elementwise in the step) or each epoch (callables of the epoch), in Python,
with one write of the vector when a value changed.

What is saved: the λ of the moment. `L1L2Plus.get_config()` holds plain
floats, the values last written (as given: 0.2, not float32's 0.2000000030);
the schedule
belongs to the callback, as a learning-rate schedule given to Keras's
`LearningRateScheduler` does. A reloaded model trains with those constant λs
until it is fitted with a `PenaltySchedule` again.
"""

from __future__ import annotations

import warnings
import weakref
from typing import Any, Callable, Union

import keras
import numpy as np
from keras import ops

from keras_l1l2plus import _keras
from keras_l1l2plus.factors import Factor, validate_penalty
from keras_l1l2plus.proximal import find_proximal_optimizer
from keras_l1l2plus.regularizer import L1L2Plus
from keras_l1l2plus.roles import regularizer_attributes, walk_layers
from keras_l1l2plus.roles import role as variable_role
from keras_l1l2plus.steps import retrace
from keras_l1l2plus.terms import LAMBDA_NAMES, term_needs, term_parts

__all__ = ["PenaltySchedule", "lambda_variables", "term_regularizers"]

Schedule = Union[float, keras.optimizers.schedules.LearningRateSchedule, Callable[[int], float]]


def lambda_variables(model: Any) -> dict[str, Factor]:
    """`{term: its entry in the λ vector}` of the λs a `PenaltySchedule` set on `model` and some
    regularizer of the model still reads (a later `regularize()` puts constant λs back)."""
    state = _keras.model_state(model, "lambdas")
    if not state:
        return {}
    return {
        term: entry
        for term, entry in state["entries"].items()
        if any(r.factor(term_parts(term)[0]) is entry for r in term_regularizers(model, term))
    }


def _role_regularizers(model: Any, role: str, warn: bool = False) -> list[L1L2Plus]:
    """Every `L1L2Plus` of `role` on the model: on its variables (frozen layers' too) and on the
    layers' regularizer attributes, as `regularize` puts them."""
    found: dict[int, L1L2Plus] = {}
    others = []
    for chain in walk_layers(model):
        layer = chain[-1]
        for variable in _keras.own_trainable_variables(layer):
            regularizer = getattr(variable, "regularizer", None)
            if variable_role(layer, variable.name) != role or regularizer is None:
                continue
            if isinstance(regularizer, L1L2Plus):
                found[id(regularizer)] = regularizer
            else:
                others.append(f"{variable.path}: {regularizer!r}")
        for attribute, attribute_role in regularizer_attributes(layer).items():
            regularizer = getattr(layer, attribute)
            if attribute_role == role and isinstance(regularizer, L1L2Plus):
                found[id(regularizer)] = regularizer
    if warn and others:
        warnings.warn(
            f"PenaltySchedule: these {role} regularizers are not L1L2Plus and keep their λs: {others}. "
            "keras_l1l2plus.regularize(model, ...) replaces them.",
            stacklevel=4,
        )
    return list(found.values())


def term_regularizers(model: Any, term: str, warn: bool = False) -> list[L1L2Plus]:
    """The `L1L2Plus` a schedule of `term` sets: every one of its role; for a group term, those with one
    (a group term needs its `groups`, which only `regularize` or the user chose); for an anchor term, the
    anchored ones."""
    kind, role = term_parts(term)
    found = _role_regularizers(model, role, warn=warn)
    if kind == "group":
        found = [r for r in found if not r.factor("group").is_zero]
    elif kind == "l2_anchor":  # only where there is a w₀ to pull toward
        found = [r for r in found if r.anchored]
    return found


def _schedule_on(model: Any, terms: tuple[str, ...]) -> tuple[dict, list]:
    """Makes the `L1L2Plus` of `terms` read their λ from the model's λ vector; traces again if that changed.

    The vector (one float32 entry per λ of `LAMBDA_NAMES`) is created once
    per model and made part of the state the train step reads (JAX threads
    it). Returns the model's λ state and the variables to write: the vector,
    and the copy a `ProximalOptimizer` reads on JAX.
    """
    regularizers = {}
    for term in terms:
        regularizers[term] = term_regularizers(model, term, warn=True)
        if not regularizers[term]:
            what = term_needs(term)
            raise ValueError(
                f"PenaltySchedule({term}=...): no {term_parts(term)[1]} of model {model.name!r} has an L1L2Plus "
                f"{what} to schedule. Put them on first, e.g. "
                f"keras_l1l2plus.regularize(model, {term}=<the starting λ>)."
            )

    def new_state():
        with _keras.distribution_scope(model):
            vector = keras.Variable(np.zeros(len(LAMBDA_NAMES), "float32"), trainable=False, name="lambdas")
        return {"vector": vector, "entries": {}}

    state = _keras.model_state(model, "lambdas", new_state)
    vector = state["vector"]
    _keras.thread_state_variable(model, vector)
    targets = [vector]
    changed = False
    for term in terms:
        kind = term_parts(term)[0]
        entry = state["entries"].get(term)
        if entry is None or all(r.factor(kind) is not entry for r in regularizers[term]):
            # First schedule of this term, or regularize() put constants back: start from the current λ.
            start = regularizers[term][0].factor(kind).value
            entry = state["entries"][term] = Factor(start, vector, LAMBDA_NAMES.index(term))
            vector.assign(_vector_value(state))
        for regularizer in regularizers[term]:
            if regularizer.factor(kind) is not entry:
                regularizer.schedule(kind, entry)
                changed = True
        optimizer = find_proximal_optimizer(getattr(model, "optimizer", None))
        if kind in ("l1", "group") and optimizer is not None and any(r.proximal for r in regularizers[term]):
            copy = optimizer.track_lambda(vector)  # the proximal step's threshold reads it
            if all(copy is not t for t in targets):
                copy.assign(_vector_value(state))
                targets.append(copy)
    if changed:
        retrace(model)
    return state, targets


def _vector_value(state: dict) -> np.ndarray:
    """The λ vector's value: each scheduled term's last value, 0 for the others."""
    entries = state["entries"]
    return np.array([entries[t].value if t in entries else 0.0 for t in LAMBDA_NAMES], "float32")


def _tabulate(schedule: Any, first_step: int, steps: int | None):
    """The schedule's values at steps first_step … first_step + steps − 1, in one call; None if it cannot.

    Keras's schedules are elementwise in the step, so one call on the
    epoch's steps replaces a call (a few backend ops) before every step.
    """
    if not steps:
        return None
    try:
        values = ops.convert_to_numpy(schedule(np.arange(first_step, first_step + steps, dtype="int64")))
    except Exception:  # a schedule of a scalar step only: evaluated step by step
        return None
    return values.astype("float64").tolist() if values.shape == (steps,) else None


def _validate_schedule(schedule: Any, term: str) -> Schedule:
    if isinstance(schedule, keras.optimizers.schedules.LearningRateSchedule) or (
        callable(schedule) and not isinstance(schedule, keras.Variable)
    ):
        return schedule
    if isinstance(schedule, keras.Variable):
        raise ValueError(
            f"Invalid value for argument `{term}`: a keras.Variable is not a schedule (this callback "
            "writes the λs the step reads). Pass a float, a keras.optimizers.schedules.LearningRateSchedule "
            f"or a function of the epoch. Received: {term}={schedule!r}"
        )
    return validate_penalty(schedule, term)


class PenaltySchedule(keras.callbacks.Callback):
    """Makes any of the λs follow a schedule during `fit`.

        Loss(t) = DataLoss + λ1w(t)·Σ|w| + λ1b(t)·Σ|b| + λ2w(t)·Σw² + λ2b(t)·Σb²
                  (+ λgw(t)·Σ_g‖w_g‖ + λgb(t)·Σ_g‖b_g‖)

    Each argument is None (that λ is left alone), a float (set, then
    constant), a `keras.optimizers.schedules.LearningRateSchedule` (a function
    of the optimizer's iteration count, the step t: its values for the epoch's
    steps are computed at the epoch's start, in one call, and written before
    each step; a schedule must depend on the step only), or any other callable
    `f(epoch) -> λ` (evaluated at the start of every epoch). The step t is the
    optimizer's `iterations` at the epoch's start plus the batches since
    (divided by `gradient_accumulation_steps`); a step a `LossScaleOptimizer`
    skips on overflow still counts here. A scheduled λ replaces the λ of that
    term on every `L1L2Plus` of that role (weights or biases, see
    `keras_l1l2plus.roles`), which must be on the model already
    (`regularize`); a group λ replaces the λg of those with a group term
    (each keeps its `groups`). Proximal regularizers stay proximal, and
    their step's threshold follows the scheduled λ1 and λg.

    A new λ is read by the next step without tracing it again (the λ is a
    variable the step reads; see `keras_l1l2plus.schedule`). With
    `steps_per_execution=N`, it changes between executions: every step of
    one execution uses the λ of its first step. `PenaltyLogger` logs the
    scheduled λs (`lambda_l1_weight`, ...) with the terms, each step's terms
    with that step's λ.

    What is saved with the model is the λ of the moment (plain floats in the
    regularizers' configs), as for a learning rate set by Keras's
    `LearningRateScheduler`: the schedule is this callback's.

    Example:

    >>> import keras, numpy as np, keras_l1l2plus as kl
    >>> model = keras.Sequential([keras.Input((4,)), keras.layers.Dense(1)])
    >>> model = kl.regularize(model, l2_weight=1e-3)   # the L1L2Plus whose λ2 the schedule sets
    >>> warm_up = keras.optimizers.schedules.PolynomialDecay(0.0, decay_steps=10, end_learning_rate=0.25)
    >>> model.compile(optimizer="sgd", loss="mse")
    >>> x = np.ones((40, 4), "float32")
    >>> _ = model.fit(x, x[:, :1], batch_size=4, epochs=2, verbose=0,
    ...               callbacks=[kl.PenaltySchedule(l2_weight=warm_up)])
    >>> model.layers[0].kernel_regularizer.get_config()["l2"]   # the λ of the moment
    0.25

    Args:
        l1_weight, l1_bias, l2_weight, l2_bias, group_weight, group_bias,
        l2_anchor_weight, l2_anchor_bias: the schedule of each λ.
    """

    def __init__(
        self,
        l1_weight: Schedule | None = None,
        l1_bias: Schedule | None = None,
        l2_weight: Schedule | None = None,
        l2_bias: Schedule | None = None,
        group_weight: Schedule | None = None,
        group_bias: Schedule | None = None,
        l2_anchor_weight: Schedule | None = None,
        l2_anchor_bias: Schedule | None = None,
    ):
        super().__init__()
        given = dict(
            zip(
                LAMBDA_NAMES,
                (l1_weight, l1_bias, l2_weight, l2_bias, group_weight, group_bias, l2_anchor_weight, l2_anchor_bias),
            )
        )
        self.schedules = {term: _validate_schedule(s, term) for term, s in given.items() if s is not None}
        if not self.schedules:
            raise ValueError(
                f"PenaltySchedule: give at least one of {', '.join(LAMBDA_NAMES)} "
                "(a float, a keras.optimizers.schedules.LearningRateSchedule or a callable of the epoch)."
            )
        self._per_step = {
            t: s for t, s in self.schedules.items() if isinstance(s, keras.optimizers.schedules.LearningRateSchedule)
        }
        self._per_epoch = {t: s for t, s in self.schedules.items() if t not in self._per_step}
        self._variables: list = []  # the λ vector, and its copy in a ProximalOptimizer (JAX)
        self._state: dict = {}
        self._first_step = self._first_micro_step = 0
        self._accumulation = 1
        self._table: dict[str, list | None] = {}

    def set_model(self, model):
        # Before any callback's on_train_begin: a PenaltyLogger attaching there
        # finds the λ variables, whatever the callbacks' order.
        super().set_model(model)
        self._state, self._variables = _schedule_on(model, tuple(self.schedules))

    def on_train_begin(self, logs=None):
        # Two schedules of one term in one fit would overwrite each other's λ at every step.
        owners = self._state.setdefault("owners", {})  # term → weak reference to its schedule
        for term in self.schedules:
            other = owners.get(term, lambda: None)()
            if other is not None and other is not self and _keras.same_call(other, self):
                raise ValueError(
                    f"Two PenaltySchedule callbacks set {term} in one fit: pass one. Received: {other!r} and {self!r}"
                )
            owners[term] = weakref.ref(self)

    def on_epoch_begin(self, epoch, logs=None):
        model = _keras.synced_model(self)  # on JAX: the step counter read below is the trainer's
        counter = model.optimizer
        while getattr(counter, "inner_optimizer", None) is not None:  # the optimizer that counts the steps
            counter = counter.inner_optimizer
        # Steps are the optimizer's `iterations`: real updates, as for a learning-rate schedule; with
        # gradient accumulation a batch is a micro-step, and `iterations` = micro-steps // accumulation.
        self._accumulation = counter.gradient_accumulation_steps or 1
        self._first_micro_step = int(ops.convert_to_numpy(_keras.micro_steps(counter)))
        self._first_step = self._first_micro_step // self._accumulation
        values = {}
        for term, schedule in self._per_epoch.items():
            values[term] = schedule if isinstance(schedule, float) else schedule(epoch)
        self._assign(values, f"epoch {epoch}")
        self._table = {
            term: _tabulate(s, self._first_step, (self.params or {}).get("steps")) for term, s in self._per_step.items()
        }

    def on_train_batch_begin(self, batch, logs=None):
        if self._per_step:
            step = (self._first_micro_step + batch) // self._accumulation
            index = step - self._first_step
            values = {}
            for term, schedule in self._per_step.items():
                table = self._table.get(term)
                values[term] = table[index] if table is not None and index < len(table) else schedule(step)
            self._assign(values, f"step {step}")

    def _assign(self, values: dict[str, Any], when: str) -> None:
        changed = {}
        for term, value in values.items():
            try:
                if value is None:  # None means "leave it alone" only as the argument of PenaltySchedule
                    raise ValueError(value)
                value = validate_penalty(value, term)
            except ValueError:
                hint = " (a function without `return` returns None)" if value is None else ""
                raise ValueError(
                    f"PenaltySchedule({term}=...) returned an invalid λ at {when}: {value!r}{hint}. "
                    "Expected a finite, non-negative float."
                ) from None
            if self._state["entries"][term].value != value:
                changed[term] = value
        if changed:
            _keras.synced_model(self)  # on JAX: the next step takes its state, this λ included
            for term, value in changed.items():
                self._state["entries"][term].value = value
            vector = _vector_value(self._state)
            for variable in self._variables:  # one write of all the λs
                variable.assign(vector)

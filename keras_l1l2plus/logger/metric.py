"""`PenaltyMetric`: the penalty terms as a metric computed inside Keras's train and test steps.

Keras's `loss` is a running mean, over the steps of an epoch, of each step's
total loss, weighted by batch size. `PenaltyMetric` keeps the same running
means of

    l1_weight, l1_bias, l2_weight, l2_bias, penalty    (from `penalty_terms`)
    data_loss = loss − penalty

updated in the same step, from the same weights (those the step's loss used,
before the optimizer's update) and with the same batch-size weights, so that
`loss == data_loss + penalty` at every logged point. In evaluation the same
metric gives `val_data_loss = val_loss − penalty` at the evaluated weights.
"""

from __future__ import annotations

import warnings
from typing import Any, Callable, Iterable

import keras
import numpy as np
from keras import ops

from keras_l1l2plus import _keras
from keras_l1l2plus.proximal import proximal_roles, uses_proximal_step
from keras_l1l2plus.regularizer import in_dtype
from keras_l1l2plus.terms import Counts, group_targets, penalty_sums, sparsity_targets

__all__ = ["PenaltyMetric", "batch_size", "counts_live_groups", "latest_keys", "sparsity_roles"]


class PenaltyMetric(_keras.MetricContainer):
    """Running means of the penalty terms and the data loss, and the sparsity.

    `add_step(loss, batch_size, recorded)` takes the terms of one step's loss
    (`terms.penalty_sums`, reusing the sums the `L1L2Plus` calls of that loss
    recorded, so nothing is computed twice), with `data_loss = loss −
    penalty`, and accumulates every value times `batch_size`, all in one
    product and one write whatever the number of variables; `result()` is
    the dict of totals / Σ batch_size. `sparsity_<role>` for each role of
    `sparsity_roles`, the fraction of exact zeros among that role's variables
    that take the proximal step (`keras_l1l2plus.terms.sparsity` with
    `proximal_only=True`), is not averaged: it is the value at the weights of
    the latest step; so is `live_groups` (with `live_groups=True`), the
    number of groups not exactly 0 among the variables taking the proximal
    group step (`keras_l1l2plus.terms.live_groups`).

    `update_state(...)` does nothing: the terms come from the step's loss,
    not from `(y, y_pred)`, so a custom `train_step` that updates every
    metric of `model.metrics` with `(y, y_pred)` leaves this one exact.
    """

    def __init__(
        self,
        model: Any,
        *,
        term_keys: tuple[str, ...],
        sparsity_roles: tuple[str, ...] = (),
        lambdas: dict[str, Any] | None = None,
        per_layer: bool = False,
        live_groups: bool = False,
        name: str = "penalty_terms",
    ):
        mean_keys = (*term_keys, "data_loss")  # term_keys: those of penalty_sums(model, per_layer=...)
        super().__init__(name=name, lower_is_better=mean_keys)  # every value here, but sparsity, for monitors
        self._sums = lambda recorded=None: penalty_sums(model, per_layer=per_layer, recorded=recorded)
        self._sparsity_targets = lambda: sparsity_targets(model, roles=sparsity_roles, proximal_only=True)
        self._group_targets = (lambda: group_targets(model)) if live_groups else (lambda: None)
        self.mean_keys = mean_keys
        lambdas = dict(lambdas or {})  # the scheduled λs: entries of the model's λ vector, read in the step
        # In a closure: as an attribute, Keras would track the λ vector as this metric's own state.
        self._lambda_vector = lambda: next(e.variable for e in lambdas.values()) if lambdas else None
        self._lambda_index = np.array([e.index for e in lambdas.values()], "int32")
        self.lambda_ids = tuple(id(v) for v in lambdas.values())
        self.latest_keys = latest_keys(sparsity_roles, lambdas, live_groups)
        self.keys = self.mean_keys + self.latest_keys
        # Σ value·batch_size for each mean key, then Σ batch_size: one write per step.
        self._totals = self.add_variable(shape=(len(self.mean_keys) + 1,), initializer="zeros", name="totals")
        self._latest = (
            self.add_variable(shape=(len(self.latest_keys),), initializer="zeros", aggregation="mean", name="latest")
            if self.latest_keys
            else None
        )
        self.on_reset: Callable[[], None] | None = None
        self._warned_keys = False
        self._plan: _StepPlan | None = None

    def update_state(self, *args, **kwargs) -> None:
        """Ignored: see the class docstring."""

    def add_step(self, loss: Any, batch_size: Any, recorded: dict | None = None) -> None:
        """Adds one step: its loss, batch size, and the terms its loss recorded.

        One product for every running sum: `s = [the terms' sums…, loss, 1]`,
        `values = Σ_i s_i·A[i]`, with `A[i, key] = λ_i` for each key term i
        counts in, `A[i, data_loss] = −λ_i` (data_loss = loss − Σ λ_i·s_i),
        `A[loss, data_loss] = 1`, and `A[1, count] = 1`: the batch count in
        the last column.
        What does not change from step to step (the layer walk, `A`, the keys)
        is a `_StepPlan`, kept while the step records the same variables
        with the same factors (`signature`): a new one when `regularize`,
        a schedule taking a λ, a frozen or unfrozen layer or a new layer
        changes them. Where the backend traces the step (TensorFlow, JAX)
        this runs once per trace; on PyTorch, at every step.
        """
        plan = self._plan
        signature = _signature(recorded)
        if plan is None or signature is None or plan.signature != signature:
            plan = self._plan = _StepPlan(self, self._sums(recorded), signature, recorded)
        if plan.signature is None:
            sums = plan.sums
        elif plan.rows_in_float32:  # as most are: no dtype to read per row and step
            sums = [recorded[v][slot] for v, slot in plan.rows]
        else:
            sums = [in_dtype(recorded[v][slot], "float32") for v, slot in plan.rows]
        if len(loss.shape):  # Keras's compute_loss returns a scalar; a custom one may not
            loss = ops.sum(loss)
        loss = ops.stop_gradient(in_dtype(loss, "float32"))  # a value for the logs, not part of the gradient
        one = plan.one if plan.one is not None else ops.ones((), "float32")  # the batch count's row
        stacked = _keras.stack_scalars([*sums, loss, one])
        if plan.scale_index is not None:  # scheduled λs: the step reads them from the model's λ vector
            stacked = stacked * ops.take(ops.concatenate([plan.lambda_vector, plan.ones]), plan.scale_index)
        # A Python number (eager) stays one: no tensor to make of it.
        weight = float(batch_size) if isinstance(batch_size, (int, float)) else ops.cast(batch_size, "float32")
        _keras.add_product(self._totals, plan.matrix_t, stacked, weight)
        if self._latest is not None:
            latest = [plan.counts.values()] if plan.counts.keys else []
            if plan.lambda_index is not None:
                latest.append(ops.cast(ops.take(self._lambda_vector(), plan.lambda_index), "float32"))
            _keras.assign_to(self._latest, latest[0] if len(latest) == 1 else ops.concatenate(latest))

    def _warn_keys(self) -> None:
        """Once: `regularize` changed the regularized layers mid-fit; per-layer keys stay as they were."""
        if not self._warned_keys:
            self._warned_keys = True
            warnings.warn(
                "PenaltyLogger(per_layer=True): the regularized layers changed during fit; "
                "per-layer keys stay those of the fit's start (the totals stay exact). "
                "The new layers show from the next fit.",
                stacklevel=3,
            )

    def reset_state(self) -> None:
        self._totals.assign(ops.zeros(self._totals.shape, "float32"))
        if self._latest is not None:
            self._latest.assign(ops.zeros(self._latest.shape, "float32"))
        if self.on_reset is not None:
            self.on_reset()

    def result(self) -> dict[str, Any]:
        # Python floats on PyTorch, where Keras turns every result into floats anyway: no op per key.
        *totals, count = _keras.entries_for_logs(ops.convert_to_tensor(self._totals))
        count = max(count, 1.0) if isinstance(count, float) else ops.maximum(count, 1.0)  # 0 before a step
        result = {key: total / count for key, total in zip(self.mean_keys, totals)}
        if self._latest is not None:
            result.update(zip(self.latest_keys, _keras.entries_for_logs(ops.convert_to_tensor(self._latest))))
        return result

    def get_config(self) -> dict[str, Any]:
        # Lives only while a PenaltyLogger is attached; it is not saved.
        return {"name": self.name}


def _signature(recorded: dict | None) -> tuple | None:
    """What a cached `_StepPlan` depends on, as this step's loss recorded it; None when it recorded nothing.

    The variables the regularizers were called on (Keras calls them on the
    trainable ones: a layer frozen or unfrozen, or a new one, changes this)
    and the factors they read (`regularize` and `PenaltySchedule` replace them).
    """
    if not recorded:
        return None
    return tuple((key, entry[3].factors()) for key, entry in recorded.items())  # Factors compare by identity


class _StepPlan:
    """`PenaltyMetric.add_step`'s product, from one step's `PenaltySums`, reused while `signature` holds.

    Reused only when every sum comes from the step's recorded ones (`rows`:
    where to find each); otherwise (another regularizer's value, a JAX step,
    which records nothing) `signature` is None and the plan serves its own step only.
    """

    def __init__(self, metric: PenaltyMetric, plan: Any, signature: tuple | None, recorded: dict | None):
        keys = metric.mean_keys
        if plan.keys != keys[:-1]:
            metric._warn_keys()
        n, k = len(plan.sums), len(keys)
        counts_in = np.zeros((n + 2, k + 1), dtype="float32")  # rows: the sums, the loss, 1 (the count)
        for j, key in enumerate(plan.keys):
            if key in keys:
                counts_in[:n, keys.index(key)] = plan.counts_in[:, j]
        counts_in[:n, k - 1] = -plan.counts_in[:, plan.keys.index("penalty")]
        counts_in[n, k - 1] = counts_in[n + 1, k] = 1.0
        scheduled = [f.scheduled for f in plan.factors]
        # Constant λs folded into the matrix; a scheduled one's row is scaled by its entry of the λ vector.
        constants = np.array([1.0 if s else f.value for f, s in zip(plan.factors, scheduled)] + [1.0, 1.0], "float32")
        matrix = counts_in * constants[:, None]
        reusable = signature is not None and all(source is not None for source in plan.sources)
        self.signature = signature if reusable else None
        # sparsity_* and live_groups (the walk, once): what they count, and the product that gives them.
        self.counts = Counts(metric._sparsity_targets(), metric._group_targets())
        self.rows = plan.sources if reusable else ()
        self.sums = () if reusable else plan.sums  # float32 (penalty_sums casts them)
        self.rows_in_float32 = all(  # the recorded sums are in their variable's accumulation dtype
            keras.backend.standardize_dtype(recorded[v][slot].dtype) == "float32" for v, slot in self.rows
        )
        # Tensors made now serve later steps only where they outlive the step (PyTorch, eager);
        # elsewhere they are constants of the trace being built.
        as_tensor = ops.convert_to_tensor if _keras.tensors_outlive_the_step() else (lambda array: array)
        self.matrix_t = as_tensor(np.ascontiguousarray(matrix.T))  # (keys + count, rows): no expand_dims per step
        self.one = as_tensor(np.ones((), "float32")) if _keras.tensors_outlive_the_step() else None
        self.lambda_index = as_tensor(metric._lambda_index) if len(metric._lambda_index) else None
        self.scale_index = self.lambda_vector = self.ones = None
        if any(scheduled):
            vector = next(f.variable for f in plan.factors if f.scheduled)  # the model's one λ vector
            size = int(vector.shape[0])
            index = [f.index if s else size for f, s in zip(plan.factors, scheduled)] + [size, size]  # size: 1.0
            self.scale_index = as_tensor(np.array(index, "int32"))
            self.lambda_vector, self.ones = vector, as_tensor(np.ones(1, "float32"))


def batch_size(x: Any, y_pred: Any) -> Any:
    """The batch size Keras weights its loss tracker by: the first input's."""
    if hasattr(x, "shape"):  # one input, as most models have: no walk
        return ops.shape(x)[0]
    for tensor in keras.tree.flatten(x if x is not None else y_pred):
        if tensor is not None:
            return ops.shape(tensor)[0]
    return 1


def latest_keys(roles: Iterable[str], terms: Iterable[str], groups: bool = False) -> tuple[str, ...]:
    """The keys `PenaltyMetric` logs at the latest step's value: `sparsity_<role>`, `live_groups`, `lambda_<term>`."""
    return (
        *(f"sparsity_{role}" for role in roles),
        *(("live_groups",) if groups else ()),
        *(f"lambda_{term}" for term in terms),
    )


def counts_live_groups(model: Any) -> bool:
    """Whether `live_groups` means something: some variable takes the proximal group step."""
    return uses_proximal_step(getattr(model, "optimizer", None)) and bool(group_targets(model))


def sparsity_roles(model: Any) -> tuple[str, ...]:
    """The roles whose `sparsity_*` means something: those that take the proximal step.

    With subgradient steps no entry is brought to exactly 0 (only one that
    never left an exact-zero initial value stays there), and without a
    `ProximalOptimizer` the proximal regularizers' L1 does not act at all.
    """
    return proximal_roles(model) if uses_proximal_step(getattr(model, "optimizer", None)) else ()

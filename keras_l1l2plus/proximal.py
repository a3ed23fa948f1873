"""The proximal L1 step: L1 that sets weights exactly to zero, in the optimizer's update.

A (sub)gradient step on λ·|w| moves a weight by ±η·λ and so never lands on
zero: it hovers around it. Proximal gradient descent (ISTA; Beck & Teboulle,
"A Fast Iterative Shrinkage-Thresholding Algorithm", SIAM J. Imaging Sci.,
2009) takes the gradient step on the smooth part of the loss only, then the
proximal operator of η·λ·|w|, soft thresholding:

    w ← sign(w) · max(|w| − η·λ1, 0)

where η is the step size the optimizer just took. `ProximalOptimizer` wraps
any Keras optimizer (as `LossScaleOptimizer` does, and as optax chains a
proximal transform after `adam`): it applies the inner optimizer's update,
then this step to every variable whose regularizer is an
`L1L2Plus(..., proximal=True)`. The step is therefore part of the update
wherever the update runs: `fit`, a custom `GradientTape` loop,
`steps_per_execution`, XLA, `tf.distribute`, every backend.

Step sizes (`threshold="adaptive"`, the default):

    SGD           η   = lr                                   (ISTA, exactly so without momentum)
    Adam, AdamW   η_i = lr · √(1 − β2^t) / (√v_i + ε)        (v: v̂max with amsgrad)
    RMSprop       η_i = lr / √(v_i + ε)                      (centered: √(v_i − ḡ_i² + ε))
    Adagrad       η_i = lr / √(a_i + ε)
    others        η   = lr, with a warning

For the adaptive optimizers this is the preconditioned proximal step of
ProxGen (Yun, Lozano & Yang, "Adaptive Proximal Gradient Methods for
Structured Neural Networks", NeurIPS 2021): the exact proximal step of the
quadratic model the optimizer minimises at that step. It makes exact zeros
under Adam; it is not a guarantee of reaching the L1 optimum.

A coordinate that has never had a non-zero gradient has no second-moment
estimate (v_i = 0): ProxGen's η_i would be lr·√(1−β2^t)/ε for Adam, about
3·10⁵·lr with Keras's ε = 1e-7 (lr/√ε ≈ 3·10³·lr for RMSprop), which wipes out
an embedding row a batch never saw in a few steps. Such coordinates take
η = lr instead, as under SGD: weights the data has not reached yet shrink at
the plain ISTA rate, no faster. (Adagrad's accumulator starts at
`initial_accumulator_value`, 0.1 by default, which bounds its η_i by
lr/√0.1 already; the rule applies to it only when that value is 0.)

`threshold="decoupled"` uses η = lr for every coordinate and every
optimizer: L1's counterpart of AdamW's decoupled weight decay. It is a
different regularizer from λ1·Σ|w| in the loss under adaptive optimizers
(what it zeroes depends on the gradients' signal-to-noise ratio), and the
same one under SGD.

Gradient accumulation: the step runs once per real update, with that
update's η (accumulate-only steps leave the variables alone). EMA
(`use_ema=True`): the moving average is kept of the thresholded weights (Keras
averages inside the inner update, before the step; the step corrects it) and
is 0 wherever the weight is exactly 0, so whatever swaps it in (the end of
`fit`, `SwapEMAWeights`, `ema_overwrite_frequency`) keeps the exact zeros.

The group step (`L1L2Plus(group=λg, proximal=True)`): the proximal operator
of η·λg·Σ_g ‖w_g‖₂ is block soft thresholding (jaxopt's
`prox_group_lasso`),

    w_g ← max(0, 1 − η·λg / ‖w_g‖₂) · w_g

exact under SGD (ISTA for the group lasso). It follows the L1 step, which
makes the pair the exact proximal step of the sparse group lasso
λ1·‖w‖₁ + λg·Σ_g ‖w_g‖₂ (Friedman, Hastie & Tibshirani, "A note on the
group lasso and a sparse group lasso", 2010: soft thresholding, then
block soft thresholding). Under a per-coordinate step η_i = lr·p_i (Adam,
RMSprop, Adagrad) the preconditioned proximal step

    argmin_z Σ_i (z_i − w_i)² / (2·η_i) + λg·‖z_g‖₂

has no closed form, but its zero set does: z_g = 0 exactly when
‖(w/η)_g‖₂ ≤ λg (0 is in the subdifferential there). The step uses the one
scalar step size per group that zeroes exactly those groups and is η
itself when the η_i are equal,

    η_g = ‖w_g‖ / ‖(w/η)_g‖,  so  w_g ← max(0, 1 − lr·λg / ‖(w/p)_g‖₂) · w_g

(a weighted power mean of order −2 of the group's η_i, weights w_i²; p_i = 1 under SGD and
`"decoupled"`, which gives back the formula above). It is computed from
p, not η, so lr = 0 is the identity.

Limit of the v_i = 0 rule: a coordinate whose gradients are tiny but not 0
(a pretrained embedding under a freshly zero-initialised head) still gets
ProxGen's large η_i and can be zeroed fast; to fine-tune pretrained weights,
prefer `threshold="decoupled"`.
"""

from __future__ import annotations

import warnings
from typing import Any

import keras
from keras import ops

from keras_l1l2plus import _keras
from keras_l1l2plus.factors import Factor
from keras_l1l2plus.regularizer import accumulation_dtype, as_l1l2plus, group_norms, in_dtype
from keras_l1l2plus.roles import BIAS, WEIGHT, owned_trainable_variables

__all__ = [
    "ProximalOptimizer",
    "find_proximal_optimizer",
    "group_scale",
    "preconditioner",
    "proximal_factor",
    "proximal_roles",
    "soft_threshold",
    "takes_proximal_step",
    "uses_proximal_step",
]

THRESHOLDS = ("adaptive", "decoupled")


def soft_threshold(w: Any, threshold: Any) -> Any:
    """sign(w) · max(|w| − threshold, 0): the proximal operator of threshold·|w|.

    Computed as `w − clip(w, −threshold, threshold)`: the same values (exactly
    0 where |w| ≤ threshold, `w` itself where threshold is 0) in fewer passes.
    """
    w = ops.convert_to_tensor(w)
    return w - _shrinkage(w, threshold)


def _shrinkage(w: Any, threshold: Any) -> Any:
    """What soft thresholding takes off `w`: clip(w, −threshold, threshold)."""
    return ops.clip(w, -threshold, threshold)


def proximal_factor(variable: Any, kind: str) -> Factor:
    """The λ `kind` ("l1" or "group") of `variable`'s proximal `L1L2Plus`; the constant 0 when it has none."""
    regularizer = as_l1l2plus(getattr(variable, "regularizer", None))
    if regularizer is None or not regularizer.proximal:
        return _ZERO
    return regularizer.factor(kind)


_ZERO = Factor(0.0)


def takes_proximal_step(variable: Any) -> bool:
    """Whether `variable` has a proximal `L1L2Plus` with an L1 or group factor that is not the constant 0."""
    return not (proximal_factor(variable, "l1").is_zero and proximal_factor(variable, "group").is_zero)


def proximal_roles(model: Any) -> tuple[str, ...]:
    """The roles ("weight", "bias") of `model` with a variable that takes the proximal L1 step."""
    found = {owned.role for owned in owned_trainable_variables(model) if takes_proximal_step(owned.variable)}
    return tuple(role for role in (WEIGHT, BIAS) if role in found)


def _preconditioned(step: Any, state: Any) -> Any:
    """`step` per coordinate, or 1 (η = lr) where the second-moment `state` is still 0."""
    return ops.where(ops.equal(state, 0), ops.cast(1, step.dtype), step)


def preconditioner(optimizer: Any, variable: Any, step: Any, threshold: str = "adaptive") -> Any:
    """p in η = lr·p for `variable` at the update `optimizer` has just applied: 1.0, or a tensor per coordinate.

    `step` (t, counted from 1) is that update's, read before it ran; the
    optimizer's state is read after it (the v_t the update divided by).
    """
    dtype = variable.dtype
    if threshold == "decoupled":
        return 1.0
    if isinstance(optimizer, keras.optimizers.Adam):  # AdamW and subclasses too
        v = _keras.second_moment(optimizer, variable)
        correction = ops.sqrt(1 - ops.power(ops.cast(optimizer.beta_2, dtype), ops.cast(step, dtype)))
        return _preconditioned(correction / (ops.sqrt(v) + optimizer.epsilon), v)
    if isinstance(optimizer, keras.optimizers.RMSprop):
        v = _keras.second_moment(optimizer, variable)
        centered = v
        if optimizer.centered:
            centered = v - ops.square(_keras.mean_gradient(optimizer, variable))
        return _preconditioned(1 / ops.sqrt(centered + optimizer.epsilon), v)
    if isinstance(optimizer, keras.optimizers.Adagrad):
        a = _keras.second_moment(optimizer, variable)
        return _preconditioned(1 / ops.sqrt(a + optimizer.epsilon), a)
    return 1.0


def _in(value: Any, dtype: str) -> Any:
    """`value` in `dtype`: a Python number converted directly (a cast would round it to float32 first)."""
    if isinstance(value, (int, float)):
        return ops.convert_to_tensor(value, dtype)
    return in_dtype(value, dtype)


def group_scale(w: Any, groups: str, threshold: Any, p: Any = 1.0) -> Any:
    """max(0, 1 − threshold / ‖(w/p)_g‖₂) per group of `w` (size-1 axes kept), in `w`'s dtype.

    `threshold` is lr·λg; `w_g · group_scale` is block soft thresholding with
    the step size η_g of the module docstring (η = lr·p). A group whose
    ‖(w/p)_g‖ is at most `threshold` (a zero group included) scales by 0.
    """
    w = ops.convert_to_tensor(w)
    scaled = w if isinstance(p, float) else w / p
    norms = group_norms(scaled, groups)  # in the accumulation dtype
    threshold = _in(threshold, norms.dtype)
    safe = ops.where(ops.greater(norms, threshold), norms, ops.ones_like(norms))
    return in_dtype(ops.where(ops.greater(norms, threshold), 1 - threshold / safe, ops.zeros_like(norms)), w.dtype)


_KNOWN = (keras.optimizers.SGD, keras.optimizers.Adam, keras.optimizers.RMSprop, keras.optimizers.Adagrad)


@keras.saving.register_keras_serializable(package="keras_l1l2plus")
class ProximalOptimizer(keras.optimizers.Optimizer):
    """Wraps an optimizer so that L1 of proximal `L1L2Plus` regularizers sets weights to zero.

    Each update is the inner optimizer's update, then, for every variable
    whose regularizer is `L1L2Plus(l1=λ1, ..., proximal=True)`:

        w ← sign(w) · max(|w| − η·λ1, 0)

    with η the step size of that update (the learning rate for SGD: proximal
    gradient descent, ISTA; per coordinate for Adam, RMSprop, Adagrad; see
    `keras_l1l2plus.proximal`). The L1 term of those regularizers counts in
    the loss and the logs but has no gradient, so L1 acts once. A variable's
    own constraint applies last.

    Everything else is the inner optimizer's: learning rate (and schedules,
    `ReduceLROnPlateau`), iterations, state, gradient clipping, weight decay,
    gradient accumulation, EMA. It saves and loads with the model.

    Example:

    >>> import keras, numpy as np, keras_l1l2plus as kl
    >>> model = keras.Sequential([keras.Input((3,)), keras.layers.Dense(1)])
    >>> model = kl.regularize(model, l1_weight=0.5, proximal_weight=True)
    >>> model.compile(optimizer=kl.ProximalOptimizer(keras.optimizers.SGD(0.1)), loss="mse")
    >>> x = np.eye(3, dtype="float32"); y = np.zeros((3, 1), "float32")
    >>> _ = model.fit(x, y, epochs=20, verbose=0)
    >>> int((model.layers[0].kernel.numpy() == 0).sum())
    3

    In a custom loop, `optimizer.apply_gradients(zip(grads, variables))`
    takes the step the same way.

    Args:
        inner_optimizer: a Keras optimizer, or its name or config
            (`"adam"`), as `compile` accepts. Not a `LossScaleOptimizer`:
            mixed precision wraps this one (Keras does it in `compile`).
        threshold: `"adaptive"` (default): the step size of the update,
            per coordinate for adaptive optimizers (η = lr where a
            coordinate has had no gradient yet); `"decoupled"`: η = lr for
            every coordinate, as AdamW decouples weight decay.
        name: the optimizer's name.
    """

    def __init__(self, inner_optimizer: Any, threshold: str = "adaptive", name: str | None = None, **kwargs):
        if kwargs:
            raise ValueError(
                f"ProximalOptimizer does not take {sorted(kwargs)}: set them on the "
                f"inner optimizer. Received: {kwargs!r}"
            )
        message = (
            "Invalid value for argument `inner_optimizer`: expected a Keras optimizer, "
            f"its name or its config. Received: inner_optimizer={inner_optimizer!r}"
        )
        try:
            inner = keras.optimizers.get(inner_optimizer)
        except (ValueError, TypeError) as error:
            raise TypeError(message) from error
        if not isinstance(inner, keras.optimizers.Optimizer):
            raise TypeError(message)
        if isinstance(inner, (ProximalOptimizer, keras.optimizers.LossScaleOptimizer)):
            raise TypeError(
                "Invalid value for argument `inner_optimizer`: it is already a "
                f"{type(inner).__name__}. Wrap the plain optimizer once; under mixed "
                "precision, LossScaleOptimizer goes outside: "
                "keras.optimizers.LossScaleOptimizer(keras_l1l2plus.ProximalOptimizer(keras.optimizers.Adam())), "
                "which compile() builds under a mixed_float16 policy. "
                f"Received: inner_optimizer={inner!r}"
            )
        if threshold not in THRESHOLDS:
            raise ValueError(
                f"Invalid value for argument `threshold`: expected one of {THRESHOLDS}. "
                f"Received: threshold={threshold!r}"
            )
        super().__init__(learning_rate=0.0, name=name)
        self.inner_optimizer = inner
        self.threshold = threshold
        self._lambdas: dict[int, Any] = {}  # id(λ variable) → this optimizer's copy (JAX), see track_lambda
        if threshold == "adaptive" and not isinstance(inner, _KNOWN):
            warnings.warn(
                f"ProximalOptimizer: the per-coordinate step size of {type(inner).__name__} is not "
                "known to keras_l1l2plus, so the threshold is l1 × learning rate (exact for SGD). "
                'Pass threshold="decoupled" to choose that explicitly.',
                stacklevel=2,
            )

    def build(self, var_list):
        self.inner_optimizer.build(var_list)
        super().build(var_list)
        for variable in var_list:  # λ1s and λgs a PenaltySchedule set before this optimizer existed
            for kind in ("l1", "group"):
                factor = proximal_factor(variable, kind)
                if factor.scheduled:
                    self.track_lambda(factor.variable)

    @property
    def variables(self):
        return _keras.optimizer_own_variables(self) + self.inner_optimizer.variables + list(self._lambdas.values())

    def track_lambda(self, variable: Any) -> Any:
        """The variable the update reads for the λ vector `variable`; whoever assigns one assigns both.

        `PenaltySchedule` calls it for a scheduled proximal λ1. On JAX the
        update (`stateless_apply`) sees this optimizer's variables and the
        trainable ones only, so the update reads a copy kept among this
        optimizer's variables (the model's state holds `variable` itself; one
        buffer cannot be in both). Elsewhere it reads `variable`. The copy is
        not saved with the optimizer: the regularizers' configs hold the λ of
        the moment.
        """
        if not _keras.state_is_threaded():
            return variable
        if id(variable) not in self._lambdas:
            self._lambdas[id(variable)] = keras.Variable(
                ops.convert_to_numpy(variable), dtype=variable.dtype, trainable=False, name=f"{variable.name}_copy"
            )
        return self._lambdas[id(variable)]

    def _saved_variables(self) -> list:
        copies = {id(v) for v in self._lambdas.values()}
        return [v for v in self.variables if id(v) not in copies]

    def save_own_variables(self, store):
        for i, variable in enumerate(self._saved_variables()):
            store[str(i)] = variable.numpy()

    def load_own_variables(self, store):
        variables = self._saved_variables()
        if len(store.keys()) != len(variables):
            warnings.warn(
                f"Skipping variable loading for optimizer '{self.name}', because it has "
                f"{len(variables)} variables whereas the saved optimizer has {len(store.keys())}.",
                stacklevel=2,
            )
            return
        for i, variable in enumerate(variables):
            variable.assign(store[str(i)])

    def apply(self, grads, trainable_variables=None):
        if not self.built:
            with keras.name_scope(self.name, caller=self):
                self.build(trainable_variables)
            self.built = True
        grads = list(grads)
        if trainable_variables is None:
            variables = _keras.optimizer_built_variables(self)
        else:
            variables = list(trainable_variables)
        inner = self.inner_optimizer
        targets = [v for v, g in zip(variables, grads) if g is not None and takes_proximal_step(v)]
        if targets:
            # Read before the update runs: its learning rate and step t,
            # whether it is a real update or only accumulates gradients, and
            # whether it is the EMA's first step.
            learning_rate = inner.learning_rate
            step = inner.iterations + 1
            is_update_step = 1.0
            if inner.gradient_accumulation_steps:
                micro_step = _keras.micro_steps(inner) + 1
                is_update_step = ops.cast(ops.equal(micro_step % inner.gradient_accumulation_steps, 0), "float32")
            first_ema_step = ops.equal(inner.iterations, 0) if inner.use_ema else None
        inner.apply(grads, variables)
        for variable in targets:
            self._proximal_step(variable, learning_rate, step, is_update_step, first_ema_step)

    def _lambda(self, factor: Factor, is_update_step: Any) -> Any:
        """λ·[a real update]: a scheduled λ read, on JAX, from the copy this update can read."""
        value = factor.read(self._lambdas.get(id(factor.variable))) if factor.scheduled else factor.value
        return value * is_update_step

    def _proximal_step(self, variable: Any, learning_rate: Any, step: Any, is_update_step: Any, first_ema_step: Any):
        """Soft thresholding (L1), then block soft thresholding (group), then the constraint; EMA corrected."""
        inner = self.inner_optimizer
        l1, group = proximal_factor(variable, "l1"), proximal_factor(variable, "group")
        dtype = variable.dtype
        lr = ops.cast(learning_rate, dtype)
        p = preconditioner(inner, variable, step, self.threshold)
        updated = variable.value
        value = None  # None while the new value is `updated − shrinkage` (L1 alone: one assign_sub)
        shrinkage = None
        if not l1.is_zero:
            eta = lr if isinstance(p, float) else lr * p
            shrinkage = _shrinkage(updated, _in(self._lambda(l1, is_update_step), dtype) * eta)
        if not group.is_zero:
            value = updated if shrinkage is None else updated - shrinkage
            acc = accumulation_dtype(dtype)
            threshold = _in(self._lambda(group, is_update_step), acc) * _in(learning_rate, acc)
            value = value * group_scale(value, as_l1l2plus(variable.regularizer).groups, threshold, p)
        if variable.constraint is not None:  # the variable's own constraint applies last
            value = variable.constraint(updated - shrinkage if value is None else value)
        if value is None:
            if first_ema_step is not None:  # only EMA reads them (on PyTorch each is a full-size tensor)
                change, zero = -shrinkage, ops.equal(shrinkage, updated)  # zero: |w| ≤ t
            variable.assign_sub(shrinkage)
        else:
            if first_ema_step is not None:
                change, zero = value - updated, ops.equal(value, 0)  # read before the assign
            variable.assign(value)
        if first_ema_step is not None:
            _correct_moving_average(inner, variable, first_ema_step, change, zero)

    def finalize_variable_values(self, var_list):
        """The inner optimizer's: with EMA, its averages (zero where the weights are) replace the weights."""
        self.inner_optimizer.finalize_variable_values(var_list)

    def scale_loss(self, loss):
        return self.inner_optimizer.scale_loss(loss)

    @property
    def learning_rate(self):
        return self.inner_optimizer.learning_rate

    @learning_rate.setter
    def learning_rate(self, learning_rate):
        self.inner_optimizer.learning_rate = learning_rate

    @property
    def iterations(self):
        return self.inner_optimizer.iterations

    def get_config(self):
        return {
            "name": self.name,
            "inner_optimizer": keras.saving.serialize_keras_object(self.inner_optimizer),
            "threshold": self.threshold,
        }

    @classmethod
    def from_config(cls, config, custom_objects=None):
        config = dict(config)
        inner = keras.saving.deserialize_keras_object(config.pop("inner_optimizer"), custom_objects=custom_objects)
        return cls(inner, **config)


def _correct_moving_average(optimizer: Any, variable: Any, first_step: Any, change: Any, zero: Any) -> None:
    """Makes the EMA of `variable` the average of the thresholded weights, zero where they are.

    Keras updated `average ← μ·average + (1 − μ)·w` inside the inner update,
    before the proximal step changed w by `change` (μ is 0 at the first step);
    where the step made w exactly 0 (`zero`), the average is 0 too, so that
    whatever swaps the average in (the end of `fit`, `SwapEMAWeights`,
    `ema_overwrite_frequency`) keeps the exact zeros.
    """
    average = _keras.ema_average(optimizer, variable)
    if average is None:
        return
    momentum = ops.where(first_step, 0.0, optimizer.ema_momentum)
    corrected = average + ops.cast(1 - momentum, variable.dtype) * change
    average.assign(ops.where(zero, ops.zeros_like(corrected), corrected))


def find_proximal_optimizer(optimizer: Any) -> ProximalOptimizer | None:
    """`optimizer` if it is a `ProximalOptimizer`, the one it wraps (e.g. in a LossScaleOptimizer), or None."""
    while optimizer is not None:
        if isinstance(optimizer, ProximalOptimizer):
            return optimizer
        optimizer = getattr(optimizer, "inner_optimizer", None)
    return None


def uses_proximal_step(optimizer: Any) -> bool:
    """True if `optimizer` is a `ProximalOptimizer` or wraps one (e.g. in a LossScaleOptimizer)."""
    return find_proximal_optimizer(optimizer) is not None


class ProximalL1:
    """Removed in 0.2 (not in `keras_l1l2plus.__all__`): the proximal step is part of the optimizer's update.

    Compile with `keras_l1l2plus.ProximalOptimizer(<optimizer>)` instead of
    passing this callback to `fit`; the name stays so that old code gets
    that message, from `kl.ProximalL1()` and `from keras_l1l2plus import
    ProximalL1` alike.
    """

    def __init__(self, *args, **kwargs):
        raise TypeError(
            "keras_l1l2plus.ProximalL1 was removed in 0.2: the proximal L1 step is part of the "
            "optimizer's update. Compile with optimizer=keras_l1l2plus.ProximalOptimizer(<your "
            "optimizer>) and drop the callback."
        )

"""The proximal L1 step: L1 that sets weights exactly to zero.

A (sub)gradient step on λ·|w| moves a weight by ±η·λ and so never lands on
zero: it hovers around it. Proximal gradient descent (ISTA; Beck & Teboulle,
"A Fast Iterative Shrinkage-Thresholding Algorithm", SIAM J. Imaging Sci.,
2009) takes the gradient step on the smooth part of the loss only, then the
proximal operator of η·λ·|w|, soft thresholding:

    w ← sign(w) · max(|w| − η·λ1, 0)

where η is the step size the optimizer just took. With SGD, η is the learning
rate at that step (schedules included), and this is exactly ISTA. With an
adaptive optimizer the step is preconditioned, so the threshold is too, per
coordinate: the preconditioned proximal step of ProxGen (Yun, Lozano & Yang,
"Adaptive Proximal Gradient Methods for Structured Neural Networks",
NeurIPS 2021):

    Adam, AdamW   η_i = lr · √(1 − β2^t) / (√v_i + ε)     (v: v̂max with amsgrad)
    RMSprop       η_i = lr / √(v_i + ε)                   (centered: √(v_i − ḡ_i² + ε))
    Adagrad       η_i = lr / √(a_i + ε)
    SGD, others   η   = lr

(η_i is what the optimizer multiplies its debiased gradient estimate by.)
For the adaptive ones this is the exact proximal step of the quadratic model
that the optimizer minimises at that step, not a guarantee of converging to
the L1-regularized optimum: it is what makes weights exactly zero under Adam.

The step runs inside the optimizer's update, as a variable constraint: Keras
applies constraints right after each update, on every backend, in every
replica under `tf.distribute`, under XLA and at every step of
`steps_per_execution`. The L1 term of a proximal `L1L2Plus` still counts in the
loss and the logs but has no gradient, so L1 is never applied twice.
"""

from __future__ import annotations

import warnings
from typing import Any

import keras
from keras import ops

from keras_l1l2plus.roles import owned_trainable_variables
from keras_l1l2plus.terms import as_l1l2plus

__all__ = ["ProximalL1Constraint", "install", "installed", "proximal_variables", "soft_threshold", "step_size", "uninstall"]

_ADAPTIVE = ("Adam", "AdamW", "RMSprop", "Adagrad")
_ORIGINAL = "_keras_l1l2plus_original_constraint"


def soft_threshold(w: Any, threshold: Any) -> Any:
    """sign(w) · max(|w| − threshold, 0): the proximal operator of threshold·|w|."""
    return ops.sign(w) * ops.maximum(ops.absolute(w) - threshold, 0)


def _inner(optimizer: Any) -> Any:
    """The optimizer that updates the variables (unwraps LossScaleOptimizer)."""
    return getattr(optimizer, "inner_optimizer", optimizer)


def step_size(optimizer: Any, variable: Any) -> Any:
    """η for `variable` at the step the optimizer is taking: scalar or per coordinate.

    Called inside the optimizer's update (before its iteration counter moves),
    so the learning rate and state are those of this step.
    """
    optimizer = _inner(optimizer)
    dtype = variable.dtype
    lr = ops.cast(optimizer.learning_rate, dtype)
    kind = type(optimizer).__name__
    if kind in ("Adam", "AdamW"):
        index = optimizer._get_variable_index(variable)
        v = (optimizer._velocity_hats if optimizer.amsgrad else optimizer._velocities)[index]
        t = ops.cast(optimizer.iterations + 1, dtype)
        correction = ops.sqrt(1 - ops.power(ops.cast(optimizer.beta_2, dtype), t))
        return lr * correction / (ops.sqrt(v) + optimizer.epsilon)
    if kind == "RMSprop":
        index = optimizer._get_variable_index(variable)
        v = optimizer._velocities[index]
        if optimizer.centered:
            v = v - ops.square(optimizer._average_gradients[index])
        return lr / ops.sqrt(v + optimizer.epsilon)
    if kind == "Adagrad":
        accumulator = optimizer._accumulators[optimizer._get_variable_index(variable)]
        return lr / ops.sqrt(accumulator + optimizer.epsilon)
    return lr


class ProximalL1Constraint(keras.constraints.Constraint):
    """w ← sign(w)·max(|w| − l1·η, 0), then the variable's own constraint, if any.

    Installed on a variable's `constraint` by `install` for the length of a
    `fit` (its layer's `*_constraint` attribute and config are untouched).
    """

    def __init__(self, l1: float, optimizer: Any, variable: Any, constraint: Any = None):
        self.l1 = l1
        self.optimizer = optimizer
        self.variable = variable
        self.constraint = constraint

    def __call__(self, w):
        w = ops.convert_to_tensor(w)
        threshold = ops.cast(self.l1, w.dtype) * ops.cast(step_size(self.optimizer, self.variable), w.dtype)
        w = soft_threshold(w, threshold)
        return self.constraint(w) if self.constraint is not None else w

    def get_config(self):
        return {"l1": self.l1}


def proximal_variables(model: Any) -> list[tuple[Any, float]]:
    """`(variable, l1)` for each trainable variable whose regularizer is a proximal L1L2Plus."""
    found = []
    for owned in owned_trainable_variables(model):
        regularizer = as_l1l2plus(owned.variable.regularizer)
        if regularizer is not None and regularizer.proximal and regularizer.l1 > 0:
            found.append((owned.variable, regularizer.l1))
    return found


def install(model: Any, optimizer: Any = None) -> int:
    """Applies the proximal step to `model`'s proximal L1 variables after every update.

    `optimizer` defaults to `model.optimizer`. Returns how many variables it
    covers. Undo with `uninstall`.
    """
    uninstall(model)
    optimizer = optimizer if optimizer is not None else model.optimizer
    if optimizer is None:
        raise ValueError("The proximal L1 step needs an optimizer: compile the model first or pass `optimizer`.")
    variables = proximal_variables(model)
    kind = type(_inner(optimizer)).__name__
    if variables and kind not in (*_ADAPTIVE, "SGD"):
        warnings.warn(
            f"Proximal L1 with optimizer {kind}: its per-coordinate step size is not known to "
            "keras_l1l2plus, so the threshold is l1 × learning rate (exact for SGD only).",
            stacklevel=2,
        )
    for variable, l1 in variables:
        setattr(variable, _ORIGINAL, variable.constraint)
        variable.constraint = ProximalL1Constraint(l1, optimizer, variable, variable.constraint)
    return len(variables)


def installed(model: Any) -> bool:
    """True while `install` covers some variable of `model`."""
    return any(hasattr(o.variable, _ORIGINAL) for o in owned_trainable_variables(model))


def uninstall(model: Any) -> None:
    """Gives the variables back the constraints they had before `install`."""
    for owned in owned_trainable_variables(model):
        variable = owned.variable
        if hasattr(variable, _ORIGINAL):
            variable.constraint = getattr(variable, _ORIGINAL)
            delattr(variable, _ORIGINAL)

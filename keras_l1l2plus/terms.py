"""`penalty_terms`: each term of the book's loss, from a model's variables.

    Loss = DataLoss + L1w + L1b + L2w + L2b
    l1_weight = Σ_w λ1·Σ|w|   l1_bias = Σ_b λ1·Σ|b|
    l2_weight = Σ_w λ2·Σw²    l2_bias = Σ_b λ2·Σb²
    penalty   = Σ over every regularized trainable variable of its regularizer's
                value: exactly what Keras adds to the loss

Weights and biases are told apart by `keras_l1l2plus.roles.role`.
"""

from __future__ import annotations

from typing import Any

import keras
import numpy as np
from keras import ops

from keras_l1l2plus.regularizer import L1L2Plus, factor_is_zero, validate_flag
from keras_l1l2plus.roles import BIAS, WEIGHT, owned_trainable_variables

__all__ = ["TERM_NAMES", "penalty_terms", "sparsity"]

TERM_NAMES = ("l1_weight", "l1_bias", "l2_weight", "l2_bias")


def as_l1l2plus(regularizer: Any) -> L1L2Plus | None:
    """The `L1L2Plus` with the same value as a Keras L1, L2 or L1L2; else None.

    Keras's built-ins take |x|'s gradient at 0 from the backend; their values
    equal `L1L2Plus(l1, l2)`'s (which sums float16 inputs in float32).
    """
    if isinstance(regularizer, L1L2Plus):
        return regularizer
    if type(regularizer) is keras.regularizers.L1L2:
        return L1L2Plus(l1=regularizer.l1, l2=regularizer.l2)
    if type(regularizer) is keras.regularizers.L1:
        return L1L2Plus(l1=float(regularizer.l1))
    if type(regularizer) is keras.regularizers.L2:
        return L1L2Plus(l2=regularizer.l2)
    return None


def as_float32(x: Any) -> Any:
    """`x` in float32; no op where it already is."""
    return x if keras.backend.standardize_dtype(x.dtype) == "float32" else ops.cast(x, "float32")


def penalty_terms(
    model: keras.layers.Layer,
    *,
    per_layer: bool = False,
    recorded: dict[int, tuple[Any, Any]] | None = None,
) -> dict[str, Any]:
    """Each penalty term of `model`, as scalar float32 tensors.

    Returns `{"l1_weight", "l1_bias", "l2_weight", "l2_bias", "penalty"}`:

        l1_weight = Σ over weights w of λ1·Σ|w|     l2_weight = Σ over weights of λ2·Σw²
        l1_bias   = Σ over biases b of λ1·Σ|b|      l2_bias   = Σ over biases of λ2·Σb²
        penalty   = Σ over all regularized trainable variables of their penalty

    `penalty` is what Keras adds to the training loss: it counts every weight
    regularizer, so it stays right when others are present. `L1L2Plus` and
    Keras's `L1`, `L2` and `L1L2` are split into the four terms; any other
    regularizer counts in `penalty` only. With only those four kinds,
    `penalty == l1_weight + l1_bias + l2_weight + l2_bias`.

    With `per_layer=True` the dict also holds `"<term>/<layer>"` for each
    layer with a regularized variable of that role (`<layer>` is the layer's
    path inside the model, e.g. `"dense_1"` or `"lstm/lstm_cell"`).

    It is differentiable, with `L1L2Plus`'s gradients: a custom training
    loop can minimise `data_loss + penalty_terms(model)["penalty"]`.

    `recorded` (from `regularizer.recording_terms`) holds terms `L1L2Plus`
    already computed for this step's loss; those are used as they are.

    Example:

    >>> import keras, keras_l1l2plus as kl
    >>> model = keras.Sequential([keras.Input((3,)), keras.layers.Dense(1)])
    >>> model = kl.regularize(model, l1_weight=0.01)
    >>> sorted(kl.penalty_terms(model))
    ['l1_bias', 'l1_weight', 'l2_bias', 'l2_weight', 'penalty']
    """
    if not isinstance(model, keras.layers.Layer):
        raise TypeError(
            "Invalid value for argument `model`: expected a Keras model or layer. "
            f"Received: model={model!r} of type {type(model).__name__}"
        )
    per_layer = validate_flag(per_layer, "per_layer")
    if recorded is not None and not isinstance(recorded, dict):
        raise TypeError(
            "Invalid value for argument `recorded`: expected the dict that "
            f"`recording_terms()` yields, or None. Received: recorded={recorded!r}"
        )
    zero = ops.zeros((), dtype="float32")
    terms = dict.fromkeys(TERM_NAMES, zero)
    layer_terms: dict[str, Any] = {}
    penalty = zero
    for owned in owned_trainable_variables(model):
        regularizer = owned.variable.regularizer
        if regularizer is None:
            continue
        split = as_l1l2plus(regularizer)
        if split is None:
            penalty = penalty + as_float32(ops.sum(regularizer(owned.variable)))
            continue
        pair = _recorded_terms(recorded, owned.variable) if split is regularizer else None
        if pair is None:
            pair = split.terms(owned.variable)
        l1_term, l2_term = (as_float32(t) for t in pair)
        penalty = penalty + l1_term + l2_term
        for kind, value in (("l1", l1_term), ("l2", l2_term)):
            name = f"{kind}_{owned.role}"
            terms[name] = terms[name] + value
            if per_layer:
                key = f"{name}/{owned.layer_path}"
                layer_terms[key] = layer_terms.get(key, zero) + value
    terms["penalty"] = penalty
    terms.update(layer_terms)
    return terms


def _recorded_terms(recorded: dict | None, variable: Any) -> tuple[Any, Any] | None:
    """The terms recorded for `variable` in this step, if its regularizer was called on it."""
    found = recorded.get(id(variable)) if recorded else None
    return None if found is None else found[1:]


def sparsity(
    model: keras.layers.Layer, roles: tuple[str, ...] = (WEIGHT, BIAS), *, proximal_only: bool = False
) -> dict[str, Any]:
    """Fraction of exactly-zero entries among the L1-regularized weights and biases.

    Returns `{"sparsity_weight", "sparsity_bias"}` (one key per entry of
    `roles`) as float32 scalars:

        sparsity_weight = #{w = 0} / #w   over weights whose regularizer has λ1 > 0

    (likewise for biases), 0 where no variable of that role has an L1 penalty.
    Regularizers counted are those `penalty_terms` splits: `L1L2Plus` and
    Keras's `L1` and `L1L2`; with `proximal_only=True`, only the variables
    that take the proximal step (`L1L2Plus(l1 > 0, proximal=True)`), as
    `PenaltyLogger` logs it.
    """
    proximal_only = validate_flag(proximal_only, "proximal_only")
    unknown = [r for r in roles if r not in (WEIGHT, BIAS)]
    if unknown:
        raise ValueError(f'Invalid value for argument `roles`: expected "weight" and/or "bias". '
                         f"Received: roles={roles!r}")
    zeros: dict[str, list] = {role: [] for role in roles}
    sizes = dict.fromkeys(roles, 0)
    for owned in owned_trainable_variables(model):
        split = as_l1l2plus(owned.variable.regularizer)
        if owned.role not in sizes or split is None or factor_is_zero(split.l1):
            continue
        if proximal_only and not split.proximal:
            continue
        zeros[owned.role].append(ops.sum(ops.cast(ops.equal(owned.variable, 0), "float32")))
        sizes[owned.role] += int(np.prod(owned.variable.shape))
    return {
        f"sparsity_{role}": (ops.sum(ops.stack(zeros[role])) / sizes[role]) if sizes[role]
        else ops.zeros((), dtype="float32")
        for role in roles
    }

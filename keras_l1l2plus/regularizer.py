"""`L1L2Plus`: L1 and L2 penalties with one defined L1 gradient at zero.

The penalty of a tensor `x` is

    reg(x) = l1 * Σ|x| + l2 * Σx²

(sums, not means), as in *Neural Networks from Scratch in Python*, chapter 14:
`L1 = λ·Σ|w|`, `L2 = λ·Σw²`. Its gradient is

    ∂reg/∂x = l1 * s(x) + 2 * l2 * x,   s(x) = sign(x) for x ≠ 0, zero_grad at x = 0

`|x|` has no derivative at 0; any value in the subdifferential `[-1, 1]` is a
valid choice. Backends disagree on it (TensorFlow's `abs` gives 0, JAX's gives
+1), so this module defines it once, through `keras.ops.custom_gradient`.

`L1L2Plus.__call__`, what Keras adds to the loss, takes both terms through
one custom gradient (`penalty`): its backward pass is `(u·l1)·s(x) +
(u·2·l2)·x` for the upstream u, 18 ops per variable in a PyTorch or JAX
train step where Keras's `L1L2` takes 26. On TensorFlow a float32 or
float64 variable with both gradients takes Σ|x| through its own custom
gradient and Σx² through autodiff instead, for Keras's `L1L2`'s peak memory
(25 ops against Keras's 28; the op counts are in BENCHMARKS.md).
`L1L2Plus.sums` and `terms` give the terms separately, each with its own
gradient, for `penalty_terms`.

With `group=λg`, the group lasso term (Yuan & Lin, "Model selection and
estimation in regression with grouped variables", JRSS B, 2006; for
networks Wen et al., "Learning Structured Sparsity in Deep Neural
Networks", NeurIPS 2016) is added:

    G(x) = λg · Σ_g ‖x_g‖₂
    ∂G/∂x_g = λg · x_g / ‖x_g‖₂ for x_g ≠ 0,   0 at x_g = 0

over the groups of `groups` (`group_axes`): `"units"`, one group per output
unit (a Dense kernel's column, a convolution's filter: every axis but the
last), or `"inputs"`, one group per input feature or channel (a kernel's
row: every axis but the second to last). ‖·‖ is not differentiable at a
zero group; any vector of norm ≤ λg is a subgradient there, and as for
|x| at 0 this module takes 0, so a group at exactly zero is not pushed.
Groups are not scaled by √|g| (Yuan & Lin's weighting): the groups of one
variable all have the same size, scikit-learn's `MultiTaskLasso` and
jaxopt's `prox_group_lasso` do not scale either, and a per-layer λ is the
way to weigh layers of different sizes against each other.
The group term joins the same custom gradient (`penalty`): its norms
come from the pass of squares that gives Σx², and its gradient is the
per-group factor `c_g = 2·l2 + λg/‖x_g‖` times x, one pass backward.

This module is the one place the penalty math lives.
"""

from __future__ import annotations

import contextlib
import operator
import threading
import uuid
import warnings
import weakref
from typing import Any, Iterator

import keras
import numpy as np
from keras import ops

from keras_l1l2plus import _keras
from keras_l1l2plus.factors import Factor, validate_flag, validate_penalty, validate_zero_grad

__all__ = [
    "GROUPS",
    "L1L2Plus",
    "LAMBDA_KINDS",
    "as_l1l2plus",
    "group_axes",
    "group_l1_norm",
    "group_norms",
    "penalty",
    "recording_terms",
]

_CONFIG_KEYS = ("l1", "l2", "zero_grad", "proximal", "group", "groups", "l2_anchor", "anchor")
GROUPS = ("units", "inputs")

# Per thread (tf.distribute traces each replica in a thread of its own).
_recording = threading.local()


@contextlib.contextmanager
def recording_terms() -> Iterator[dict[int, tuple]]:
    """Collects the sums every `L1L2Plus` call on a variable computes meanwhile.

    Yields `{id(x): (x, Σ|x|, Σx², the regularizer, Σ_g‖x_g‖, Σ(x − w₀)²)}` for every `x` an
    `L1L2Plus` was called on meanwhile (a sum is None where its factor is 0),
    filled as Keras calls
    the regularizers on its variables while it computes the loss, so the
    terms can be logged without computing them a second time. They are
    values for the logs: nothing differentiates them (on TensorFlow their
    gradient would be autodiff's, not the penalty's). `x` is kept so that
    its id stays its own.
    """
    previous = getattr(_recording, "terms", None)
    _recording.terms = {}
    try:
        yield _recording.terms
    finally:
        _recording.terms = previous


def accumulation_dtype(dtype: Any) -> str:
    """The dtype penalties of a `dtype` tensor are summed in.

    float64 stays float64; everything narrower (float16, bfloat16, float32) is
    summed in float32, so Σx² of a large float16 tensor does not overflow.
    """
    return "float64" if keras.backend.standardize_dtype(dtype) == "float64" else "float32"


def as_input(x: Any) -> Any:
    """`x`, the tensor a regularizer is called on, as a tensor of numbers; a `TypeError` naming `x` otherwise."""
    if x is not None and not isinstance(x, (str, bytes)):
        try:
            tensor = ops.convert_to_tensor(x)
            dtype = keras.backend.standardize_dtype(tensor.dtype)
        except (TypeError, ValueError):  # what the backend could not make a tensor of
            dtype = None
        if dtype is not None and ("float" in dtype or "int" in dtype):
            return tensor
    raise TypeError(
        "Invalid value for argument `x`: expected a tensor, variable or array of numbers to "
        f"regularize. Received: x={x!r}"
    )


def read_tensor(x: Any) -> Any:
    """`x` as a tensor; a variable is read once.

    `convert_to_tensor` hands a TensorFlow variable back unchanged, and a
    custom gradient must see a tensor, not a captured variable: `ops.copy`
    reads it (an identity in the graph, no copy). Other backends hand back
    their tensor, which is used as it is (PyTorch's `copy` would copy it).
    """
    x = ops.convert_to_tensor(x)
    return ops.copy(x) if hasattr(x, "assign") else x


def in_dtype(x: Any, dtype: str) -> Any:
    """`x` cast to `dtype`, or `x` itself when it already is (no op)."""
    return x if keras.backend.standardize_dtype(x.dtype) == dtype else ops.cast(x, dtype)


def _factor(factor: Factor, dtype: str) -> Any:
    """A λ for arithmetic in `dtype`: a constant's Python float as it is, a scheduled λ's entry cast."""
    return in_dtype(factor.read(), dtype) if factor.scheduled else factor.value


def l1_slope(x: Any, zero_grad: float) -> Any:
    """s(x) = sign(x), and zero_grad where x == 0, in `x`'s dtype."""
    if zero_grad == 0:  # sign(0) is already 0: one pass over x, as for abs
        return ops.sign(x)
    return ops.where(ops.equal(x, 0), ops.cast(zero_grad, x.dtype), ops.sign(x))


def _upstream(args: tuple, upstream: Any) -> Any:
    """The gradient flowing in, as Keras's custom_gradient passes it on each backend."""
    return args[0] if upstream is None else upstream


def l1_norm(x: Any, zero_grad: float = 0.0) -> Any:
    """Σ|x| in the accumulation dtype, with gradient s(x) (`l1_slope`).

    The gradient is returned in `x`'s dtype. It is exactly `zero_grad` where
    `x == 0`, on every backend, eagerly, in `tf.function` and under XLA.
    """
    x = read_tensor(x)

    @ops.custom_gradient
    def _l1_norm(x):
        def grad(*args, upstream=None):
            return in_dtype(_upstream(args, upstream), x.dtype) * l1_slope(x, zero_grad)

        return ops.sum(ops.absolute(in_dtype(x, accumulation_dtype(x.dtype)))), grad

    return _l1_norm(x)


def squared_l2_norm(x: Any) -> Any:
    """Σx² in the accumulation dtype; its gradient is 2x."""
    x = ops.convert_to_tensor(x)
    return ops.sum(ops.square(in_dtype(x, accumulation_dtype(x.dtype))))


def group_axes(shape: tuple, groups: str) -> tuple[int, ...]:
    """The axes a group's norm runs over, for a tensor of `shape`; `ValueError` if it has no such groups.

    "units"    every axis but the last: a Dense kernel's column (the unit's
               incoming weights), a convolution's filter (taps × input
               channels); a 1-D or 0-d tensor's entries are groups of one
    "inputs"   every axis but the second to last: a kernel's row (the weights
               reading one input feature, or one input channel over all taps)
    """
    ndim = len(shape)
    if groups == "units":
        return tuple(range(ndim - 1))
    if ndim < 2:
        raise ValueError(
            'Invalid value for argument `groups`: "inputs" groups a kernel\'s rows, so the regularized tensor '
            f'needs 2 or more axes; this one has shape {tuple(shape)}. Use groups="units" there. '
            f"Received: groups={groups!r}"
        )
    return tuple(a for a in range(ndim) if a != ndim - 2)


def group_norms(x: Any, groups: str) -> Any:
    """‖x_g‖₂ of every group (`group_axes`), in the accumulation dtype, kept as size-1 axes (broadcasts on x)."""
    x = ops.convert_to_tensor(x)
    xa = in_dtype(x, accumulation_dtype(x.dtype))
    axes = group_axes(tuple(x.shape), groups)
    if not axes:  # groups of one entry: |x|, exact where sqrt(x²) would underflow
        return ops.absolute(xa)
    return ops.sqrt(_square_sums(xa, axes))


def _square_sums(xa: Any, axes: tuple[int, ...]) -> Any:
    """Σx² over `axes` (size-1 axes kept), computed apart from what reads it (`_keras.materialize`)."""
    return _keras.materialize(ops.sum(ops.square(xa), axis=axes, keepdims=True))


def group_l1_norm(x: Any, groups: str) -> Any:
    """Σ_g ‖x_g‖₂ in the accumulation dtype, with gradient x_g/‖x_g‖ (0 at a zero group), in `x`'s dtype."""
    x = read_tensor(x)
    dtype = keras.backend.standardize_dtype(x.dtype)

    @ops.custom_gradient
    def _group_l1_norm(x):
        norms = group_norms(x, groups)

        def grad(*args, upstream=None):
            # x_g / ‖x_g‖, and 0 where the group is 0 (x_g / 1 there, which is 0).
            safe = ops.where(ops.equal(norms, 0), ops.ones_like(norms), norms)
            u = in_dtype(_upstream(args, upstream), norms.dtype)
            return in_dtype(u * (in_dtype(x, norms.dtype) / safe), dtype)

        return ops.sum(norms), grad

    return _group_l1_norm(x)


_NO_FACTOR = Factor(0.0)


def _safe_sqrt(squares: Any) -> Any:
    """sqrt, with the gradient 0 (not ∞·0) where `squares` is 0: the group gradient defined at a zero group."""
    positive = ops.greater(squares, 0)
    return ops.where(positive, ops.sqrt(ops.where(positive, squares, ops.ones_like(squares))), 0)


def _group_squares(xa: Any, axes: tuple[int, ...], sqrt: Any = ops.sqrt) -> tuple[Any, Any]:
    """`(‖x_g‖₂ of every group, Σx²)` from one pass of squares over `xa` (the norms keep size-1 axes).

    `sqrt=_safe_sqrt` where autodiff differentiates the norms (0 at a zero group).
    """
    if not axes:  # groups of one entry: |x|, exact where sqrt(x²) would underflow
        return ops.absolute(xa), ops.sum(ops.square(xa))
    squares = _square_sums(xa, axes)
    return sqrt(squares), ops.sum(squares)


def penalty(
    x: Any,
    l1: Factor,
    l2: Factor,
    zero_grad: float = 0.0,
    proximal: bool = False,
    group: Factor = _NO_FACTOR,
    groups: str = "units",
) -> tuple[Any, Any, Any, Any]:
    """`(l1·Σ|x| + l2·Σx² + group·Σ_g‖x_g‖₂, Σ|x|, Σx², Σ_g‖x_g‖₂)`, the penalty through one custom gradient.

        value = l1·Σ|x| + l2·Σx² + group·Σ_g ‖x_g‖₂    (accumulation dtype)
        ∂value/∂x_g = l1·s(x_g) + (2·l2 + group/‖x_g‖)·x_g
                                                       (x's dtype; s: `l1_slope`;
                                                        0/0 taken as 0)

    One custom gradient for every term: the backward pass is
    `(u·l1)·s(x) + (u·c_g)·x` for the upstream u and the per-group factor
    `c_g = 2·l2 + group/‖x_g‖`, computed on the (small) tensor of group
    norms, with no separate chain per term; the group norms come from the
    same pass of squares as Σx² (`_group_squares`). Nothing is cast where
    `x` is in the accumulation dtype already. With `proximal=True` the L1
    and group terms count in the value but not in the gradient (the
    proximal step applies them). A factor that is the constant 0 is not
    computed (its sum is None). At least one term must have a gradient (a
    `ValueError` otherwise): `L1L2Plus.__call__` takes the other cases
    through `L1L2Plus.sums`. `l1`, `l2` and `group` are `Factor`s; `groups`
    is the group kind (`group_axes`). On TensorFlow, where the graph
    executor would hold both full-size halves of that backward at once, a
    float32 or float64 `x` with the L1 and L2 gradients takes Σ|x| through
    `l1_norm` and leaves Σx² and the group norms to autodiff
    (`_keras.fused_gradient_saves_memory`): the same values, and Keras's
    `L1L2`'s peak memory.

    The sums come out of the custom gradient's forward pass where the backend
    lets a value leave it (`_keras.forward_values_escape`); elsewhere they
    are None. They are values for the logs: do not differentiate them (on
    TensorFlow their gradient would be autodiff's, not the penalty's).
    """
    x = read_tensor(x)
    dtype = keras.backend.standardize_dtype(x.dtype)
    acc = accumulation_dtype(dtype)
    with_l1, with_l2, with_group = not l1.is_zero, not l2.is_zero, not group.is_zero
    if not (with_l2 or ((with_l1 or with_group) and not proximal)):
        raise ValueError("penalty: no term has a gradient; take the value from `L1L2Plus.sums`.")
    axes = group_axes(tuple(x.shape), groups) if with_group else ()
    l1, l2, group = _factor(l1, acc), _factor(l2, acc), _factor(group, acc)
    same = acc == dtype  # decided once: float32 and float64 are used as they are, with no cast

    def value_of(l1_sum, l2_sum, group_sum):
        total = None
        for factor, part in ((l1, l1_sum), (l2, l2_sum), (group, group_sum)):
            if part is not None:
                total = factor * part if total is None else total + factor * part
        return total

    if same and with_l1 and not proximal and with_l2 and not _keras.fused_gradient_saves_memory():
        # TensorFlow's graph executor holds both full-size halves of the fused
        # backward at once (one more copy of x than Keras's L1L2 at the peak);
        # there the L2 and group terms take autodiff's gradient of the same
        # squares, which it schedules in place.
        l1_sum = l1_norm(x, zero_grad)
        if with_group:
            norms, l2_sum = _group_squares(x, axes, sqrt=_safe_sqrt)
            group_sum = ops.sum(norms)
        else:
            l2_sum, group_sum = ops.sum(ops.square(x)), None
        return value_of(l1_sum, l2_sum, group_sum), l1_sum, l2_sum, group_sum
    keep = _keras.forward_values_escape()
    sums: list = [None, None, None]

    @ops.custom_gradient
    def _penalty(x):
        xa = x if same else ops.cast(x, acc)
        l1_sum = ops.sum(ops.absolute(xa)) if with_l1 else None
        norms = group_sum = None
        if with_group:
            norms, l2_sum = _group_squares(xa, axes)
            group_sum = ops.sum(norms)
            l2_sum = l2_sum if with_l2 else None
        else:
            l2_sum = ops.sum(ops.square(xa)) if with_l2 else None
        if keep:
            sums[:] = [l1_sum, l2_sum, group_sum]

        def grad(*args, upstream=None):
            # In the accumulation dtype, and rounded once to x's: a float16 or
            # bfloat16 gradient is the correctly rounded l1·s(x) + c_g·x.
            u = _upstream(args, upstream)
            result = None
            if with_l1 and not proximal:
                result = (u * l1) * l1_slope(xa, zero_grad)
            scale = u * (2 * l2) if with_l2 else None
            if with_group and not proximal:
                # group/‖x_g‖, and group/1 at a zero group, whose x_g is 0.
                safe = ops.where(ops.equal(norms, 0), ops.ones_like(norms), norms)
                per_group = (u * group) / safe
                scale = per_group if scale is None else scale + per_group
            if scale is not None:
                scaled = scale * xa
                result = scaled if result is None else result + scaled
            return result if same else ops.cast(result, dtype)

        return value_of(l1_sum, l2_sum, group_sum), grad

    value = _penalty(x)
    return value, sums[0], sums[1], sums[2]


# Each λ's kind (`L1L2Plus.factor`), the attribute holding its `Factor`, and its symbol in the docs.
_FACTOR_ATTRIBUTES = {"l1": "_l1", "l2": "_l2", "group": "_group", "l2_anchor": "_l2_anchor"}
LAMBDA_KINDS = tuple(_FACTOR_ATTRIBUTES)  # the kinds `L1L2Plus.factor` takes
_read_factors = operator.attrgetter(*_FACTOR_ATTRIBUTES.values())
_SYMBOLS = {"l1": "λ1", "l2": "λ2", "group": "λg", "l2_anchor": "λa"}


def _lambda_property(kind: str) -> property:
    """`L1L2Plus.l1` / `.l2` / `.group`: the λ now, a float (as `keras.regularizers.L1L2.l1`); set, a constant again."""
    symbol = _SYMBOLS[kind]

    def get(self) -> float:
        return self.factor(kind).value

    def set_(self, value: float) -> None:
        self.schedule(kind, Factor(validate_penalty(value, kind)))

    return property(
        get,
        set_,
        doc=f"""{symbol} now, a float (as Keras's `L1L2.l1`).

        Setting it makes it a constant again. As with Keras's own `L1L2`, a
        train step traced before keeps the λ it was traced with until it is
        traced again (`regularize(model, ...)` or `compile`); the way to
        change a λ during training is `PenaltySchedule`.""",
    )


def validate_groups(value: Any) -> str:
    """`"units"` or `"inputs"` (see `group_axes`), or a `ValueError` naming `groups`."""
    if not isinstance(value, str) or value not in GROUPS:
        raise ValueError(f"Invalid value for argument `groups`: expected one of {GROUPS}. Received: groups={value!r}")
    return value


@keras.saving.register_keras_serializable(package="keras_l1l2plus")
class L1L2Plus(keras.regularizers.Regularizer, _keras.SaveableVariables):
    """L1 and L2 penalties with a defined L1 gradient at zero.

    A drop-in for `keras.regularizers.L1L2`:

        reg(x) = l1 * Σ|x| + l2 * Σx²
        ∂reg/∂x = l1 * sign(x) + 2 * l2 * x,   with sign(0) := zero_grad

    Differences from `keras.regularizers.L1L2`:

    - the L1 gradient at `x == 0` is `l1 * zero_grad` on every backend
      (default 0.0: a weight at exactly zero, such as a freshly initialised
      bias, is not pushed by the penalty; `zero_grad=1.0` reproduces the
      book's reference code, where dL1/dw = 1 unless w < 0);
    - float16 and bfloat16 inputs are summed in float32 (float64 stays
      float64), so Σx² of a large half-precision tensor does not overflow;
    - `terms(x)` gives the L1 and L2 terms separately;
    - `group=λg` adds the group lasso `λg·Σ_g ‖x_g‖₂` over the output units
      (`groups="units"`: a Dense kernel's columns, a convolution's filters) or
      the input features (`groups="inputs"`: a kernel's rows), which drives
      whole units or features to zero together (`keras_l1l2plus.shrink`
      then removes them); with `l1` too it is the sparse group lasso;
    - `proximal=True` makes L1 and the group term set weights exactly to
      zero: they still count in the loss and the logs but have no gradient;
      instead a proximal step follows each optimizer update,
      `w ← sign(w)·max(|w| − η·l1, 0)`, then `w_g ← max(0, 1 − η·λg/‖w_g‖)·w_g`
      (η the step size; see `keras_l1l2plus.proximal`). A
      `ProximalOptimizer` takes that step; without one those terms have no
      effect on training.

    A term whose factor is 0 is not computed.

    Example:

    >>> import keras
    >>> from keras_l1l2plus import L1L2Plus
    >>> reg = L1L2Plus(l1=0.01, l2=0.001)
    >>> round(float(reg(keras.ops.convert_to_tensor([0.5, -1.2, 0.8]))), 6)  # 0.025 + 0.00233
    0.02733
    >>> dense = keras.layers.Dense(
    ...     64,
    ...     kernel_regularizer=L1L2Plus(l1=0.01, l2=0.001),   # λ1w, λ2w
    ...     bias_regularizer=L1L2Plus(l1=0.005, l2=0.0005),   # λ1b, λ2b
    ... )

    Args:
        l1: L1 factor λ1, a finite float ≥ 0. `None` means 0. The
            attribute `l1` is the λ of the moment, a float; a
            `PenaltySchedule` makes the step read it from the model's λ
            vector (`factor("l1")`, a `factors.Factor`).
        l2: L2 factor λ2, the same.
        zero_grad: d|x|/dx used at x == 0, a float in [-1, 1]. Default 0.
            Unused with `proximal=True`, where the L1 term has no gradient.
        proximal: replace the L1 and group gradients by the proximal step.
            Default False.
        group: group lasso factor λg, a finite float ≥ 0. Default 0 (no
            group term).
        groups: what a group is: `"units"` (default; every axis but the
            last: a kernel's column, a filter) or `"inputs"` (every axis but
            the second to last: a kernel's row). Used when `group > 0`.
        l2_anchor: λa of the L2 term toward reference weights w₀ (L2-SP,
            below), a finite float ≥ 0. Keyword only. Default 0.
        anchor: w₀, an array of the regularized variable's shape (numpy, a
            backend tensor, a `keras.Variable`): copied into this
            regularizer's own non-trainable variable (`anchor`), saved with
            the model's weights. Keyword only; needed when `l2_anchor > 0`.
            An anchored regularizer belongs to one variable.

    L2 toward reference weights (L2-SP; Li, Grandvalet & Davoine, "Explicit
    Inductive Bias for Transfer Learning with Convolutional Networks", ICML
    2018): with `l2_anchor=λa` and `anchor=w₀`, the penalty adds

        A(x) = λa · Σ(x − w₀)²,    ∂A/∂x = 2·λa·(x − w₀)

    which keeps fine-tuned weights near the pretrained ones rather than near
    zero. It is smooth, so it keeps its gradient under `proximal=True`.
    w₀ is not a weight of the layer: it is in neither `model.weights` nor
    `get_weights()`, and a `.keras` file or `save_weights` stores it under
    the layer's regularizer (`layers/<layer>/kernel_regularizer/vars`),
    one more copy of the anchored variables in the file.

    `source` says which call made it, for `keras_l1l2plus.describe`:
    `regularize` sets it (`"rule 0 'dense*'"`, `"keywords"`); None
    otherwise. It is not in the config: a regularizer rebuilt from one (a
    loaded, cloned or copied model) has None, and `describe` shows `-`.
    """

    source: str | None = None  # set by `regularize`; not saved

    def __init__(
        self,
        l1: float = 0.0,
        l2: float = 0.0,
        zero_grad: float = 0.0,
        proximal: bool = False,
        group: float = 0.0,
        groups: str = "units",
        *,
        l2_anchor: float = 0.0,
        anchor: Any = None,
    ):
        self._l1, self._l2 = Factor(validate_penalty(l1, "l1")), Factor(validate_penalty(l2, "l2"))
        self._group = Factor(validate_penalty(group, "group"))
        self._l2_anchor = Factor(validate_penalty(l2_anchor, "l2_anchor"))
        self.zero_grad = validate_zero_grad(zero_grad)
        self.proximal = validate_flag(proximal, "proximal")
        self.groups = validate_groups(groups)
        self._anchor = self._anchor_key = None
        self._anchor_pending = False
        if anchor is not None:
            self._set_anchor(anchor)
        elif l2_anchor:
            raise ValueError(
                "Invalid value for argument `anchor`: an L2 term toward reference weights (`l2_anchor`) needs "
                "them, an array of the variable's shape (keras_l1l2plus.regularize(model, "
                "l2_anchor_weight=...) takes each variable's weights at the call). "
                f"Received: anchor=None with l2_anchor={l2_anchor!r}"
            )

    l1 = _lambda_property("l1")
    l2 = _lambda_property("l2")
    group = _lambda_property("group")
    l2_anchor = _lambda_property("l2_anchor")

    # --- the anchor w₀ (L2-SP) ------------------------------------------------------------------------------

    def _set_anchor(self, anchor: Any) -> None:
        """Keeps a copy of `anchor` (an array, a tensor, a variable, or a config's `{"shape", "dtype", "key"}`)
        as this regularizer's own non-trainable variable."""
        like = anchor  # a keras.Variable given as w₀ (the kernel itself) lends its layout to the copy
        if isinstance(anchor, dict):  # from a config: the values are in the weights file, or still in memory
            shape, dtype, key = _anchor_spec(anchor)
            live = _ANCHORS.get(key)
            if live is not None and tuple(live.shape) == shape and key not in _PENDING:  # clone_model
                values, like = ops.convert_to_numpy(live.value), live
            else:  # a fresh process: `load_own_variables` fills it (`.keras`, `load_weights`)
                values, self._anchor_pending = ops.convert_to_numpy(ops.zeros(shape, dtype)), True
        else:
            values = anchor_values(anchor, "anchor")
        # Under a keras.distribution, laid out as the variable it was copied from (a sharded kernel: sharded
        # alike, not whole on every device); see `_keras.layout_like`.
        self._anchor = keras.Variable(
            values, trainable=False, autocast=False, name="anchor", **_keras.layout_like(like)
        )
        self._anchor_key = uuid.uuid4().hex
        _ANCHORS[self._anchor_key] = self._anchor
        if self._anchor_pending:
            _PENDING.add(self._anchor_key)
        # Only an anchored regularizer has variables for Keras's saving to visit (`_keras.SaveableVariables`):
        # others write nothing, and their files stay those of 0.4.
        self.save_own_variables = self._save_anchor
        self.load_own_variables = self._load_anchor

    @property
    def anchored(self) -> bool:
        """Whether this regularizer holds reference weights w₀ (`anchor`)."""
        return self._anchor is not None

    @property
    def anchor(self) -> Any:
        """w₀, the reference weights of the `l2_anchor` term: a non-trainable `keras.Variable`, or None."""
        return self._anchor

    def _save_anchor(self, store: Any) -> None:
        if not self._anchor_pending:  # never zeros standing in for a w₀ that was not loaded
            store["0"] = self._anchor

    def _load_anchor(self, store: Any) -> None:
        if not len(store.keys()):  # a file saved without it: an older version, or weights saved before regularize
            warnings.warn(
                "L1L2Plus: the weights loaded have no anchor (w₀) for this anchored regularizer, so its w₀ "
                f"stays {'not loaded' if self._anchor_pending else 'what it was'}. To anchor at the weights "
                "just loaded, call keras_l1l2plus.regularize(model, l2_anchor_weight=...) after loading them.",
                stacklevel=2,
            )
            return
        values = store["0"]
        if tuple(values.shape) != tuple(self._anchor.shape):
            raise ValueError(
                f"L1L2Plus: the anchor in the file has shape {tuple(values.shape)}, the regularizer's "
                f"variable {tuple(self._anchor.shape)}; the file belongs to another model."
            )
        self._anchor.assign(values)
        self._anchor_pending = False
        _PENDING.discard(self._anchor_key)

    @property
    def anchor_pending(self) -> bool:
        """Whether w₀ is still to be loaded: rebuilt from a config alone, its values not read from a file yet."""
        return self._anchor_pending

    def anchor_sum(self, x: Any) -> Any:
        """Σ(x − w₀)² in the accumulation dtype, with its gradient 2(x − w₀); None where there is no l2_anchor term."""
        if self._anchor is None or self._l2_anchor.is_zero:
            return None
        x = as_input(x)
        if self._anchor_pending:
            raise ValueError(
                "L1L2Plus: this regularizer's reference weights w₀ (l2_anchor) were not loaded: it was "
                "rebuilt from a config alone (model_from_json, from_config in another process, or a legacy "
                ".h5 file, which does not hold them), and w₀ is saved with the weights. Load them: "
                "model.load_weights(<the .keras or .weights.h5 file>), or keras.saving.load_model(<the .keras "
                "file>); or anchor again: keras_l1l2plus.regularize(model, l2_anchor_weight=..., "
                "anchor={path: array})."
            )
        if tuple(x.shape) != tuple(self._anchor.shape):
            raise ValueError(
                f"Invalid value for argument `x`: this L1L2Plus's anchor has shape {tuple(self._anchor.shape)}, "
                f"the regularized tensor {tuple(x.shape)}; an anchored regularizer belongs to one variable. "
                f"Received: x of shape {tuple(x.shape)}"
            )
        acc = accumulation_dtype(x.dtype)
        return ops.sum(ops.square(in_dtype(x, acc) - in_dtype(self._anchor.value, acc)))

    def __reduce__(self):
        # Not KerasSaveable's (which pickles a whole model): the config, and w₀'s values where there is one.
        pending = self._anchor is None or self._anchor_pending  # a copy of a pending w₀ is pending too
        values = None if pending else ops.convert_to_numpy(self._anchor.value)
        return _restore, (type(self), self.get_config(), values)

    def factor(self, kind: str) -> Factor:
        """The `Factor` of `kind` ("l1", "l2", "group" or "l2_anchor"): how the step reads that λ."""
        return getattr(self, _FACTOR_ATTRIBUTES[kind])

    def factors(self) -> tuple[Factor, ...]:
        """Every `Factor`, in the order of `LAMBDA_KINDS` (one call: the logger compares them at every step)."""
        return _read_factors(self)

    def schedule(self, kind: str, factor: Factor) -> None:
        """Makes the step read λ `kind` from `factor`: an entry of the model's λ vector (`PenaltySchedule`),
        or a constant (`l1`/`l2`/`group` set)."""
        setattr(self, _FACTOR_ATTRIBUTES[kind], factor)

    def sums(self, x: Any) -> tuple[Any, Any]:
        """`(Σ|x|, Σx²)` in the accumulation dtype, each with its gradient in the penalty; None where the factor is 0.

        Σ|x| has the gradient s(x) (`l1_slope`), or none with `proximal=True`
        (the proximal step applies L1); Σx² has 2x.
        """
        x = as_input(x)
        if self._l1.is_zero:
            l1_sum = None
        elif self.proximal:
            l1_sum = ops.stop_gradient(ops.sum(ops.absolute(in_dtype(x, accumulation_dtype(x.dtype)))))
        else:
            l1_sum = l1_norm(x, self.zero_grad)
        return l1_sum, None if self._l2.is_zero else squared_l2_norm(x)

    def group_sum(self, x: Any) -> Any:
        """Σ_g ‖x_g‖₂ in the accumulation dtype, with its gradient in the penalty (none with `proximal=True`,
        where the proximal step applies it); None where λg is 0."""
        if self._group.is_zero:
            return None
        x = as_input(x)
        if self.proximal:
            return ops.stop_gradient(ops.sum(group_norms(x, self.groups)))
        return group_l1_norm(x, self.groups)

    def group_term(self, x: Any) -> Any:
        """`λg · Σ_g ‖x_g‖₂` as a scalar tensor in the accumulation dtype (0 where λg is 0)."""
        x = as_input(x)
        total = self.group_sum(x)
        acc = accumulation_dtype(x.dtype)
        return ops.zeros((), dtype=acc) if total is None else _factor(self._group, acc) * total

    def terms(self, x: Any) -> tuple[Any, Any]:
        """`(l1 * Σ|x|, l2 * Σx²)` as scalar tensors in the accumulation dtype, each with its own gradient."""
        return self._terms_of(x, *self.sums(x))

    def _terms_of(self, x: Any, l1_sum: Any, l2_sum: Any) -> tuple[Any, Any]:
        """The terms of `x` from its sums (`sums`): each sum times its λ, 0 where the sum is None."""
        acc = accumulation_dtype(ops.convert_to_tensor(x).dtype)
        return tuple(
            ops.zeros((), dtype=acc) if total is None else _factor(factor, acc) * total
            for factor, total in ((self._l1, l1_sum), (self._l2, l2_sum))
        )

    def __call__(self, x: Any) -> Any:
        """The penalty `l1 * Σ|x| + l2 * Σx² + group * Σ_g ‖x_g‖` as a scalar tensor (one custom gradient,
        `penalty`)."""
        tensor = as_input(x)  # `x` itself keys the recorded sums
        l1, l2, group = self._l1, self._l2, self._group
        if l2.is_zero and (self.proximal or (l1.is_zero and group.is_zero)):  # no gradient to define
            l1_sum, l2_sum = self.sums(tensor)
            group_sum = self.group_sum(tensor)
            value = self._terms_of(tensor, l1_sum, l2_sum)[0]
            if group_sum is not None:
                value = value + _factor(group, accumulation_dtype(tensor.dtype)) * group_sum
        else:
            value, l1_sum, l2_sum, group_sum = penalty(
                tensor, l1, l2, self.zero_grad, self.proximal, group, groups=self.groups
            )
        anchor_sum = self.anchor_sum(tensor)
        if anchor_sum is not None:
            value = value + _factor(self._l2_anchor, accumulation_dtype(tensor.dtype)) * anchor_sum
        recorded = getattr(_recording, "terms", None)
        if recorded is not None and any(s is not None for s in (l1_sum, l2_sum, group_sum, anchor_sum)):
            # Keras's TensorFlow and PyTorch trainers call the regularizers on
            # the variables inside compute_loss; their sums are kept for the
            # logs. The JAX trainer calls them earlier, in stateless_call, on
            # the variables' values, and its sums stay in the custom gradient
            # (`penalty`): penalty_terms computes them again there, and XLA
            # merges the two computations.
            recorded[id(x)] = (x, l1_sum, l2_sum, self, group_sum, anchor_sum)
        return value

    def get_config(self) -> dict[str, Any]:
        """Plain values; a variable λ is saved as its value now (the λ of the moment).

        `group` and `groups` are written only for a regularizer with a group
        term, `l2_anchor` and `anchor` only for one with reference weights w₀,
        so one without keeps the config of 0.4 and before. `anchor` holds
        w₀'s shape, dtype and a key, not its values: those are saved with the
        weights (`.keras`, `save_weights`); `from_config` in the same process
        (`clone_model`) copies them from the live regularizer of that key.
        """
        config = {
            "l1": self.l1,
            "l2": self.l2,
            "zero_grad": self.zero_grad,
            "proximal": self.proximal,
        }
        if not self._group.is_zero:
            config.update(group=self.group, groups=self.groups)
        if self._anchor is not None:  # w₀'s values are saved with the weights (`_keras.SaveableVariables`)
            spec = {"shape": list(self._anchor.shape), "dtype": self._anchor.dtype, "key": self._anchor_key}
            config.update(l2_anchor=self.l2_anchor, anchor=spec)
        return config

    @property
    def scheduled(self) -> bool:
        """Whether a λ of this regularizer is read from the model's λ vector (set by `PenaltySchedule`)."""
        return any(f.scheduled for f in (self._l1, self._l2, self._group, self._l2_anchor))

    @classmethod
    def from_config(cls, config: dict[str, Any]) -> "L1L2Plus":
        if not isinstance(config, dict):
            raise TypeError(
                f"Invalid value for argument `config`: expected the dict of {cls.__name__}.get_config(). "
                f"Received: config={config!r}"
            )
        unknown = sorted(set(config) - set(_CONFIG_KEYS))
        if unknown:
            raise ValueError(
                f"Unknown keys in the config of {cls.__name__}: {unknown}. "
                f"Expected keys among {list(_CONFIG_KEYS)}. Received: config={config!r}"
            )
        return cls(**config)

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, L1L2Plus):
            return NotImplemented
        if self.scheduled or other.scheduled or self.anchored or other.anchored:  # a value that changes, or w₀
            return self is other
        return self.get_config() == other.get_config()

    def __hash__(self) -> int:
        # What never changes, so a regularizer keeps its hash when a schedule takes its λs; `groups` only
        # with a group term, as in the config that equality compares.
        groups = None if self._group.is_zero else self.groups
        return hash((type(self).__name__, self.zero_grad, self.proximal, groups, self._anchor_key))

    def __repr__(self) -> str:
        config = self.get_config()
        if not config["proximal"]:
            del config["proximal"]
        if "anchor" in config:
            config["anchor"] = tuple(config["anchor"]["shape"])
        args = ", ".join(f"{k}={v!r}" for k, v in config.items())
        return f"{type(self).__name__}({args}{', scheduled' if self.scheduled else ''})"


# Every live anchor by its key, so that `from_config` in the same process (`clone_model`) copies w₀.
_ANCHORS: "weakref.WeakValueDictionary[str, Any]" = weakref.WeakValueDictionary()
_PENDING: set[str] = set()  # the keys of anchors rebuilt from a config whose values are not loaded yet


def _anchor_spec(spec: dict) -> tuple[tuple[int, ...], str, str]:
    """`(shape, dtype, key)` of a config's `anchor`, or a `ValueError` naming it."""
    try:
        shape = tuple(int(n) for n in spec["shape"])
        dtype = keras.backend.standardize_dtype(spec["dtype"])
        key = str(spec["key"])
    except (KeyError, TypeError, ValueError) as error:
        raise ValueError(
            'Invalid value for argument `anchor`: a config\'s anchor is {"shape": [...], "dtype": ..., '
            f'"key": ...}} (its values are saved with the weights). Received: anchor={spec!r}'
        ) from error
    return shape, dtype, key


def _restore(cls: type, config: dict, values: Any) -> "L1L2Plus":
    """An `L1L2Plus` from `__reduce__`'s config and w₀ (pickle, `copy.deepcopy`)."""
    regularizer = cls.from_config(config)
    if values is not None:
        regularizer._anchor.assign(values)
        regularizer._anchor_pending = False
        _PENDING.discard(regularizer._anchor_key)
    return regularizer


def anchor_values(anchor: Any, name: str, dtype: str | None = None) -> Any:
    """`anchor` as a numpy copy of finite floats (in `dtype` when given), or the error naming `name`.

    A copy on the host: on PyTorch a `keras.Variable` made from a kernel's
    tensor would share its storage and follow the kernel.
    """
    try:
        tensor = ops.convert_to_tensor(anchor)
        given = keras.backend.standardize_dtype(tensor.dtype)
    except Exception as error:
        raise TypeError(
            f"Invalid value for argument `{name}`: expected an array of the variable's shape (numpy, a backend "
            f"tensor or a keras.Variable). Received: {name}={anchor!r}"
        ) from error
    if not keras.backend.is_float_dtype(given) and not given.startswith(("int", "uint")):
        raise TypeError(
            f"Invalid value for argument `{name}`: expected an array of numbers, got dtype {given}. "
            f"Received: {name}={anchor!r}"
        )
    values = np.array(ops.convert_to_numpy(ops.cast(tensor, dtype or (given if "float" in given else "float32"))))
    if not np.all(np.isfinite(values.astype("float64"))):
        raise ValueError(
            f"Invalid value for argument `{name}`: expected finite floats; it holds NaN or inf. "
            f"Received: {name} of shape {tuple(values.shape)}"
        )
    return values


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

"""`penalty_terms`: each term of the book's loss, from a model's variables.

    Loss = DataLoss + L1w + L1b + L2w + L2b
    l1_weight = Σ_w λ1·Σ|w|   l1_bias = Σ_b λ1·Σ|b|
    l2_weight = Σ_w λ2·Σw²    l2_bias = Σ_b λ2·Σb²
    penalty   = Σ over every regularized trainable variable of its regularizer's
                value: exactly what Keras adds to the loss

Weights and biases are told apart by `keras_l1l2plus.roles.role`.
"""

from __future__ import annotations

from typing import Any, NamedTuple

import keras
import numpy as np
from keras import ops

from keras_l1l2plus import _keras
from keras_l1l2plus.factors import Factor, validate_flag
from keras_l1l2plus.regularizer import as_l1l2plus, group_axes, in_dtype
from keras_l1l2plus.roles import BIAS, WEIGHT, owned_trainable_variables

__all__ = [
    "ANCHOR_TERMS",
    "GROUP_TERMS",
    "LAMBDA_NAMES",
    "TERM_NAMES",
    "group_targets",
    "live_groups",
    "penalty_terms",
    "sparsity",
    "term_needs",
    "term_parts",
]

TERM_NAMES = ("l1_weight", "l1_bias", "l2_weight", "l2_bias")
# The group lasso's terms: keys of `penalty_terms` only where a variable of that role has a group term.
GROUP_TERMS = ("group_weight", "group_bias")
# L2 toward reference weights (L2-SP): keys only where a variable of that role has an anchor.
ANCHOR_TERMS = ("l2_anchor_weight", "l2_anchor_bias")
LAMBDA_NAMES = (*TERM_NAMES, *GROUP_TERMS, *ANCHOR_TERMS)  # every λ a `PenaltySchedule` sets: the λ vector's entries


def term_parts(term: str) -> tuple[str, str]:
    """`(kind, role)` of a term name: `"l2_anchor_weight"` -> `("l2_anchor", "weight")`; the kind names the
    λ (`L1L2Plus.factor(kind)`)."""
    kind, _, role = term.rpartition("_")
    return kind, role


def term_needs(term: str) -> str:
    """What a variable's regularizer must have for `term`, for messages: "regularizer", "with a group term"..."""
    return {"group": "with a group term", "l2_anchor": "with an anchor (w₀)"}.get(term_parts(term)[0], "regularizer")


_ONE = Factor(1.0)  # the factor of a value counted as it is (another regularizer's, the loss, a count)


def penalty_terms(
    model: keras.layers.Layer,
    *,
    per_layer: bool = False,
    recorded: dict[int, tuple[Any, Any, Any]] | None = None,
) -> dict[str, Any]:
    """Each penalty term of `model`, as scalar float32 tensors.

    Returns `{"l1_weight", "l1_bias", "l2_weight", "l2_bias", "penalty"}`:

        l1_weight = Σ over weights w of λ1·Σ|w|     l2_weight = Σ over weights of λ2·Σw²
        l1_bias   = Σ over biases b of λ1·Σ|b|      l2_bias   = Σ over biases of λ2·Σb²
        penalty   = Σ over all regularized trainable variables of their penalty

    and, where some weight (bias) has an `L1L2Plus` with a group term,
    `"group_weight"` (`"group_bias"`) = Σ over those of λg·Σ_g ‖w_g‖₂, and where
    some has an anchor w₀ with λa > 0 (L2-SP), `"l2_anchor_weight"`
    (`"l2_anchor_bias"`) = Σ over those of λa·Σ(w − w₀)².

    `penalty` is what Keras adds to the training loss: it counts every weight
    regularizer, so it stays right when others are present. `L1L2Plus` and
    Keras's `L1`, `L2` and `L1L2` are split into the four terms; any other
    regularizer counts in `penalty` only. With only those four kinds,
    `penalty` is the sum of the other keys.

    The model must be built (`ValueError` otherwise): an unbuilt model has
    no variables yet, and its terms would read 0.

    With `per_layer=True` the dict also holds `"<term>/<layer>"` for each
    layer with a regularized variable of that role (`<layer>` is the layer's
    path inside the model, e.g. `"dense_1"` or `"lstm/lstm_cell"`).

    It is differentiable, with `L1L2Plus`'s gradients: a custom training
    loop can minimise `data_loss + penalty_terms(model)["penalty"]`.

    `recorded` (from `regularizer.recording_terms`) holds the sums `L1L2Plus`
    already computed for this step's loss; those are used as they are, as
    values for the logs (differentiate `penalty_terms` without `recorded`).

    Example:

    >>> import keras, keras_l1l2plus as kl
    >>> model = keras.Sequential([keras.Input((3,)), keras.layers.Dense(1)])
    >>> model = kl.regularize(model, l1_weight=0.01)
    >>> sorted(kl.penalty_terms(model))
    ['l1_bias', 'l1_weight', 'l2_bias', 'l2_weight', 'penalty']
    """
    if isinstance(model, keras.layers.Layer) and not model.built:  # other kinds: penalty_sums' TypeError
        raise ValueError(
            f"penalty_terms: {type(model).__name__} {model.name!r} is not built, so it has no variables and "
            "its penalty is not defined yet. Build it first: model.build(input_shape), or call it on a "
            "batch, model(x)."
        )
    plan = penalty_sums(model, per_layer=per_layer, recorded=recorded)
    return dict(zip(plan.keys, ops.unstack(plan.combine())))


def _validated(model: Any, per_layer: Any, recorded: Any) -> bool:
    if not isinstance(model, keras.layers.Layer):
        raise TypeError(
            "Invalid value for argument `model`: expected a Keras model or layer. "
            f"Received: model={model!r} of type {type(model).__name__}"
        )
    if recorded is not None and not isinstance(recorded, dict):
        raise TypeError(
            "Invalid value for argument `recorded`: expected the dict that "
            f"`recording_terms()` yields, or None. Received: recorded={recorded!r}"
        )
    return validate_flag(per_layer, "per_layer")


class PenaltySums(NamedTuple):
    """A model's penalty terms as sums `s_i` (Σ|w| or Σw², or another regularizer's value) and factors `λ_i`.

    Each key of `penalty_terms` adds up some of the terms λ_i·s_i, so the
    keys' values are one product

        vector = s @ A,   A[i, key] = λ_i if term i counts in key, else 0

    (computed as a broadcast product and one sum, in full float32)

    with `s` the stacked sums (`combine`): a few ops for the whole model,
    where adding term by term takes one op per term and key.
    """

    keys: tuple[str, ...]  # TERM_NAMES, GROUP_TERMS and ANCHOR_TERMS present, "penalty", "<term>/<layer>" keys
    sums: list  # float32 scalar tensors
    factors: list  # a `Factor` each (read in the step when scheduled), Factor(1.0) for another regularizer
    counts_in: np.ndarray  # (len(sums), len(keys)) of 0 and 1: the keys each term counts in
    # Per sum, where a step's `recorded` holds it, (id(variable), its index in the recorded entry: 1 for Σ|x|,
    # 2 for Σx², 4 for Σ_g‖x_g‖, 5 for Σ(x − w₀)²); None if computed here.
    sources: tuple = ()

    def combine(self) -> Any:
        """`stack(sums) @ A` as above: a float32 vector, one value per key.

        Constant factors are folded into `A`; a λ read from the model's λ
        vector multiplies the stacked sums first.
        """
        sums, factors, counts_in = self.sums, self.factors, self.counts_in
        if not sums:
            return ops.zeros((counts_in.shape[1],), dtype="float32")
        stacked = ops.stack(sums)
        if any(f.scheduled for f in factors):
            stacked = stacked * ops.stack([ops.convert_to_tensor(f.read(), "float32") for f in factors])
            matrix = counts_in
        else:
            matrix = counts_in * np.asarray([f.value for f in factors], dtype="float32")[:, None]
        # Elementwise, not `matmul`: a float32 matmul may run at reduced
        # precision on accelerators (TF32 on GPUs, bfloat16 passes on TPUs).
        return ops.sum(ops.multiply(ops.expand_dims(stacked, 1), matrix), axis=0)


def penalty_sums(model: keras.layers.Layer, *, per_layer: bool = False, recorded: dict | None = None) -> PenaltySums:
    """The `PenaltySums` of `model`'s regularized trainable variables (see `penalty_terms`)."""
    per_layer = _validated(model, per_layer, recorded)
    owned_variables = [owned for owned in owned_trainable_variables(model) if owned.variable.regularizer is not None]
    roles_with = {kind: set() for kind in ("group", "l2_anchor")}  # the roles with a term of that kind
    for owned in owned_variables:
        split = as_l1l2plus(owned.variable.regularizer)
        for kind, roles in roles_with.items():
            if split is not None and not split.factor(kind).is_zero:
                roles.add(owned.role)
    present = (
        *TERM_NAMES,
        *(term for term in (*GROUP_TERMS, *ANCHOR_TERMS) if term_parts(term)[1] in roles_with[term_parts(term)[0]]),
    )
    keys = {name: i for i, name in enumerate((*present, "penalty"))}
    sums: list = []
    factors: list = []
    sources: list = []
    columns: list[tuple[int, ...]] = []
    layer_keys: dict[str, int] = {}
    for owned in owned_variables:
        regularizer = owned.variable.regularizer
        split = as_l1l2plus(regularizer)
        if split is None:
            sums.append(in_dtype(ops.sum(regularizer(owned.variable)), "float32"))
            factors.append(_ONE)
            sources.append(None)
            columns.append((keys["penalty"],))
            continue
        entry = _recorded_entry(recorded, owned.variable) if split is regularizer else None
        if entry is not None:
            totals = (entry[1], entry[2], entry[4], entry[5])
        else:
            totals = (*split.sums(owned.variable), split.group_sum(owned.variable), split.anchor_sum(owned.variable))
        for slot, kind, total in zip((1, 2, 4, 5), ("l1", "l2", "group", "l2_anchor"), totals):
            if kind in ("group", "l2_anchor") and total is None:  # no key for a variable without the term
                continue
            name = f"{kind}_{owned.role}"
            counts_in = (keys[name], keys["penalty"])
            if per_layer:
                key = f"{name}/{owned.layer_path}"
                counts_in += (layer_keys.setdefault(key, len(keys) + len(layer_keys)),)
            if total is not None:  # None: a factor that is the constant 0
                sums.append(in_dtype(total, "float32"))
                factors.append(split.factor(kind))
                sources.append((id(owned.variable), slot) if entry is not None else None)
                columns.append(counts_in)
    names = (*keys, *layer_keys)
    matrix = np.zeros((len(sums), len(names)), dtype="float32")
    for row, counts_in in enumerate(columns):
        matrix[row, list(counts_in)] = 1.0
    return PenaltySums(names, sums, factors, matrix, tuple(sources))


def _recorded_entry(recorded: dict | None, variable: Any) -> tuple | None:
    """What `recording_terms` recorded for `variable` in this step, if its regularizer was called on it."""
    return recorded.get(id(variable)) if recorded else None


def sparsity(
    model: keras.layers.Layer, roles: tuple[str, ...] = (WEIGHT, BIAS), *, proximal_only: bool = False
) -> dict[str, Any]:
    """Fraction of exactly-zero entries among the L1- or group-regularized weights and biases.

    Returns `{"sparsity_weight", "sparsity_bias"}` (one key per entry of
    `roles`) as float32 scalars:

        sparsity_weight = #{w = 0} / #w   over weights whose regularizer has λ1 > 0 or λg > 0

    (likewise for biases), 0 where no variable of that role has an L1 or group penalty.
    Regularizers counted are those `penalty_terms` splits: `L1L2Plus` and
    Keras's `L1` and `L1L2`; with `proximal_only=True`, only the variables
    that take the proximal step (`L1L2Plus(l1 > 0 or group > 0, proximal=True)`), as
    `PenaltyLogger` logs it.
    """
    return zero_fractions(sparsity_targets(model, roles, proximal_only=proximal_only))


def sparsity_targets(
    model: keras.layers.Layer, roles: tuple[str, ...] = (WEIGHT, BIAS), *, proximal_only: bool = False
) -> dict[str, list]:
    """`{role: the variables sparsity counts}` (see `sparsity`): the walk, done once, for `zero_fractions`."""
    proximal_only = validate_flag(proximal_only, "proximal_only")
    unknown = [r for r in roles if r not in (WEIGHT, BIAS)]
    if unknown:
        raise ValueError(
            f'Invalid value for argument `roles`: expected "weight" and/or "bias". Received: roles={roles!r}'
        )
    targets: dict[str, list] = {role: [] for role in roles}
    for owned in owned_trainable_variables(model):
        split = as_l1l2plus(owned.variable.regularizer)
        if owned.role not in targets or split is None:
            continue
        if split.factor("l1").is_zero and split.factor("group").is_zero:
            continue
        if proximal_only and not split.proximal:
            continue
        targets[owned.role].append(owned.variable)
    return targets


def zero_fractions(targets: dict[str, list]) -> dict[str, Any]:
    """`{"sparsity_<role>": #{x = 0} / #x}` over each role's variables, as float32 scalars (0 with none)."""
    counts = Counts(targets)
    return dict(zip(counts.keys, ops.unstack(counts.values())))


def group_targets(model: keras.layers.Layer) -> list[tuple[Any, str]]:
    """`(variable, groups)` for every trainable variable that takes the proximal group step (see `live_groups`)."""
    targets = []
    for owned in owned_trainable_variables(model):
        split = as_l1l2plus(owned.variable.regularizer)
        if split is not None and split.proximal and not split.factor("group").is_zero:
            targets.append((owned.variable, split.groups))
    return targets


def live_groups(targets: list[tuple[Any, str]]) -> Any:
    """The number of groups with an entry that is not exactly 0, over `targets` (`group_targets`), as float32.

    A group is dead when every entry is exactly 0 (not when its norm
    underflows): what `shrink` removes.
    """
    return Counts({}, targets).values()[0]


class Counts:
    """`sparsity_<role>` of `zero_targets` (`sparsity_targets`) and `live_groups` of `group_targets`, in one vector.

    `values()` counts the nonzero entries of each variable (of each
    variable's group mask for `live_groups`) as integers
    (`_keras.count_nonzero`: exact whatever the size), stacks the counts,
    and turns them into the logged values with one product by a matrix made
    here, once:

        sparsity_<role> = Σ_v (#v − nonzero(v)) / Σ_v #v     (0 with no variable)
        live_groups     = Σ_v nonzero(any(v ≠ 0 over each group))

    in float32: the counts exact while a role has fewer than 2^24 entries
    (above, within float32's relative 6e-8 each). `keys` are in that order; `live_groups`
    only with `group_targets` given (not None). A `PenaltyLogger` builds one
    per step plan and calls `values()` at every step: on PyTorch, where
    every op is a Python call in the step, a fixed number of ops whatever the
    number of roles.
    """

    def __init__(self, zero_targets: dict[str, list], group_targets: list[tuple[Any, str]] | None = None):
        self.keys = tuple(f"sparsity_{role}" for role in zero_targets)
        self._counted: list[tuple[Any, tuple | None]] = []  # (variable, the group axes or None)
        columns = []  # (row, offset, sign): the count enters row `row` as offset + sign·nonzero
        for row, variables in enumerate(zero_targets.values()):
            for variable in variables:
                self._counted.append((variable, None))
                columns.append((row, _size(variable), -1.0))
        divisors = [float(sum(_size(v) for v in variables) or 1) for variables in zero_targets.values()]
        if group_targets is not None:
            self.keys += ("live_groups",)
            for variable, groups in group_targets:
                self._counted.append((variable, group_axes(tuple(variable.shape), groups)))
                columns.append((len(divisors), 0.0, 1.0))
            divisors.append(1.0)
        rows = np.zeros((len(divisors), len(columns)), "float32")
        for column, (row, _, _) in enumerate(columns):
            rows[row, column] = 1.0
        as_tensor = ops.convert_to_tensor if _keras.tensors_outlive_the_step() else (lambda array: array)
        self._rows = as_tensor(rows)
        self._offsets = as_tensor(np.array([offset for _, offset, _ in columns], "float32"))
        self._signs = as_tensor(np.array([sign for _, _, sign in columns], "float32"))
        self._divisors = as_tensor(np.array(divisors, "float32"))

    def values(self) -> Any:
        """The values of `keys`, as one float32 vector."""
        if not self._counted:
            return ops.zeros((len(self.keys),), dtype="float32")
        nonzero = []
        for variable, axes in self._counted:
            if axes is None:
                nonzero.append(_keras.count_nonzero(variable))
            else:  # x != 0 as a bool with no constant made per call, then any over each group
                live = ops.logical_not(ops.logical_not(variable))
                nonzero.append(_keras.count_nonzero(ops.any(live, axis=axes) if axes else live))
        counts = self._offsets + self._signs * ops.cast(_keras.stack_scalars(nonzero), "float32")
        return ops.sum(self._rows * counts, axis=1) / self._divisors


def _size(variable: Any) -> int:
    return int(np.prod(variable.shape))

"""`regularize`: the four λs of the book's loss, the group lasso and L2-SP on a whole Keras model.

    Loss = DataLoss + λ1w·Σ|w| + λ1b·Σ|b| + λ2w·Σw² + λ2b·Σb²  (+ λgw·Σ_g ‖w_g‖₂ + λa·Σ(x − w₀)²)

Weights get `L1L2Plus(l1_weight, l2_weight, group=group_weight)`, biases
`L1L2Plus(l1_bias, l2_bias)`, by the rule in `keras_l1l2plus.roles`; which
weights take the group term, and how they are grouped, is `groups`'s.
`rules` gives some variables other settings: the first rule that matches a
variable wins, as in a routing table.

How it is built: every variable (and, in a layer not built yet, every
regularizer attribute that will make one) is a target with one decision,
the `L1L2Plus` keyword arguments or None; the targets saved through one
layer attribute must agree, and get one `L1L2Plus` object, which both the
variable and the attribute hold (`dry_run` stops before anything is set).
"""

from __future__ import annotations

import dataclasses
import fnmatch
import reprlib
import warnings
from typing import Any, Callable, Iterable, Mapping, Optional, Sequence, Union

import keras
import numpy as np

from keras_l1l2plus import _keras
from keras_l1l2plus.describe import SOURCES_KEY, RegularizerTable, print_table, regularizer_table
from keras_l1l2plus.factors import validate_flag, validate_penalty, validate_zero_grad
from keras_l1l2plus.regularizer import L1L2Plus, anchor_values
from keras_l1l2plus.roles import (
    BIAS,
    PlacedLayer,
    is_normalization,
    placed_layers,
    regularizer_attributes,
    role,
)
from keras_l1l2plus.steps import retrace
from keras_l1l2plus.terms import LAMBDA_NAMES

__all__ = ["GROUP_CHOICES", "SETTINGS", "feature_readers", "regularize"]

Exclude = Union[str, Iterable[str], Callable[[Any], bool], None]
Selector = Union[str, type, Callable[[Any, Any], bool]]
Rules = Optional[Sequence[tuple[Selector, Optional[Mapping[str, Any]]]]]

# regularize's keywords a rule may set, in the order of its signature.
SETTINGS = (
    "l1_weight",
    "l1_bias",
    "l2_weight",
    "l2_bias",
    "l2_anchor_weight",
    "l2_anchor_bias",
    "anchor",
    "group_weight",
    "groups",
    "proximal_weight",
    "proximal_bias",
    "zero_grad",
)
_PENALTIES = frozenset(
    {"l1_weight", "l1_bias", "l2_weight", "l2_bias", "l2_anchor_weight", "l2_anchor_bias", "group_weight"}
)
_FLAGS = frozenset({"proximal_weight", "proximal_bias"})
_SHORT = reprlib.Repr()
_SHORT.maxstring, _SHORT.maxother, _SHORT.maxdict, _SHORT.maxlist = 80, 80, 8, 8


def _exclusion(exclude: Exclude) -> tuple[Callable[[Any], bool], list[str]]:
    """A predicate on layers, and the name patterns it was built from."""
    if exclude is None:
        return (lambda layer: False), []
    if callable(exclude):
        return exclude, []
    if isinstance(exclude, str):
        patterns = [exclude]
    elif isinstance(exclude, (list, tuple, set, frozenset)):
        patterns = list(exclude)
    else:
        patterns = [exclude]
    for pattern in patterns:
        if not isinstance(pattern, str):
            raise TypeError(
                "Invalid value for argument `exclude`: expected a layer-name pattern, "
                f"a list of them or a predicate. Received: exclude={exclude!r}"
            )
    return (lambda layer: any(fnmatch.fnmatchcase(layer.name, p) for p in patterns)), patterns


def _validate_setting(key: str, value: Any, name: str) -> Any:
    """One of regularize's settings (`SETTINGS`), validated as its keyword is; the error names `name`."""
    if key in _PENALTIES:
        if (callable(value) or isinstance(value, keras.Variable)) and not (name == key and key in LAMBDA_NAMES):
            role_name = "bias" if key.endswith("_bias") else "weight"
            hint = (
                f"; to make it follow a schedule, pass the schedule to the callback "
                f"keras_l1l2plus.PenaltySchedule({key}=...), which sets that λ on every {role_name} of the "
                "model, the rules' included"
                if key in LAMBDA_NAMES
                else f" (`{key}` is not one PenaltySchedule schedules)"
            )
            raise ValueError(f"Invalid value for argument `{name}`: expected a float{hint}. Received: {name}={value!r}")
        return validate_penalty(value, name)  # a λ of the keywords points to PenaltySchedule(key=...)
    if key in _FLAGS:
        return validate_flag(value, name)
    if key == "zero_grad":
        return validate_zero_grad(value, name)
    if key == "groups":
        if not isinstance(value, str) or value not in GROUP_CHOICES:
            raise ValueError(
                f"Invalid value for argument `{name}`: expected one of {GROUP_CHOICES}. Received: {name}={value!r}"
            )
        return value
    # anchor
    if value is None:
        return None
    if not isinstance(value, Mapping) or not all(isinstance(key, str) for key in value):
        raise TypeError(
            f"Invalid value for argument `{name}`: expected None (each variable anchored at its value now) or a "
            "dict {variable path: array}, paths as `keras_l1l2plus.describe(model)` shows them "
            f"(e.g. 'dense/kernel'). Received: {name}={_SHORT.repr(value)}"
        )
    return dict(value)


def _label(index: int, selector: Any) -> str:
    """How a message and `describe` name rule `index`: `rule 0 'dense*'`, `rule 1 Dense`, `rule 2 is_head`."""
    if isinstance(selector, str):
        return f"rule {index} {selector!r}"
    if isinstance(selector, type):
        return f"rule {index} {selector.__name__}"
    return f"rule {index} {getattr(selector, '__name__', None) or repr(selector)}"


@dataclasses.dataclass(eq=False)
class _Target:
    """One regularizer to decide: a trainable variable, or a regularizer attribute that will make (or would
    make) one. `counted`: a variable, or the attribute of a layer not built yet: what a rule must match (an
    attribute of a built layer with no variable behind it, such as a Dense's without a bias, is set alike
    but not counted)."""

    place: PlacedLayer
    name: str
    role: str
    variable: Any
    attribute: str | None
    counted: bool
    skipped: str | None  # "exclude" or "normalization": left alone
    rule: _Rule | None = None
    settings: dict | None = None
    kwargs: dict | None = None  # the L1L2Plus(**kwargs) it gets; None: no regularizer
    anchor: Any = None
    source: str = "keywords"

    @property
    def layer(self) -> Any:
        return self.place.layer

    @property
    def path(self) -> str:
        return f"{self.place.path}/{self.name}"

    @property
    def paths(self) -> tuple[str, ...]:
        return tuple(f"{path}/{self.name}" for path in self.place.paths)


@dataclasses.dataclass(eq=False)
class _Rule:
    index: int
    selector: Any
    settings: dict | None
    label: str

    def matches(self, target: _Target) -> bool:
        """The selector on `target`: a glob on the names of its layer and the layers containing it and on its
        paths; isinstance on those layers; or the predicate `(layer, variable)` (not asked about an
        attribute with no variable behind it). The model itself is not among the layers matched (it is in no
        path: "*" selects everything), only the layers inside it."""
        layers = (*target.place.containers[1:], target.layer)  # containers[0]: the model (`placed_layers`)
        if isinstance(self.selector, str):
            return any(fnmatch.fnmatchcase(layer.name, self.selector) for layer in layers) or any(
                fnmatch.fnmatchcase(path, self.selector) for path in target.paths
            )
        if isinstance(self.selector, type):
            return any(isinstance(layer, self.selector) for layer in layers)
        if not target.counted:
            return False
        return bool(self.selector(target.layer, target.variable))


def _validate_rules(rules: Rules) -> list[_Rule]:
    if rules is None:
        return []
    if isinstance(rules, (str, bytes, Mapping)) or not isinstance(rules, (list, tuple)):
        raise TypeError(
            "Invalid value for argument `rules`: expected a list of (selector, settings) pairs, e.g. "
            f"rules=[('dense*', {{'l2_weight': 0.001}})]. Received: rules={_SHORT.repr(rules)}"
        )
    validated = []
    for index, rule in enumerate(rules):
        name = f"rules[{index}]"
        if not isinstance(rule, (list, tuple)) or len(rule) != 2:
            raise TypeError(
                f"Invalid value for argument `{name}`: expected a (selector, settings) pair, e.g. "
                f"('dense*', {{'l2_weight': 0.001}}). Received: {name}={_SHORT.repr(rule)}"
            )
        selector, settings = rule
        if isinstance(selector, keras.layers.Layer):
            raise TypeError(
                f"Invalid value for argument `{name}`: a layer is not a selector; select it by its name, "
                f"({selector.name!r}, settings), or by its class, ({type(selector).__name__}, settings). "
                f"Received: {name}={_SHORT.repr(rule)}"
            )
        if isinstance(selector, type):
            if not issubclass(selector, keras.layers.Layer):
                raise TypeError(
                    f"Invalid value for argument `{name}`: a class selects the variables of its layers, so it must "
                    f"be a Keras layer class such as keras.layers.Dense. Received: {name}={_SHORT.repr(rule)}"
                )
        elif not isinstance(selector, str) and not callable(selector):
            raise TypeError(
                f"Invalid value for argument `{name}`: expected a selector first: a pattern (str) of layer names "
                "or variable paths, a Keras layer class, or a predicate (layer, variable) -> bool. "
                f"Received: {name}={_SHORT.repr(rule)}"
            )
        label = _label(index, selector)
        if settings is not None:
            if not isinstance(settings, Mapping):
                raise TypeError(
                    f"Invalid value for argument `{name}`: {label}'s settings must be a dict of regularize()'s "
                    "keywords, or None (no regularizer on the variables it wins). "
                    f"Received: {name}={_SHORT.repr(rule)}"
                )
            for key in settings:
                if key not in SETTINGS:
                    raise ValueError(
                        f"Invalid value for argument `{name}`: {label} has the unknown key {key!r}. Allowed keys "
                        f"(regularize()'s own): {list(SETTINGS)}. Received: {name}={_SHORT.repr(rule)}"
                    )
            settings = {key: _validate_setting(key, value, f"{name}[{key!r}]") for key, value in settings.items()}
        validated.append(_Rule(index, selector, settings, label))
    return validated


def regularize(
    model: keras.layers.Layer,
    *,
    l1_weight: float = 0.0,
    l1_bias: float = 0.0,
    l2_weight: float = 0.0,
    l2_bias: float = 0.0,
    zero_grad: float = 0.0,
    exclude: Exclude = None,
    normalization: bool = False,
    proximal_weight: bool = False,
    proximal_bias: bool = False,
    group_weight: float = 0.0,
    groups: str = "units",
    l2_anchor_weight: float = 0.0,
    l2_anchor_bias: float = 0.0,
    anchor: Mapping[str, Any] | None = None,
    rules: Rules = None,
    dry_run: bool = False,
) -> keras.layers.Layer | RegularizerTable:
    """Puts the four λs on every weight and bias of `model`, in place; `rules` give some variables others.

    Every trainable weight gets `L1L2Plus(l1_weight, l2_weight, zero_grad)` and
    every trainable bias `L1L2Plus(l1_bias, l2_bias, zero_grad)`, so that

        Loss = DataLoss + l1_weight·Σ|w| + l1_bias·Σ|b| + l2_weight·Σw² + l2_bias·Σb²

    Weights and biases are told apart by `keras_l1l2plus.roles.role`: a bias
    is the additive offset Keras names `bias`; kernels, recurrent kernels,
    depthwise and pointwise kernels and embeddings are weights.

    - Built or not: on a built model `model.losses` holds the new penalty at
      once, and a compiled (or trained) model trains with it from its next
      step, mid-`fit` too (its step functions are rebuilt with
      `make_train_function(force=True)` and traced again).
    - Kept: the layers' own regularizer attributes (`kernel_regularizer`,
      `bias_regularizer`, ...) hold the same `L1L2Plus` object as the
      variable they save, so the penalty survives `.keras` saving,
      `clone_model` and `to_json`. A variable of a layer that has no such
      attribute is regularized now, with a warning that it is not saved.
      Where one attribute saves several variables (MultiHeadAttention's
      `kernel_regularizer` makes all its kernels), they must get one
      regularizer: different ones are a `ValueError`.
    - Replaces, never stacks: the selected variables' regularizers (Keras's
      own included) are replaced; where every λ of a variable is 0 the
      regularizer is removed.
    - Frozen layers are regularized too, and stay frozen: Keras counts a
      regularizer only while its variable is trainable, so their penalty
      starts when they are unfrozen for fine-tuning (and the model
      recompiled, as Keras requires). Non-trainable variables (moving
      statistics) are skipped, and so are normalization layers (BatchNormalization, LayerNormalization,
      GroupNormalization, RMSNormalization) unless `normalization=True`, which
      regularizes their scale `gamma` as a weight and offset `beta` as a bias.

    Rules: `rules=[(selector, settings), ...]` gives the variables a
    selector matches other settings. **The first rule that matches a
    variable wins** (a routing table: put the specific rules first); a
    variable no rule matches takes the keywords. A key the winning rule
    does not give takes the keyword's value. `exclude` and the
    normalization layers left alone win over every rule.

    - selector: a pattern (`fnmatch`, case-sensitive) matched against the
      name of the variable's layer and of every layer containing it (a
      nested model's name selects everything inside it), and against the
      variable's path `"<layer path>/<variable name>"` (`"dense_1/bias"`,
      `"encoder/dense/kernel"`, `"*/bias"`; `describe(model)` lists them);
      or a layer class (`keras.layers.Dense`: that layer, or one containing
      the variable, is an instance); or a predicate `(layer, variable) ->
      bool` (`variable` is None in a layer not built yet, whose variables do
      not exist; the rule then applies to the attribute that will make it).
    - settings: a dict of this function's keywords `l1_weight, l1_bias,
      l2_weight, l2_bias, l2_anchor_weight, l2_anchor_bias, anchor,
      group_weight, groups, proximal_weight, proximal_bias, zero_grad`,
      validated as the keywords are; or None: no regularizer on the
      variables it wins.
    - A rule that matches no variable, or only variables `exclude` or the
      normalization layers leave alone, is a `ValueError`, and so is an
      unknown key.

    Example:

    >>> import keras, keras_l1l2plus as kl
    >>> model = keras.Sequential([keras.Input((4,)), keras.layers.Dense(3)])
    >>> model = kl.regularize(model, l1_weight=0.01, l1_bias=0.005,
    ...                       l2_weight=0.001, l2_bias=0.0005)
    >>> model.layers[0].kernel_regularizer
    L1L2Plus(l1=0.01, l2=0.001, zero_grad=0.0)

    Args:
        model: a Keras model (or layer), built or not.
        l1_weight, l1_bias, l2_weight, l2_bias: the λs, finite floats ≥ 0.
        zero_grad: the L1 gradient at exactly 0, in [-1, 1] (see `L1L2Plus`).
        exclude: layers to leave alone, with everything inside them: a
            layer-name pattern (`fnmatch` style, e.g. `"embed*"`), a list of
            them, or a predicate `layer -> bool`. A pattern that matches no
            layer raises `ValueError`; a predicate that matches none warns.
        normalization: also regularize normalization layers' gamma and beta.
        proximal_weight, proximal_bias: apply L1 (and the group term) to the
            weights, the biases by a proximal step that sets them exactly to
            zero instead of by its gradient (`L1L2Plus(proximal=True)`;
            compile with a `ProximalOptimizer`, which takes the step).
        group_weight: λg of the group lasso `λg·Σ_g ‖w_g‖₂` on the weights
            (`L1L2Plus(group=...)`), a finite float ≥ 0. With `l1_weight`
            too it is the sparse group lasso.
        groups: which weights take it, and what a group is:
            `"units"` (default): every weight, one group per output unit, its
            incoming weights (a kernel's column, a convolution's filter;
            for a 1-D weight such as a normalization's gamma, each entry;
            Wen et al. 2016), to remove units;
            `"inputs"`: the kernels of the layers that read the model's
            inputs (directly or through layers without weights that keep
            the shape, such as `Dropout`), one group per input feature (a
            kernel's row), to select features; the other weights take no
            group term. It needs a built Functional or Sequential model;
            `"both"`: every layer's kernel by rows, one group per unit of
            the layer before (or input feature), its outgoing weights
            (Scardapane et al., "Group sparse regularization for deep
            neural networks", 2017), which removes input features and
            hidden units and never a model output; other weights by units.
            A transposed convolution's kernel is (*taps, filters, inputs):
            its axes are swapped accordingly. Other weights are grouped by
            their last axis under "units" (an Embedding's dimensions, an
            LSTM's gate units, a DepthwiseConv2D's multiplier channels).
        l2_anchor_weight, l2_anchor_bias: λa of L2-SP, `λa·Σ(x − w₀)²`, which
            pulls each weight (bias) towards its anchor w₀ instead of 0
            (`L1L2Plus(l2_anchor=..., anchor=...)`), finite floats ≥ 0.
        anchor: the anchors w₀ where λa > 0: None (default), each variable's
            value at this call (a copy: fine-tuning from pretrained
            weights); or a dict `{variable path: array of its shape}`, paths
            as `describe` shows them. A variable that takes an anchor and is
            missing from the dict, a key that names none, or a wrong shape
            is a `ValueError`.
        rules: `[(selector, settings), ...]`, see above.
        dry_run: change nothing; print the `describe` table of what this call
            would give and return it.
    Returns:
        `model`, regularized in place; with `dry_run=True`, the
        `RegularizerTable` of what it would give (the table
        `keras_l1l2plus.describe(model)` returns after the same call).
    """
    if not isinstance(model, keras.layers.Layer):
        raise TypeError(
            "Invalid value for argument `model`: expected a Keras model or layer. "
            f"Received: model={model!r} of type {type(model).__name__}"
        )
    given = dict(
        l1_weight=l1_weight,
        l1_bias=l1_bias,
        l2_weight=l2_weight,
        l2_bias=l2_bias,
        l2_anchor_weight=l2_anchor_weight,
        l2_anchor_bias=l2_anchor_bias,
        anchor=anchor,
        group_weight=group_weight,
        groups=groups,
        proximal_weight=proximal_weight,
        proximal_bias=proximal_bias,
        zero_grad=zero_grad,
    )
    defaults = {key: _validate_setting(key, given[key], key) for key in SETTINGS}
    normalization = validate_flag(normalization, "normalization")
    dry_run = validate_flag(dry_run, "dry_run")
    checked_rules = _validate_rules(rules)
    is_excluded, patterns = _exclusion(exclude)
    places = placed_layers(model)

    # A layer is excluded when it, or a layer that contains it, matches.
    excluded = {id(place.layer): bool(is_excluded(place.layer)) for place in places}
    matched = [place.layer for place in places if excluded[id(place.layer)]]
    unmatched = [p for p in patterns if not any(fnmatch.fnmatchcase(layer.name, p) for layer in matched)]
    if unmatched:
        names = sorted({place.layer.name for place in places})
        raise ValueError(
            f"Invalid value for argument `exclude`: the pattern(s) {unmatched} match no "
            f"layer of the model. Layer names: {names}. Received: exclude={exclude!r}"
        )
    if exclude is not None and callable(exclude) and not matched:
        warnings.warn(
            f"regularize(): the `exclude` predicate {exclude!r} matched no layer.",
            stacklevel=2,
        )

    targets, slots = _targets(places, excluded, normalization)
    _match_rules(checked_rules, targets, exclude, patterns)
    _decide(model, targets, defaults)
    classes = _classes(targets, slots)

    if dry_run:
        planned = {
            id(target.variable): (target.kwargs, source)
            for members, _, source in classes
            for target in members
            if target.variable is not None and not target.skipped
        }
        table = regularizer_table(model, planned)
        print_table(
            "regularize(dry_run=True): nothing was changed; this is what the call would give.\n" + table.to_string()
        )
        return table

    unsaved = []
    for members, class_slots, source in classes:
        live = [target for target in members if not target.skipped]
        if not live:
            continue
        first = live[0]
        regularizer = None
        if first.kwargs is not None:
            kwargs = dict(first.kwargs)
            if "l2_anchor" in kwargs:
                kwargs["anchor"] = first.anchor
            regularizer = L1L2Plus(**kwargs)
            regularizer.source = source
            if regularizer.anchored:  # read afresh at each step on JAX, as the weights are (`load_weights`)
                _keras.thread_state_variable(first.layer, regularizer.anchor)
        for target in live:  # the anchors of the regularizers replaced are no longer step state
            old = target.variable.regularizer if target.variable is not None else None
            if isinstance(old, L1L2Plus) and old.anchored and old is not regularizer:
                _keras.release_state_variable(target.layer, old.anchor)
        for target in live:
            if target.variable is not None:
                target.variable.regularizer = regularizer
                if target.attribute is None:
                    unsaved.append(target.variable.path)
            _record_source(target, regularizer, source)
        for layer, attribute in class_slots:
            setattr(layer, attribute, regularizer)
    if unsaved:
        warnings.warn(
            "regularize(): these variables are regularized now, but their layers have no "
            "regularizer attribute to save it in, so a saved and reloaded model will not "
            f"have the penalty on them: {unsaved}",
            stacklevel=2,
        )
    retrace(model)
    return model


def _record_source(target: _Target, regularizer: Any, source: str) -> None:
    """Where `describe` finds which rule (or the keywords) left a variable without a regularizer: on its
    layer, by variable name (an `L1L2Plus` carries its own `source`)."""
    if regularizer is None:
        _keras.model_state(target.layer, SOURCES_KEY, dict)[target.name] = source
    else:
        (_keras.model_state(target.layer, SOURCES_KEY) or {}).pop(target.name, None)


def _stem(attribute: str) -> str:
    """`kernel` for `kernel_regularizer` and `_kernel_regularizer`."""
    return attribute.lstrip("_")[: -len("_regularizer")]


def _targets(
    places: list[PlacedLayer], excluded: dict[int, bool], normalization: bool
) -> tuple[list[_Target], dict[tuple[int, str], tuple[Any, str, list[_Target]]]]:
    """Every target of the model, and every regularizer attribute with the targets it saves:
    `{(id(layer), attribute): (layer, attribute, targets)}`."""
    targets: list[_Target] = []
    slots: dict[tuple[int, str], tuple[Any, str, list[_Target]]] = {}
    unclaimed = []
    seen: set[int] = set()
    for place in places:
        layer = place.layer
        skipped = None
        if any(excluded[id(item)] for item in (*place.containers, layer)):
            skipped = "exclude"
        elif is_normalization(layer) and not normalization:
            skipped = "normalization"
        attributes = regularizer_attributes(layer)
        by_stem = {_stem(attribute): attribute for attribute in attributes}
        claimed = set()
        for variable in _keras.own_trainable_variables(layer):
            if id(variable) in seen:
                continue
            seen.add(id(variable))
            attribute = _attribute_for(variable.name, by_stem)
            target = _Target(place, variable.name, role(layer, variable.name), variable, attribute, True, skipped)
            targets.append(target)
            if attribute is not None:
                claimed.add(attribute)
                slots.setdefault((id(layer), attribute), (layer, attribute, []))[2].append(target)
        for attribute, attribute_role in attributes.items():
            if attribute in claimed:
                continue
            name = _variable_name(_stem(attribute), by_stem)
            if not layer.built:  # the variable it will make: a target of its own
                target = _Target(place, name, attribute_role, None, attribute, True, skipped)
                targets.append(target)
                slots[(id(layer), attribute)] = (layer, attribute, [target])
            else:
                unclaimed.append((place, attribute, attribute_role, name, skipped))
    # An attribute of a built layer that no variable of its own claims: it saves the variables of the layers
    # inside it that it makes when rebuilt (MultiHeadAttention's kernel_regularizer, every kernel of its
    # EinsumDense sublayers), or nothing (a Dense without a bias): then it is set as its variable would be.
    inside: dict[tuple[int, str], list[_Target]] = {}  # (id(container), stem) -> the targets within it
    for target in targets if unclaimed else ():
        if target.attribute is not None:
            for container in target.place.containers:
                inside.setdefault((id(container), _stem(target.attribute)), []).append(target)
    for place, attribute, attribute_role, name, skipped in unclaimed:
        covered = list(inside.get((id(place.layer), _stem(attribute)), ()))
        if not covered:
            covered = [_Target(place, name, attribute_role, None, attribute, False, skipped)]
            targets.append(covered[0])
        slots[(id(place.layer), attribute)] = (place.layer, attribute, covered)
    return targets, slots


def _match_rules(rules: list[_Rule], targets: list[_Target], exclude: Exclude, patterns: list[str]) -> None:
    """Each target's rule (the first that matches it); a `ValueError` for a rule that matches no variable,
    or only variables that are left alone."""
    counted = [target for target in targets if target.counted]
    hits: dict[int, list[_Target]] = {rule.index: [] for rule in rules}
    for target in targets:
        for rule in rules:
            if rule.matches(target):
                if target.rule is None:
                    target.rule = rule
                if target.counted:
                    hits[rule.index].append(target)
    for rule in rules:
        found = hits[rule.index]
        name = f"rules[{rule.index}]"
        if not found:
            paths = [target.path for target in counted]
            shown = paths[:100] + ([f"... ({len(paths) - 100} more)"] if len(paths) > 100 else [])
            raise ValueError(
                f"Invalid value for argument `{name}`: {rule.label} matches no variable of the model. A pattern "
                "is matched against the names of the layers (a layer's name selects everything inside it) and "
                f"against the variable paths, which are: {shown}. Received: {name}={_SHORT.repr(rule.selector)}"
            )
        if all(target.skipped for target in found):
            left = sorted({target.path for target in found})
            if any(target.skipped == "exclude" for target in found):
                layers = {item.name for t in found for item in (*t.place.containers, t.layer)}
                kept = [p for p in patterns if not any(fnmatch.fnmatchcase(layer, p) for layer in layers)]
                fix = (
                    f"pass exclude={(kept[0] if len(kept) == 1 else kept) if kept else None!r}"
                    if patterns
                    else "pass an exclude predicate that does not select them"
                )
                why = f"`exclude` (exclude={_SHORT.repr(exclude)}) leaves them alone, and exclude wins over rules"
            else:
                fix = "pass normalization=True (gamma is then a weight, beta a bias)"
                why = "normalization layers are left alone unless normalization=True, which wins over rules"
            raise ValueError(
                f"Invalid value for argument `{name}`: {rule.label} matches only variables that regularize() "
                f"leaves alone, {left}: {why}. To regularize them, {fix}; or drop the rule. "
                f"Received: {name}={_SHORT.repr(rule.selector)}"
            )


def _decide(model: Any, targets: list[_Target], defaults: dict) -> None:
    """Each target's settings, source and `L1L2Plus` keyword arguments (None: no regularizer), its anchor."""
    readers: set[int] | None = None
    used: dict[str, set[str]] = {}  # anchor dict (by argument name) -> the paths it gave
    anchored: list[str] = []
    for target in targets:
        if target.skipped:
            continue
        rule = target.rule
        target.source = rule.label if rule is not None else "keywords"
        if rule is not None and rule.settings is None:
            continue
        own = rule.settings if rule is not None else {}
        settings = target.settings = {**defaults, **own}
        if target.role == BIAS:
            l1, l2, prox = settings["l1_bias"], settings["l2_bias"], settings["proximal_bias"]
            anchor_weight, group, kind = settings["l2_anchor_bias"], 0.0, "units"
        else:
            l1, l2, prox = settings["l1_weight"], settings["l2_weight"], settings["proximal_weight"]
            anchor_weight, group, kind = settings["l2_anchor_weight"], 0.0, "units"
            group_weight, choice = settings["group_weight"], settings["groups"]
            kernel = _is_kernel(target)
            if group_weight and choice == "inputs" and readers is None:
                readers = feature_readers(model)
            if group_weight and (choice == "units" or (choice == "both" and not kernel)):
                group = group_weight
            elif group_weight and kernel and (choice == "both" or id(target.layer) in (readers or ())):
                group, kind = group_weight, "inputs"
            if group and kernel and isinstance(target.layer, _TRANSPOSED):  # kernel (*taps, filters, in): swapped
                kind = "inputs" if kind == "units" else "units"
        if not target.counted:
            anchor_weight = 0.0  # an attribute with no variable behind it: nothing to anchor
        if not (l1 or l2 or group or anchor_weight):
            continue
        target.kwargs = dict(l1=l1, l2=l2, zero_grad=settings["zero_grad"], proximal=prox, group=group, groups=kind)
        if anchor_weight:
            target.kwargs["l2_anchor"] = anchor_weight
            name = f"rules[{rule.index}]['anchor']" if "anchor" in own else "anchor"
            target.anchor = _anchor(target, settings["anchor"], name, used.setdefault(name, set()))
            anchored.append(target.path)
    given = [("anchor", defaults["anchor"])]
    given += [(f"rules[{r.index}]['anchor']", r.settings["anchor"]) for r in _rules_of(targets)]
    for name, anchors in given:
        if anchors is None:
            continue
        unused = [path for path in anchors if path not in used.get(name, set())]
        if unused:
            raise ValueError(
                f"Invalid value for argument `{name}`: {unused} name no variable that takes its anchor from it "
                "(a variable takes an anchor where its l2_anchor_weight or l2_anchor_bias is > 0). The "
                f"variables that take one: {anchored}. Received: {name} with the keys {list(anchors)}"
            )


def _rules_of(targets: list[_Target]) -> list[_Rule]:
    """The rules that won some target and give an anchor dict, once each, in order."""
    found: dict[int, _Rule] = {}
    for target in targets:
        rule = target.rule
        if rule is not None and rule.settings is not None and isinstance(rule.settings.get("anchor"), dict):
            found.setdefault(rule.index, rule)
    return [found[index] for index in sorted(found)]


def _anchor(target: _Target, anchors: dict | None, name: str, used: set[str]) -> Any:
    """The anchor w₀ of `target`: its value now (a numpy copy), or its entry of `anchors`, checked."""
    if target.variable is None:
        raise ValueError(
            f"Invalid value for argument `{name}`: {target.path} takes an anchor, but its layer "
            f"{target.layer.name!r} is not built, so the variable has no value yet. Build the model first "
            "(model.build(input_shape), or call it on a batch), then regularize it."
        )
    dtype = keras.backend.standardize_dtype(target.variable.dtype)
    if anchors is None:  # the variable itself: `L1L2Plus` copies it (and lays the copy out as it is)
        anchor_values(target.variable.value, name, dtype)  # checked now: nothing is changed before every one is
        return target.variable
    key = next((path for path in target.paths if path in anchors), None)
    if key is None:
        raise ValueError(
            f"Invalid value for argument `{name}`: no anchor for {target.path!r}, which takes one (its "
            f"l2_anchor_{'bias' if target.role == BIAS else 'weight'} is > 0). Give it one, {{{target.path!r}: "
            f"array}}, or anchor every variable at its value now with anchor=None. "
            f"Received: {name} with the keys {list(anchors)}"
        )
    used.add(key)
    value = anchors[key]
    shape = tuple(int(d) for d in (value.shape if hasattr(value, "shape") else np.shape(value)))
    expected = tuple(int(d) for d in target.variable.shape)
    if shape != expected:
        raise ValueError(
            f"Invalid value for argument `{name}`: the anchor of {key!r} has shape {shape}, and the variable "
            f"{expected}. Received: {name}[{key!r}] of shape {shape}"
        )
    return anchor_values(value, f"{name}[{key!r}]", dtype)  # checked now: nothing is changed before every one is


def _key(target: _Target) -> Any:
    """What two targets saved through one attribute must agree on."""
    return None if target.kwargs is None else tuple(sorted(target.kwargs.items()))


def _current_key(target: _Target) -> Any:
    """The same of a target left alone, from the regularizer it has now."""
    regularizer = target.variable.regularizer if target.variable is not None else None
    if regularizer is None:
        return None
    if isinstance(regularizer, L1L2Plus) and not regularizer.anchored:
        kwargs = dict(
            l1=regularizer.l1,
            l2=regularizer.l2,
            zero_grad=regularizer.zero_grad,
            proximal=regularizer.proximal,
            group=regularizer.group,
            groups=regularizer.groups if regularizer.group else "units",
        )
        return tuple(sorted(kwargs.items()))
    return object()  # agrees with nothing


def _classes(targets: list[_Target], slots: dict) -> list[tuple[list[_Target], list[tuple[Any, str]], str]]:
    """The targets that must hold one regularizer (linked through the attributes that save them), with those
    attributes and the source they show; a `ValueError` where they would get different ones."""
    parent = {id(target): target for target in targets}

    def root(target):
        while parent[id(target)] is not target:
            target = parent[id(target)]
        return target

    for _, _, saved in slots.values():
        for target in saved[1:]:
            parent[id(root(target))] = root(saved[0])
    members: dict[int, list[_Target]] = {}
    for target in targets:
        members.setdefault(id(root(target)), []).append(target)
    attributes: dict[int, list[tuple[Any, str]]] = {}
    for layer, attribute, saved in slots.values():
        attributes.setdefault(id(root(saved[0])), []).append((layer, attribute))
    classes = []
    for key, group in members.items():
        live = [target for target in group if not target.skipped]
        if len(group) > 1 and live:
            _check_one_regularizer(group, live, attributes.get(key, []))
        sources = list(dict.fromkeys(target.source for target in live))
        classes.append((group, attributes.get(key, []), ", ".join(sources)))
    return classes


def _render(kwargs: dict) -> str:
    """`L1L2Plus(l1=0.1, l2=0.5)`: the regularizer `kwargs` make, its λs that are not 0 and its flags."""
    shown = {k: v for k, v in kwargs.items() if v or k in ("l1", "l2")}
    if not kwargs.get("group"):
        shown.pop("groups", None)
    return f"L1L2Plus({', '.join(f'{k}={v!r}' for k, v in shown.items())})"


def _check_one_regularizer(group: list[_Target], live: list[_Target], attributes: list[tuple[Any, str]]) -> None:
    keys = {_key(target) for target in live}
    anchored = any(target.kwargs is not None and "l2_anchor" in target.kwargs for target in live)
    left_alone = [target for target in group if target.skipped]
    agrees = all(_current_key(target) == _key(live[0]) for target in left_alone)
    if len(keys) == 1 and agrees and not (anchored and len(live) > 1):
        return
    owner, attribute = attributes[0] if attributes else (live[0].layer, live[0].attribute)
    for layer, candidate in attributes:  # the attribute of a layer containing the others: the one that makes them
        if any(layer is container for target in live for container in target.place.containers):
            owner, attribute = layer, candidate
            break

    def given(target):
        if target.skipped:
            regularizer = target.variable.regularizer if target.variable is not None else None
            return f"left alone ({target.skipped}): {regularizer!r}"
        shown = "no regularizer" if target.kwargs is None else _render(target.kwargs)
        return f"{target.source}: {shown}"

    lines = "; ".join(f"{target.path} <- {given(target)}" for target in group)
    where = f"`{attribute}` of layer {owner.name!r} ({type(owner).__name__})"
    if anchored and len(live) > 1:
        fix = (
            f"put ({owner.name!r}, {{'l2_anchor_weight': 0.0, 'l2_anchor_bias': 0.0}}) first in `rules` (no "
            f"anchor there), or pass exclude={owner.name!r}"
        )
        why = "an anchor is one variable's, and that attribute holds one regularizer for all of them"
        ones = "each would get its own anchor here"
    else:
        first = live[0]
        differing = {}
        if first.settings is not None:
            for key in first.settings:
                values = {repr(t.settings.get(key)) if t.settings is not None else None for t in live}
                if len(values) > 1 and key != "anchor":
                    differing[key] = first.settings[key]
        setting = None if first.settings is None else differing
        fix = (
            f"put ({owner.name!r}, {setting!r}) first in `rules`; or pass exclude={owner.name!r}, without "
            "the rules that select only variables inside it"
        )
        if left_alone:  # `exclude` (or normalization) wins over rules: only excluding all of it agrees
            fix = f"exclude the whole layer, exclude={owner.name!r}, or none of it"
        why = "that attribute holds one regularizer for all of them"
        ones = "they would get different ones here"
    raise ValueError(
        f"regularize(): {[t.path for t in group]} are saved through one attribute, {where}, which makes all of "
        f"them when the model is loaded, cloned or rebuilt from its config; {why}, but {ones}: {lines}. "
        f"To give them one, {fix}."
    )


GROUP_CHOICES = ("units", "inputs", "both")
_TRANSPOSED = tuple(
    cls
    for cls in (getattr(keras.layers, n, None) for n in ("Conv1DTranspose", "Conv2DTranspose", "Conv3DTranspose"))
    if cls is not None
)


def _per_feature(layer: Any) -> bool:
    """Whether `layer` maps each input feature to the same feature alone (so a row still reads one feature):
    layers without weights, and `Normalization` / `BatchNormalization` over the last axis."""
    if not layer.weights:
        return True
    axis = getattr(layer, "axis", None)
    last = axis in (-1, None) or (isinstance(axis, (list, tuple)) and tuple(axis) in ((-1,),))
    if isinstance(layer, keras.layers.Normalization):
        return last
    return isinstance(layer, keras.layers.BatchNormalization) and last


def feature_readers(model: Any) -> set[int]:
    """The ids of the layers whose kernel reads `model`'s input features: a model input, directly or
    through layers that keep each feature apart and the shape (`Dropout`, `GaussianNoise`, `Activation`,
    `Normalization`, `BatchNormalization`, ...). A `ValueError` if no kernel reads them so."""
    inputs = getattr(model, "inputs", None) if isinstance(model, keras.Model) else None
    if not inputs:
        raise ValueError(
            'regularize(groups="inputs") groups the kernel rows that read the model\'s input '
            f"features, so it needs a built Functional or Sequential model; {type(model).__name__} "
            f"{model.name!r} has no known inputs. Build it with an Input (keras.Input(shape)), or pass "
            'groups="both" (every kernel\'s rows) or "units".'
        )
    feature_tensors = {id(tensor) for tensor in inputs}
    readers: set[int] = set()
    stops = []
    for layer in model.layers:
        try:
            layer_inputs = keras.tree.flatten(layer.input)
            layer_output = layer.output
        except (AttributeError, ValueError):  # an InputLayer, or a layer called more than once
            continue
        if not any(id(tensor) in feature_tensors for tensor in layer_inputs):
            continue
        kernel = getattr(layer, "kernel", None)
        same_shape = len(layer_inputs) == 1 and tuple(layer_inputs[0].shape) == tuple(layer_output.shape)
        if kernel is not None and len(kernel.shape) >= 2 and len(layer_inputs) == 1:
            readers.add(id(layer))
        elif same_shape and _per_feature(layer):
            feature_tensors.add(id(layer_output))
        else:
            stops.append(f"{layer.name} ({type(layer).__name__})")
    if not readers:
        raise ValueError(
            'Invalid value for argument `groups`: "inputs" groups the rows of the kernels that read the '
            "model's input features, and none does here: the inputs reach "
            f"{', '.join(stops) or 'no layer'} first, which mixes or reshapes the features. Pass "
            'groups="both" (every kernel\'s rows) or "units". Received: groups=\'inputs\''
        )
    return readers


# Variable names whose layer attribute is not `<name>_regularizer`, most specific first.
_ATTRIBUTE_STEMS = {
    "kernel": ("kernel", "depthwise"),  # DepthwiseConv2D's kernel: depthwise_regularizer
    "recurrent_kernel": ("recurrent",),
    "depthwise_kernel": ("depthwise",),
    "pointwise_kernel": ("pointwise",),
}


def _attribute_for(variable_name: str, by_stem: dict[str, str]) -> str | None:
    """The layer's attribute that saves the variable `variable_name` (`by_stem`: {stem: attribute}), or None."""
    for stem in _ATTRIBUTE_STEMS.get(variable_name, (variable_name,)):
        if stem in by_stem:
            return by_stem[stem]
    return None


def _variable_name(stem: str, by_stem: dict[str, str]) -> str:
    """The name of the variable the attribute of `stem` makes when its layer is built."""
    if stem == "depthwise":  # SeparableConv's depthwise_kernel; DepthwiseConv's kernel
        return "depthwise_kernel" if "pointwise" in by_stem else "kernel"
    return {"recurrent": "recurrent_kernel", "pointwise": "pointwise_kernel"}.get(stem, stem)


def _is_kernel(target: _Target) -> bool:
    """A layer's `kernel`, saved as its kernel (`kernel_regularizer`): a DepthwiseConv2D's `kernel` is saved
    as `depthwise_regularizer`, not a kernel here, so the variable and the attribute that saves it agree."""
    if target.name != "kernel":
        return False
    if target.attribute is None:
        return hasattr(target.layer, "kernel_regularizer")
    return _stem(target.attribute) == "kernel"

"""`regularize`: the four λs of the book's loss, and the group lasso, on a whole Keras model.

    Loss = DataLoss + λ1w·Σ|w| + λ1b·Σ|b| + λ2w·Σw² + λ2b·Σb²  (+ λgw·Σ_g ‖w_g‖₂)

Weights get `L1L2Plus(l1_weight, l2_weight, group=group_weight)`, biases
`L1L2Plus(l1_bias, l2_bias)`, by the rule in `keras_l1l2plus.roles`; which
weights take the group term, and how they are grouped, is `groups`'s.
"""

from __future__ import annotations

import fnmatch
import warnings
from typing import Any, Callable, Iterable, Union

import keras

from keras_l1l2plus import _keras
from keras_l1l2plus.factors import validate_flag, validate_penalty, validate_zero_grad
from keras_l1l2plus.regularizer import L1L2Plus
from keras_l1l2plus.roles import BIAS, is_normalization, regularizer_attributes, role, walk_layers
from keras_l1l2plus.steps import retrace

__all__ = ["GROUP_CHOICES", "feature_readers", "regularize"]

Exclude = Union[str, Iterable[str], Callable[[Any], bool], None]


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
) -> keras.layers.Layer:
    """Puts the four λs on every weight and bias of `model`, in place.

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
      `bias_regularizer`, ...) are set too, so the penalty survives `.keras`
      saving, `clone_model` and `to_json`. A variable of a layer that has no
      such attribute is regularized now, with a warning that it is not saved.
    - Replaces, never stacks: the selected variables' regularizers (Keras's
      own included) are replaced; where both λs of a role are 0 the
      regularizer is removed.
    - Frozen layers are regularized too, and stay frozen: Keras counts a
      regularizer only while its variable is trainable, so their penalty
      starts when they are unfrozen for fine-tuning (and the model
      recompiled, as Keras requires). Non-trainable variables (moving
      statistics) are skipped, and so are normalization layers (BatchNormalization, LayerNormalization,
      GroupNormalization, RMSNormalization) unless `normalization=True`, which
      regularizes their scale `gamma` as a weight and offset `beta` as a bias.

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
    Returns:
        `model`, regularized in place.
    """
    if not isinstance(model, keras.layers.Layer):
        raise TypeError(
            "Invalid value for argument `model`: expected a Keras model or layer. "
            f"Received: model={model!r} of type {type(model).__name__}"
        )
    l1_weight = validate_penalty(l1_weight, "l1_weight")
    l1_bias = validate_penalty(l1_bias, "l1_bias")
    l2_weight = validate_penalty(l2_weight, "l2_weight")
    l2_bias = validate_penalty(l2_bias, "l2_bias")
    zero_grad = validate_zero_grad(zero_grad)
    normalization = validate_flag(normalization, "normalization")
    proximal_weight = validate_flag(proximal_weight, "proximal_weight")
    proximal_bias = validate_flag(proximal_bias, "proximal_bias")
    group_weight = validate_penalty(group_weight, "group_weight")
    if groups not in GROUP_CHOICES:
        raise ValueError(
            f"Invalid value for argument `groups`: expected one of {GROUP_CHOICES}. Received: groups={groups!r}"
        )
    is_excluded, patterns = _exclusion(exclude)
    readers = feature_readers(model) if group_weight and groups == "inputs" else set()

    def regularizer_for(variable_role: str, layer: Any, attribute: str = "") -> L1L2Plus | None:
        group, kind = 0.0, "units"
        if variable_role == BIAS:
            l1, l2, prox = l1_bias, l2_bias, proximal_bias
        else:
            l1, l2, prox = l1_weight, l2_weight, proximal_weight
            # The kernel: the variable `kernel` of a layer whose attribute is `kernel_regularizer` (a
            # DepthwiseConv2D's `kernel` is saved as `depthwise_regularizer`: not a kernel here, so the
            # variable and the attribute that saves it agree).
            saved_as_kernel = hasattr(layer, "kernel_regularizer")
            kernel = attribute == "kernel_regularizer" or (attribute == "kernel" and saved_as_kernel)
            if groups == "units" or (groups == "both" and not kernel):
                group = group_weight
            elif kernel and (groups == "both" or id(layer) in readers):
                group, kind = group_weight, "inputs"
            if group and kernel and isinstance(layer, _TRANSPOSED):  # kernel (*taps, filters, in): axes swapped
                kind = "inputs" if kind == "units" else "units"
        if not (l1 or l2 or group):
            return None
        return L1L2Plus(l1=l1, l2=l2, zero_grad=zero_grad, proximal=prox, group=group, groups=kind)

    # A layer is excluded when it, or a layer that contains it, matches.
    matches: dict[int, bool] = {}
    layers = []
    for chain in walk_layers(model):
        for layer in chain:
            if id(layer) not in matches:
                matches[id(layer)] = bool(is_excluded(layer))
        layers.append((chain[-1], any(matches[id(layer)] for layer in chain)))
    matched = [layer for layer, _ in layers if matches[id(layer)]]
    unmatched = [p for p in patterns if not any(fnmatch.fnmatchcase(layer.name, p) for layer in matched)]
    if unmatched:
        names = sorted({layer.name for layer, _ in layers})
        raise ValueError(
            f"Invalid value for argument `exclude`: the pattern(s) {unmatched} match no "
            f"layer of the model. Layer names: {names}. Received: exclude={exclude!r}"
        )
    if exclude is not None and callable(exclude) and not matched:
        warnings.warn(
            f"regularize(): the `exclude` predicate {exclude!r} matched no layer.",
            stacklevel=2,
        )

    unsaved = []
    for layer, excluded in layers:
        if excluded:
            continue
        if is_normalization(layer) and not normalization:
            continue
        attributes = regularizer_attributes(layer)
        for attribute, attribute_role in attributes.items():
            setattr(layer, attribute, regularizer_for(attribute_role, layer, attribute))
        stems = {a.lstrip("_")[: -len("_regularizer")] for a in attributes}
        for variable in _keras.own_trainable_variables(layer):
            variable.regularizer = regularizer_for(role(layer, variable.name), layer, variable.name)
            if not _has_attribute_for(variable.name, stems):
                unsaved.append(variable.path)
    if unsaved:
        warnings.warn(
            "regularize(): these variables are regularized now, but their layers have no "
            "regularizer attribute to save it in, so a saved and reloaded model will not "
            f"have the penalty on them: {unsaved}",
            stacklevel=2,
        )
    retrace(model)
    return model


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


# Variable names whose layer attribute is not `<name>_regularizer`.
_ATTRIBUTE_STEMS = {
    "kernel": ("kernel", "depthwise"),  # DepthwiseConv2D's kernel: depthwise_regularizer
    "recurrent_kernel": ("recurrent",),
    "depthwise_kernel": ("depthwise",),
    "pointwise_kernel": ("pointwise",),
}


def _has_attribute_for(variable_name: str, stems: set[str]) -> bool:
    candidates = _ATTRIBUTE_STEMS.get(variable_name, (variable_name,))
    return any(stem in stems for stem in candidates)

"""Which variables are weights and which are biases: the package's one rule.

    bias   = the additive offset: a variable (or regularizer attribute) named
             `bias` or `*_bias`, and the offset `beta` of a normalization layer
    weight = every other trainable variable: kernels, recurrent kernels,
             depthwise and pointwise kernels, embeddings, the scale `gamma`
             of a normalization layer, and any other variable of a layer

`regularize` uses it to choose λs, `penalty_terms` to split the penalty into
`*_weight` and `*_bias` terms, so the two always agree.
"""

from __future__ import annotations

import re
from typing import Any, Iterator, NamedTuple

import keras

from keras_l1l2plus import _keras

__all__ = [
    "BIAS",
    "WEIGHT",
    "OwnedVariable",
    "PlacedLayer",
    "is_normalization",
    "owned_trainable_variables",
    "placed_layers",
    "regularizer_attributes",
    "role",
    "walk_layers",
]

WEIGHT = "weight"
BIAS = "bias"

_NORMALIZATION_LAYERS = tuple(
    cls
    for cls in (
        getattr(keras.layers, name, None)
        for name in (
            "BatchNormalization",
            "LayerNormalization",
            "GroupNormalization",
            "RMSNormalization",
        )
    )
    if cls is not None
)

# `kernel_regularizer`, `_bias_regularizer`, ... but not `activity_regularizer`,
# which penalizes a layer's outputs, not a variable.
_REGULARIZER_ATTRIBUTE = re.compile(r"^_?(?!activity_)([a-z]\w*)_regularizer$")


class OwnedVariable(NamedTuple):
    """A trainable variable, the layer that created it, and its role.

    `layer_path` names that layer inside the model: the names of the layers
    that contain it and its own, joined by "/" (`"dense_1"`,
    `"lstm/lstm_cell"`, `"encoder/attention/query"`), the model itself left out.
    """

    layer: Any
    variable: Any
    role: str
    layer_path: str


def is_normalization(layer: Any) -> bool:
    """True for BatchNormalization, LayerNormalization, GroupNormalization, RMSNormalization."""
    return isinstance(layer, _NORMALIZATION_LAYERS)


def role(layer: Any, name: str) -> str:
    """`BIAS` or `WEIGHT` for the variable `name` of `layer`.

    `name` is a variable's name (`"bias"`, `"kernel"`, ...) or the stem of a
    regularizer attribute (`"bias"` for `bias_regularizer`).
    """
    if name == "bias" or name.endswith("_bias"):
        return BIAS
    if name == "beta" and is_normalization(layer):
        return BIAS
    return WEIGHT


def regularizer_attributes(layer: Any) -> dict[str, str]:
    """`{attribute: role}` for the layer's own variable-regularizer attributes.

    These are the attributes a layer reads when it creates its variables and
    writes in `get_config` (`kernel_regularizer`, `recurrent_regularizer`,
    MultiHeadAttention's `_bias_regularizer`, ...).
    """
    found = {}
    for attribute in vars(layer):
        match = _REGULARIZER_ATTRIBUTE.match(attribute)
        if match:
            found[attribute] = role(layer, match.group(1))
    return found


def walk_layers(model: Any) -> Iterator[tuple[Any, ...]]:
    """Every layer of `model`, `model` first, depth first, as its chain of layers.

    Each item is `(model, ..., parent, layer)`: the layer last, preceded by the
    layers that contain it.
    """

    def walk(chain):
        yield chain
        for sublayer in _keras.flatten_layers(chain[-1]):
            yield from walk((*chain, sublayer))

    yield from walk((model,))


class PlacedLayer(NamedTuple):
    """A layer of a model and where it is.

    `path` is its `OwnedVariable.layer_path` (the first way to it, depth
    first); `paths` every way to it (a layer held by two parents has two);
    `containers` the layers that contain it on any of them, the model first.
    """

    layer: Any
    path: str
    paths: tuple[str, ...]
    containers: tuple[Any, ...]


def placed_layers(model: Any) -> list[PlacedLayer]:
    """Every layer of `model` once, `model` first, depth first, with where it is (`PlacedLayer`)."""
    found: dict[int, tuple[Any, list, dict]] = {}
    for chain in walk_layers(model):
        layer = chain[-1]
        path = "/".join(item.name for item in chain[1:]) or model.name
        _, paths, containers = found.setdefault(id(layer), (layer, [], {}))
        if path not in paths:
            paths.append(path)
        for container in chain[:-1]:
            containers.setdefault(id(container), container)
    return [
        PlacedLayer(layer, paths[0], tuple(paths), tuple(containers.values()))
        for layer, paths, containers in found.values()
    ]


def owned_trainable_variables(model: Any) -> Iterator[OwnedVariable]:
    """Every trainable variable of `model` once, with the layer that created it.

    The variables are those of `model.trainable_weights`, which is what Keras
    walks to add regularization penalties to the loss.
    """
    owners: dict[int, tuple[Any, str]] = {}
    for chain in walk_layers(model):
        path = "/".join(layer.name for layer in chain[1:]) or model.name
        for variable in _keras.own_trainable_variables(chain[-1]):
            owners.setdefault(id(variable), (chain[-1], path))
    for variable in model.trainable_weights:
        layer, path = owners.get(id(variable), (model, model.name))
        yield OwnedVariable(layer, variable, role(layer, variable.name), path)

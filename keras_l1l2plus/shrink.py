"""`shrink`: a smaller, faster, ordinary Keras model with the same outputs, from a model's zeros.

Structured sparsity (group lasso) makes whole units of a layer exactly zero;
scattered zeros save nothing, removed units do. For a Dense kernel `W` of
shape (in, out) or a Conv kernel of shape (*taps, in, out):

    dead unit j     its incoming column W[..., :, j] is exactly 0 on the kept
                    inputs: its output is the constant c_j = activation(b_j),
                    at every example and position
    unread unit j   every layer that reads it has its rows W_next[..., j, :]
                    exactly 0 (on the readers' kept units): nothing reads it

    cut unit j      every way from it to its readers passes a BatchNormalization
                    whose γ_j is exactly 0: what they read is that layer's β_j
                    (through what follows), whatever the unit computes; the
                    group lasso on γ (network slimming) makes such channels

Any of them is removed: the producer's column and bias entry, and the
readers' rows. A dead unit's constant is folded into each reader's bias,

    b_next += Σ_j c_j · Σ_taps W_next[taps, j, :]

exactly for a Dense reader and a Conv reader with padding "valid" (every
output position sums every tap). A Conv reader with padding "same" or
"causal" sees zeros at the borders, not c_j, so a constant is folded there
only when c_j == 0; otherwise the unit is kept. Zero input features (rows of
every reader of a model input that are 0) are removed the same way: the small
model reads fewer input columns (`ShrinkReport.select_features`).

Between a producer and its readers the constant is followed through layers
that act on each channel alone: Dropout and noise layers, elementwise
activations, BatchNormalization (sliced), pooling and global pooling, and
Flatten (channel c of an (H, W, C) map is the inputs h·W·C + w·C + c of the
next Dense). Each such layer is run on the constant map itself, and a unit is
folded only if its values come out the same at every position (so a pooling
layer's "same" padding is checked, not assumed). Anything else between them
(Add, Concatenate, Multiply, LayerNormalization, which normalizes across
units, Reshape, a shared layer, a model output, an unknown layer) couples
units or changes their layout: the producer is left whole, and the report
says why.

`shrink` reads the model's graph from its public functional config, builds
the small model with `keras.Model.from_config` from the layers' own configs
(standard Keras layers stay standard: the model loads anywhere without this
package), sets its weights, and checks its outputs against the original's.
"""

from __future__ import annotations

import copy
import dataclasses
import math
from typing import Any

import keras
import numpy as np
from keras import ops

__all__ = ["LayerShrink", "ShrinkReport", "shrink"]

L = keras.layers


def _classes(*names: str) -> tuple:
    """The `keras.layers` classes of `names` that this Keras has."""
    return tuple(cls for cls in (getattr(L, name, None) for name in names) if cls is not None)


_DENSE = _classes("Dense")
_CONV = _classes("Conv1D", "Conv2D", "Conv3D")
_IDENTITY = _classes(
    "Dropout",
    "SpatialDropout1D",
    "SpatialDropout2D",
    "SpatialDropout3D",
    "GaussianNoise",
    "GaussianDropout",
    "AlphaDropout",
    "ActivityRegularization",
)
_ELEMENTWISE = _classes("Activation", "ReLU", "LeakyReLU", "ELU")
_POOLING = _classes(
    "MaxPooling1D",
    "MaxPooling2D",
    "MaxPooling3D",
    "AveragePooling1D",
    "AveragePooling2D",
    "AveragePooling3D",
    "GlobalMaxPooling1D",
    "GlobalMaxPooling2D",
    "GlobalMaxPooling3D",
    "GlobalAveragePooling1D",
    "GlobalAveragePooling2D",
    "GlobalAveragePooling3D",
)
_MIXING_ACTIVATIONS = {"softmax", "log_softmax", "sparsemax"}  # across units: no per-unit constant
_PROBE_SIZE = 17  # an unknown spatial size in the constant maps the layers are run on: prime, so "same" pads
_CHECK_BATCH = 32
_UNKNOWN_DIM = 8  # an input dimension of unknown size, in the generated check batch
FEATURES = ("remove", "keep")


@dataclasses.dataclass
class LayerShrink:
    """One layer of the model, before and after `shrink`.

    `units` are a Dense layer's units or a Conv layer's filters (None for
    other layers); `params` its weights' size (`layer.count_params()`);
    `macs` the multiply-adds of its kernel per example, summed over its
    calls (Dense: in·out per position; Conv: output positions · taps · in ·
    out; 0 for every other layer; None when a spatial size is unknown);
    `removed` the indices of its removed output units; `left_whole` why its
    units could not be removed, or None.
    """

    name: str
    class_name: str
    units_before: int | None
    units_after: int | None
    params_before: int
    params_after: int
    macs_before: int | None
    macs_after: int | None
    removed: np.ndarray
    left_whole: str | None = None

    def to_dict(self) -> dict:
        row = dataclasses.asdict(self)
        row["removed"] = [int(i) for i in self.removed]
        return row


@dataclasses.dataclass
class ShrinkReport:
    """What `shrink` removed, layer by layer, and how to feed the small model.

    Attributes:
        layers: a `LayerShrink` per layer, in the model's order.
        kept_features: `{input name: numpy int array}`, the columns (last
            axis) of each model input the small model reads.
        left_whole: `{layer or input name: reason}` for every producer of
            units that was not cut, and why.
        max_error: the largest |small − original| of the check, over all outputs.
        rtol, atol: the check's tolerance (`atol` None: `rtol` × the largest
            |value| of each output).
    """

    layers: list
    kept_features: dict
    left_whole: dict
    max_error: float
    rtol: float
    atol: float | None
    input_names: list = dataclasses.field(default_factory=list)
    input_structure: str = "single"  # "single", "list" or "dict": how the model takes its inputs

    def totals(self) -> dict:
        """The sums over the layers: params and multiply-adds before and after."""

        def total(key):
            values = [getattr(row, key) for row in self.layers]
            return None if any(v is None for v in values) else int(sum(values))

        return {key: total(key) for key in ("params_before", "params_after", "macs_before", "macs_after")}

    def select_features(self, x: Any) -> Any:
        """The small model's inputs from the original model's: each input's kept columns (last axis).

        Args:
            x: what the original model takes: an array, or a list or a dict
                (by input name) of arrays for a model of several inputs.

        Returns:
            The same structure, of numpy arrays indexed `[..., kept]`.
        """
        if self.input_structure == "dict":
            if not isinstance(x, dict):
                raise TypeError(
                    "Invalid value for argument `x`: expected a dict of arrays keyed by the input names "
                    f"{self.input_names}. Received: x of type {type(x).__name__}"
                )
            return {name: np.asarray(x[name])[..., self.kept_features[name]] for name in self.input_names}
        if self.input_structure == "list":
            if len(self.input_names) == 1 and not isinstance(x, (list, tuple, dict)):
                return np.asarray(x)[..., self.kept_features[self.input_names[0]]]  # one input, given bare
            if not isinstance(x, (list, tuple)) or len(x) != len(self.input_names):
                raise TypeError(
                    f"Invalid value for argument `x`: expected a list of {len(self.input_names)} arrays, one "
                    f"for each input {self.input_names}. Received: x of type {type(x).__name__}"
                )
            return [np.asarray(v)[..., self.kept_features[n]] for v, n in zip(x, self.input_names)]
        return np.asarray(x)[..., self.kept_features[self.input_names[0]]]

    def to_dict(self) -> dict:
        """The report as plain Python values (lists, not arrays)."""
        return {
            "layers": [row.to_dict() for row in self.layers],
            "kept_features": {name: [int(i) for i in kept] for name, kept in self.kept_features.items()},
            "left_whole": dict(self.left_whole),
            "totals": self.totals(),
            "max_error": self.max_error,
            "rtol": self.rtol,
            "atol": self.atol,
        }

    def __str__(self) -> str:
        def show(value):
            return "-" if value is None else f"{value:,}"

        head = ("layer", "class", "units", "params", "multiply-adds", "removed units")
        rows = []
        for row in self.layers:
            removed = ", ".join(str(int(i)) for i in row.removed[:8]) + (" ..." if len(row.removed) > 8 else "")
            units = "-" if row.units_before is None else f"{row.units_before} -> {row.units_after}"
            rows.append(
                (
                    row.name,
                    row.class_name,
                    units,
                    f"{show(row.params_before)} -> {show(row.params_after)}",
                    f"{show(row.macs_before)} -> {show(row.macs_after)}",
                    removed,
                )
            )
        t = self.totals()
        rows.append(
            (
                "total",
                "",
                "",
                f"{show(t['params_before'])} -> {show(t['params_after'])}",
                f"{show(t['macs_before'])} -> {show(t['macs_after'])}",
                "",
            )
        )
        widths = [max(len(str(r[i])) for r in [head, *rows]) for i in range(len(head))]
        lines = ["  ".join(str(c).ljust(w) for c, w in zip(r, widths)).rstrip() for r in [head, *rows]]
        lines.insert(1, "  ".join("-" * w for w in widths))
        lines.insert(-1, lines[1])
        for name, kept in self.kept_features.items():
            lines.append(f"input {name}: {len(kept)} features kept")
        for name, reason in self.left_whole.items():
            lines.append(f"left whole: {name}: {reason}")
        tolerance = f"atol={self.atol:g}" if self.atol is not None else "atol=rtol*max|output|"
        lines.append(f"check: max |small - original| = {self.max_error:.3g} (rtol={self.rtol:g}, {tolerance})")
        return "\n".join(lines)


# ---------------------------------------------------------------------------------------------- the graph


def _is_tensor(value: Any) -> bool:
    return isinstance(value, dict) and value.get("class_name") == "__keras_tensor__"


def _tensors(value: Any) -> list:
    """The serialized Keras tensors in a node's args or kwargs."""
    if _is_tensor(value):
        return [value]
    if isinstance(value, dict):
        return [t for v in value.values() for t in _tensors(v)]
    if isinstance(value, (list, tuple)):
        return [t for v in value for t in _tensors(v)]
    return []


def _is_ref(value: Any) -> bool:
    return isinstance(value, (list, tuple)) and len(value) == 3 and isinstance(value[0], str)


def _refs(structure: Any) -> tuple[list, str, list]:
    """The tensor refs of a config's `input_layers`/`output_layers`, how they nest, and the dict keys."""
    if _is_ref(structure):
        return [tuple(structure)], "single", []
    if isinstance(structure, dict):
        return [tuple(v) for v in structure.values()], "dict", list(structure)
    return [tuple(v) for v in structure], "list", []


class _Graph:
    """A functional model's layer calls, read from its config: who reads which tensor, in what order.

    A tensor is named by its `keras_history` (layer name, node index, tensor index).
    """

    def __init__(self, model: Any, config: dict):
        self.model = model
        self.config = config
        self.entries = {entry["name"]: entry for entry in config["layers"]}
        self.layer = {}
        for name, entry in self.entries.items():
            if entry["class_name"] == "InputLayer":
                continue
            try:
                self.layer[name] = model.get_layer(name)
            except ValueError:  # an operation Keras names anew when it rebuilds a model (3.8's mixed-precision
                continue  # `Cast` of the inputs): it has no weights, and nothing here looks it up
        self.calls = {name: len(e["inbound_nodes"]) for name, e in self.entries.items()}
        self.readers: dict = {}  # ref -> [(layer name, node index, whether the ref is its one input)]
        self.shape: dict = {}  # ref -> its shape, batch first
        self.dtype: dict = {}
        self.nodes = []  # (layer name, node index, refs read), in topological order
        pending = []
        for name, entry in self.entries.items():
            for k, node in enumerate(entry["inbound_nodes"]):
                tensors = _tensors(node)
                refs = [tuple(t["config"]["keras_history"]) for t in tensors]
                only = len(node["args"]) == 1 and _is_tensor(node["args"][0]) and not _tensors(node["kwargs"])
                for t, ref in zip(tensors, refs):
                    self.shape[ref] = tuple(t["config"]["shape"])
                    self.dtype[ref] = t["config"].get("dtype", "float32")
                    self.readers.setdefault(ref, []).append((name, k, only))
                pending.append((name, k, refs))
        self.inputs, self.input_structure, self.input_keys = _refs(config["input_layers"])
        outputs, _, _ = _refs(config["output_layers"])
        self.outputs = set(outputs)
        for ref in self.inputs:
            entry = self.entries[ref[0]]["config"]
            self.shape[ref] = tuple(entry["batch_shape"])
            self.dtype[ref] = entry.get("dtype", "float32")
        made = {ref[:2] for ref in self.inputs}  # the calls whose outputs exist
        while pending:  # Kahn's order over the calls
            ready = [node for node in pending if all(ref[:2] in made for ref in node[2])]
            if not ready:  # pragma: no cover - a config Keras itself could not load
                raise ValueError("shrink could not order the model's layer calls")
            for node in ready:
                pending.remove(node)
                self.nodes.append(node)
                made.add(node[:2])

    @property
    def input_names(self) -> list:
        return [ref[0] for ref in self.inputs]


def _activation_name(config: dict) -> Any:
    return config.get("activation", "linear")


def _conv_ok(layer: Any) -> str | None:
    """Why a Conv layer's kernel cannot be cut by input or output channel, or None."""
    config = layer.get_config()
    if config.get("data_format", "channels_last") != "channels_last":
        return f"`{layer.name}` is channels_first"
    if config.get("groups", 1) != 1:
        return f"`{layer.name}` is a grouped convolution (groups={config['groups']})"
    return None


def _producer_problem(graph: _Graph, name: str) -> str | None:
    """Why the output units of Dense/Conv `name` cannot be removed, or None."""
    layer = graph.layer[name]
    if graph.calls[name] != 1:
        return f"shared: called {graph.calls[name]} times"
    if isinstance(layer, _CONV) and _conv_ok(layer):
        return _conv_ok(layer)
    activation = _activation_name(layer.get_config())
    if not isinstance(activation, str) or activation in _MIXING_ACTIVATIONS:
        return f"its activation {activation!r} is not known to act on each unit alone"
    return None


def _kind(graph: _Graph, name: str, shape: tuple) -> tuple[str | None, str | None]:
    """How the layer `name`, reading a tensor of `shape` alone, treats its channels: (kind, why not)."""
    layer = graph.layer[name]
    config = layer.get_config()
    cls = type(layer).__name__
    if isinstance(layer, _DENSE):
        return "reader", None
    if isinstance(layer, _CONV):
        problem = _conv_ok(layer)
        return ("reader", None) if problem is None else (None, f"it is read by {problem}")
    if isinstance(layer, L.LayerNormalization):
        return None, (
            f"it is read by `{name}` (LayerNormalization), which normalizes across units: a removed "
            "unit's constant takes part in the live units' mean and variance"
        )
    if isinstance(layer, _IDENTITY):
        return "map", None
    if isinstance(layer, _ELEMENTWISE):
        activation = config.get("activation", "relu")
        if isinstance(activation, str) and activation not in _MIXING_ACTIVATIONS:
            return "map", None
        return None, f"it is read by `{name}` ({cls}) with activation {activation!r}, which mixes units"
    if isinstance(layer, L.BatchNormalization):
        if config["axis"] in (-1, len(shape) - 1):
            return "batchnorm", None
        return None, f"it is read by `{name}` (BatchNormalization) over axis {config['axis']}, not the units' axis"
    if isinstance(layer, _POOLING):
        if config.get("data_format", "channels_last") == "channels_last":
            return "map", None
        return None, f"it is read by `{name}` ({cls}), channels_first"
    if isinstance(layer, L.Flatten):
        if config.get("data_format", "channels_last") == "channels_last" and None not in shape[1:]:
            return "flatten", None
        return None, f"it is read by `{name}` (Flatten) of a channels_first or unknown-size map"
    return None, f"it is read by `{name}` ({cls}), which shrink does not cut through"


def _tree(graph: _Graph, root: tuple) -> tuple[Any, str | None]:
    """The layers between the tensor `root` and the kernels that read it, or why there is no such cut.

    Returns `((passes, readers), None)`: `passes` the (layer, kind, in ref,
    out ref) of the per-channel layers in order, parents first, `readers`
    the (layer, in ref) of the Dense/Conv layers that read it; or `(None,
    reason)`.
    """
    passes, readers = [], []
    stack = [root]
    while stack:
        ref = stack.pop()
        if ref in graph.outputs:
            via = "" if ref == root else f" (through `{ref[0]}`)"
            return None, f"its output is a model output{via}"
        for name, _, only in graph.readers.get(ref, []):
            if name not in graph.layer:  # an operation the model does not list as a layer (see `_Graph`)
                return (
                    None,
                    f"it is read by `{name}` ({graph.entries[name]['class_name']}), an operation shrink "
                    "does not cut through",
                )
            cls = type(graph.layer[name]).__name__
            if graph.calls[name] != 1:
                return None, f"it is read by `{name}` ({cls}), a shared layer called {graph.calls[name]} times"
            if not only:
                return None, f"it is read by `{name}` ({cls}) together with other tensors, which couples their units"
            kind, why = _kind(graph, name, graph.shape[ref])
            if kind is None:
                return None, why
            if kind == "reader":
                readers.append((name, ref))
            else:
                out = (name, 0, 0)
                passes.append((name, kind, ref, out))
                stack.append(out)
    return (passes, readers), None


def _bn_gamma(layer: Any) -> np.ndarray | None:
    """A BatchNormalization's γ (None when it has no scale)."""
    gamma = getattr(layer, "gamma", None)
    return None if gamma is None else ops.convert_to_numpy(gamma).astype("float64")


def _kernel(layer: Any) -> np.ndarray:
    return ops.convert_to_numpy(layer.kernel).astype("float64")


def _bias(layer: Any, units: int) -> np.ndarray:
    bias = getattr(layer, "bias", None)
    return np.zeros(units) if bias is None else ops.convert_to_numpy(bias).astype("float64")


def _rows(kernel: np.ndarray, features: np.ndarray) -> np.ndarray:
    """A kernel's rows `features`, summed over its taps: shape (len(features), out)."""
    flat = kernel.reshape(-1, kernel.shape[-2], kernel.shape[-1])
    return flat[:, features, :].sum(axis=0)


def _fold(values: np.ndarray, kernel: np.ndarray, features: np.ndarray) -> np.ndarray:
    """Σ_f values[f] · Σ_taps kernel[taps, f, :]: what constant inputs `features` add to a reader's bias."""
    if len(features) == 0:
        return np.zeros(kernel.shape[-1])
    return values[features] @ _rows(kernel, features)


class _Plan:
    """Which units go, found by repeating the per-tensor analysis until nothing more can go."""

    def __init__(self, graph: _Graph, features: str):
        self.graph = graph
        self.features = features
        self.left_whole: dict = {}
        self.trees: dict = {}  # root ref -> (passes, readers)
        self.roots = []  # in topological order
        for ref in graph.inputs:
            if features == "keep":
                continue
            tree, why = _tree(graph, ref)
            if tree is None:
                self.left_whole[ref[0]] = f"input features kept: {why}"
            else:
                self.roots.append(ref)
                self.trees[ref] = tree
        for name, k, _ in graph.nodes:
            layer = graph.layer.get(name)
            if k != 0 or not isinstance(layer, _DENSE + _CONV):
                continue
            why = _producer_problem(graph, name)
            tree = None
            if why is None:
                tree, why = _tree(graph, (name, 0, 0))
            if tree is None:
                self.left_whole[name] = why
            else:
                self.roots.append((name, 0, 0))
                self.trees[(name, 0, 0)] = tree
        self.reader_of = {}  # reader name -> (root, in ref)
        self.pass_of = {}  # pass-through name -> (root, out ref)
        for root, (passes, readers) in self.trees.items():
            for name, in_ref in readers:
                self.reader_of[name] = (root, in_ref)
            for name, _, _, out in passes:
                self.pass_of[name] = (root, out)
        self.removed = {root: np.zeros(self.channels(root), bool) for root in self.roots}
        self.folded = dict(self.removed)  # the removed units whose constant is folded
        self.values: dict = {}  # root -> {ref: the constant map's values (F,)}
        self.features_of: dict = {}  # root -> {ref: (R, C) feature index of unit c}
        for _ in range(len(graph.nodes) + 2):
            changed = False
            for root in self.roots:
                removed, folded = self.analyze(root)
                changed |= not np.array_equal(removed, self.removed[root])
                self.removed[root], self.folded[root] = removed, folded
            if not changed:
                break

    def channels(self, ref: tuple) -> int:
        return self.graph.shape[ref][-1]

    def out_keep(self, name: str) -> np.ndarray | None:
        """The kept output units of Dense/Conv `name` (None: all)."""
        root = (name, 0, 0)
        return ~self.removed[root] if root in self.removed else None

    def in_keep(self, name: str) -> np.ndarray | None:
        """The kept input features (last axis) of reader `name` (None: all)."""
        if name not in self.reader_of:
            return None
        root, ref = self.reader_of[name]
        return self.keep_at(root, ref)

    def keep_at(self, root: tuple, ref: tuple) -> np.ndarray:
        """The kept features of the tensor `ref` of the tree of `root`."""
        index = self.features_of[root][ref]
        keep = np.ones(self.graph.shape[ref][-1], bool)
        keep[index[:, self.removed[root]].ravel()] = False
        return keep

    def fold(self, name: str) -> np.ndarray:
        """What the removed constant inputs of reader `name` add to its bias (zeros if none)."""
        layer = self.graph.layer[name]
        units = _kernel(layer).shape[-1]
        if name not in self.reader_of:
            return np.zeros(units)
        root, ref = self.reader_of[name]
        index = self.features_of[root][ref][:, self.folded[root]].ravel()
        return _fold(self.values[root][ref], _kernel(layer), index)

    def analyze(self, root: tuple) -> tuple[np.ndarray, np.ndarray]:
        """The units of `root` that can go now, and those of them whose constant is folded."""
        graph = self.graph
        passes, readers = self.trees[root]
        units = self.channels(root)
        dead = np.zeros(units, bool)
        constant = np.zeros(units)
        if root not in graph.inputs:
            layer = graph.layer[root[0]]
            kernel = _kernel(layer)
            keep = self.in_keep(root[0])
            if keep is not None:
                kernel = kernel[..., keep, :]
            dead = np.all(kernel.reshape(-1, units) == 0, axis=0)
            bias = _bias(layer, units) + self.fold(root[0])
            dtype = layer.compute_dtype
            constant = ops.convert_to_numpy(layer.activation(ops.convert_to_tensor(bias.astype(dtype)))).astype("f8")
            constant = np.where(dead, constant, 0.0)
        # Run the per-channel layers on the constant map: a unit stays foldable while its values stay constant.
        shape = [1] + [_PROBE_SIZE if d is None else d for d in graph.shape[root][1:]]
        maps = {root: np.broadcast_to(constant, shape).astype(graph.dtype[root])}
        features = {root: np.arange(units)[None, :]}
        foldable = np.isfinite(constant)
        depends = {root: np.ones(units, bool)}  # whether a unit's value at that tensor depends on its producer's
        for name, kind, in_ref, out_ref in passes:
            out = ops.convert_to_numpy(graph.layer[name](ops.convert_to_tensor(maps[in_ref])))
            maps[out_ref] = out
            index = features[in_ref]
            depends[out_ref] = depends[in_ref]
            if kind == "batchnorm":  # a channel with γ = 0 is β whatever comes in: its unit is a constant after
                gamma = _bn_gamma(graph.layer[name])
                if gamma is not None:
                    depends[out_ref] = depends[in_ref] & ~np.all(gamma[index] == 0, axis=0)
            if kind == "flatten":
                width = maps[in_ref].shape[-1]
                positions = int(np.prod(maps[in_ref].shape[1:-1]))
                index = (np.arange(positions)[:, None, None] * width + index[None]).reshape(-1, units)
            features[out_ref] = index
        values = {}
        for ref, value in maps.items():
            flat = value.reshape(-1, value.shape[-1]).astype("float64")
            same = np.all(flat == flat[0], axis=0) & np.isfinite(flat[0])
            foldable &= np.all(same[features[ref]], axis=0)
            values[ref] = flat[0]
        unread = np.ones(units, bool)
        cut = np.ones(units, bool)  # units that no reader's input depends on (a γ = 0 on every way there)
        for _, in_ref in readers:
            cut &= ~depends[in_ref]
        if readers:
            dead = dead | cut
        for name, in_ref in readers:
            layer = graph.layer[name]
            kernel = _kernel(layer)
            out_keep = self.out_keep(name)
            if out_keep is not None:
                kernel = kernel[..., out_keep]
            index = features[in_ref]
            rows = np.moveaxis(kernel, -2, 0)[index]  # (R, C, *taps, out)
            unread &= np.all(rows.reshape(*index.shape, -1) == 0, axis=(0, 2))
            if isinstance(layer, _CONV) and layer.get_config()["padding"] != "valid":
                # Zero padding: only a constant 0 stays what the reader sees at the borders.
                foldable &= np.all(values[in_ref][index] == 0, axis=0)
        self.values[root], self.features_of[root] = values, features
        folded = dead & foldable
        removed = folded | unread
        if removed.all():  # a layer keeps one unit
            removed[0] = folded[0] = False
        return removed, folded & removed


# ---------------------------------------------------------------------------------------------- building


def _is_keras_own(config: dict) -> bool:
    """Whether a serialized object is one of Keras's own (module `keras` or `keras.*`, not registered)."""
    module = str(config.get("module", ""))
    return (module == "keras" or module.startswith("keras.")) and config.get("registered_name") is None


def _strip_custom(value: Any) -> Any:
    """`value` (a config) without regularizers and constraints that are not Keras's own.

    The small model is an inference model of standard layers; a regularizer
    of this package (or any other) would make it need that package to load.
    """
    if isinstance(value, dict):
        out = {}
        for key, item in value.items():
            if (
                (key.endswith("_regularizer") or key.endswith("_constraint"))
                and isinstance(item, dict)
                and not _is_keras_own(item)
            ):
                out[key] = None
            else:
                out[key] = _strip_custom(item)
        return out
    if isinstance(value, list):
        return [_strip_custom(item) for item in value]
    return value


def _custom_objects(model: Any) -> dict:
    """Every layer class of `model` (nested models too), so `from_config` finds unregistered ones."""
    found = {}
    stack = list(model.layers)
    while stack:
        layer = stack.pop()
        found[type(layer).__name__] = type(layer)
        stack.extend(getattr(layer, "layers", []) or [])
    return found


def _build(graph: _Graph, plan: _Plan) -> tuple[Any, dict, dict]:
    """The small model, `{input name: kept columns}`, and `{layer name: its kept output features}` of the cut layers."""
    config = _strip_custom(copy.deepcopy(graph.config))
    kept_inputs = {}
    for ref in graph.inputs:
        keep = ~plan.removed[ref] if ref in plan.removed else np.ones(graph.shape[ref][-1], bool)
        kept_inputs[ref[0]] = np.flatnonzero(keep)
    weights = {}
    masks = {}
    for entry in config["layers"]:
        entry.pop("build_config", None)
        name, layer_config = entry["name"], entry["config"]
        if entry["class_name"] == "InputLayer":
            layer_config["batch_shape"] = list(layer_config["batch_shape"])
            layer_config["batch_shape"][-1] = len(kept_inputs[name])
            continue
        if name not in graph.layer:  # an operation without weights that Keras rebuilds itself (see `_Graph`)
            continue
        layer = graph.layer[name]
        if isinstance(layer, _DENSE + _CONV) and (name in plan.reader_of or (name, 0, 0) in plan.removed):
            kernel, units = _kernel(layer), layer_config.get("units", layer_config.get("filters"))
            bias = _bias(layer, units) + plan.fold(name)
            keep_in, keep_out = plan.in_keep(name), plan.out_keep(name)
            keep_out = np.ones(units, bool) if keep_out is None else keep_out
            if keep_in is not None:
                kernel = kernel[..., keep_in, :]
            kernel, bias = kernel[..., keep_out], bias[keep_out]
            layer_config["units" if "units" in layer_config else "filters"] = int(keep_out.sum())
            use_bias = layer_config.get("use_bias", True) or bool(np.any(bias != 0))
            layer_config["use_bias"] = use_bias
            dtype = ops.convert_to_numpy(layer.kernel).dtype
            weights[name] = [kernel.astype(dtype)] + ([bias.astype(dtype)] if use_bias else [])
            masks[name] = keep_out
        elif name in plan.pass_of:
            root, out = plan.pass_of[name]
            keep = plan.keep_at(root, out)
            masks[name] = keep
            if isinstance(layer, L.BatchNormalization):
                weights[name] = [w[..., keep] for w in layer.get_weights()]
            else:
                weights[name] = layer.get_weights()
        else:
            weights[name] = layer.get_weights()
    small = keras.Model.from_config(config, custom_objects=_custom_objects(graph.model))
    for name, values in weights.items():
        small.get_layer(name).set_weights(values)
    return small, kept_inputs, masks


# ---------------------------------------------------------------------------------------------- the check


def _check_batch(graph: _Graph) -> Any:
    """A seeded standard-normal batch of 32 for every input, in the model's input structure."""
    rng = np.random.default_rng(0)
    arrays = []
    for ref in graph.inputs:
        dtype = graph.dtype[ref]
        if "float" not in str(dtype):
            raise ValueError(
                f"Invalid value for argument `x`: the model's input `{ref[0]}` has dtype {dtype}, so shrink "
                "cannot check the small model on random normal data; pass a batch of real inputs, "
                f"`shrink(model, x)`. Received: x=None"
            )
        shape = [_CHECK_BATCH] + [_UNKNOWN_DIM if d is None else d for d in graph.shape[ref][1:]]
        arrays.append(rng.standard_normal(shape).astype(dtype))
    return _structure(graph, arrays)


def _structure(graph: _Graph, arrays: list) -> Any:
    if graph.input_structure == "dict":
        return dict(zip(graph.input_keys, arrays))
    return arrays[0] if graph.input_structure == "single" else arrays


def _numpy_outputs(outputs: Any) -> list:
    return [ops.convert_to_numpy(o).astype("float64") for o in keras.tree.flatten(outputs)]


def _differs(original: np.ndarray, small: np.ndarray, rtol: float, atol: float | None) -> tuple[bool, float]:
    """Whether `small` is not `original` to the tolerance, and the largest |difference|."""
    if original.shape != small.shape:
        return True, math.inf
    if original.size == 0:
        return False, 0.0
    scale = rtol * float(np.max(np.abs(original))) if atol is None else atol
    error = np.abs(small - original)
    bad = bool(np.any(error > scale + rtol * np.abs(original)) or np.any(np.isnan(small) != np.isnan(original)))
    return bad, float(np.nanmax(error))


def _one(inputs: list) -> Any:
    """A model's inputs as it takes them: a lone tensor when there is one."""
    return inputs[0] if len(inputs) == 1 else inputs


def first_divergence(original: Any, small: Any, x: Any, x_small: Any, masks: dict, rtol: float, atol: Any) -> Any:
    """The first layer, in the original's order, whose outputs (its kept units) differ in `small`; or None.

    Returns `(layer name, max |difference|)`; a shared layer is compared at
    its first call. `masks` gives the kept units of the layers that lost some.
    """
    names, before, after = [], [], []
    for layer in original.layers:
        if isinstance(layer, L.InputLayer):
            continue
        try:
            output, small_output = layer.output, small.get_layer(layer.name).output
        except (AttributeError, ValueError):  # an InputLayer, a shared layer, a layer the small model lacks
            continue
        if isinstance(output, (list, tuple, dict)):
            continue
        names.append(layer.name)
        before.append(output)
        after.append(small_output)
    if not names:
        return None
    values = _numpy_outputs(keras.Model(_one(original.inputs), before)(x))
    small_values = _numpy_outputs(keras.Model(_one(small.inputs), after)(x_small))
    for name, value, small_value in zip(names, values, small_values):
        keep = masks.get(name)
        if keep is not None:
            value = value[..., keep]
        bad, error = _differs(value, small_value, rtol, atol)
        if bad:
            return name, error
    return None


# ---------------------------------------------------------------------------------------------- the report


def _macs(layer: Any, in_shape: tuple) -> int | None:
    """A Dense or Conv call's multiply-adds per example (0 for other layers; None if a size is unknown)."""
    if not isinstance(layer, _DENSE + _CONV):
        return 0
    kernel = layer.kernel.shape
    if isinstance(layer, _DENSE):
        positions = in_shape[1:-1]
    else:
        positions = layer.compute_output_shape(in_shape)[1:-1]
    if any(d is None for d in positions):
        return None
    return int(np.prod(positions, dtype=np.int64)) * int(np.prod(kernel, dtype=np.int64))


def _layer_macs(graph: _Graph) -> dict:
    """{layer name: multiply-adds per example over its calls}."""
    macs: dict = {}
    for name, _, refs in graph.nodes:
        layer = graph.layer.get(name)
        if layer is None:
            continue
        value = _macs(layer, graph.shape[refs[0]]) if refs else 0
        macs[name] = None if value is None or macs.get(name, 0) is None else macs.get(name, 0) + value
    return macs


def _units(layer: Any) -> int | None:
    return layer.kernel.shape[-1] if isinstance(layer, _DENSE + _CONV) else None


# ---------------------------------------------------------------------------------------------- shrink


def _functional(model: Any) -> Any:
    """`model` as a functional model (a Sequential's own graph), or a `TypeError`/`ValueError` saying what to do."""
    if not isinstance(model, keras.Model):
        raise TypeError(
            "Invalid value for argument `model`: expected a built Keras Functional or Sequential model. "
            f"Received: model={model!r} of type {type(model).__name__}"
        )
    if isinstance(model, keras.Sequential):
        if not model.built or not model.layers:
            raise ValueError(
                f"Invalid value for argument `model`: the Sequential model `{model.name}` is not built, so "
                "shrink cannot know its input shape. Build it with the shape of its inputs first, e.g. "
                "`model.build((None, n_features))`, or start it with `keras.Input(shape)`. "
                f"Received: model={model!r}"
            )
        inputs, outputs = model.inputs, model.outputs  # it takes and returns one tensor, not a list of one
        return keras.Model(_one(inputs), _one(outputs), name=model.name)
    if getattr(model, "inputs", None) is None or getattr(model, "outputs", None) is None:
        first = model.layers[0] if model.layers else None
        width = getattr(getattr(first, "kernel", None), "shape", None)
        shape = f"({width[0]},)" if isinstance(first, _DENSE) and width is not None else "(n_features,)"
        raise ValueError(
            f"Invalid value for argument `model`: {type(model).__name__} is a subclassed model, whose `call` is "
            "Python code shrink cannot read; shrink needs a Functional or Sequential model, a graph of "
            "layer calls. If its `call` applies its layers one after another, rebuild it from the same "
            f"layers (weights included): `shrink(keras.Sequential([keras.Input(shape={shape}), *model.layers]))`; "
            f"otherwise write its `call` with the functional API. Received: model={model!r}"
        )
    return model


def _validate_tolerance(value: Any, name: str, allow_none: bool) -> Any:
    if value is None and allow_none:
        return None
    number = None
    if isinstance(value, (int, float, np.floating, np.integer)) and not isinstance(value, (bool, np.bool_)):
        number = float(value)
    if number is None or not math.isfinite(number) or number < 0:
        expected = "a finite float >= 0" + (" or None" if allow_none else "")
        raise ValueError(f"Invalid value for argument `{name}`: expected {expected}. Received: {name}={value!r}")
    return number


def _default_rtol(model: Any) -> float:
    """1e-5, or a few units in the last place of the narrowest dtype a layer computes in."""
    dtypes = {keras.backend.standardize_dtype(layer.compute_dtype) for layer in model.layers}
    if "bfloat16" in dtypes:
        return 3e-2
    if "float16" in dtypes:
        return 1e-2
    return 1e-5


def shrink(
    model: Any, x: Any = None, *, rtol: float | None = None, atol: float | None = None, features: str = "remove"
) -> tuple[Any, ShrinkReport]:
    """A smaller Keras model with the same outputs: `model` without its dead and unread units.

    A unit j of a Dense or Conv1D/2D/3D layer is removed when its kernel
    column is exactly zero (its output is the constant activation(b_j),
    folded into the biases of the layers reading it) or when every layer
    reading it has exactly zero rows for it. Input features that no layer
    reads are removed too (`features="remove"`). The module docstring gives
    the math and what is left whole. `model` is not modified.

    The small model is checked on a batch: `x`, or a seeded standard-normal
    batch of 32 of the model's input shapes (unknown sizes 8). Each output
    must satisfy |small − original| ≤ atol + rtol·|original|, with `atol`
    (None) = rtol × the output's largest |value|: folding reorders a sum,
    whose rounding error scales with its terms, not with a result near 0.
    `rtol` (None) is 1e-5 for a model computing in float32 or float64, 1e-2
    where a layer computes in float16 (mixed precision), 3e-2 in bfloat16:
    a few units in the last place of the narrowest compute dtype.

    Example:

    >>> import keras, numpy as np, keras_l1l2plus as kl
    >>> model = keras.Sequential([keras.Input((4,)), keras.layers.Dense(3, activation="relu"),
    ...                           keras.layers.Dense(2)])
    >>> kernel = model.layers[0].get_weights()[0]
    >>> kernel[:, 1] = 0.0  # unit 1 is dead: its output is relu(b_1)
    >>> model.layers[0].set_weights([kernel, np.array([0.5, 0.7, -0.1], "float32")])
    >>> small, report = kl.shrink(model)
    >>> small.layers[1].units
    2
    >>> report.layers[0].removed.tolist()
    [1]

    Args:
        model: a built Keras Functional or Sequential model.
        x: inputs to check the small model on (what `model` takes), or None.
        rtol: the check's relative tolerance, ≥ 0, or None (by the compute dtype, see above).
        atol: the check's absolute tolerance, ≥ 0, or None (see above).
        features: "remove" (input features no layer reads are removed; see
            `report.select_features`) or "keep" (the inputs keep their width).

    Returns:
        `(small_model, report)`: a new functional model of standard Keras
        layers, and a `ShrinkReport`.

    Raises:
        ValueError: if the small model's outputs differ from the original's
            (naming the first layer whose outputs differ), or an argument is invalid.
    """
    functional = _functional(model)
    rtol = _validate_tolerance(rtol, "rtol", allow_none=True)
    if rtol is None:
        rtol = _default_rtol(functional)
    atol = _validate_tolerance(atol, "atol", allow_none=True)
    if not isinstance(features, str) or features not in FEATURES:
        raise ValueError(
            f'Invalid value for argument `features`: expected "remove" or "keep". Received: features={features!r}'
        )
    graph = _Graph(functional, functional.get_config())
    plan = _Plan(graph, features)
    small, kept_inputs, masks = _build(graph, plan)
    report = ShrinkReport(
        layers=[],
        kept_features=kept_inputs,
        left_whole=dict(plan.left_whole),
        max_error=0.0,
        rtol=rtol,
        atol=atol,
        input_names=graph.input_keys if graph.input_structure == "dict" else graph.input_names,
        input_structure=graph.input_structure,
    )
    if graph.input_structure == "dict":
        report.kept_features = {key: kept_inputs[ref[0]] for key, ref in zip(graph.input_keys, graph.inputs)}
    small_graph = _Graph(small, small.get_config())
    macs_before, macs_after = _layer_macs(graph), _layer_macs(small_graph)
    for name, layer in graph.layer.items():
        try:
            new = small.get_layer(name)
        except ValueError:
            if layer.weights:
                raise
            # An operation Keras inserted itself and names anew when it rebuilds the model (Keras 3.8 casts
            # a mixed-precision model's inputs with a `Cast` node of the functional config): nothing to report.
            continue
        keep = masks.get(name) if isinstance(layer, _DENSE + _CONV) else None
        report.layers.append(
            LayerShrink(
                name=name,
                class_name=type(layer).__name__,
                units_before=_units(layer),
                units_after=_units(new),
                params_before=layer.count_params(),
                params_after=new.count_params(),
                macs_before=macs_before.get(name, 0),
                macs_after=macs_after.get(name, 0),
                removed=np.flatnonzero(~keep) if keep is not None else np.zeros(0, int),
                left_whole=plan.left_whole.get(name),
            )
        )
    # The check.
    x = _check_batch(graph) if x is None else x
    x_small = report.select_features(x)
    errors = []
    for before, after in zip(_numpy_outputs(functional(x)), _numpy_outputs(small(x_small))):
        bad, error = _differs(before, after, rtol, atol)
        errors.append((bad, error))
    report.max_error = max((e for _, e in errors), default=0.0)
    if any(bad for bad, _ in errors):
        found = first_divergence(functional, small, x, x_small, masks, rtol, atol)
        where = (
            f"the first layer whose outputs differ is `{found[0]}` (max |difference| {found[1]:.3g})"
            if found
            else "no single layer's outputs differ"
        )
        raise ValueError(
            f"shrink built a model whose outputs differ from the original's by up to {report.max_error:.3g} "
            f"(rtol={rtol:g}, atol={'rtol*max|output|' if atol is None else atol}): {where}. If that is the "
            "rounding of a low-precision model, pass a larger `rtol`; otherwise it is a bug in shrink or a layer "
            "that is not deterministic at inference. The original model is unchanged."
        )
    return small, report

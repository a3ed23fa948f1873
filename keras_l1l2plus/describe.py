"""`describe(model)`: what every trainable variable of a model gets, one row per variable.

    path          shape   role    regularizer  l1    l2     l2_anchor  group        proximal  anchor  frozen  source
    dense/kernel  (5, 4)  weight  L1L2Plus     0.01  0.001  0          0.1 (units)  no        no      no      rule 0 'd'

The table is data too (`RegularizerTable.rows`, `to_dict()`), and
`regularize(..., dry_run=True)` returns the one it would make.
"""

from __future__ import annotations

import dataclasses
import numbers
from typing import Any, Callable

import keras

from keras_l1l2plus import _keras
from keras_l1l2plus.regularizer import L1L2Plus, as_l1l2plus
from keras_l1l2plus.roles import placed_layers, role

__all__ = ["RegularizerRow", "RegularizerTable", "describe", "regularizer_table"]

UNKNOWN_SOURCE = "-"
# The key under which `regularize` records, on a layer, which rule or keywords left a variable without a
# regularizer (an L1L2Plus carries its own `source`; None has nowhere to carry one).
SOURCES_KEY = "sources"


@dataclasses.dataclass(frozen=True)
class RegularizerRow:
    """What one trainable variable gets.

    Attributes:
        path: `"<layer path>/<variable name>"`, the layer path as in
            `roles.OwnedVariable.layer_path` (`"dense_1/kernel"`,
            `"encoder/dense/bias"`); what `regularize`'s rules match.
        shape: the variable's shape.
        role: `"weight"` or `"bias"` (`roles.role`).
        frozen: the variable is not trainable now (its layer, or one that
            contains it, is frozen); Keras counts its penalty once unfrozen.
        regularizer: the regularizer's class name, or None for none.
        l1, l2, l2_anchor, group: its λs (0.0 without a regularizer); None
            where a regularizer does not say (a custom one).
        groups: the group kind (`"units"`, `"inputs"`) where `group` > 0, else None.
        proximal: whether its L1 and group terms take the proximal step (None: unknown).
        anchored: whether it has an anchor (L2-SP; None: unknown).
        source: which call set it: `"rule 0 'dense*'"` (`regularize`'s rule
            0), `"keywords"` (`regularize`'s keywords), or `"-"` (unknown:
            set by hand, or the model was saved and loaded, cloned or
            rebuilt from its config: the source is not saved).
    """

    path: str
    shape: tuple
    role: str
    frozen: bool
    regularizer: str | None
    l1: float | None
    l2: float | None
    l2_anchor: float | None
    group: float | None
    groups: str | None
    proximal: bool | None
    anchored: bool | None
    source: str

    def to_dict(self) -> dict:
        row = dataclasses.asdict(self)
        row["shape"] = list(self.shape)
        return row


_COLUMNS = (
    "path",
    "shape",
    "role",
    "regularizer",
    "l1",
    "l2",
    "l2_anchor",
    "group",
    "proximal",
    "anchor",
    "frozen",
    "source",
)


def _number(value: float | None) -> str:
    if value is None:
        return "?"
    return "0" if value == 0 else repr(float(value))


def _yes_no(value: bool | None) -> str:
    return "?" if value is None else ("yes" if value else "no")


def _cells(row: RegularizerRow) -> tuple[str, ...]:
    shape = "(" + ", ".join(str(d) for d in row.shape) + ("," if len(row.shape) == 1 else "") + ")"
    group = _number(row.group) + (f" ({row.groups})" if row.groups else "")
    return (
        row.path,
        shape,
        row.role,
        row.regularizer or "-",
        _number(row.l1),
        _number(row.l2),
        _number(row.l2_anchor),
        group,
        _yes_no(row.proximal),
        _yes_no(row.anchored),
        _yes_no(row.frozen),
        row.source,
    )


@dataclasses.dataclass(frozen=True)
class RegularizerTable:
    """`describe`'s table: a `RegularizerRow` per trainable variable of `model` (the model's name).

    `str(table)` (`to_string()`) is what `describe` prints: a title, a row
    per variable in columns separated by two or more spaces (a cell never
    holds two spaces in a row), a note. `to_dict()` gives plain values.
    """

    model: str
    rows: tuple

    def to_string(self) -> str:
        rows = [_COLUMNS, *(_cells(row) for row in self.rows)]
        widths = [max(len(row[i]) for row in rows) for i in range(len(_COLUMNS))]
        lines = ["  ".join(cell.ljust(width) for cell, width in zip(row, widths)).rstrip() for row in rows]
        lines.insert(1, "  ".join("-" * width for width in widths))
        regularized = sum(row.regularizer is not None for row in self.rows)
        frozen = sum(row.frozen for row in self.rows)
        title = (
            f'Regularizers of "{self.model}": {len(self.rows)} trainable variables'
            f"{f' ({frozen} frozen)' if frozen else ''}, {regularized} regularized"
        )
        note = (
            "source: the rule of regularize() that set it (the first that matches wins) or its keywords; "
            '"-": not known (set otherwise, or a loaded model: not saved)'
        )
        return "\n".join([title, *lines, note])

    def __str__(self) -> str:
        return self.to_string()

    def to_dict(self) -> dict:
        """`{"model": name, "rows": [row as a dict, ...]}` in plain Python values."""
        return {"model": self.model, "rows": [row.to_dict() for row in self.rows]}


def _float(value: Any) -> float | None:
    """A λ read off a regularizer that is not Keras's or this package's: a float if it is one."""
    if value is None or isinstance(value, bool):
        return None
    if isinstance(value, numbers.Real):
        return float(value)
    try:
        array = keras.ops.convert_to_numpy(value)
    except Exception:  # noqa: BLE001 - anything that is not a number: not readable
        return None
    return float(array) if array.ndim == 0 and array.dtype.kind in "fiu" else None


def settings_of(regularizer: Any) -> dict:
    """The row's regularizer fields of `regularizer` (None, an `L1L2Plus`, Keras's own, or any other)."""
    if regularizer is None:
        return dict(
            regularizer=None, l1=0.0, l2=0.0, l2_anchor=0.0, group=0.0, groups=None, proximal=False, anchored=False
        )
    known = as_l1l2plus(regularizer)
    if known is not None:
        group = known.group
        return dict(
            regularizer=type(regularizer).__name__,
            l1=known.l1,
            l2=known.l2,
            l2_anchor=known.l2_anchor,
            group=group,
            groups=known.groups if group else None,
            proximal=known.proximal,
            anchored=known.anchored,
        )
    return dict(
        regularizer=type(regularizer).__name__,
        l1=_float(getattr(regularizer, "l1", None)),
        l2=_float(getattr(regularizer, "l2", None)),
        l2_anchor=_float(getattr(regularizer, "l2_anchor", None)),
        group=None,
        groups=None,
        proximal=None,
        anchored=None,
    )


def planned_settings(kwargs: dict | None) -> dict:
    """The row's regularizer fields of the `L1L2Plus(**kwargs)` `regularize` would make (None: none)."""
    if kwargs is None:
        return settings_of(None)
    group = kwargs.get("group", 0.0)
    return dict(
        regularizer=L1L2Plus.__name__,
        l1=kwargs.get("l1", 0.0),
        l2=kwargs.get("l2", 0.0),
        l2_anchor=kwargs.get("l2_anchor", 0.0),
        group=group,
        groups=kwargs.get("groups", "units") if group else None,
        proximal=kwargs.get("proximal", False),
        anchored=kwargs.get("l2_anchor", 0.0) > 0,
    )


def _source(layer: Any, variable: Any) -> str:
    regularizer = variable.regularizer
    if regularizer is None:
        return (_keras.model_state(layer, SOURCES_KEY) or {}).get(variable.name, UNKNOWN_SOURCE)
    if isinstance(regularizer, L1L2Plus):
        return getattr(regularizer, "source", None) or UNKNOWN_SOURCE
    return UNKNOWN_SOURCE


def regularizer_table(model: Any, planned: dict[int, tuple[dict | None, str]] | None = None) -> RegularizerTable:
    """The table of `model`: every trainable variable's regularizer and source, in the order of
    `roles.placed_layers`; `planned` (`{id(variable): (L1L2Plus kwargs or None, source)}`) in place of
    what those variables have now (`regularize(dry_run=True)`)."""
    planned = planned or {}
    rows = []
    seen: set[int] = set()
    for place in placed_layers(model):
        layer = place.layer
        for variable in _keras.own_trainable_variables(layer):
            if id(variable) in seen:
                continue
            seen.add(id(variable))
            if id(variable) in planned:
                kwargs, source = planned[id(variable)]
                fields = planned_settings(kwargs)
            else:
                fields, source = settings_of(variable.regularizer), _source(layer, variable)
            frozen = not variable.trainable or not all(c.trainable for c in (*place.containers, layer))
            rows.append(
                RegularizerRow(
                    path=f"{place.path}/{variable.name}",
                    shape=tuple(int(d) for d in variable.shape),
                    role=role(layer, variable.name),
                    frozen=frozen,
                    source=source,
                    **fields,
                )
            )
    return RegularizerTable(model=model.name, rows=tuple(rows))


def print_table(text: str, print_fn: Callable[[str], Any] | None = None) -> None:
    """Prints `text` as `model.summary()` does: to `print_fn`, else to stdout, or to absl's log when
    Keras's interactive logging is off (`keras.config.disable_interactive_logging()`)."""
    if print_fn is not None:
        print_fn(text)
    elif keras.config.is_interactive_logging_enabled():
        print(text)
    else:
        from absl import logging  # a dependency of Keras: what Keras logs through

        logging.info(text)


def describe(model: Any, print_fn: Callable[[str], Any] | None = None) -> RegularizerTable:
    """Prints and returns what every trainable variable of `model` gets: its regularizer, λs and source.

    One row per trainable variable (frozen layers' too, marked frozen, in
    the order of the model's layers, depth first; `model.summary()`'s
    order): its path (`"<layer path>/<variable name>"`, what `regularize`'s
    rules match), shape, role (weight or bias, `keras_l1l2plus.roles.role`),
    regularizer class, λs (`l1`, `l2`, `l2_anchor`, `group` with its kind),
    whether its L1 is proximal, whether it has an anchor, and the source:
    the rule of `regularize` that set it (`"rule 0 'dense*'"`) or its
    keywords (`"keywords"`). A regularizer set otherwise (by hand, or by
    Keras's `kernel_regularizer=`) shows `"-"`, and so does every variable
    of a model loaded from a file, cloned or rebuilt from its config: the
    source lives on the `L1L2Plus` object (`L1L2Plus.source`) and is not
    saved. Keras's `L1`, `L2` and `L1L2` show their λs; another
    regularizer its class, and `?` for what it does not say.

    Example:

    >>> import keras, keras_l1l2plus as kl
    >>> model = keras.Sequential([keras.Input((4,)), keras.layers.Dense(3, name="head")])
    >>> model = kl.regularize(model, l2_weight=0.001)
    >>> table = kl.describe(model, print_fn=lambda text: None)
    >>> [(row.path, row.l2, row.source) for row in table.rows]
    [('head/kernel', 0.001, 'keywords'), ('head/bias', 0.0, 'keywords')]

    Args:
        model: a Keras model (or layer). An unbuilt one has no variables yet:
            build it first.
        print_fn: called with the table's text instead of printing it (as
            `model.summary(print_fn=...)`); by default it goes to stdout, or
            to absl's log when Keras's interactive logging is off.

    Returns:
        The `RegularizerTable`: `.rows` (a `RegularizerRow` per variable),
        `str(table)`, `to_dict()`.
    """
    if not isinstance(model, keras.layers.Layer):
        raise TypeError(
            "Invalid value for argument `model`: expected a Keras model or layer. "
            f"Received: model={model!r} of type {type(model).__name__}"
        )
    table = regularizer_table(model)
    print_table(table.to_string(), print_fn)
    return table

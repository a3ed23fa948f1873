"""`write_tensorboard_layout`: TensorBoard charts of the loss, the data loss and each penalty term.

Keras's `TensorBoard` callback writes each logged value as its own scalar
(`epoch_l1_weight`, `epoch_data_loss`, ... in the `train` run, their
validation values under the same tags in `validation`), one section each.
TensorBoard's custom-scalars plugin draws several tags, of every run, in one
chart, from a layout stored in the log directory. This module writes that
layout, with TensorBoard's own protos and event writer (no TensorFlow
needed), as one small event file:

    loss = data_loss + penalty     epoch_loss, epoch_data_loss, epoch_penalty
    data loss                      epoch_data_loss: train is data_loss, validation is val_data_loss
    l1_weight, l2_weight           one chart each: epoch_l1_weight, epoch_l2_weight
    l1_bias, l2_bias               one chart each: epoch_l1_bias, epoch_l2_bias
    sparsity                       epoch_sparsity_weight, epoch_sparsity_bias (with sparsity=True)
    <term> per layer               epoch_<term>/<layer> (with per_layer=True)

Each term has a chart of its own, scaled to it: the terms differ by orders
of magnitude (l1_weight ~0.1, l1_bias ~3e-4, l2_bias ~1e-5 in the digits
example), and in one linear chart the small ones lie flat on 0. A chart of
one tag has one series per run (its `train` and `validation` runs).

The charts are under "Custom Scalars" in TensorBoard (`#custom_scalars`).
"""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Union

from keras_l1l2plus.factors import validate_flag
from keras_l1l2plus.terms import ANCHOR_TERMS, GROUP_TERMS, TERM_NAMES

__all__ = ["ANCHOR_CHARTS", "CATEGORY", "GROUP_CHARTS", "TERM_CHARTS", "tensorboard_layout", "write_tensorboard_layout"]

CATEGORY = "keras-l1l2plus: Loss = DataLoss + L1w + L1b + L2w + L2b"
#: One chart per term, in the layout's order: the weight terms side by side, then the bias terms.
TERM_CHARTS = {
    "l1_weight": "l1_weight = λ1·Σ|w| over the weights",
    "l2_weight": "l2_weight = λ2·Σw² over the weights",
    "l1_bias": "l1_bias = λ1·Σ|b| over the biases",
    "l2_bias": "l2_bias = λ2·Σb² over the biases",
}
#: With `groups=True`: the group lasso's terms, one chart each, and the live groups.
GROUP_CHARTS = {
    "group_weight": "group_weight = λg·Σ_g ‖w_g‖₂ over the weights",
    "group_bias": "group_bias = λg·Σ_g ‖b_g‖₂ over the biases",
}
#: With `anchors=True`: L2 toward reference weights (L2-SP), one chart each.
ANCHOR_CHARTS = {
    "l2_anchor_weight": "l2_anchor_weight = λa·Σ(w − w₀)² over the anchored weights",
    "l2_anchor_bias": "l2_anchor_bias = λa·Σ(b − b₀)² over the anchored biases",
}


def _tensorboard():
    """TensorBoard's `plugins.custom_scalar.layout_pb2`; an `ImportError` that says what to install."""
    try:
        from tensorboard.plugins.custom_scalar import layout_pb2
    except ImportError as error:
        raise ImportError(
            "write_tensorboard_layout needs the `tensorboard` package: pip install tensorboard "
            f"(or keras-l1l2plus[examples]). Import error: {error}"
        ) from error
    return layout_pb2


def tensorboard_layout(*, sparsity: bool = False, per_layer: bool = False, groups: bool = False, anchors: bool = False):
    """The custom-scalars `Layout` proto of the charts above."""
    layout_pb2 = _tensorboard()

    def chart(title: str, *tags: str):
        return layout_pb2.Chart(title=title, multiline=layout_pb2.MultilineChartContent(tag=list(tags)))

    charts = [
        chart("loss = data_loss + penalty", r"^epoch_(loss|data_loss|penalty)$"),
        chart("data_loss (train run) and val_data_loss (validation run)", r"^epoch_data_loss$"),
        *(chart(title, rf"^epoch_{term}$") for term, title in TERM_CHARTS.items()),
    ]
    if groups:
        charts.extend(chart(title, rf"^epoch_{term}$") for term, title in GROUP_CHARTS.items())
    if anchors:
        charts.extend(chart(title, rf"^epoch_{term}$") for term, title in ANCHOR_CHARTS.items())
    if sparsity:
        charts.append(chart("sparsity: fraction of exactly-zero entries", r"^epoch_sparsity_(weight|bias)$"))
    if sparsity and groups:
        charts.append(chart("live_groups: groups (units, features) not exactly 0", r"^epoch_live_groups$"))
    if per_layer:
        terms = (*TERM_NAMES, *(GROUP_TERMS if groups else ()), *(ANCHOR_TERMS if anchors else ()))
        charts.extend(chart(f"{term} per layer", rf"^epoch_{term}/") for term in terms)
    return layout_pb2.Layout(category=[layout_pb2.Category(title=CATEGORY, chart=charts)])


def write_tensorboard_layout(
    log_dir: Union[str, os.PathLike],
    *,
    sparsity: bool = False,
    per_layer: bool = False,
    groups: bool = False,
    anchors: bool = False,
) -> Path:
    """Writes the layout into `log_dir`, the directory given to `keras.callbacks.TensorBoard`.

    Call it once per run (before or after `fit`); TensorBoard merges the
    layouts of every run it reads, so runs side by side share the charts.
    The layout is a run of its own in TensorBoard's run list (`log_dir`
    itself, beside Keras's `train` and `validation`); it holds no scalars.
    (Called again on the same directory, it writes another file, and
    TensorBoard shows the latest layout.)
    `sparsity=True` adds the sparsity chart (a `PenaltyLogger` logs
    `sparsity_*` when some variable takes the proximal step), `per_layer=True`
    one chart per term with each layer's share (`PenaltyLogger(per_layer=True)`),
    `groups=True` the group lasso's charts (`group_weight`, `group_bias`,
    and with `sparsity=True` `live_groups`), `anchors=True` the L2-SP terms
    charts (`l2_anchor_weight`, `l2_anchor_bias`).
    Returns the event file written.

    Example:

    >>> import tempfile, keras_l1l2plus as kl
    >>> log_dir = tempfile.mkdtemp()
    >>> kl.write_tensorboard_layout(log_dir).name.startswith("events.out.tfevents.")
    True

    Then `fit(..., callbacks=[kl.PenaltyLogger(), keras.callbacks.TensorBoard(log_dir)])`.
    """
    if not isinstance(log_dir, (str, os.PathLike)) or not str(log_dir):
        raise TypeError(
            "Invalid value for argument `log_dir`: expected a directory path (str or os.PathLike). "
            f"Received: log_dir={log_dir!r}"
        )
    directory = Path(log_dir)
    for path in (directory, *directory.parents):  # the nearest that exists must be a directory
        if path.exists():
            if not path.is_dir():
                raise NotADirectoryError(
                    f"Invalid value for argument `log_dir`: {str(path)!r} is a file, not a directory. "
                    f"Received: log_dir={str(log_dir)!r}"
                )
            break
    sparsity = validate_flag(sparsity, "sparsity")
    per_layer = validate_flag(per_layer, "per_layer")
    groups = validate_flag(groups, "groups")
    anchors = validate_flag(anchors, "anchors")
    # The ImportError first.
    layout = tensorboard_layout(sparsity=sparsity, per_layer=per_layer, groups=groups, anchors=anchors)
    from tensorboard.compat.proto import event_pb2, summary_pb2
    from tensorboard.plugins.custom_scalar import metadata
    from tensorboard.summary.writer.event_file_writer import EventFileWriter
    from tensorboard.util import tensor_util

    # What tensorboard.plugins.custom_scalar.summary.pb builds, without importing TensorFlow.
    summary = summary_pb2.Summary(
        value=[
            summary_pb2.Summary.Value(
                tag=metadata.CONFIG_SUMMARY_TAG,
                metadata=metadata.create_summary_metadata(),
                tensor=tensor_util.make_tensor_proto(layout.SerializeToString()),
            )
        ]
    )
    before = set(directory.glob("*.layout"))
    writer = EventFileWriter(str(directory), filename_suffix=".layout")
    try:
        writer.add_event(event_pb2.Event(wall_time=time.time(), step=0, summary=summary))
    finally:
        writer.close()
    (written,) = set(directory.glob("*.layout")) - before
    return written

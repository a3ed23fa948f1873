"""write_tensorboard_layout: the layout read back from disk, and served by a real TensorBoard."""

import sys
from pathlib import Path

import keras
import numpy as np
import pytest
from backends import only_on

import keras_l1l2plus as kl
from keras_l1l2plus.tensorboard_layout import CATEGORY, TERM_CHARTS, tensorboard_layout
from keras_l1l2plus.terms import TERM_NAMES

TERMS = ("l1_weight", "l1_bias", "l2_weight", "l2_bias")
DOCS = Path(__file__).resolve().parents[1] / "docs"


def read_layout(log_dir):
    """The custom-scalars layouts in `log_dir`, as TensorBoard's event reader finds them."""
    from tensorboard.backend.event_processing import event_accumulator
    from tensorboard.plugins.custom_scalar import layout_pb2, metadata
    from tensorboard.util import tensor_util

    events = event_accumulator.EventAccumulator(str(log_dir), size_guidance={event_accumulator.TENSORS: 0})
    events.Reload()
    assert events.SummaryMetadata(metadata.CONFIG_SUMMARY_TAG).plugin_data.plugin_name == "custom_scalars"
    return [layout_pb2.Layout.FromString(tensor_util.make_ndarray(e.tensor_proto).item())
            for e in events.Tensors(metadata.CONFIG_SUMMARY_TAG)]


def charts(layout):
    (category,) = layout.category
    assert category.title == CATEGORY
    return {chart.title: list(chart.multiline.tag) for chart in category.chart}


def test_layout_written_and_read_back(tmp_path):
    path = kl.write_tensorboard_layout(tmp_path / "run", sparsity=True)
    assert path.parent == tmp_path / "run" and path.name.startswith("events.out.tfevents.")
    (layout,) = read_layout(tmp_path / "run")
    assert layout == tensorboard_layout(sparsity=True)
    found = charts(layout)
    assert list(found) == [
        "loss = data_loss + penalty",
        "data_loss (train run) and val_data_loss (validation run)",
        "l1_weight = λ1·Σ|w| over the weights",
        "l2_weight = λ2·Σw² over the weights",
        "l1_bias = λ1·Σ|b| over the biases",
        "l2_bias = λ2·Σb² over the biases",
        "sparsity: fraction of exactly-zero entries",
    ]
    assert found["loss = data_loss + penalty"] == ["^epoch_(loss|data_loss|penalty)$"]
    assert found["data_loss (train run) and val_data_loss (validation run)"] == ["^epoch_data_loss$"]
    assert found["l2_bias = λ2·Σb² over the biases"] == ["^epoch_l2_bias$"]
    assert found["sparsity: fraction of exactly-zero entries"] == ["^epoch_sparsity_(weight|bias)$"]


def test_each_term_has_a_chart_of_its_own():
    """Terms ~0.1 and ~1e-5 in one linear chart: the small ones lie flat on 0. One tag per chart, its own scale."""
    found = charts(tensorboard_layout())
    assert sorted(TERM_CHARTS) == sorted(TERM_NAMES)
    for term, title in TERM_CHARTS.items():
        assert found[title] == [f"^epoch_{term}$"]
        assert title.startswith(f"{term} = ")
    import re

    for title, (pattern,) in found.items():  # no chart holds two terms
        assert sum(bool(re.search(pattern, f"epoch_{term}")) for term in TERMS) <= 1, title


def test_charts_follow_the_arguments():
    assert len(charts(tensorboard_layout())) == 6  # no sparsity chart without the proximal step
    per_layer = charts(tensorboard_layout(per_layer=True))
    assert per_layer["l2_bias per layer"] == ["^epoch_l2_bias/"]
    anchors = charts(tensorboard_layout(anchors=True, per_layer=True))
    assert anchors["l2_anchor_weight = λa·Σ(w − w₀)² over the anchored weights"] == ["^epoch_l2_anchor_weight$"]
    assert anchors["l2_anchor_bias per layer"] == ["^epoch_l2_anchor_bias/"]
    assert len(anchors) == len(per_layer) + 4 and "group_weight per layer" not in anchors


@pytest.mark.parametrize("bad", [None, 3, ""])
def test_bad_log_dir(bad):
    with pytest.raises(TypeError, match="log_dir"):
        kl.write_tensorboard_layout(bad)


def test_bad_flag(tmp_path):
    with pytest.raises((TypeError, ValueError), match="sparsity"):
        kl.write_tensorboard_layout(tmp_path, sparsity="yes")


@pytest.mark.slow
@only_on("tensorflow", reason="Keras's TensorBoard callback writes through TensorFlow")
def test_tensorboard_serves_the_charts_with_the_logged_values(tmp_path):
    """A real TensorBoard on 127.0.0.1, read over HTTP as its web page reads it."""
    sys.path.insert(0, str(DOCS))
    from tensorboard_screenshot import chart_data, fetch, serve

    rng = np.random.default_rng(0)
    x, y = rng.normal(size=(48, 4)).astype("float32"), rng.normal(size=(48, 1)).astype("float32")
    model = keras.Sequential([keras.Input((4,)), keras.layers.Dense(3), keras.layers.Dense(1)])
    kl.regularize(model, l1_weight=0.01, l1_bias=0.005, l2_weight=0.001, l2_bias=0.0005, proximal_weight=True)
    model.compile(optimizer=kl.ProximalOptimizer(keras.optimizers.SGD(0.05)), loss="mse")
    run = tmp_path / "logs" / "run1"
    kl.write_tensorboard_layout(run, sparsity=True)
    history = model.fit(x, y, batch_size=16, epochs=3, verbose=0, validation_split=0.25,
                        callbacks=[kl.PenaltyLogger(), keras.callbacks.TensorBoard(str(run))]).history
    with serve(tmp_path / "logs") as url:
        layout = fetch(url, "/data/plugin/custom_scalars/layout")
        assert [c["title"] for c in layout["category"]] == [CATEGORY]
        data = chart_data(url)

    def values(events):
        return [value for _, _, value in sorted(events, key=lambda e: e[1])]

    for key in TERMS:  # each term in its chart: train and validation, as logged
        chart = data[TERM_CHARTS[key]]
        assert sorted(chart["run1/train"]) == [f"epoch_{key}"]
        np.testing.assert_allclose(values(chart["run1/train"][f"epoch_{key}"]), history[key], rtol=1e-6)
        np.testing.assert_allclose(values(chart["run1/validation"][f"epoch_{key}"]), history[f"val_{key}"],
                                   rtol=1e-6)
    losses = data["loss = data_loss + penalty"]["run1/train"]
    assert sorted(losses) == ["epoch_data_loss", "epoch_loss", "epoch_penalty"]
    np.testing.assert_allclose(values(losses["epoch_penalty"]), history["penalty"], rtol=1e-6)
    data_loss = data["data_loss (train run) and val_data_loss (validation run)"]
    np.testing.assert_allclose(values(data_loss["run1/train"]["epoch_data_loss"]), history["data_loss"], rtol=1e-6)
    np.testing.assert_allclose(values(data_loss["run1/validation"]["epoch_data_loss"]), history["val_data_loss"],
                               rtol=1e-6)
    sparsity = data["sparsity: fraction of exactly-zero entries"]["run1/train"]
    assert sorted(sparsity) == ["epoch_sparsity_weight"]  # the biases take subgradient steps
    np.testing.assert_allclose(values(sparsity["epoch_sparsity_weight"]), history["sparsity_weight"], rtol=1e-6)


def test_a_file_is_not_a_log_dir(tmp_path):
    (tmp_path / "file").write_text("")
    with pytest.raises(NotADirectoryError, match="log_dir"):
        kl.write_tensorboard_layout(tmp_path / "file")


def test_a_path_below_a_file_names_the_file(tmp_path):
    (tmp_path / "file").write_text("")
    with pytest.raises(NotADirectoryError, match=r"'.*file' is a file, not a directory\. Received: log_dir="):
        kl.write_tensorboard_layout(tmp_path / "file" / "runs" / "exp1")


def test_a_missing_log_dir_is_made(tmp_path):
    written = kl.write_tensorboard_layout(tmp_path / "runs" / "exp1")
    assert written.parent == tmp_path / "runs" / "exp1"
    assert read_layout(written.parent)


def test_without_tensorboard_the_error_says_what_to_install(monkeypatch, tmp_path):
    monkeypatch.setitem(sys.modules, "tensorboard.plugins.custom_scalar", None)  # import fails, as if absent
    monkeypatch.setitem(sys.modules, "tensorboard.plugins.custom_scalar.layout_pb2", None)
    with pytest.raises(ImportError, match=r"needs the `tensorboard` package: pip install tensorboard"):
        kl.write_tensorboard_layout(tmp_path)
    assert not list(tmp_path.iterdir())

"""describe(model): the printed table and the returned rows read back against each variable's regularizer."""

import json

import keras
import numpy as np
import pytest

import keras_l1l2plus as kl
from keras_l1l2plus.describe import RegularizerRow, RegularizerTable

L = keras.layers


@keras.saving.register_keras_serializable(package="test_describe")
class Custom(keras.regularizers.Regularizer):
    """A regularizer that says nothing of its λs."""

    def __call__(self, x):
        return 0.5 * keras.ops.sum(keras.ops.abs(x))

    def get_config(self):
        return {}


def model_with_everything():
    inputs = keras.Input((6,))
    x = L.Dense(5, name="grouped")(inputs)
    x = L.Dense(4, name="anchored")(x)
    x = L.Dense(4, name="keras_own", kernel_regularizer=keras.regularizers.L1L2(l1=0.25, l2=0.125),
                bias_regularizer=keras.regularizers.L2(0.5))(x)
    x = L.Dense(3, name="custom", kernel_regularizer=Custom())(x)
    x = L.Dense(3, name="frozen")(x)
    outputs = L.Dense(2, name="head")(x)
    model = keras.Model(inputs, outputs, name="everything")
    model.get_layer("frozen").trainable = False
    kl.regularize(
        model,
        l2_weight=0.01,
        exclude=["keras_own", "custom"],  # their hand-set regularizers stay
        rules=[
            ("grouped", {"group_weight": 0.03, "l1_weight": 0.002, "proximal_weight": True}),
            ("anchored/kernel", {"l2_anchor_weight": 0.5}),
            ("head/bias", None),
            ("*/bias", {"l1_bias": 0.004}),
        ],
    )
    return model


# What every variable gets, written out from the model above: the cells of the printed table.
EXPECTED = {
    "grouped/kernel": dict(shape="(6, 5)", role="weight", regularizer="L1L2Plus", l1="0.002", l2="0.01",
                           l2_anchor="0", group="0.03 (units)", proximal="yes", anchor="no", frozen="no",
                           source="rule 0 'grouped'"),
    "grouped/bias": dict(shape="(5,)", role="bias", regularizer="-", l1="0", l2="0", l2_anchor="0", group="0",
                         proximal="no", anchor="no", frozen="no", source="rule 0 'grouped'"),
    "anchored/kernel": dict(shape="(5, 4)", role="weight", regularizer="L1L2Plus", l1="0", l2="0.01",
                            l2_anchor="0.5", group="0", proximal="no", anchor="yes", frozen="no",
                            source="rule 1 'anchored/kernel'"),
    "anchored/bias": dict(shape="(4,)", role="bias", regularizer="L1L2Plus", l1="0.004", l2="0", l2_anchor="0",
                          group="0", proximal="no", anchor="no", frozen="no", source="rule 3 '*/bias'"),
    "keras_own/kernel": dict(shape="(4, 4)", role="weight", regularizer="L1L2", l1="0.25", l2="0.125",
                             l2_anchor="0", group="0", proximal="no", anchor="no", frozen="no", source="-"),
    "keras_own/bias": dict(shape="(4,)", role="bias", regularizer="L2", l1="0", l2="0.5", l2_anchor="0",
                           group="0", proximal="no", anchor="no", frozen="no", source="-"),
    "custom/kernel": dict(shape="(4, 3)", role="weight", regularizer="Custom", l1="?", l2="?", l2_anchor="?",
                          group="?", proximal="?", anchor="?", frozen="no", source="-"),
    "custom/bias": dict(shape="(3,)", role="bias", regularizer="-", l1="0", l2="0", l2_anchor="0", group="0",
                        proximal="no", anchor="no", frozen="no", source="-"),
    "frozen/kernel": dict(shape="(3, 3)", role="weight", regularizer="L1L2Plus", l1="0", l2="0.01", l2_anchor="0",
                          group="0", proximal="no", anchor="no", frozen="yes", source="keywords"),
    "frozen/bias": dict(shape="(3,)", role="bias", regularizer="L1L2Plus", l1="0.004", l2="0", l2_anchor="0",
                        group="0", proximal="no", anchor="no", frozen="yes", source="rule 3 '*/bias'"),
    "head/kernel": dict(shape="(3, 2)", role="weight", regularizer="L1L2Plus", l1="0", l2="0.01", l2_anchor="0",
                        group="0", proximal="no", anchor="no", frozen="no", source="keywords"),
    "head/bias": dict(shape="(2,)", role="bias", regularizer="-", l1="0", l2="0", l2_anchor="0", group="0",
                      proximal="no", anchor="no", frozen="no", source="rule 2 'head/bias'"),
}


def parse(text):
    """The printed table as {path: {column: cell}}, the columns cut where the dashes under the header are."""
    lines = text.splitlines()
    rule = next(i for i, line in enumerate(lines) if line.startswith("---"))
    spans, start = [], 0
    for run in lines[rule].split("  "):
        spans.append((start, start + len(run)))
        start += len(run) + 2
    header = [lines[rule - 1][a:b].strip() for a, b in spans]
    rows = {}
    for line in lines[rule + 1:]:
        if line.startswith("source:"):
            break
        cells = [line[a:b].strip() if i < len(spans) - 1 else line[a:].strip() for i, (a, b) in enumerate(spans)]
        row = dict(zip(header, cells))
        rows[row.pop("path")] = row
    return lines[: rule - 1], rows


def variable_at(model, path):
    layer_name, name = path.split("/")
    return next(v for v in model.get_layer(layer_name).weights if v.name == name)


def test_the_printed_table_reads_back_as_each_variables_regularizer():
    model = model_with_everything()
    printed = []
    table = kl.describe(model, print_fn=printed.append)
    assert len(printed) == 1 and printed[0] == str(table) == table.to_string()
    title, rows = parse(printed[0])
    assert title == ['Regularizers of "everything": 12 trainable variables (2 frozen), 9 regularized']
    assert rows == EXPECTED


def test_the_rows_are_each_variables_regularizer():
    model = model_with_everything()
    table = kl.describe(model, print_fn=lambda text: None)
    assert [row.path for row in table.rows] == list(EXPECTED)
    for row in table.rows:
        variable = variable_at(model, row.path)
        reg = variable.regularizer
        assert row.shape == tuple(variable.shape)
        assert row.frozen == (not variable.trainable)
        assert row.regularizer == (None if reg is None else type(reg).__name__)
        if reg is None:
            assert (row.l1, row.l2, row.l2_anchor, row.group, row.groups, row.proximal, row.anchored) == (
                0.0, 0.0, 0.0, 0.0, None, False, False)
        elif isinstance(reg, kl.L1L2Plus):
            assert (row.l1, row.l2, row.l2_anchor, row.group, row.proximal, row.anchored) == (
                reg.l1, reg.l2, reg.l2_anchor, reg.group, reg.proximal, reg.anchored)
            assert row.groups == (reg.groups if reg.group else None)
            assert row.source == reg.source
        elif isinstance(reg, Custom):
            assert (row.l1, row.l2, row.group, row.proximal, row.anchored) == (None, None, None, None, None)
        else:  # Keras's L1L2 and L2
            assert row.l1 == float(getattr(reg, "l1", 0.0)) and row.l2 == float(reg.l2)
            assert row.source == "-"
    # The same, as plain values.
    as_dict = json.loads(json.dumps(table.to_dict()))
    assert as_dict["model"] == "everything"
    assert [RegularizerRow(**{**row, "shape": tuple(row["shape"])}) for row in as_dict["rows"]] == list(table.rows)


def test_it_prints_to_stdout_or_to_the_log_like_summary(capsys, monkeypatch):
    from absl import logging as absl_logging

    model = keras.Sequential([keras.Input((3,)), L.Dense(2, name="only")])
    kl.regularize(model, l2_weight=0.1)
    table = kl.describe(model)
    assert capsys.readouterr().out == str(table) + "\n"
    logged = []
    monkeypatch.setattr(absl_logging, "info", logged.append)  # what Keras's own print_msg logs through
    keras.config.disable_interactive_logging()
    try:
        kl.describe(model)
    finally:
        keras.config.enable_interactive_logging()
    assert capsys.readouterr().out == ""
    assert logged == [str(table)]


def test_a_loaded_or_cloned_model_shows_no_source_and_a_hand_set_one_neither():
    model = keras.Sequential([keras.Input((3,)), L.Dense(2, name="a"), L.Dense(1, name="b")])
    kl.regularize(model, l2_weight=0.1, l2_bias=0.2, rules=[("b", {"l1_weight": 0.3})])
    sources = [row.source for row in kl.describe(model, print_fn=lambda text: None).rows]
    assert sources == ["keywords", "keywords", "rule 0 'b'", "rule 0 'b'"]
    clone = keras.models.clone_model(model)
    cloned = kl.describe(clone, print_fn=lambda text: None).rows
    assert [row.source for row in cloned] == ["-"] * 4
    assert [row.l2 for row in cloned] == [0.1, 0.2, 0.1, 0.2]  # the regularizers themselves are kept
    model.get_layer("a").kernel.regularizer = kl.L1L2Plus(l2=0.7)
    model.get_layer("b").bias.regularizer = None  # the record was of a regularizer: now unknown
    rows = kl.describe(model, print_fn=lambda text: None).rows
    assert (rows[0].l2, rows[0].source) == (0.7, "-")
    assert (rows[3].regularizer, rows[3].source) == (None, "-")


def test_a_variable_a_rule_leaves_without_a_regularizer_keeps_the_rule_as_its_source():
    model = keras.Sequential([keras.Input((3,)), L.Dense(2, name="a")])
    kl.regularize(model, l2_weight=0.1, rules=[("a/kernel", None)])
    kernel, bias = kl.describe(model, print_fn=lambda text: None).rows
    assert (kernel.regularizer, kernel.source) == (None, "rule 0 'a/kernel'")
    assert (bias.regularizer, bias.source) == (None, "keywords")  # λ2b 0: none, by the keywords
    kl.regularize(model, l2_weight=0.1)
    assert kl.describe(model, print_fn=lambda text: None).rows[0].source == "keywords"


def test_paths_follow_nesting_and_a_nested_model_can_be_described_alone():
    encoder = keras.Sequential([keras.Input((4,)), L.Dense(3, name="inner")], name="encoder")
    inputs = keras.Input((4,))
    model = keras.Model(inputs, L.Dense(2, name="head")(encoder(inputs)))
    kl.regularize(model, l1_weight=0.1)
    paths = [row.path for row in kl.describe(model, print_fn=lambda text: None).rows]
    assert paths == ["encoder/inner/kernel", "encoder/inner/bias", "head/kernel", "head/bias"]
    alone = kl.describe(encoder, print_fn=lambda text: None)
    assert [row.path for row in alone.rows] == ["inner/kernel", "inner/bias"]
    assert alone.model == "encoder" and alone.rows[0].source == "keywords"


def test_an_unbuilt_model_has_no_rows_and_a_non_layer_is_a_type_error():
    table = kl.describe(keras.Sequential([L.Dense(2)]), print_fn=lambda text: None)
    assert isinstance(table, RegularizerTable) and table.rows == ()
    assert "0 trainable variables" in str(table)
    with pytest.raises(TypeError, match="`model`"):
        kl.describe(np.zeros(3))

"""regularize(rules=[(selector, settings), ...]): the first rule that matches a variable wins; kept through saving.

Every expected value here is written out from the rules as given, by hand,
and every penalty is computed with numpy from the variables' values.
"""

import json
import re

import keras
import numpy as np
import pytest
from backends import to_numpy

import keras_l1l2plus as kl

L = keras.layers
KEYWORDS = dict(l1_weight=0.001, l2_weight=0.01, l2_bias=0.02)


def mixed_model():
    """A nested Sequential ("encoder" holding "inner"), two Dense, an EinsumDense, a head."""
    encoder = keras.Sequential([keras.Input((6,)), L.Dense(5, name="inner")], name="encoder")
    inputs = keras.Input((6,))
    x = encoder(inputs)
    x = L.Dense(4, name="dense_a")(x)
    x = L.EinsumDense("ab,bc->ac", output_shape=4, bias_axes="c", name="proj")(x)
    x = L.Dense(3, name="dense_b")(x)
    outputs = L.Dense(2, name="head")(x)
    return keras.Model(inputs, outputs, name="mixed")


def variables(model):
    """{path: (layer, variable)} of `mixed_model`, written out."""
    inner = model.get_layer("encoder").get_layer("inner")
    found = {"encoder/inner/kernel": (inner, inner.kernel), "encoder/inner/bias": (inner, inner.bias)}
    for name in ("dense_a", "proj", "dense_b", "head"):
        layer = model.get_layer(name)
        found[f"{name}/kernel"], found[f"{name}/bias"] = (layer, layer.kernel), (layer, layer.bias)
    return found


PATHS = list(variables(mixed_model()))


def config(l1=0.0, l2=0.0, proximal=False, group=0.0, groups="units"):
    """An L1L2Plus's get_config() without an anchor, as documented."""
    expected = {"l1": l1, "l2": l2, "zero_grad": 0.0, "proximal": proximal}
    if group:
        expected.update(group=group, groups=groups)
    return expected


def randomize(model, seed=0):
    rng = np.random.default_rng(seed)
    model.set_weights([rng.normal(size=w.shape).astype(w.dtype) for w in model.get_weights()])


def penalty_of(model):
    return float(keras.ops.convert_to_numpy(keras.ops.sum(keras.ops.stack(model.losses))))


def numpy_penalty(values, lambdas):
    """Σ over variables of l1·Σ|x| + l2·Σx² + group·Σ_columns ‖x_col‖ + l2_anchor·Σ(x − w₀)²."""
    total = 0.0
    for path, lam in lambdas.items():
        if lam is None:
            continue
        x = values[path].astype("float64")
        total += lam.get("l1", 0.0) * np.abs(x).sum() + lam.get("l2", 0.0) * np.square(x).sum()
        if lam.get("group"):
            total += lam["group"] * np.sqrt(np.square(x.reshape(-1, x.shape[-1])).sum(0)).sum()
        if lam.get("l2_anchor"):
            total += lam["l2_anchor"] * np.square(x - lam["w0"].astype("float64")).sum()
    return total


def regularizer_configs(model):
    """Every trainable variable's regularizer config, in `trainable_weights` order (Keras's own
    `variable.path` of a nested model's variable changes when the model is reloaded or cloned), the
    anchor's key left out."""
    out = []
    for variable in model.trainable_weights:
        reg = variable.regularizer
        cfg = None if reg is None else dict(reg.get_config())
        if cfg and "anchor" in cfg:
            cfg["anchor"] = {k: v for k, v in cfg["anchor"].items() if k != "key"}
        out.append(cfg)
    return out


# --- precedence and selectors ----------------------------------------------------------------------


def test_the_first_matching_rule_wins_and_missing_keys_take_the_keywords():
    specific, general = ("dense_a", {"l1_weight": 0.1}), ("dense*", {"l1_weight": 0.3, "l2_weight": 0.5})
    model = kl.regularize(mixed_model(), **KEYWORDS, rules=[specific, general])
    found = variables(model)
    # dense_a: rule 0, its l2_weight not given there: the keyword's (not rule 1's 0.5).
    assert found["dense_a/kernel"][1].regularizer.get_config() == config(l1=0.1, l2=0.01)
    assert found["dense_b/kernel"][1].regularizer.get_config() == config(l1=0.3, l2=0.5)
    assert found["dense_b/bias"][1].regularizer.get_config() == config(l2=0.02)  # no bias key: keywords
    assert found["proj/kernel"][1].regularizer.get_config() == config(l1=0.001, l2=0.01)  # no rule
    # The other order: the general rule wins dense_a too.
    model = kl.regularize(mixed_model(), **KEYWORDS, rules=[general, specific])
    assert variables(model)["dense_a/kernel"][1].regularizer.get_config() == config(l1=0.3, l2=0.5)


def is_not_head_kernel(layer, variable):
    return variable.name == "kernel" and layer.name != "head"


@pytest.mark.parametrize(
    "selector, selected",
    [
        ("dense_?", {"dense_a/kernel", "dense_a/bias", "dense_b/kernel", "dense_b/bias"}),
        ("dense_b/kernel", {"dense_b/kernel"}),
        ("*/bias", {"encoder/inner/bias", "dense_a/bias", "proj/bias", "dense_b/bias", "head/bias"}),
        ("encoder", {"encoder/inner/kernel", "encoder/inner/bias"}),  # a nested model: all inside it
        ("inner", {"encoder/inner/kernel", "encoder/inner/bias"}),  # a layer inside a nested model
        ("encoder/*/kernel", {"encoder/inner/kernel"}),
        (L.EinsumDense, {"proj/kernel", "proj/bias"}),
        (keras.Sequential, {"encoder/inner/kernel", "encoder/inner/bias"}),  # the class of a containing layer
        (is_not_head_kernel, {"encoder/inner/kernel", "dense_a/kernel", "proj/kernel", "dense_b/kernel"}),
    ],
    ids=["glob-name", "path", "star-bias", "nested-model", "inner-layer", "path-glob", "class", "container-class",
         "predicate"],
)
def test_every_kind_of_selector(selector, selected):
    model = kl.regularize(mixed_model(), l2_weight=0.01, l2_bias=0.02,
                          rules=[(selector, {"l1_weight": 0.1, "l1_bias": 0.2})])
    for path, (_, variable) in variables(model).items():
        bias = path.endswith("bias")
        l1 = (0.2 if bias else 0.1) if path in selected else 0.0
        assert variable.regularizer.get_config() == config(l1=l1, l2=0.02 if bias else 0.01), path


def test_none_leaves_the_variables_it_wins_unregularized():
    model = mixed_model()
    model.get_layer("head").kernel_regularizer = model.get_layer("head").kernel.regularizer = keras.regularizers.L2(1.0)
    kl.regularize(model, **KEYWORDS, rules=[("head", None)])
    head = model.get_layer("head")
    assert head.kernel.regularizer is None and head.bias.regularizer is None
    assert head.kernel_regularizer is None and head.bias_regularizer is None
    assert model.get_layer("dense_a").kernel.regularizer.get_config() == config(l1=0.001, l2=0.01)
    assert len(model.losses) == 8  # 10 variables, the head's 2 without


# --- the penalty of a mixed model ----------------------------------------------------------------


def is_dense_a(layer, variable):
    return layer.name == "dense_a"


MIXED_RULES = [
    ("head", None),
    ("*/bias", {"l1_bias": 0.05}),
    ("encoder", {"l2_weight": 0.2, "group_weight": 0.03}),
    (L.EinsumDense, {"l1_weight": 0.04, "proximal_weight": True}),
    ("dense_b/kernel", {"l2_weight": 0.0}),
    (is_dense_a, {"l2_anchor_weight": 0.5, "l2_anchor_bias": 0.7}),
]
# What each variable gets under MIXED_RULES and KEYWORDS, read off the rules by hand (the first match wins).
MIXED_LAMBDAS = {
    "encoder/inner/kernel": dict(l1=0.001, l2=0.2, group=0.03),  # rule 2
    "encoder/inner/bias": dict(l1=0.05, l2=0.02),  # rule 1 before rule 2
    "dense_a/kernel": dict(l1=0.001, l2=0.01, l2_anchor=0.5),  # rule 5, anchored at its value at the call
    "dense_a/bias": dict(l1=0.05, l2=0.02),  # rule 1 before rule 5: no anchor
    "proj/kernel": dict(l1=0.04, l2=0.01, proximal=True),  # rule 3
    "proj/bias": dict(l1=0.05, l2=0.02),  # rule 1
    "dense_b/kernel": dict(l1=0.001, l2=0.0),  # rule 4
    "dense_b/bias": dict(l1=0.05, l2=0.02),  # rule 1
    "head/kernel": None,  # rule 0
    "head/bias": None,  # rule 0
}
MIXED_SOURCES = {
    "encoder/inner/kernel": "rule 2 'encoder'", "encoder/inner/bias": "rule 1 '*/bias'",
    "dense_a/kernel": "rule 5 is_dense_a", "dense_a/bias": "rule 1 '*/bias'", "proj/kernel": "rule 3 EinsumDense",
    "proj/bias": "rule 1 '*/bias'", "dense_b/kernel": "rule 4 'dense_b/kernel'", "dense_b/bias": "rule 1 '*/bias'",
    "head/kernel": "rule 0 'head'", "head/bias": "rule 0 'head'",
}


def regularized_mixed_model(seed=0):
    model = mixed_model()
    randomize(model, seed)
    w0 = to_numpy(model.get_layer("dense_a").kernel)
    kl.regularize(model, **KEYWORDS, rules=MIXED_RULES)
    randomize(model, seed + 1)  # away from the anchor
    lambdas = {path: (None if lam is None else dict(lam)) for path, lam in MIXED_LAMBDAS.items()}
    lambdas["dense_a/kernel"]["w0"] = w0
    return model, lambdas


def test_the_penalty_of_a_mixed_model_is_each_variables_own():
    model, lambdas = regularized_mixed_model()
    values = {path: to_numpy(variable) for path, (_, variable) in variables(model).items()}
    assert penalty_of(model) == pytest.approx(numpy_penalty(values, lambdas), rel=1e-5)
    for path, (layer, variable) in variables(model).items():
        lam = MIXED_LAMBDAS[path]
        reg = variable.regularizer
        attribute = getattr(layer, f"{path.rsplit('/', 1)[1]}_regularizer")
        assert reg is attribute, path  # one object: the variable's and the attribute that saves it
        if lam is None:
            assert reg is None, path
            continue
        assert (reg.l1, reg.l2, reg.group, reg.proximal) == (
            lam["l1"], lam["l2"], lam.get("group", 0.0), lam.get("proximal", False)), path
        assert reg.l2_anchor == lam.get("l2_anchor", 0.0) and reg.anchored == ("l2_anchor" in lam), path
        assert reg.source == MIXED_SOURCES[path]
    np.testing.assert_array_equal(to_numpy(model.get_layer("dense_a").kernel.regularizer.anchor),
                                  lambdas["dense_a/kernel"]["w0"])


def test_a_layer_inside_a_nested_model_and_a_layer_called_twice_are_regularized_once():
    twice = L.Dense(3, name="twice")
    shared = L.Dense(3, name="shared")
    encoder = keras.Sequential([keras.Input((3,)), shared], name="encoder")
    inputs = keras.Input((3,))
    outputs = shared(encoder(twice(twice(inputs))))  # `shared` is in `encoder` and in the outer model
    model = keras.Model(inputs, outputs)
    # `shared` is inside "encoder" on one path and top-level on the other: "encoder" selects it.
    kl.regularize(model, l2_weight=0.01, rules=[("encoder", {"l2_weight": 0.3}), ("shared/bias", {"l2_bias": 0.5})])
    randomize(model)
    assert shared.kernel.regularizer.get_config() == config(l2=0.3)
    assert shared.bias.regularizer is None  # rule 0 won it (no l2_bias there: the keyword's 0)
    assert twice.kernel.regularizer.get_config() == config(l2=0.01)
    assert len(model.losses) == 2  # each variable once, however often its layer is called
    expected = 0.01 * np.square(to_numpy(twice.kernel)).sum() + 0.3 * np.square(to_numpy(shared.kernel)).sum()
    assert penalty_of(model) == pytest.approx(expected, rel=1e-5)
    # The path through the outer model selects it too.
    kl.regularize(model, rules=[("shared/bias", {"l2_bias": 0.5})])
    assert shared.bias.regularizer.get_config() == config(l2=0.5) and twice.kernel.regularizer is None


def test_frozen_layers_are_matched_and_count_once_unfrozen():
    model = keras.Sequential([keras.Input((4,)), L.Dense(3, name="frozen"), L.Dense(2, name="head")])
    frozen = model.get_layer("frozen")
    frozen.trainable = False
    kl.regularize(model, l2_weight=0.01, rules=[("frozen", {"l2_weight": 0.3, "l1_bias": 0.2})])
    assert frozen.trainable is False
    assert frozen.kernel.regularizer is frozen.kernel_regularizer
    assert frozen.kernel.regularizer.get_config() == config(l2=0.3)
    assert frozen.bias.regularizer.get_config() == config(l1=0.2)
    randomize(model)
    head_kernel = to_numpy(model.get_layer("head").kernel)
    assert penalty_of(model) == pytest.approx(0.01 * np.square(head_kernel).sum(), rel=1e-5)
    frozen.trainable = True
    expected = (0.01 * np.square(head_kernel).sum() + 0.3 * np.square(to_numpy(frozen.kernel)).sum()
                + 0.2 * np.abs(to_numpy(frozen.bias)).sum())
    assert penalty_of(model) == pytest.approx(expected, rel=1e-5)


def test_an_unbuilt_model_takes_the_rules_when_built():
    model = keras.Sequential([L.Dense(4, name="a"), L.Dense(2, name="b")])
    kl.regularize(model, l2_weight=0.01, rules=[("*/bias", {"l2_bias": 0.3}), ("b", {"l1_weight": 0.1})])
    model.build((None, 5))
    a, b = model.get_layer("a"), model.get_layer("b")
    assert a.kernel.regularizer.get_config() == config(l2=0.01)
    assert a.bias.regularizer.get_config() == b.bias.regularizer.get_config() == config(l2=0.3)
    assert b.kernel.regularizer.get_config() == config(l1=0.1, l2=0.01)
    assert b.kernel.regularizer is b.kernel_regularizer


# Layers whose variables are saved by attributes of other names: each variable alone by its path.
LAYER_CASES = {
    "LSTM": (lambda: keras.Sequential([keras.Input((5, 3)), L.LSTM(4, name="lstm")]),
             {"lstm/lstm_cell/kernel": ("cell", "kernel_regularizer"),
              "lstm/lstm_cell/recurrent_kernel": ("cell", "recurrent_regularizer"),
              "lstm/lstm_cell/bias": ("cell", "bias_regularizer")}),
    "SeparableConv2D": (lambda: keras.Sequential([keras.Input((6, 6, 2)), L.SeparableConv2D(3, 3, name="sep")]),
                        {"sep/depthwise_kernel": (None, "depthwise_regularizer"),
                         "sep/pointwise_kernel": (None, "pointwise_regularizer"),
                         "sep/bias": (None, "bias_regularizer")}),
    "DepthwiseConv2D": (lambda: keras.Sequential([keras.Input((6, 6, 2)), L.DepthwiseConv2D(3, name="dw")]),
                        {"dw/kernel": (None, "depthwise_regularizer"), "dw/bias": (None, "bias_regularizer")}),
    "Embedding": (lambda: keras.Sequential([keras.Input((4,), dtype="int32"), L.Embedding(10, 3, name="emb")]),
                  {"emb/embeddings": (None, "embeddings_regularizer")}),
}


@pytest.mark.parametrize("case", sorted(LAYER_CASES))
def test_a_rule_on_one_variable_path_sets_that_variable_and_its_attribute_and_is_cloned(case):
    build, expected = LAYER_CASES[case]
    for path, (sublayer, attribute) in expected.items():
        model = build()
        layer = model.layers[0]
        owner = getattr(layer, sublayer) if sublayer else layer
        kl.regularize(model, rules=[(path, {"l2_weight": 0.7, "l2_bias": 0.7})])
        name = path.rsplit("/", 1)[1]
        chosen = [v for v in owner.trainable_weights if v.name == name]
        assert len(chosen) == 1
        assert chosen[0].regularizer is getattr(owner, attribute)
        assert chosen[0].regularizer.get_config() == config(l2=0.7)
        assert all(v.regularizer is None for v in model.trainable_weights if v is not chosen[0]), path
        clone = keras.models.clone_model(model)
        assert [v.regularizer and v.regularizer.get_config() for v in clone.trainable_weights] == [
            v.regularizer and v.regularizer.get_config() for v in model.trainable_weights], path


# --- what is refused ---------------------------------------------------------------------------------


def test_an_unknown_key_names_the_rule_and_lists_the_allowed_keys():
    with pytest.raises(ValueError) as error:
        kl.regularize(mixed_model(), rules=[("head", None), ("dense_*", {"l2_weights": 0.1})])
    message = str(error.value)
    assert "rules[1]" in message and "'dense_*'" in message and "'l2_weights'" in message
    for key in ("l1_weight", "l2_anchor_bias", "anchor", "groups", "proximal_bias", "zero_grad"):
        assert repr(key) in message


@pytest.mark.parametrize(
    "settings, error, name",
    [
        ({"l2_weight": -1.0}, ValueError, "rules[0]['l2_weight']"),
        ({"l1_bias": float("nan")}, ValueError, "rules[0]['l1_bias']"),
        ({"l2_anchor_weight": "0.1"}, ValueError, "rules[0]['l2_anchor_weight']"),
        ({"group_weight": True}, ValueError, "rules[0]['group_weight']"),
        ({"groups": "rows"}, ValueError, "rules[0]['groups']"),
        ({"proximal_weight": 1}, TypeError, "rules[0]['proximal_weight']"),
        ({"zero_grad": 2.0}, ValueError, "rules[0]['zero_grad']"),
        ({"anchor": [1.0]}, TypeError, "rules[0]['anchor']"),
    ],
)
def test_bad_values_are_named_like_the_keywords(settings, error, name):
    model = mixed_model()
    with pytest.raises(error, match=re.escape(f"`{name}`")):
        kl.regularize(model, rules=[("dense_a", settings)])
    assert all(variable.regularizer is None for _, variable in variables(model).values())  # nothing half-applied


@pytest.mark.parametrize(
    "rules, name",
    [
        ("dense_a", "`rules`"),
        ({"dense_a": {}}, "`rules`"),
        ([("dense_a", {}, 1)], "`rules[0]`"),
        ([(3, {})], "`rules[0]`"),
        ([(keras.optimizers.SGD, {})], "`rules[0]`"),
        ([("dense_a", [("l2_weight", 0.1)])], "`rules[0]`"),
    ],
)
def test_a_wrong_kind_of_rule_is_a_type_error(rules, name):
    with pytest.raises(TypeError, match=re.escape(name)):
        kl.regularize(mixed_model(), rules=rules)


def test_a_layer_given_as_a_selector_points_to_its_name_and_that_runs():
    model = mixed_model()
    with pytest.raises(TypeError) as error:
        kl.regularize(model, rules=[(model.get_layer("head"), {"l2_weight": 0.1})])
    fix = re.search(r"\('head', settings\)", str(error.value)).group(0)
    kl.regularize(model, rules=[eval(fix, {"settings": {"l2_weight": 0.1}})])
    assert model.get_layer("head").kernel.regularizer.get_config() == config(l2=0.1)


def test_a_callable_lambda_in_a_rule_points_to_a_schedule_that_runs():
    schedule = lambda epoch: 0.1  # noqa: E731
    with pytest.raises(ValueError) as error:
        kl.regularize(mixed_model(), rules=[("head", {"l2_weight": schedule})])
    call = re.search(r"keras_l1l2plus\.PenaltySchedule\(l2_weight=\.\.\.\)", str(error.value)).group(0)
    assert "rules[0]['l2_weight']" in str(error.value)
    model = kl.regularize(mixed_model(), l2_weight=0.5)
    model.compile(optimizer="sgd", loss="mse")
    rng = np.random.default_rng(0)
    model.fit(rng.normal(size=(8, 6)).astype("float32"), rng.normal(size=(8, 2)).astype("float32"), verbose=0,
              callbacks=[eval(call.replace("keras_l1l2plus", "kl").replace("...", "schedule"))])
    assert model.get_layer("head").kernel_regularizer.get_config()["l2"] == 0.1


def test_a_rule_that_matches_no_variable_names_it_and_lists_the_paths():
    with pytest.raises(ValueError) as error:
        kl.regularize(mixed_model(), rules=[("head", None), ("decoder*", {"l2_weight": 0.1})])
    message = str(error.value)
    assert "rules[1]" in message and "'decoder*'" in message and "matches no variable" in message
    assert all(repr(path) in message for path in PATHS)


def never(layer, variable):
    return False


def test_a_predicate_that_matches_nothing_is_named():
    with pytest.raises(ValueError, match=r"`rules\[0\]`: rule 0 never matches no variable"):
        kl.regularize(mixed_model(), rules=[(never, {"l2_weight": 0.1})])


@pytest.mark.parametrize(
    "exclude, rules, path",
    [
        (["head", "proj"], [("head", {"l2_weight": 0.3})], "head/kernel"),
        ("encoder", [("inner", {"l2_weight": 0.3})], "encoder/inner/kernel"),
    ],
)
def test_a_rule_matching_only_excluded_variables_says_so_and_its_fix_runs(exclude, rules, path):
    with pytest.raises(ValueError) as error:
        kl.regularize(mixed_model(), l2_weight=0.01, exclude=exclude, rules=rules)
    message = str(error.value)
    assert "rules[0]" in message and "`exclude`" in message and "leaves alone" in message
    fix = re.search(r"pass (exclude=[^;]+);", message).group(1)
    model = mixed_model()
    kl.regularize(model, l2_weight=0.01, rules=rules, **eval(f"dict({fix})"))
    assert variables(model)[path][1].regularizer.get_config() == config(l2=0.3)


def test_a_rule_matching_only_normalization_layers_points_to_normalization_true_which_runs():
    def build():
        return keras.Sequential([keras.Input((4,)), L.Dense(3), L.BatchNormalization(name="bn")])

    with pytest.raises(ValueError) as error:
        kl.regularize(build(), l2_weight=0.01, rules=[("bn", {"l2_weight": 0.3, "l2_bias": 0.4})])
    fix = re.search(r"pass (normalization=True)", str(error.value)).group(1)
    model = build()
    kl.regularize(model, l2_weight=0.01, rules=[("bn", {"l2_weight": 0.3, "l2_bias": 0.4})], **eval(f"dict({fix})"))
    bn = model.get_layer("bn")
    assert bn.gamma.regularizer.get_config() == config(l2=0.3)
    assert bn.beta.regularizer.get_config() == config(l2=0.4)
    assert bn.moving_mean.regularizer is None


def test_exclude_wins_over_a_rule_that_also_matches_other_variables():
    model = kl.regularize(mixed_model(), exclude="head", rules=[("*/kernel", {"l2_weight": 0.3})])
    assert model.get_layer("head").kernel.regularizer is None
    assert model.get_layer("dense_a").kernel.regularizer.get_config() == config(l2=0.3)


def attention_model():
    inputs = keras.Input((5, 4))
    x = L.MultiHeadAttention(num_heads=2, key_dim=3, name="attention")(inputs, inputs)
    outputs = L.Dense(2, name="head")(x)
    return keras.Model(inputs, outputs)


@pytest.mark.parametrize(
    "keywords, rules",
    [
        ({"l2_weight": 0.01}, [("*/query/kernel", {"l2_weight": 0.5})]),  # one of the kernels differs
        ({"l2_anchor_weight": 0.1}, []),  # an anchor per kernel, one attribute for all
    ],
    ids=["rule", "anchor"],
)
def test_variables_one_attribute_saves_must_agree_and_the_fix_runs(keywords, rules):
    with pytest.raises(ValueError) as error:
        kl.regularize(attention_model(), **keywords, rules=rules)
    message = str(error.value)
    assert "`_kernel_regularizer` of layer 'attention' (MultiHeadAttention)" in message
    assert "'attention/query/kernel'" in message and "'attention/attention_output/kernel'" in message
    fix = re.search(r"put (\('attention', .*?\)) first in `rules`", message).group(1)
    model = attention_model()
    kl.regularize(model, **keywords, rules=[eval(fix), *rules])
    attention = model.get_layer("attention")
    kernels = [v for v in attention.trainable_weights if v.name == "kernel"]
    assert len(kernels) == 4
    assert all(v.regularizer is attention._kernel_regularizer for v in kernels)  # one object for all
    assert "exclude='attention'" in message
    excluded = kl.regularize(attention_model(), **keywords, exclude="attention")  # the rules inside it dropped
    assert all(v.regularizer is None for v in excluded.get_layer("attention").trainable_weights)


def test_one_rule_for_a_multi_head_attention_is_kept_through_clone():
    model = kl.regularize(attention_model(), l2_weight=0.01, rules=[("attention", {"l2_weight": 0.5})])
    randomize(model)
    attention = model.get_layer("attention")
    values = {v.path: to_numpy(v) for v in model.trainable_weights}
    kernels = [v.path for v in attention.trainable_weights if v.name == "kernel"]
    expected = sum(0.5 * np.square(values[p]).sum() for p in kernels)
    expected += 0.01 * np.square(to_numpy(model.get_layer("head").kernel)).sum()
    assert penalty_of(model) == pytest.approx(expected, rel=1e-5)
    clone = keras.models.clone_model(model)
    clone.set_weights(model.get_weights())
    assert penalty_of(clone) == pytest.approx(expected, rel=1e-5)


def test_a_multi_head_attention_saves_the_group_kind_its_kernels_have():
    model = kl.regularize(attention_model(), group_weight=0.1, groups="both")
    attention = model.get_layer("attention")
    kinds = [v.regularizer.groups for v in attention.trainable_weights if v.name == "kernel"]
    assert kinds == ["inputs"] * 4 and attention._kernel_regularizer.groups == "inputs"
    clone = keras.models.clone_model(model)  # rebuilds the kernels from the attention's attribute
    assert [v.regularizer.groups for v in clone.get_layer("attention").trainable_weights if v.name == "kernel"] == kinds


# --- saving -------------------------------------------------------------------------------------


def test_clone_model_and_json_keep_every_rule():
    model, lambdas = regularized_mixed_model()
    expected = penalty_of(model)
    configs = regularizer_configs(model)
    assert len(configs) == 10 and sum(cfg is None for cfg in configs) == 2  # the head's
    anchor = to_numpy(model.get_layer("dense_a").kernel.regularizer.anchor)
    for copy in (keras.models.clone_model(model), keras.models.model_from_json(model.to_json())):
        copy.set_weights(model.get_weights())
        assert regularizer_configs(copy) == configs
        np.testing.assert_array_equal(to_numpy(copy.get_layer("dense_a").kernel.regularizer.anchor), anchor)
        assert penalty_of(copy) == pytest.approx(expected, rel=1e-6)


@pytest.mark.slow
def test_a_keras_file_keeps_every_rule_in_a_fresh_process(tmp_path, fresh_python):
    model, lambdas = regularized_mixed_model()
    path = tmp_path / "mixed.keras"
    model.save(path)
    out = fresh_python(
        f"""
        import json, keras
        import keras_l1l2plus as kl

        model = keras.models.load_model({str(path)!r})
        configs = []
        for variable in model.trainable_weights:
            reg = variable.regularizer
            cfg = None if reg is None else dict(reg.get_config())
            if cfg and "anchor" in cfg:
                cfg["anchor"] = {{k: v for k, v in cfg["anchor"].items() if k != "key"}}
            configs.append(cfg)
        dense_a = model.get_layer("dense_a")
        table = kl.describe(model, print_fn=lambda text: None)
        print(json.dumps({{
            "configs": configs,
            "loss": float(keras.ops.convert_to_numpy(keras.ops.sum(keras.ops.stack(model.losses)))),
            "anchor": keras.ops.convert_to_numpy(dense_a.kernel.regularizer.anchor).tolist(),
            "same_object": dense_a.kernel.regularizer is dense_a.kernel_regularizer,
            "sources": sorted({{row.source for row in table.rows}}),
        }}))
        """
    )
    result = json.loads(out.strip().splitlines()[-1])
    assert result["configs"] == regularizer_configs(model)
    values = {p: to_numpy(v) for p, (_, v) in variables(model).items()}
    assert result["loss"] == pytest.approx(numpy_penalty(values, lambdas), rel=1e-5)
    np.testing.assert_array_equal(np.array(result["anchor"], "float32"), lambdas["dense_a/kernel"]["w0"])
    assert result["same_object"] is True
    assert result["sources"] == ["-"]  # a source is not saved


# --- dry_run -------------------------------------------------------------------------------------


def test_dry_run_changes_nothing_and_returns_the_table_a_real_run_then_describes(capsys):
    model = mixed_model()
    kl.regularize(model, l1_weight=0.3, l2_bias=0.4)
    before = {path: variable.regularizer for path, (_, variable) in variables(model).items()}
    configs = {path: reg and reg.get_config() for path, reg in before.items()}
    attributes = [id(layer.kernel_regularizer) for layer, _ in variables(model).values()]
    capsys.readouterr()
    table = kl.regularize(model, **KEYWORDS, rules=MIXED_RULES, dry_run=True)
    printed = capsys.readouterr().out
    after = {path: variable.regularizer for path, (_, variable) in variables(model).items()}
    assert all(after[path] is before[path] for path in before)  # the same objects, untouched
    assert {path: reg and reg.get_config() for path, reg in after.items()} == configs
    assert [id(layer.kernel_regularizer) for layer, _ in variables(model).values()] == attributes
    assert "nothing was changed" in printed and table.to_string() in printed
    assert kl.regularize(model, **KEYWORDS, rules=MIXED_RULES) is model
    described = kl.describe(model, print_fn=lambda text: None)
    assert described == table
    assert {row.path: row.source for row in table.rows} == MIXED_SOURCES


def test_dry_run_raises_what_a_real_run_raises():
    with pytest.raises(ValueError, match="matches no variable"):
        kl.regularize(mixed_model(), rules=[("nothing", None)], dry_run=True)
    with pytest.raises(TypeError, match="`dry_run`"):
        kl.regularize(mixed_model(), dry_run="yes")


# --- anchors (L2-SP) --------------------------------------------------------------------------


def two_layer_model():
    model = keras.Sequential([keras.Input((5,)), L.Dense(4, name="a"), L.Dense(2, name="b")])
    randomize(model)
    return model


def test_anchor_none_takes_the_weights_at_the_call_and_training_moves_away_from_them():
    model = two_layer_model()
    a, b = model.get_layer("a"), model.get_layer("b")
    w0 = {name: to_numpy(v) for name, v in (("ak", a.kernel), ("ab", a.bias), ("bk", b.kernel), ("bb", b.bias))}
    kl.regularize(model, l2_anchor_weight=0.3, l2_anchor_bias=0.1, rules=[("b", {"l2_anchor_weight": 0.0})])
    assert penalty_of(model) == pytest.approx(0.0, abs=1e-12)  # at the anchor
    model.compile(optimizer=keras.optimizers.SGD(0.1), loss="mse")
    rng = np.random.default_rng(1)
    model.fit(rng.normal(size=(16, 5)).astype("float32"), rng.normal(size=(16, 2)).astype("float32"),
              batch_size=16, epochs=1, verbose=0)
    expected = (0.3 * np.square(to_numpy(a.kernel) - w0["ak"]).sum()
                + 0.1 * np.square(to_numpy(a.bias) - w0["ab"]).sum()
                + 0.1 * np.square(to_numpy(b.bias) - w0["bb"]).sum())
    assert expected > 1e-6  # the step moved the weights
    assert penalty_of(model) == pytest.approx(expected, rel=1e-5)
    assert b.kernel.regularizer is None  # rule 0: λa 0 and nothing else


def test_anchor_dicts_of_the_keywords_and_of_a_rule():
    model = two_layer_model()
    rng = np.random.default_rng(2)
    given = {"a/kernel": rng.normal(size=(5, 4)).astype("float32")}
    ruled = {"b/kernel": rng.normal(size=(4, 2)).astype("float32")}
    kl.regularize(model, l2_anchor_weight=0.2, anchor=given,
                  rules=[("b", {"l2_anchor_weight": 0.4, "anchor": ruled})])
    a, b = model.get_layer("a"), model.get_layer("b")
    np.testing.assert_array_equal(to_numpy(a.kernel.regularizer.anchor), given["a/kernel"])
    expected = (0.2 * np.square(to_numpy(a.kernel) - given["a/kernel"]).sum()
                + 0.4 * np.square(to_numpy(b.kernel) - ruled["b/kernel"]).sum())
    assert penalty_of(model) == pytest.approx(expected, rel=1e-5)
    given["a/kernel"][:] = 0  # the regularizer holds a copy
    assert penalty_of(model) == pytest.approx(expected, rel=1e-5)


@pytest.mark.parametrize(
    "kwargs, pattern",
    [
        (dict(l2_anchor_weight=0.1, anchor={"a/kernel": np.zeros((5, 4))}), r"`anchor`: no anchor for 'b/kernel'"),
        (dict(l2_anchor_weight=0.1, anchor={"a/kernel": np.zeros((5, 4)), "b/kernel": np.zeros((4, 2)),
                                            "a/bias": np.zeros(4)}),
         r"`anchor`: \['a/bias'\] name no variable that takes its anchor"),
        (dict(l2_anchor_weight=0.1, anchor={"a/kernel": np.zeros((4, 5)), "b/kernel": np.zeros((4, 2))}),
         r"`anchor`: the anchor of 'a/kernel' has shape \(4, 5\), and the variable \(5, 4\)"),
        (dict(rules=[("a", {"l2_anchor_weight": 0.1, "anchor": {"b/kernel": np.zeros((4, 2))}})]),
         r"`rules\[0\]\['anchor'\]`: no anchor for 'a/kernel'"),
    ],
    ids=["missing", "unused", "shape", "rule"],
)
def test_anchor_errors_name_the_path(kwargs, pattern):
    model = two_layer_model()
    with pytest.raises(ValueError, match=pattern):
        kl.regularize(model, **kwargs)
    assert all(v.regularizer is None for v in model.trainable_weights)


def test_an_unbuilt_model_cannot_be_anchored_and_building_it_first_runs():
    model = keras.Sequential([L.Dense(4, name="a")])
    with pytest.raises(ValueError, match=r"not built.*model\.build\(input_shape\)"):
        kl.regularize(model, l2_anchor_weight=0.1)
    model.build((None, 3))
    kl.regularize(model, l2_anchor_weight=0.1)
    assert model.get_layer("a").kernel.regularizer.anchored


# --- what a review found ------------------------------------------------------------------------


def test_a_pattern_does_not_match_the_model_itself():
    model = keras.Sequential([keras.Input((3,)), L.Dense(4, name="dense_1"), L.Dense(1, name="dense_2")],
                             name="sequential_1")
    kl.regularize(model, l2_weight=1e-3, rules=[("*_1", {"l2_weight": 0.5})])
    assert model.get_layer("dense_1").kernel.regularizer.l2 == 0.5
    assert model.get_layer("dense_2").kernel.regularizer.l2 == 1e-3  # not through the model's name
    with pytest.raises(ValueError, match="rules\\[0\\]"):  # the model's name alone selects nothing
        kl.regularize(model, rules=[("sequential_1", {"l2_weight": 0.5})])


def test_a_bad_anchor_changes_nothing_and_names_its_variable():
    model = keras.Sequential([keras.Input((3,)), L.Dense(2, name="d"), L.Dense(1, name="h")])
    kl.regularize(model, l2_weight=0.01)
    def configs():
        return {v.path: json.dumps(v.regularizer and v.regularizer.get_config()) for v in model.trainable_variables}

    before = configs()
    bad = {"d/kernel": np.zeros((3, 2)), "h/kernel": np.full((2, 1), np.nan)}
    for dry_run in (True, False):
        with pytest.raises(ValueError, match=r"anchor\['h/kernel'\].*NaN or inf"):
            kl.regularize(model, l2_anchor_weight=0.1, anchor=bad, dry_run=dry_run)
    assert configs() == before
    kl.regularize(model, l2_anchor_weight=0.1, anchor={"d/kernel": np.ones((3, 2)), "h/kernel": np.ones((2, 1))})
    anchor = model.get_layer("d").kernel.regularizer.anchor  # float64 ones: kept in the variable's dtype
    assert keras.backend.standardize_dtype(anchor.dtype) == "float32" and to_numpy(anchor).tolist() == [[1, 1]] * 3


def test_excluding_a_part_of_a_multi_head_attention_says_to_exclude_all_of_it():
    inputs = keras.Input((4, 8))
    model = keras.Model(inputs, L.MultiHeadAttention(2, 4, name="mha")(inputs, inputs))
    with pytest.raises(ValueError, match="exclude='mha'") as error:
        kl.regularize(model, l2_weight=0.1, exclude="query")
    assert "exclude the whole layer" in str(error.value)
    kl.regularize(model, l2_weight=0.1, exclude="mha")  # the fix runs
    assert all(v.regularizer is None for v in model.trainable_variables)

"""`shrink`: the small model computes what the original does, with fewer units, and says what it removed."""

import importlib
import json
import re

import keras
import numpy as np
import pytest

import keras_l1l2plus as kl

L = keras.layers
shrink_module = importlib.import_module("keras_l1l2plus.shrink")  # `kl.shrink` is the function


def to_numpy(tensor):
    return keras.ops.convert_to_numpy(tensor).astype("float64")  # (a cast on the backend warns on JAX)


def normal(*shape, seed=1):
    return np.random.default_rng(seed).standard_normal(shape).astype("float32")


def set_layer(layer, kernel=None, bias=None, zero_columns=(), zero_rows=()):
    """Sets `layer`'s weights, with whole columns (output units) and rows (inputs) zeroed by hand."""
    k, b = (w.copy() for w in layer.get_weights())
    k = k if kernel is None else kernel
    k[..., list(zero_columns)] = 0.0
    k[..., list(zero_rows), :] = 0.0
    layer.kernel.assign(k)
    layer.bias.assign(b if bias is None else np.asarray(bias, "float32"))


def outputs(model, x):
    return [to_numpy(o) for o in keras.tree.flatten(model(x))]


def assert_same_outputs(model, small, report, x):
    for before, after in zip(outputs(model, x), outputs(small, report.select_features(x))):
        np.testing.assert_allclose(after, before, rtol=1e-5, atol=1e-5 * np.abs(before).max())


def row(report, name):
    return next(r for r in report.layers if r.name == name)


def mlp():
    model = keras.Sequential(
        [
            keras.Input((5,)),
            L.Dense(6, activation="relu", name="h1"),
            L.Dropout(0.5, name="drop"),
            L.Dense(4, activation="tanh", name="h2"),
            L.Dense(3, name="out"),
        ]
    )
    # h1: units 1 and 3 dead; unit 1's relu(0.4) = 0.4 is folded, unit 3's relu(-0.3) = 0.
    set_layer(model.get_layer("h1"), bias=[0.1, 0.4, -0.2, -0.3, 0.5, 0.2], zero_columns=[1, 3])
    set_layer(model.get_layer("h2"), bias=[0.3, -0.1, 0.2, 0.6])
    return model


def test_dead_units_with_live_biases_are_folded_into_the_next_layer():
    model = mlp()
    weights_before = [w.copy() for w in model.get_weights()]
    small, report = kl.shrink(model)
    assert [r.removed.tolist() for r in report.layers] == [[1, 3], [], [], []]
    assert small.get_layer("h1").units == 4 and small.get_layer("h2").units == 4
    # The fold, computed independently: b2 + Σ_j relu(b1_j)·W2[j, :] over the dead units.
    w2, b2 = model.get_layer("h2").get_weights()
    expected = b2 + 0.4 * w2[1] + 0.0 * w2[3]
    np.testing.assert_allclose(small.get_layer("h2").get_weights()[1], expected, rtol=1e-6)
    np.testing.assert_array_equal(small.get_layer("h2").get_weights()[0], w2[[0, 2, 4, 5]])
    x = normal(64, 5)
    assert_same_outputs(model, small, report, x)
    # Without the fold the outputs would differ: the test can see a missing 0.4·W2[1].
    assert np.abs(0.4 * w2[1]).max() > 1e-3
    for before, after in zip(weights_before, model.get_weights()):  # the original is untouched
        np.testing.assert_array_equal(before, after)
    assert isinstance(small, keras.Model) and not isinstance(small, keras.Sequential)


def test_a_dead_unit_whose_value_is_read_by_no_one_and_unread_live_units_are_removed():
    model = mlp()
    # h2's units 0 and 2 are live but read by nobody: the output layer's rows for them are zero.
    set_layer(model.get_layer("out"), zero_rows=[0, 2])
    small, report = kl.shrink(model)
    assert row(report, "h2").removed.tolist() == [0, 2]
    assert small.get_layer("h2").units == 2 and small.get_layer("out").get_weights()[0].shape == (2, 3)
    np.testing.assert_array_equal(small.get_layer("out").get_weights()[1], model.get_layer("out").get_weights()[1])
    assert_same_outputs(model, small, report, normal(64, 5))


def test_removal_propagates_until_nothing_more_goes():
    # h2's unit 1 reads only h1's unit 0; once h2's unit 1 goes (unread by out), h1's unit 0 is unread too.
    model = mlp()
    k1 = model.get_layer("h2").get_weights()[0]
    k1[0, :] = 0.0
    k1[0, 1] = 0.7
    set_layer(model.get_layer("h2"), kernel=k1)
    set_layer(model.get_layer("out"), zero_rows=[1])
    small, report = kl.shrink(model)
    assert row(report, "h2").removed.tolist() == [1]
    assert row(report, "h1").removed.tolist() == [0, 1, 3]
    assert_same_outputs(model, small, report, normal(64, 5))


def test_parameter_counts_and_multiply_adds_in_the_report():
    model = mlp()
    small, report = kl.shrink(model)
    totals = report.totals()
    assert totals["params_before"] == model.count_params() and totals["params_after"] == small.count_params()
    assert totals["params_after"] < totals["params_before"]
    # Dense multiply-adds per example are in·out: 5·6 + 6·4 + 4·3 before, 5·4 + 4·4 + 4·3 after.
    assert (totals["macs_before"], totals["macs_after"]) == (5 * 6 + 6 * 4 + 4 * 3, 5 * 4 + 4 * 4 + 4 * 3)
    text = str(report)
    assert "h1" in text and "6 -> 4" in text and "1, 3" in text and "out: its output is a model output" in text
    as_dict = report.to_dict()
    assert as_dict["layers"][0]["removed"] == [1, 3] and as_dict["totals"] == totals
    assert report.max_error < 1e-4


def cnn():
    inputs = keras.Input((8, 8, 2), name="image")
    x = L.Conv2D(5, 3, activation="linear", name="c1")(inputs)  # 6×6×5
    x = L.BatchNormalization(name="bn")(x)
    x = L.ReLU(name="relu")(x)
    x = L.MaxPooling2D(2, name="pool")(x)  # 3×3×5
    x = L.Conv2D(4, 2, padding="valid", activation="relu", name="c2")(x)  # 2×2×4
    x = L.Flatten(name="flat")(x)  # 16
    model = keras.Model(inputs, L.Dense(3, name="head")(x))
    # c1's filters 0 and 3 dead, with live biases (one maps through BN and ReLU to a nonzero constant).
    set_layer(model.get_layer("c1"), bias=[0.5, 0.1, -0.2, -1.5, 0.3], zero_columns=[0, 3])
    bn = model.get_layer("bn")
    rng = np.random.default_rng(2)
    bn.set_weights([rng.uniform(0.5, 1.5, 5), rng.normal(size=5), rng.normal(size=5), rng.uniform(0.5, 2, 5)])
    # c2's filter 2 dead with relu(0.8) = 0.8, seen by the head through Flatten at 4 positions.
    set_layer(model.get_layer("c2"), bias=[0.1, -0.1, 0.8, 0.2], zero_columns=[2])
    return model


def test_a_cnn_loses_dead_filters_through_batchnorm_pooling_and_flatten():
    model = cnn()
    small, report = kl.shrink(model)
    assert row(report, "c1").removed.tolist() == [0, 3] and row(report, "c2").removed.tolist() == [2]
    assert small.get_layer("c1").filters == 3 and small.get_layer("c2").filters == 3
    assert [w.shape for w in small.get_layer("bn").get_weights()] == [(3,)] * 4
    # The head reads channel c of the 2×2×4 map at inputs 4·p + c: rows 2, 6, 10, 14 are gone, folded.
    w, b = model.get_layer("head").get_weights()
    gone = [2, 6, 10, 14]
    np.testing.assert_array_equal(small.get_layer("head").get_weights()[0], np.delete(w, gone, axis=0))
    np.testing.assert_allclose(small.get_layer("head").get_weights()[1], b + 0.8 * w[gone].sum(0), rtol=1e-5)
    assert_same_outputs(model, small, report, normal(16, 8, 8, 2))
    totals = report.totals()
    assert totals["params_before"] == model.count_params() and totals["params_after"] == small.count_params()
    # Conv multiply-adds: output positions · taps · in · out. c1: 36·9·2·5 → 36·9·2·3.
    assert (row(report, "c1").macs_before, row(report, "c1").macs_after) == (36 * 9 * 2 * 5, 36 * 9 * 2 * 3)
    assert (row(report, "c2").macs_before, row(report, "c2").macs_after) == (4 * 4 * 5 * 4, 4 * 4 * 3 * 3)


@pytest.mark.parametrize("bias, removed", [(-0.5, [1]), (0.5, [])], ids=["relu_zero", "relu_nonzero"])
def test_a_same_padded_reader_folds_only_a_zero_constant(bias, removed):
    inputs = keras.Input((6, 6, 2))
    x = L.Conv2D(3, 3, activation="relu", name="c1")(inputs)
    x = L.Conv2D(2, 3, padding="same", name="c2")(x)
    model = keras.Model(inputs, L.GlobalAveragePooling2D()(x))
    set_layer(model.get_layer("c1"), bias=[0.2, bias, 0.1], zero_columns=[1])
    set_layer(model.get_layer("c2"), bias=[0.3, -0.3])
    small, report = kl.shrink(model)
    # relu(0.5) = 0.5 is not what "same" padding shows the border taps: that filter is kept.
    assert row(report, "c1").removed.tolist() == removed
    assert_same_outputs(model, small, report, normal(8, 6, 6, 2))


def test_a_residual_add_leaves_its_branches_whole_and_says_why():
    inputs = keras.Input((4,))
    a = L.Dense(4, activation="relu", name="a")(inputs)
    b = L.Dense(4, name="b")(a)
    added = L.Add(name="add")([a, b])
    model = keras.Model(inputs, L.Dense(2, name="out")(added))
    set_layer(model.get_layer("a"), bias=[0.3, 0.2, 0.1, 0.4], zero_columns=[2])
    set_layer(model.get_layer("b"), bias=[0.5, 0.1, 0.2, 0.3], zero_columns=[0])
    small, report = kl.shrink(model)
    assert all(len(r.removed) == 0 for r in report.layers)
    assert small.count_params() == model.count_params()
    assert "`add` (Add) together with other tensors" in report.left_whole["a"]
    assert "`add` (Add)" in report.left_whole["b"]
    assert "left whole: b:" in str(report)
    assert_same_outputs(model, small, report, normal(32, 4))


def test_layer_normalization_is_not_cut_across():
    inputs = keras.Input((4,))
    x = L.Dense(5, name="d")(inputs)
    x = L.LayerNormalization(name="ln")(x)
    model = keras.Model(inputs, L.Dense(2)(x))
    set_layer(model.get_layer("d"), bias=[1.0, 2.0, 0.5, -1.0, 0.0], zero_columns=[1])
    small, report = kl.shrink(model)
    assert row(report, "d").removed.tolist() == [] and "LayerNormalization" in report.left_whole["d"]
    assert "normalizes across units" in report.left_whole["d"]
    assert_same_outputs(model, small, report, normal(32, 4))


def two_inputs():
    left, right = keras.Input((4,), name="left"), keras.Input((3,), name="right")
    a = L.Dense(3, activation="relu", name="da")(L.Dropout(0.2)(left))
    b = L.Dense(2, name="db")(right)
    model = keras.Model([left, right], [L.Dense(1, name="oa")(a), L.Dense(2, name="ob")(b)])
    set_layer(model.get_layer("da"), zero_rows=[0, 2])  # left's features 0 and 2 are read by no one
    set_layer(model.get_layer("db"), zero_rows=[1])
    return model


def test_two_inputs_lose_their_unread_features_and_select_features_maps_the_data():
    model = two_inputs()
    small, report = kl.shrink(model)
    assert report.kept_features["left"].tolist() == [1, 3] and report.kept_features["right"].tolist() == [0, 2]
    assert small.inputs[0].shape[-1] == 2 and small.inputs[1].shape[-1] == 2
    x = [normal(16, 4, seed=3), normal(16, 3, seed=4)]
    selected = report.select_features(x)
    np.testing.assert_array_equal(selected[0], x[0][:, [1, 3]])
    np.testing.assert_array_equal(selected[1], x[1][:, [0, 2]])
    assert_same_outputs(model, small, report, x)
    kept, report_kept = kl.shrink(model, x, features="keep")
    assert kept.inputs[0].shape[-1] == 4 and report_kept.kept_features["left"].tolist() == [0, 1, 2, 3]
    assert_same_outputs(model, kept, report_kept, x)


def test_an_input_read_by_a_layer_that_mixes_features_keeps_its_width():
    inputs = keras.Input((3,), name="x")
    model = keras.Model(inputs, L.Dense(2, name="d")(L.LayerNormalization()(inputs)))
    set_layer(model.get_layer("d"), zero_rows=[1])
    small, report = kl.shrink(model)
    assert report.kept_features["x"].tolist() == [0, 1, 2] and "input features kept" in report.left_whole["x"]


def test_the_check_fails_and_names_the_first_layer_that_differs(monkeypatch):
    model = mlp()
    real_fold = shrink_module._fold
    def wrong_fold(values, kernel, features):  # off by one where there is something to fold
        return real_fold(values, kernel, features) + (1.0 if len(features) else 0.0)

    monkeypatch.setattr(shrink_module, "_fold", wrong_fold)
    with pytest.raises(ValueError, match=r"the first layer whose outputs differ is `h2` \(max \|difference\|"):
        kl.shrink(model)


def test_the_divergence_finder_compares_kept_units_layer_by_layer():
    model = mlp()
    small, report = kl.shrink(model)
    x = normal(8, 5)
    keep = np.array([True, False, True, False, True, True])
    masks = {"h1": keep, "drop": keep}
    find = shrink_module.first_divergence
    assert find(model, small, x, x[:, report.kept_features["input_layer"]], masks, 1e-5, None) is None
    out = small.get_layer("out")
    w, b = out.get_weights()
    out.set_weights([w, b + 0.01])
    name, error = find(model, small, x, x[:, report.kept_features["input_layer"]], masks, 1e-5, None)
    assert name == "out" and error == pytest.approx(0.01, rel=1e-3)


def test_bad_arguments_are_named_with_their_values():
    model = mlp()
    with pytest.raises(TypeError, match=re.escape("Invalid value for argument `model`: expected a built Keras")):
        kl.shrink("model")
    with pytest.raises(ValueError, match=re.escape("Invalid value for argument `rtol`: expected a finite float >= 0 or None. "
                                                   "Received: rtol=-1e-05")):
        kl.shrink(model, rtol=-1e-5)
    with pytest.raises(ValueError, match=re.escape("Received: atol='small'")):
        kl.shrink(model, atol="small")
    with pytest.raises(ValueError, match=re.escape('expected "remove" or "keep". Received: features=\'drop\'')):
        kl.shrink(model, features="drop")


def test_an_unbuilt_sequential_is_refused_with_a_fix_that_runs():
    model = keras.Sequential([L.Dense(2)])
    with pytest.raises(ValueError, match="is not built") as error:
        kl.shrink(model)
    assert "model.build((None, n_features))" in str(error.value)
    model.build((None, 3))  # the fix, with this model's width
    small, _ = kl.shrink(model)
    assert small.count_params() == model.count_params()


def test_a_subclassed_model_is_refused_with_a_fix_that_runs():
    class Net(keras.Model):
        def __init__(self):
            super().__init__()
            self.hidden, self.head = L.Dense(4, activation="relu"), L.Dense(1)

        def call(self, x):
            return self.head(self.hidden(x))

    model = Net()
    x = normal(8, 3)
    model(x)
    set_layer(model.hidden, zero_columns=[2])
    with pytest.raises(ValueError, match="subclassed model") as error:
        kl.shrink(model)
    fix = re.search(r"`(shrink\(keras\.Sequential.*?\))`", str(error.value)).group(1)
    small, report = eval(fix, {"shrink": kl.shrink, "keras": keras, "model": model})
    assert small.layers[-2].units == 3
    np.testing.assert_allclose(to_numpy(small(x)), to_numpy(model(x)), rtol=1e-5, atol=1e-6)


def test_custom_regularizers_are_left_out_of_the_small_model():
    model = kl.regularize(mlp(), l1_weight=0.01)
    small, _ = kl.shrink(model)
    assert all(getattr(layer, "kernel_regularizer", None) is None for layer in small.layers)


def residual():
    inputs = keras.Input((4,))
    a = L.Dense(4, activation="relu", name="a")(inputs)
    b = L.Dense(4, name="b")(a)
    c = L.Dense(5, activation="relu", name="c")(L.Add(name="add")([a, b]))
    model = keras.Model(inputs, L.Dense(2, name="out")(c))
    set_layer(model.get_layer("b"), bias=[0.5, 0.1, 0.2, 0.3], zero_columns=[0])  # coupled: left whole
    set_layer(model.get_layer("c"), bias=[0.2, 0.1, 0.3, 0.4, 0.5], zero_columns=[1, 4])  # after the Add: removed
    return model


@pytest.mark.slow
def test_fresh_process_loads_each_small_model_without_keras_l1l2plus(tmp_path, fresh_python):
    """The MLP, the CNN, the residual model and the two-input model: saved, loaded where the package never is."""
    cases = {"mlp": (mlp(), normal(8, 5)), "cnn": (cnn(), normal(4, 8, 8, 2)), "residual": (residual(), normal(8, 4)),
             "two_inputs": (two_inputs(), [normal(8, 4), normal(8, 3, seed=2)])}
    expected, params = {}, {}
    for name, (model, x) in cases.items():
        small, report = kl.shrink(model, x)
        assert small.count_params() < model.count_params(), name
        small.save(tmp_path / f"{name}.keras")
        inputs = report.select_features(x)
        np.savez(tmp_path / f"{name}_x.npz", *(inputs if isinstance(inputs, list) else [inputs]))
        expected[name], params[name] = [to_numpy(o) for o in keras.tree.flatten(model(x))], small.count_params()
    out = fresh_python(
        f"""
        import json, sys
        import keras, numpy as np
        counts = {{}}
        for name in {list(cases)!r}:
            small = keras.saving.load_model({str(tmp_path)!r} + f"/{{name}}.keras")
            arrays = np.load({str(tmp_path)!r} + f"/{{name}}_x.npz")
            x = [arrays[k] for k in sorted(arrays.files, key=lambda k: int(k.split("_")[1]))]
            outputs = keras.tree.flatten(small(x if len(x) > 1 else x[0]))
            np.savez({str(tmp_path)!r} + f"/{{name}}_y.npz", *[keras.ops.convert_to_numpy(o) for o in outputs])
            counts[name] = small.count_params()
        assert not any(name.startswith("keras_l1l2plus") for name in sys.modules)
        print(json.dumps(counts))
        """
    )
    assert json.loads(out.strip().splitlines()[-1]) == params
    for name in cases:
        loaded = np.load(tmp_path / f"{name}_y.npz")
        got = [loaded[f"arr_{i}"] for i in range(len(loaded.files))]
        for a, b in zip(got, expected[name]):
            np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-5 * np.abs(b).max(), err_msg=name)


def test_dict_inputs_are_selected_by_name():
    a, b = keras.Input((3,), name="a"), keras.Input((2,), name="b")
    model = keras.Model({"a": a, "b": b}, L.Dense(2)(L.Concatenate()([L.Dense(3, name="da")(a), b])))
    set_layer(model.get_layer("da"), zero_rows=[1])
    small, report = kl.shrink(model)
    assert report.kept_features["a"].tolist() == [0, 2] and report.kept_features["b"].tolist() == [0, 1]
    assert "Concatenate" in report.left_whole["da"] and "Concatenate" in report.left_whole["b"]
    x = {"a": normal(8, 3), "b": normal(8, 2, seed=2)}
    np.testing.assert_array_equal(report.select_features(x)["a"], x["a"][:, [0, 2]])
    assert_same_outputs(model, small, report, x)


def test_a_batchnorm_channel_with_zero_gamma_cuts_its_unit_whatever_the_kernel():
    """Network slimming: γ_j = 0 makes channel j the constant β_j, folded into the next layer's bias."""
    inputs = keras.Input((8, 8, 2))
    x = L.Conv2D(4, 3, name="c1")(inputs)  # every filter live
    x = L.BatchNormalization(name="bn")(x)
    x = L.ReLU()(x)
    x = L.Conv2D(3, 2, name="c2")(x)  # "valid": a constant input channel folds exactly
    x = L.Flatten()(x)
    model = keras.Model(inputs, L.Dense(2, name="out")(x))
    bn = model.get_layer("bn")
    bn.set_weights([np.array([1.2, 0.0, 0.7, 0.0], "float32"), np.array([0.1, 0.5, -0.2, -0.3], "float32"),
                    np.array([0.3, 0.1, -0.2, 0.4], "float32"), np.array([1.5, 0.5, 2.0, 1.0], "float32")])
    x_data = normal(16, 8, 8, 2)
    small, report = kl.shrink(model, x_data)
    assert row(report, "c1").removed.tolist() == [1, 3]  # relu(0.5) = 0.5 folded; relu(−0.3) = 0
    assert small.get_layer("bn").get_weights()[0].tolist() == pytest.approx([1.2, 0.7])
    # The fold: c2's bias gains Σ_taps relu(β_1)·K2[taps, 1, :] (channel 3's constant is 0).
    k2 = to_numpy(model.get_layer("c2").kernel)
    expected_bias = to_numpy(model.get_layer("c2").bias) + 0.5 * k2[:, :, 1, :].sum(axis=(0, 1))
    np.testing.assert_allclose(to_numpy(small.get_layer("c2").bias), expected_bias, rtol=1e-6)
    assert_same_outputs(model, small, report, x_data)


@pytest.mark.parametrize("policy, rtol", [("mixed_float16", 1e-2), ("mixed_bfloat16", 3e-2)])
def test_mixed_precision_is_checked_at_its_own_precision(policy, rtol):
    keras.config.set_dtype_policy(policy)
    model = mlp()
    small, report = kl.shrink(model, normal(32, 5))
    assert report.rtol == rtol and row(report, "h1").removed.tolist() == [1, 3]
    with pytest.raises(ValueError, match="pass a larger `rtol`"):
        kl.shrink(model, normal(32, 5), rtol=1e-9, atol=0.0)

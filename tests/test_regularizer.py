"""L1L2Plus: values, gradients, dtypes, validation, serialization."""

import copy
import math
import pickle

import keras
import numpy as np
import pytest
from backends import BACKEND, dtype_name, grad_wrt_variable, only_on, op_count, to_numpy, value_and_grad

from keras_l1l2plus import L1L2Plus

# The book's worked example (chapter 14).
WEIGHTS = [0.5, -1.2, 0.8]
BIASES = [0.2, -0.1]
DATA_LOSS = 0.3
L1W, L1B, L2W, L2B = 0.01, 0.005, 0.001, 0.0005


def book_total_loss(weights, biases, data_loss, l1w, l1b, l2w, l2b):
    """The seed's calculate_loss, verbatim in meaning."""
    l1w_term = l1w * sum(abs(w) for w in weights)
    l1b_term = l1b * sum(abs(b) for b in biases)
    l2w_term = l2w * sum(w**2 for w in weights)
    l2b_term = l2b * sum(b**2 for b in biases)
    return data_loss + l1w_term + l1b_term + l2w_term + l2b_term


def numpy_grad(x, l1, l2, zero_grad):
    """∂/∂x of l1·Σ|x| + l2·Σx² with sign(0) := zero_grad."""
    x = np.asarray(x, dtype="float64")
    slope = np.where(x == 0, zero_grad, np.sign(x))
    return l1 * slope + 2 * l2 * x


def tensor_with_zeros(seed=0, shape=(7, 5)):
    rng = np.random.default_rng(seed)
    x = rng.normal(size=shape).astype("float32")
    x.flat[::3] = 0.0
    return x


# --- the worked example through real Dense layers -------------------------


def test_book_worked_example_through_dense_layer_losses():
    assert book_total_loss(WEIGHTS, BIASES, DATA_LOSS, L1W, L1B, L2W, L2B) == pytest.approx(
        0.328855, abs=1e-12
    )
    # One Dense layer holds the three weights (kernel 3x1)...
    inputs = keras.Input((3,))
    hidden = keras.layers.Dense(
        1,
        use_bias=False,
        kernel_regularizer=L1L2Plus(l1=L1W, l2=L2W),
    )(inputs)
    # ...and another holds the two biases (its kernel is not regularized).
    outputs = keras.layers.Dense(
        2, bias_regularizer=L1L2Plus(l1=L1B, l2=L2B)
    )(hidden)
    model = keras.Model(inputs, outputs)
    model.layers[1].kernel.assign(np.array(WEIGHTS, "float32").reshape(3, 1))
    model.layers[2].bias.assign(np.array(BIASES, "float32"))
    total = DATA_LOSS + float(keras.ops.sum(model.losses))
    assert total == pytest.approx(0.328855, abs=1e-6)


def test_terms_are_the_l1_and_l2_parts():
    reg = L1L2Plus(l1=L1W, l2=L2W)
    l1_term, l2_term = reg.terms(np.array(WEIGHTS, "float32"))
    assert float(l1_term) == pytest.approx(L1W * 2.5, rel=1e-6)
    assert float(l2_term) == pytest.approx(L2W * (0.25 + 1.44 + 0.64), rel=1e-6)
    assert float(reg(np.array(WEIGHTS, "float32"))) == pytest.approx(
        float(l1_term) + float(l2_term), rel=1e-7
    )


@pytest.mark.parametrize("l1, l2", [(0.01, 0.001), (0.01, 0.0), (0.0, 0.001)])
def test_fewer_ops_than_keras_l1l2(l1, l2):
    """One custom gradient for both terms: fewer ops per variable than Keras's L1L2, on every backend."""
    x = np.random.default_rng(0).normal(size=(64, 32)).astype("float32")
    ours = op_count(lambda t: value_and_grad(L1L2Plus(l1=l1, l2=l2), t), x)
    theirs = op_count(lambda t: value_and_grad(keras.regularizers.L1L2(l1=l1, l2=l2), t), x)
    assert ours < theirs


def test_zero_factor_term_is_not_computed(monkeypatch):
    import keras_l1l2plus.regularizer as module

    calls = []
    monkeypatch.setattr(module, "l1_norm", lambda *a, **k: calls.append("l1"))
    monkeypatch.setattr(module, "squared_l2_norm", lambda *a, **k: calls.append("l2"))
    l1_term, l2_term = L1L2Plus(l1=0.0, l2=0.0).terms(np.ones(3, "float32"))
    assert calls == []
    assert float(l1_term) == 0.0 and float(l2_term) == 0.0


# --- equality with Keras's L1L2 ---------------------------------------------


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_values_and_nonzero_gradients_equal_keras_l1l2(seed):
    rng = np.random.default_rng(seed)
    l1, l2 = rng.uniform(0, 0.1, size=2)
    x = rng.normal(size=(13, 11)).astype("float32")  # no exact zeros: backends agree there
    ours, theirs = L1L2Plus(l1=l1, l2=l2), keras.regularizers.L1L2(l1=l1, l2=l2)
    a, grad_a = value_and_grad(ours, x)
    b, grad_b = value_and_grad(theirs, x)
    np.testing.assert_allclose(float(a), float(b), rtol=1e-6)
    np.testing.assert_allclose(to_numpy(grad_a), to_numpy(grad_b), rtol=1e-6, atol=1e-7)


# --- gradients, exactly, in every execution mode ---------------------------


def _gradient(reg, x, mode):
    """∂reg/∂x as numpy: on a keras.Variable handed to the regularizer, or on a tensor."""
    if mode == "variable":
        return grad_wrt_variable(reg, x)
    return to_numpy(value_and_grad(reg, x, mode)[1])


@pytest.mark.parametrize("zero_grad", [0.0, 1.0, -1.0, 0.25])
@pytest.mark.parametrize("mode", ["variable", "eager", "compiled", "xla"])
def test_gradient_matches_formula_with_exact_zeros(zero_grad, mode):
    x = tensor_with_zeros()
    reg = L1L2Plus(l1=0.03, l2=0.02, zero_grad=zero_grad)
    grad = _gradient(reg, x, mode)
    expected = numpy_grad(x, 0.03, 0.02, zero_grad)
    np.testing.assert_allclose(grad, expected, rtol=1e-6, atol=1e-8)
    # Exactly l1*zero_grad where x == 0 (l2 contributes 2*l2*0 = 0 there).
    zeros = x == 0
    assert np.all(grad[zeros] == np.float32(0.03) * np.float32(zero_grad))


# What the backends' own abs gives at 0, measured (the README's table).
KERAS_L1_GRADIENT_AT_ZERO = {"tensorflow": 0.0, "jax": 1.0, "torch": 0.0}


def test_keras_l1_gradient_at_zero_is_backend_defined_ours_is_not():
    x = np.zeros((4,), "float32")
    keras_grad = _gradient(keras.regularizers.L1(1.0), x, "eager")
    np.testing.assert_array_equal(keras_grad, np.full(4, KERAS_L1_GRADIENT_AT_ZERO[BACKEND]))
    for zero_grad in (0.0, 1.0, -0.5):
        ours = _gradient(L1L2Plus(l1=1.0, zero_grad=zero_grad), x, "eager")
        np.testing.assert_array_equal(ours, np.full(4, zero_grad))


def _fit_one_sgd_step(run_eagerly, jit_compile, zero_grad):
    """One SGD step (lr=1) on a model whose data loss has zero gradient."""
    x = np.zeros((4, 3), "float32")
    y = np.zeros((4, 2), "float32")
    kernel = tensor_with_zeros(seed=3, shape=(3, 2))
    layer = keras.layers.Dense(
        2,
        kernel_initializer=keras.initializers.Constant(kernel),
        bias_initializer="zeros",
        kernel_regularizer=L1L2Plus(l1=0.1, l2=0.05, zero_grad=zero_grad),
        bias_regularizer=L1L2Plus(l1=0.2, zero_grad=zero_grad),
    )
    model = keras.Sequential([keras.Input((3,)), layer])
    model.compile(
        optimizer=keras.optimizers.SGD(learning_rate=1.0),
        loss="mse",
        run_eagerly=run_eagerly,
        jit_compile=jit_compile,
    )
    model.fit(x, y, batch_size=4, epochs=1, verbose=0, shuffle=False)
    # The data loss is 0 with zero inputs and outputs: its gradient wrt the
    # kernel is 0 and wrt the bias is 0 (outputs stay 0).
    new_kernel = kernel - numpy_grad(kernel, 0.1, 0.05, zero_grad)
    new_bias = np.zeros(2) - numpy_grad(np.zeros(2), 0.2, 0.0, zero_grad)
    np.testing.assert_allclose(layer.kernel.numpy(), new_kernel, rtol=1e-6, atol=1e-7)
    np.testing.assert_allclose(layer.bias.numpy(), new_bias, rtol=1e-6, atol=1e-7)


@pytest.mark.parametrize(
    "run_eagerly,jit_compile", [(True, False), (False, False), (False, True)]
)
@pytest.mark.parametrize("zero_grad", [0.0, 1.0, -0.5])
def test_fit_step_uses_the_defined_gradient(run_eagerly, jit_compile, zero_grad):
    _fit_one_sgd_step(run_eagerly, jit_compile, zero_grad)


# --- dtypes -----------------------------------------------------------------


@pytest.mark.parametrize("dtype", ["float16", "bfloat16", "float32", "float64"])
def test_dtypes_value_and_gradient(dtype):
    if BACKEND == "jax" and dtype == "float64":
        import jax

        if not jax.config.jax_enable_x64:
            pytest.skip("JAX without jax_enable_x64 has no float64 (it computes in float32)")
    x64 = tensor_with_zeros(seed=5).astype("float64")
    x = keras.ops.cast(keras.ops.convert_to_tensor(x64), dtype)
    reg = L1L2Plus(l1=0.5, l2=0.25, zero_grad=0.5)
    penalty, grad = value_and_grad(reg, x)
    assert dtype_name(grad) == dtype
    expected_dtype = "float64" if dtype == "float64" else "float32"
    assert dtype_name(penalty) == expected_dtype
    rounded = to_numpy(x)  # the values the tensor really holds
    expected = 0.5 * np.abs(rounded).sum() + 0.25 * np.square(rounded).sum()
    rtol = 1e-12 if dtype == "float64" else 1e-6
    np.testing.assert_allclose(float(penalty), expected, rtol=rtol)
    grad_rtol = {"float16": 2e-3, "bfloat16": 1e-2}.get(dtype, 1e-6)
    np.testing.assert_allclose(to_numpy(grad), numpy_grad(rounded, 0.5, 0.25, 0.5), rtol=grad_rtol)


@pytest.mark.parametrize("dtype", ["float16", "bfloat16"])
@pytest.mark.parametrize("l1, l2", [(1e-3, 1e-3), (1e-6, 3e-6), (0.0, 1e-8)])
def test_half_precision_gradient_is_the_float32_formula_rounded_once(dtype, l1, l2):
    """The gradient of a float16/bfloat16 variable: l1·s(x) + 2·l2·x in float32, then rounded to its dtype.

    Rounding λ to the variable's dtype first would round twice, and a small λ·x
    would underflow in float16.
    """
    x = keras.ops.cast(keras.ops.convert_to_tensor(tensor_with_zeros(seed=7, shape=(16, 16))), dtype)
    _, grad = value_and_grad(L1L2Plus(l1=l1, l2=l2), x)
    held = to_numpy(x).astype("float32")  # the values the tensor really holds
    expected = np.float32(l1) * np.sign(held) + np.float32(2 * l2) * held  # float32, the backend's order
    rounded_once = to_numpy(keras.ops.cast(keras.ops.convert_to_tensor(expected), dtype)).astype("float32")
    np.testing.assert_array_equal(to_numpy(grad).astype("float32"), rounded_once)


def test_float16_sum_of_squares_does_not_overflow_unlike_keras_l1l2():
    x = keras.ops.full((100_000,), 300.0, dtype="float16")  # Σx² = 9e9 > float16 max
    keras_penalty = keras.regularizers.L1L2(l2=1.0)(x)
    ours = L1L2Plus(l2=1.0)(x)
    assert math.isinf(float(keras_penalty))
    assert float(ours) == pytest.approx(9e9, rel=1e-6)


@pytest.mark.parametrize("policy", ["mixed_float16", "mixed_bfloat16"])
def test_fit_under_mixed_precision_policy(policy):
    keras.config.set_dtype_policy(policy)
    model = keras.Sequential(
        [
            keras.Input((8,)),
            keras.layers.Dense(16, activation="relu", kernel_regularizer=L1L2Plus(0.01, 0.01)),
            keras.layers.Dense(1, bias_regularizer=L1L2Plus(0.01, 0.01)),
        ]
    )
    model.compile(optimizer="adam", loss="mse")
    rng = np.random.default_rng(0)
    history = model.fit(
        rng.normal(size=(64, 8)), rng.normal(size=(64, 1)), epochs=2, verbose=0
    )
    assert all(math.isfinite(v) for v in history.history["loss"])
    kernel = model.layers[0].kernel.numpy().astype("float64")
    expected = 0.01 * np.abs(kernel).sum() + 0.01 * np.square(kernel).sum()
    assert float(model.losses[0]) == pytest.approx(expected, rel=1e-5)


def test_fit_with_float16_variables():
    model = keras.Sequential(
        [
            keras.Input((8,)),
            keras.layers.Dense(
                4, dtype="float16", kernel_regularizer=L1L2Plus(0.01, 0.01),
                bias_regularizer=L1L2Plus(0.01, 0.01),
            ),
        ]
    )
    assert dtype_name(model.layers[0].kernel) == "float16"
    model.compile(optimizer=keras.optimizers.SGD(0.01), loss="mse")
    rng = np.random.default_rng(0)
    history = model.fit(rng.normal(size=(32, 8)), rng.normal(size=(32, 4)), epochs=2, verbose=0)
    assert all(math.isfinite(v) for v in history.history["loss"])
    assert all(dtype_name(loss) == "float32" for loss in model.losses)


# --- validation -------------------------------------------------------------


@pytest.mark.parametrize("name", ["l1", "l2"])
@pytest.mark.parametrize(
    "value", [-0.1, float("nan"), float("inf"), "0.1", [0.1], True, np.zeros(2)]
)
def test_bad_penalty_raises_value_error_naming_argument_and_value(name, value):
    with pytest.raises(ValueError) as info:
        L1L2Plus(**{name: value})
    message = str(info.value)
    assert f"`{name}`" in message
    assert f"{name}={value!r}" in message or f"{name}={float(value)!r}" in message


@pytest.mark.parametrize("value", [1.5, -1.01, float("nan"), "0", None.__class__])
def test_bad_zero_grad_raises(value):
    with pytest.raises(ValueError, match="zero_grad"):
        L1L2Plus(l1=0.1, zero_grad=value)


def test_none_means_zero_and_scalars_become_python_floats():
    reg = L1L2Plus(l1=None, l2=np.float32(0.5), zero_grad=keras.ops.convert_to_tensor(-1.0))
    assert reg.get_config() == {"l1": 0.0, "l2": 0.5, "zero_grad": -1.0, "proximal": False}
    assert [type(v) for v in reg.get_config().values()] == [float, float, float, bool]
    reg = L1L2Plus(l1=np.array(0.25), l2=keras.ops.convert_to_tensor(2), zero_grad=None, proximal=np.bool_(True))
    assert reg.get_config() == {"l1": 0.25, "l2": 2.0, "zero_grad": 0.0, "proximal": True}
    assert type(reg.get_config()["proximal"]) is bool


def test_from_config_rejects_unknown_keys():
    with pytest.raises(ValueError, match=r"Unknown keys.*'l3'"):
        L1L2Plus.from_config({"l1": 0.1, "l3": 0.2})


def test_repr_and_equality():
    reg = L1L2Plus(l1=0.01, l2=0.001, zero_grad=1.0)
    assert repr(reg) == "L1L2Plus(l1=0.01, l2=0.001, zero_grad=1.0)"
    assert reg == L1L2Plus(l1=0.01, l2=0.001, zero_grad=1.0)
    assert reg != L1L2Plus(l1=0.01, l2=0.001)
    assert reg != keras.regularizers.L1L2(l1=0.01, l2=0.001)
    assert len({reg, L1L2Plus(l1=0.01, l2=0.001, zero_grad=1.0)}) == 1


# --- serialization ----------------------------------------------------------


def test_config_round_trip_and_registration():
    reg = L1L2Plus(l1=0.01, l2=0.001, zero_grad=-0.5)
    assert L1L2Plus.from_config(reg.get_config()) == reg
    assert keras.saving.get_registered_name(L1L2Plus) == "keras_l1l2plus>L1L2Plus"
    restored = keras.regularizers.deserialize(keras.regularizers.serialize(reg))
    assert type(restored) is L1L2Plus and restored == reg
    assert keras.regularizers.get(keras.saving.serialize_keras_object(reg)) == reg


def build_regularized_model():
    inputs = keras.Input((6,))
    hidden = keras.layers.Dense(
        5,
        activation="relu",
        kernel_regularizer=L1L2Plus(l1=0.01, l2=0.001, zero_grad=1.0),
        bias_regularizer=L1L2Plus(l1=0.005, l2=0.0005),
        bias_initializer="random_normal",
    )(inputs)
    outputs = keras.layers.Dense(3, kernel_regularizer=L1L2Plus(l2=0.02))(hidden)
    return keras.Model(inputs, outputs)


def assert_same_model(original, restored):
    assert len(original.losses) == len(restored.losses) == 3
    for a, b in zip(original.losses, restored.losses):
        assert float(a) == pytest.approx(float(b), rel=1e-7)
    for layer_a, layer_b in zip(original.layers, restored.layers):
        for attr in ("kernel_regularizer", "bias_regularizer"):
            assert getattr(layer_a, attr, None) == getattr(layer_b, attr, None)


def test_model_round_trips_json_clone_deepcopy_pickle_h5(tmp_path):
    model = build_regularized_model()
    from_json = keras.models.model_from_json(model.to_json())
    from_json.set_weights(model.get_weights())
    assert_same_model(model, from_json)
    clone = keras.models.clone_model(model)
    clone.set_weights(model.get_weights())
    assert_same_model(model, clone)
    assert_same_model(model, copy.deepcopy(model))
    assert_same_model(model, pickle.loads(pickle.dumps(model)))
    model.save(tmp_path / "model.h5")
    assert_same_model(model, keras.models.load_model(tmp_path / "model.h5"))
    model.save(tmp_path / "model.keras")
    assert_same_model(model, keras.models.load_model(tmp_path / "model.keras"))


@pytest.mark.slow
def test_keras_file_loads_in_a_fresh_process_without_custom_objects(tmp_path, fresh_python):
    model = build_regularized_model()
    path = tmp_path / "model.keras"
    model.save(path)
    x = np.random.default_rng(0).normal(size=(4, 6)).astype("float32")
    np.save(tmp_path / "x.npy", x)
    out = fresh_python(
        f"""
        import json, numpy as np, keras
        import keras_l1l2plus
        model = keras.models.load_model({str(path)!r})
        regs = [repr(getattr(l, a)) for l in model.layers
                for a in ("kernel_regularizer", "bias_regularizer") if getattr(l, a, None)]
        print(json.dumps({{
            "losses": [float(v) for v in model.losses],
            "regs": regs,
            "pred": model.predict(np.load({str(tmp_path / "x.npy")!r}), verbose=0).tolist(),
        }}))
        """
    )
    import json

    result = json.loads(out.strip().splitlines()[-1])
    np.testing.assert_allclose(result["losses"], [float(v) for v in model.losses], rtol=1e-7)
    assert result["regs"] == [
        "L1L2Plus(l1=0.01, l2=0.001, zero_grad=1.0)",
        "L1L2Plus(l1=0.005, l2=0.0005, zero_grad=0.0)",
        "L1L2Plus(l1=0.0, l2=0.02, zero_grad=0.0)",
    ]
    np.testing.assert_allclose(result["pred"], model.predict(x, verbose=0), rtol=1e-6)


@pytest.mark.slow
@only_on("tensorflow", reason="model.export writes a TensorFlow SavedModel")
def test_export_savedmodel_serves(tmp_path):
    import tensorflow as tf

    model = build_regularized_model()
    x = np.random.default_rng(0).normal(size=(4, 6)).astype("float32")
    model.export(str(tmp_path / "exported"), verbose=False)
    served = tf.saved_model.load(str(tmp_path / "exported"))
    np.testing.assert_allclose(served.serve(x).numpy(), model.predict(x, verbose=0), rtol=1e-6)


@pytest.mark.parametrize("fused", [True, False], ids=["fused", "split"])
def test_the_fused_and_split_gradients_are_the_same(fused, monkeypatch):
    """TensorFlow takes Σx² through autodiff (memory); elsewhere one custom gradient: the same numbers."""
    import keras_l1l2plus._keras as seam

    monkeypatch.setattr(seam, "fused_gradient_saves_memory", lambda: fused)
    x = np.array([[0.0, -1.5, 2.0], [0.25, 0.0, -3.0]], "float32")
    value, grad = value_and_grad(L1L2Plus(l1=0.01, l2=0.001, zero_grad=0.5), x)
    expected_grad = 0.01 * np.where(x == 0, 0.5, np.sign(x)) + 2 * 0.001 * x
    assert float(value) == pytest.approx(0.01 * np.abs(x).sum() + 0.001 * np.square(x).sum(), rel=1e-6)
    np.testing.assert_allclose(to_numpy(grad), expected_grad, rtol=1e-6)


@pytest.mark.parametrize("x", [None, "abc", b"abc", np.array(["a", "b"])], ids=["None", "str", "bytes", "str_array"])
@pytest.mark.parametrize("method", ["__call__", "terms", "sums"])
@pytest.mark.parametrize("factors", [dict(l1=0.1, l2=0.1), dict(l1=0.1, proximal=True), dict()],
                         ids=["both", "proximal", "none"])
def test_a_non_numeric_input_is_a_type_error_naming_x(x, method, factors):
    regularizer = L1L2Plus(**factors)
    with pytest.raises(TypeError, match=r"Invalid value for argument `x`: expected a tensor.*Received: x="):
        getattr(regularizer, method)(x)


@pytest.mark.parametrize("config", [None, "l1=0.1", [("l1", 0.1)]])
def test_from_config_of_a_non_dict_names_config(config):
    with pytest.raises(TypeError, match=r"Invalid value for argument `config`.*Received: config="):
        L1L2Plus.from_config(config)

"""penalty_terms(model): each term, against numpy and Keras's own losses."""

import keras
import numpy as np
import pytest
from backends import compiled, dtype_name, gradients, grad_wrt_variable, to_numpy

import keras_l1l2plus as kl
from keras_l1l2plus import L1L2Plus

L = keras.layers


def _randomized(model, seed=0):
    rng = np.random.default_rng(seed)
    model.set_weights([rng.normal(size=w.shape).astype(w.dtype) for w in model.get_weights()])
    return model


def _mlp(**regs):
    model = keras.Sequential(
        [keras.Input((5,)), L.Dense(4, name="hidden", **regs), L.Dense(3, name="out", **regs)]
    )
    return _randomized(model)


def test_four_terms_and_penalty_against_numpy():
    model = kl.regularize(_mlp(), l1_weight=0.01, l1_bias=0.005, l2_weight=0.001, l2_bias=0.0005)
    terms = kl.penalty_terms(model)
    w = np.concatenate([model.layers[i].kernel.numpy().ravel() for i in (0, 1)]).astype("float64")
    b = np.concatenate([model.layers[i].bias.numpy().ravel() for i in (0, 1)]).astype("float64")
    expected = {
        "l1_weight": 0.01 * np.abs(w).sum(),
        "l1_bias": 0.005 * np.abs(b).sum(),
        "l2_weight": 0.001 * np.square(w).sum(),
        "l2_bias": 0.0005 * np.square(b).sum(),
    }
    expected["penalty"] = sum(expected.values())
    assert set(terms) == set(expected)
    for name, value in expected.items():
        assert dtype_name(terms[name]) == "float32"
        assert float(terms[name]) == pytest.approx(value, rel=1e-6), name
    assert float(terms["penalty"]) == pytest.approx(float(keras.ops.sum(model.losses)), rel=1e-6)


def test_keras_builtins_are_split_and_other_regularizers_count_in_penalty_only():
    model = keras.Sequential(
        [
            keras.Input((6,)),
            L.Dense(4, kernel_regularizer=keras.regularizers.L1(0.02), bias_regularizer=keras.regularizers.L2(0.03)),
            L.Dense(4, kernel_regularizer=keras.regularizers.L1L2(l1=0.04, l2=0.05)),
            L.Dense(4, kernel_regularizer=keras.regularizers.OrthogonalRegularizer(0.5)),
        ]
    )
    _randomized(model)
    terms = kl.penalty_terms(model)
    k0, b0, k1, k2 = (model.layers[0].kernel, model.layers[0].bias, model.layers[1].kernel, model.layers[2].kernel)
    k0, b0, k1 = (v.numpy().astype("float64") for v in (k0, b0, k1))
    assert float(terms["l1_weight"]) == pytest.approx(0.02 * np.abs(k0).sum() + 0.04 * np.abs(k1).sum(), rel=1e-6)
    assert float(terms["l2_weight"]) == pytest.approx(0.05 * np.square(k1).sum(), rel=1e-6)
    assert float(terms["l2_bias"]) == pytest.approx(0.03 * np.square(b0).sum(), rel=1e-6)
    assert float(terms["l1_bias"]) == 0.0
    orthogonal = float(keras.regularizers.OrthogonalRegularizer(0.5)(k2))
    assert orthogonal > 0
    four = sum(float(terms[n]) for n in ("l1_weight", "l1_bias", "l2_weight", "l2_bias"))
    assert float(terms["penalty"]) == pytest.approx(four + orthogonal, rel=1e-6)
    assert float(terms["penalty"]) == pytest.approx(float(keras.ops.sum(model.losses)), rel=1e-6)


def test_per_layer_terms_sum_to_the_totals():
    inputs = keras.Input((5, 3))
    x = L.LSTM(4, name="lstm")(inputs)
    outputs = L.Dense(2, name="head")(x)
    model = _randomized(keras.Model(inputs, outputs))
    kl.regularize(model, l1_weight=0.01, l1_bias=0.02, l2_weight=0.03, l2_bias=0.04)
    terms = kl.penalty_terms(model, per_layer=True)
    layer_keys = sorted(k for k in terms if "/" in k)
    assert layer_keys == [
        "l1_bias/head", "l1_bias/lstm/lstm_cell", "l1_weight/head", "l1_weight/lstm/lstm_cell",
        "l2_bias/head", "l2_bias/lstm/lstm_cell", "l2_weight/head", "l2_weight/lstm/lstm_cell",
    ]
    head = model.get_layer("head")
    assert float(terms["l2_weight/head"]) == pytest.approx(
        0.03 * np.square(head.kernel.numpy().astype("float64")).sum(), rel=1e-6
    )
    for name in ("l1_weight", "l1_bias", "l2_weight", "l2_bias"):
        parts = [float(terms[k]) for k in layer_keys if k.startswith(name + "/")]
        assert sum(parts) == pytest.approx(float(terms[name]), rel=1e-6)


def test_no_regularizers_gives_zeros():
    terms = kl.penalty_terms(_mlp())
    assert {k: float(v) for k, v in terms.items()} == dict.fromkeys(
        ("l1_weight", "l1_bias", "l2_weight", "l2_bias", "penalty"), 0.0
    )


def test_differentiable_in_a_custom_gradient_tape_loop():
    model = _mlp(
        kernel_regularizer=L1L2Plus(l1=0.1, l2=0.2, zero_grad=0.5),
        bias_regularizer=L1L2Plus(l1=0.3),
    )
    model.layers[0].bias.assign(np.zeros(4, "float32"))  # exact zeros: zero_grad applies
    x = np.random.default_rng(1).normal(size=(8, 5)).astype("float32")
    y = np.zeros((8, 3), "float32")
    def data_loss():
        return keras.ops.mean(keras.ops.square(keras.ops.subtract(model(x), y)))

    _, grads = gradients(lambda: data_loss() + kl.penalty_terms(model)["penalty"], model.trainable_weights)
    _, data_grads = gradients(data_loss, model.trainable_weights)
    grads, data_grads = [to_numpy(g) for g in grads], [to_numpy(g) for g in data_grads]
    kernel = model.layers[0].kernel.numpy()
    expected_kernel = 0.1 * np.sign(kernel) + 2 * 0.2 * kernel
    np.testing.assert_allclose(grads[0] - data_grads[0], expected_kernel, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(grads[1] - data_grads[1], np.full(4, 0.3 * 0.0), atol=1e-7)  # L1 bias, zero_grad 0
    bias = model.layers[1].bias.numpy()
    np.testing.assert_allclose(grads[3] - data_grads[3], 0.3 * np.sign(bias), rtol=1e-5, atol=1e-6)
    kernel_at_zero = L1L2Plus(l1=0.1, l2=0.2, zero_grad=0.5)
    grad = grad_wrt_variable(kernel_at_zero, np.zeros((2, 2), "float32"))
    np.testing.assert_array_equal(grad, np.full((2, 2), 0.05, "float32"))


def test_inside_a_compiled_function_and_xla():
    model = kl.regularize(_mlp(), l1_weight=0.01, l2_bias=0.02)
    eager = {k: float(v) for k, v in kl.penalty_terms(model).items()}
    for xla in (False, True):
        values = compiled(lambda: kl.penalty_terms(model), xla=xla)()
        for k, v in values.items():
            assert float(v) == pytest.approx(eager[k], rel=1e-6)


def test_an_unbuilt_model_is_an_error_whose_fixes_run():
    """No variables yet: the terms are not 0, they are not defined; both suggested fixes work."""
    model = keras.Sequential([L.Dense(4), L.Dense(1)])
    kl.regularize(model, l2_weight=0.1)
    with pytest.raises(ValueError, match=r"is not built.*model\.build\(input_shape\).*model\(x\)"):
        kl.penalty_terms(model)
    model.build((None, 3))  # the first suggested fix
    kernels = [w for w in model.get_weights() if w.ndim == 2]
    assert float(kl.penalty_terms(model)["penalty"]) == pytest.approx(
        0.1 * sum(np.square(k.astype("float64")).sum() for k in kernels), rel=1e-5)
    other = keras.Sequential([L.Dense(2)])
    kl.regularize(other, l1_weight=0.1)
    other(np.ones((1, 3), "float32"))  # the second
    assert float(kl.penalty_terms(other)["l1_weight"]) > 0

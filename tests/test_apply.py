"""regularize(model, ...): every layer type, built or not, kept through saving."""

import json
import warnings

import keras
import numpy as np
import pytest

import keras_l1l2plus as kl
from keras_l1l2plus import L1L2Plus

L = keras.layers
LAMBDAS = dict(l1_weight=0.01, l1_bias=0.005, l2_weight=0.001, l2_bias=0.0005)


def seed_penalty(weights, biases, l1_weight, l1_bias, l2_weight, l2_bias):
    """The seed's L1w + L1b + L2w + L2b over lists of numpy arrays."""
    w = np.concatenate([np.ravel(a) for a in weights]) if weights else np.zeros(0)
    b = np.concatenate([np.ravel(a) for a in biases]) if biases else np.zeros(0)
    w, b = w.astype("float64"), b.astype("float64")
    return (
        l1_weight * np.abs(w).sum()
        + l1_bias * np.abs(b).sum()
        + l2_weight * np.square(w).sum()
        + l2_bias * np.square(b).sum()
    )


# Each case: a model builder and the variable names (last path component) that
# are biases; every other trainable variable except those listed as skipped is
# a weight. Written out by hand, independent of the package's rule.
def _seq(input_shape, *layers, name=None):
    return keras.Sequential([keras.Input(input_shape), *layers], name=name)


CASES = {
    "Dense": (lambda: _seq((5,), L.Dense(4), L.Dense(3)), {"bias"}, set()),
    "EinsumDense": (
        lambda: _seq((5,), L.EinsumDense("ab,bc->ac", output_shape=3, bias_axes="c")),
        {"bias"},
        set(),
    ),
    "Conv1D": (lambda: _seq((8, 2), L.Conv1D(3, 3)), {"bias"}, set()),
    "Conv2D": (lambda: _seq((6, 6, 2), L.Conv2D(3, 3)), {"bias"}, set()),
    "Conv3D": (lambda: _seq((4, 4, 4, 2), L.Conv3D(2, 2)), {"bias"}, set()),
    "Conv2DTranspose": (lambda: _seq((5, 5, 2), L.Conv2DTranspose(3, 2)), {"bias"}, set()),
    "DepthwiseConv2D": (lambda: _seq((6, 6, 2), L.DepthwiseConv2D(3)), {"bias"}, set()),
    "SeparableConv2D": (lambda: _seq((6, 6, 2), L.SeparableConv2D(3, 3)), {"bias"}, set()),
    "Embedding": (
        lambda: _seq((4,), L.Embedding(10, 3), L.Flatten(), L.Dense(2)),
        {"bias"},
        set(),
    ),
    "SimpleRNN": (lambda: _seq((5, 3), L.SimpleRNN(4)), {"bias"}, set()),
    "LSTM": (lambda: _seq((5, 3), L.LSTM(4)), {"bias"}, set()),
    "GRU": (lambda: _seq((5, 3), L.GRU(4)), {"bias"}, set()),
    "BatchNormalization": (
        lambda: _seq((4,), L.Dense(3), L.BatchNormalization()),
        {"bias"},
        {"gamma", "beta"},
    ),
    "LayerNormalization": (
        lambda: _seq((4,), L.Dense(3), L.LayerNormalization()),
        {"bias"},
        {"gamma", "beta"},
    ),
}


def _mha_model():
    inputs = keras.Input((5, 4))
    outputs = L.MultiHeadAttention(num_heads=2, key_dim=3)(inputs, inputs)
    return keras.Model(inputs, outputs)


def _nested_model():
    inner = _seq((4,), L.Dense(3, name="inner_dense"))
    inputs = keras.Input((4,))
    outputs = L.Dense(2)(inner(inputs))
    return keras.Model(inputs, outputs)


class _Block(L.Layer):
    """A layer holding layers."""

    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        self.first = L.Dense(4)
        self.second = L.Dense(3)

    def call(self, x):
        return self.second(self.first(x))


class _Subclassed(keras.Model):
    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        self.block = _Block()
        self.head = L.Dense(2)

    def call(self, x):
        return self.head(self.block(x))


def _subclassed_model():
    model = _Subclassed()
    model(np.zeros((1, 5), "float32"))
    return model


CASES.update(
    {
        "MultiHeadAttention": (_mha_model, {"bias"}, set()),
        "nested functional": (_nested_model, {"bias"}, set()),
        "subclassed with layers in layers": (_subclassed_model, {"bias"}, set()),
    }
)


def expected_penalty(model, bias_names, skipped):
    weights, biases = [], []
    for variable in model.trainable_weights:
        name = variable.path.split("/")[-1]
        if name in skipped:
            continue
        (biases if name in bias_names else weights).append(variable.numpy())
    return seed_penalty(weights, biases, **LAMBDAS)


def randomize(model, seed=0):
    """Non-zero values everywhere (Keras initialises biases to 0)."""
    rng = np.random.default_rng(seed)
    model.set_weights([rng.normal(size=w.shape).astype(w.dtype) for w in model.get_weights()])


@pytest.mark.parametrize("case", sorted(CASES))
def test_total_penalty_matches_seed_formulas(case):
    build, bias_names, skipped = CASES[case]
    model = build()
    kl.regularize(model, **LAMBDAS)
    randomize(model)
    total = float(keras.ops.sum(model.losses))
    assert total == pytest.approx(expected_penalty(model, bias_names, skipped), rel=1e-5)
    # Nothing outside the selection is regularized.
    for variable in model.trainable_weights:
        if variable.path.split("/")[-1] in skipped:
            assert variable.regularizer is None


@pytest.mark.parametrize(
    "layer,expected",
    [
        (lambda: _seq((5, 3), L.LSTM(4)), {"kernel": "w", "recurrent_kernel": "w", "bias": "b"}),
        (lambda: _seq((6, 6, 2), L.SeparableConv2D(3, 3)),
         {"depthwise_kernel": "w", "pointwise_kernel": "w", "bias": "b"}),
    ],
    ids=["LSTM", "SeparableConv2D"],
)
def test_recurrent_kernels_and_separable_kernels_are_weights(layer, expected):
    model = kl.regularize(layer(), l1_weight=0.1, l1_bias=0.2)
    regs = {v.path.split("/")[-1]: v.regularizer for v in model.trainable_weights}
    by_role = {"w": L1L2Plus(l1=0.1), "b": L1L2Plus(l1=0.2)}
    assert regs == {name: by_role[role] for name, role in expected.items()}


def test_normalization_option_regularizes_gamma_as_weight_and_beta_as_bias():
    model = _seq((4,), L.BatchNormalization(), L.LayerNormalization())
    kl.regularize(model, **LAMBDAS, normalization=True)
    randomize(model)
    penalty = float(keras.ops.sum(model.losses))
    expected = expected_penalty(model, {"beta"}, set())
    assert penalty == pytest.approx(expected, rel=1e-5)
    assert model.layers[0].beta_regularizer == L1L2Plus(l1=0.005, l2=0.0005)
    assert model.layers[0].gamma_regularizer == L1L2Plus(l1=0.01, l2=0.001)


def test_unbuilt_model_gets_regularizers_when_built():
    model = keras.Sequential([L.Dense(4), L.LSTM(3), L.Dense(2)])  # no input shape
    assert not model.built
    kl.regularize(model, **LAMBDAS)
    model.build((None, 6, 5))
    randomize(model)
    assert len(model.losses) == 7
    assert float(keras.ops.sum(model.losses)) == pytest.approx(
        expected_penalty(model, {"bias"}, set()), rel=1e-5
    )


def test_unbuilt_subclassed_model():
    model = _Subclassed()
    kl.regularize(model, **LAMBDAS)
    model(np.zeros((1, 5), "float32"))
    randomize(model)
    assert float(keras.ops.sum(model.losses)) == pytest.approx(
        expected_penalty(model, {"bias"}, set()), rel=1e-5
    )


def _data(seed=0, n=32):
    rng = np.random.default_rng(seed)
    return rng.normal(size=(n, 5)).astype("float32"), rng.normal(size=(n, 2)).astype("float32")


def test_compiled_and_trained_model_trains_with_the_new_penalty():
    x, y = _data()
    model = _seq((5,), L.Dense(4, activation="tanh"), L.Dense(2))
    model.compile(optimizer=keras.optimizers.SGD(0.0), loss="mse")
    model.fit(x, y, epochs=1, batch_size=32, verbose=0)  # traces the train step
    randomize(model, seed=1)
    kl.regularize(model, **LAMBDAS)
    # The penalty is in model.losses at once...
    penalty = expected_penalty(model, {"bias"}, set())
    assert float(keras.ops.sum(model.losses)) == pytest.approx(penalty, rel=1e-5)
    # ...and in the loss the next fit minimizes (lr 0: weights stay put).
    mse = np.mean(np.square(model.predict(x, verbose=0) - y))
    loss = model.fit(x, y, epochs=1, batch_size=32, verbose=0).history["loss"][0]
    assert loss == pytest.approx(mse + penalty, rel=1e-5)


def test_trained_then_regularized_updates_like_a_model_built_regularized():
    x, y = _data()

    def build(regularized):
        kwargs = {}
        if regularized:
            kwargs = dict(
                kernel_regularizer=L1L2Plus(l1=0.01, l2=0.001),
                bias_regularizer=L1L2Plus(l1=0.005, l2=0.0005),
            )
        model = _seq((5,), L.Dense(4, activation="tanh", **kwargs), L.Dense(2, **kwargs))
        model.compile(optimizer=keras.optimizers.SGD(0.1), loss="mse")
        return model

    late = build(False)
    late.fit(x, y, epochs=1, batch_size=8, verbose=0)
    reference = build(True)
    reference.set_weights(late.get_weights())
    kl.regularize(late, **LAMBDAS)
    late.fit(x, y, epochs=2, batch_size=8, verbose=0, shuffle=False)
    reference.fit(x, y, epochs=2, batch_size=8, verbose=0, shuffle=False)
    for a, b in zip(late.get_weights(), reference.get_weights()):
        np.testing.assert_allclose(a, b, rtol=1e-6, atol=1e-7)


def test_calling_again_replaces_and_zero_removes():
    model = _seq((5,), L.Dense(4, kernel_regularizer=keras.regularizers.L2(0.5)), L.Dense(2))
    kl.regularize(model, l1_weight=0.1)
    kl.regularize(model, l2_weight=0.2, l2_bias=0.3)
    randomize(model)
    assert len(model.losses) == 4  # one per variable, not stacked
    expected = seed_penalty(
        [model.layers[0].kernel.numpy(), model.layers[1].kernel.numpy()],
        [model.layers[0].bias.numpy(), model.layers[1].bias.numpy()],
        0.0, 0.0, 0.2, 0.3,
    )
    assert float(keras.ops.sum(model.losses)) == pytest.approx(expected, rel=1e-5)
    kl.regularize(model)
    assert model.losses == []
    assert all(layer.kernel_regularizer is None for layer in model.layers)
    assert all(layer.bias_regularizer is None for layer in model.layers)


def test_frozen_layers_get_the_penalty_when_unfrozen_and_non_trainable_variables_never():
    model = _seq((5,), L.Dense(4, name="frozen"), L.BatchNormalization(), L.Dense(2))
    model.get_layer("frozen").trainable = False
    kl.regularize(model, **LAMBDAS, normalization=True)
    frozen = model.get_layer("frozen")
    assert frozen.trainable is False  # still frozen
    assert frozen.kernel.regularizer == frozen.kernel_regularizer == L1L2Plus(l1=0.01, l2=0.001)
    batch_norm = model.layers[1]
    assert batch_norm.moving_mean.regularizer is None
    assert batch_norm.gamma.regularizer == L1L2Plus(l1=0.01, l2=0.001)
    assert len(model.losses) == 4  # Keras counts trainable variables only: gamma, beta, kernel, bias
    frozen.trainable = True
    assert len(model.losses) == 6
    kernel = frozen.kernel.numpy().astype("float64")
    assert float(keras.ops.sum(keras.ops.stack(model.losses[:2]))) == pytest.approx(
        0.01 * np.abs(kernel).sum() + 0.001 * np.square(kernel).sum(), rel=1e-6)


def test_exclude_by_pattern_list_and_predicate():
    def build():
        inner = _seq((4,), L.Dense(3, name="embed_proj"), name="encoder")
        inputs = keras.Input((4,))
        outputs = L.Dense(2, name="head")(L.Dense(4, name="embed_in")(inner(inputs)))
        return keras.Model(inputs, outputs)

    model = kl.regularize(build(), **LAMBDAS, exclude="embed*")
    assert model.get_layer("embed_in").kernel.regularizer is None
    assert model.get_layer("encoder").layers[0].kernel.regularizer is None
    assert model.get_layer("head").kernel.regularizer == L1L2Plus(l1=0.01, l2=0.001)

    model = kl.regularize(build(), **LAMBDAS, exclude=["encoder", "head"])
    assert model.get_layer("encoder").layers[0].kernel.regularizer is None  # inside encoder
    assert model.get_layer("head").kernel.regularizer is None
    assert model.get_layer("embed_in").kernel.regularizer is not None

    model = kl.regularize(build(), **LAMBDAS, exclude=lambda layer: layer.name == "head")
    assert model.get_layer("head").bias.regularizer is None
    assert model.get_layer("embed_in").bias.regularizer == L1L2Plus(l1=0.005, l2=0.0005)


def test_exclusion_matching_nothing_is_reported():
    model = _seq((5,), L.Dense(2, name="dense_a"))
    with pytest.raises(ValueError, match=r"exclude.*\['nope\*'\].*dense_a"):
        kl.regularize(model, l1_weight=0.1, exclude=["dense_*", "nope*"])
    with pytest.warns(UserWarning, match="matched no layer"):
        kl.regularize(model, l1_weight=0.1, exclude=lambda layer: False)
    with pytest.raises(TypeError, match="exclude"):
        kl.regularize(model, l1_weight=0.1, exclude=[3])


@pytest.mark.parametrize("bad", [object(), np.zeros(3), "model", keras.optimizers.SGD()])
def test_non_keras_object_is_a_type_error(bad):
    with pytest.raises(TypeError, match="model"):
        kl.regularize(bad, l1_weight=0.1)


@pytest.mark.parametrize("name", ["l1_weight", "l1_bias", "l2_weight", "l2_bias"])
@pytest.mark.parametrize("value", [-1.0, float("nan"), "0.1", True])
def test_invalid_lambdas_raise_like_l1l2plus(name, value):
    model = _seq((5,), L.Dense(2))
    with pytest.raises(ValueError, match=f"`{name}`"):
        kl.regularize(model, **{name: value})
    assert model.layers[0].kernel.regularizer is None  # nothing half-applied
    with pytest.raises(ValueError, match="zero_grad"):
        kl.regularize(model, l1_weight=0.1, zero_grad=2.0)


def test_variable_without_a_regularizer_attribute_warns_it_is_not_saved():
    class Scale(L.Layer):
        def build(self, input_shape):
            self.scale = self.add_weight(shape=(input_shape[-1],), initializer="ones", name="scale")

        def call(self, x):
            return x * self.scale

    model = _seq((3,), Scale(), L.Dense(2))
    with pytest.warns(UserWarning, match="not have the penalty.*scale"):
        kl.regularize(model, l2_weight=0.1)
    assert model.layers[0].scale.regularizer == L1L2Plus(l2=0.1)


def test_no_warning_for_keras_layers():
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        for case in sorted(CASES):
            kl.regularize(CASES[case][0](), **LAMBDAS)


def _losses(model):
    return [float(v) for v in model.losses]


def test_kept_through_clone_and_json():
    build, _, _ = CASES["LSTM"]
    model = kl.regularize(_mha_model(), **LAMBDAS)
    for model in (model, kl.regularize(build(), **LAMBDAS)):
        randomize(model)
        clone = keras.models.clone_model(model)
        clone.set_weights(model.get_weights())
        np.testing.assert_allclose(_losses(clone), _losses(model), rtol=1e-6)
        from_json = keras.models.model_from_json(model.to_json())
        from_json.set_weights(model.get_weights())
        np.testing.assert_allclose(_losses(from_json), _losses(model), rtol=1e-6)


@pytest.mark.slow
def test_kept_through_keras_file_in_a_fresh_process(tmp_path, fresh_python):
    inputs = keras.Input((5, 4))
    x = L.MultiHeadAttention(num_heads=2, key_dim=3)(inputs, inputs)
    x = L.LSTM(3)(x)
    x = L.Dense(2)(x)
    model = keras.Model(inputs, x)
    model.compile(optimizer="adam", loss="mse")
    kl.regularize(model, **LAMBDAS)
    randomize(model)
    path = tmp_path / "model.keras"
    model.save(path)
    out = fresh_python(
        f"""
        import json, keras
        import keras_l1l2plus
        model = keras.models.load_model({str(path)!r})
        print(json.dumps([float(v) for v in model.losses]))
        """
    )
    restored = json.loads(out.strip().splitlines()[-1])
    np.testing.assert_allclose(restored, _losses(model), rtol=1e-6)
    assert float(np.sum(restored)) == pytest.approx(
        expected_penalty(model, {"bias"}, set()), rel=1e-5
    )


def test_activity_regularizers_are_left_alone():
    model = _mha_model()
    mha = model.layers[-1]
    kl.regularize(model, **LAMBDAS)
    assert mha._activity_regularizer is None
    assert mha._kernel_regularizer == L1L2Plus(l1=0.01, l2=0.001)
    assert all(layer.activity_regularizer is None for layer in model._flatten_layers())

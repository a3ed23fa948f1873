"""Property tests: the logged identities on random small models, λs, batch sizes and steps_per_execution."""

import contextlib

import keras
import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from backends import BACKEND, SPE_SUPPORTED

import keras_l1l2plus as kl

L = keras.layers
LAMBDA = st.sampled_from([0.0, 1e-4, 3e-3, 0.05])
HIDDEN = st.sampled_from(["dense", "conv", "layer_norm", "batch_norm"])


def build(kinds, seed):
    keras.utils.set_random_seed(seed)
    layers = [keras.Input((8, 3))]
    for kind in kinds:
        layers.append({"dense": lambda: L.Dense(4, activation="tanh"),
                       "conv": lambda: L.Conv1D(3, 3, padding="same"),
                       "layer_norm": lambda: L.LayerNormalization(),
                       "batch_norm": lambda: L.BatchNormalization()}[kind]())
    layers += [L.GlobalAveragePooling1D(), L.Dense(2)]
    return keras.Sequential(layers)


def numpy_terms(model):
    """The four terms from the variables and their regularizers' λs, in float64."""
    terms = dict.fromkeys(("l1_weight", "l1_bias", "l2_weight", "l2_bias"), 0.0)
    for variable in model.trainable_weights:
        regularizer = variable.regularizer
        if regularizer is None:
            continue
        role = "bias" if variable.name in ("bias", "beta") else "weight"
        value = variable.numpy().astype("float64")
        terms[f"l1_{role}"] += regularizer.l1 * np.abs(value).sum()
        terms[f"l2_{role}"] += regularizer.l2 * np.square(value).sum()
    return terms


class BatchLogs(keras.callbacks.Callback):
    def __init__(self):
        super().__init__()
        self.logs = []

    def on_train_batch_end(self, batch, logs=None):
        self.logs.append(dict(logs))


@settings(max_examples=25 if BACKEND != "torch" else 8,  # PyTorch fits eagerly, slower
          deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    kinds=st.lists(HIDDEN, min_size=1, max_size=3),
    lambdas=st.tuples(LAMBDA, LAMBDA, LAMBDA, LAMBDA),
    normalization=st.booleans(),
    batch_size=st.integers(1, 24),
    steps_per_execution=st.integers(1, 4) if SPE_SUPPORTED else st.just(1),
    seed=st.integers(0, 100),
)
def test_logged_identities_hold(kinds, lambdas, normalization, batch_size, steps_per_execution, seed):
    model = build(kinds, seed)
    l1w, l1b, l2w, l2b = lambdas
    kl.regularize(model, l1_weight=l1w, l1_bias=l1b, l2_weight=l2w, l2_bias=l2b, normalization=normalization)
    # Learning rate 0: the weights stay put, so every step's terms equal numpy's on them.
    model.compile(optimizer=keras.optimizers.SGD(0.0), loss="mse", steps_per_execution=steps_per_execution)
    rng = np.random.default_rng(seed)
    x, y = rng.normal(size=(24, 8, 3)).astype("float32"), rng.normal(size=(24, 2)).astype("float32")
    batches = BatchLogs()
    with pytest.warns(UserWarning, match="no regularized") if not any(lambdas) else contextlib.nullcontext():
        history = model.fit(x, y, batch_size=batch_size, epochs=1, verbose=0, shuffle=False,
                            callbacks=[kl.PenaltyLogger(), batches]).history
    expected = numpy_terms(model)
    for logs in [*batches.logs, {k: v[0] for k, v in history.items()}]:
        assert logs["loss"] == pytest.approx(logs["data_loss"] + logs["penalty"], rel=1e-5, abs=1e-7)
        assert logs["penalty"] == pytest.approx(sum(logs[k] for k in expected), rel=1e-5, abs=1e-9)
        for key, value in expected.items():
            assert logs[key] == pytest.approx(value, rel=1e-5, abs=1e-9), key

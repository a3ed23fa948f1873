"""The progress line: Keras's values first, then the terms; validation copies in the logs only."""

import re

import keras
import numpy as np
import pytest

import keras_l1l2plus as kl
from keras_l1l2plus.logger.progress import ProgressBar

L = keras.layers
TERMS = ("l1_weight", "l1_bias", "l2_weight", "l2_bias")
SHOWN = ("loss", "data_loss", *TERMS, "penalty", "val_loss", "val_data_loss")


def fit(capsys, logger, proximal=False, verbose=2, callbacks=(), epochs=2):
    rng = np.random.default_rng(0)
    x, y = rng.normal(size=(40, 5)).astype("float32"), rng.normal(size=(40, 1)).astype("float32")
    model = keras.Sequential([keras.Input((5,)), L.Dense(3), L.Dense(1)])
    kl.regularize(model, l1_weight=0.01, l1_bias=0.005, l2_weight=0.001, l2_bias=0.0005,
                  proximal_weight=proximal)
    optimizer = keras.optimizers.SGD(0.05)
    model.compile(optimizer=kl.ProximalOptimizer(optimizer) if proximal else optimizer, loss="mse",
                  metrics=["mae"])
    capsys.readouterr()
    history = model.fit(x, y, batch_size=16, epochs=epochs, verbose=verbose, validation_split=0.25,
                        callbacks=[*callbacks, logger] if logger else list(callbacks))
    return history.history, capsys.readouterr().out


def printed_keys(line):
    return re.findall(r" - ([\w/]+): ", line)


def test_line_shows_kerass_values_then_the_terms_and_only_val_data_loss(capsys):
    history, out = fit(capsys, kl.PenaltyLogger())
    lines = [line for line in out.splitlines() if "val_loss" in line]
    assert len(lines) == 2  # one line per epoch (verbose=2)
    assert printed_keys(lines[-1]) == ["loss", "mae", "data_loss", *TERMS, "penalty", "val_loss", "val_mae",
                                       "val_data_loss"]
    # Every key stays in the logs: History (so CSVLogger and TensorBoard) has them all.
    for key in ("val_penalty", *(f"val_{t}" for t in TERMS)):
        assert len(history[key]) == 2, key
    assert f"val_data_loss: {history['val_data_loss'][-1]:.4f}" in lines[-1]
    assert not any(key.startswith("sparsity") for key in history)  # no proximal step: no sparsity keys


def test_progress_bar_all_prints_every_key_as_keras_does(capsys):
    history, out = fit(capsys, kl.PenaltyLogger(progress_bar="all"))
    line = [line for line in out.splitlines() if "val_loss" in line][-1]
    assert set(printed_keys(line)) == set(history)
    plain_history, plain_out = fit(capsys, None)
    assert printed_keys([line for line in plain_out.splitlines() if "val_loss" in line][-1]) == \
        [k for k in printed_keys(line) if k in plain_history]  # Keras's own order of its own keys


def test_proximal_model_shows_sparsity_and_keeps_its_validation_copy_in_the_logs(capsys):
    history, out = fit(capsys, kl.PenaltyLogger(), proximal=True)
    line = [line for line in out.splitlines() if "val_loss" in line][-1]
    assert printed_keys(line) == ["loss", "mae", "data_loss", *TERMS, "penalty", "sparsity_weight",
                                  "val_loss", "val_mae", "val_data_loss"]
    assert "sparsity_bias" not in history  # the biases take subgradient steps: 0 by construction
    assert len(history["val_sparsity_weight"]) == 2


def test_batch_lines_are_filtered_too(capsys):
    _, out = fit(capsys, kl.PenaltyLogger(per_layer=True), verbose=1, epochs=1)
    assert "l1_weight:" in out and "val_data_loss:" in out
    assert "val_l1_weight" not in out and "/dense" not in out  # per-layer terms: logs only


def test_a_progress_bar_of_your_own_is_kept(capsys):
    class MyBar(keras.callbacks.ProgbarLogger):
        pass

    _, out = fit(capsys, kl.PenaltyLogger(), callbacks=[MyBar()])
    assert "val_l1_weight:" in out  # the user's bar prints every key
    _, out = fit(capsys, kl.PenaltyLogger(), callbacks=[keras.callbacks.ProgbarLogger()])
    assert "val_l1_weight:" in out  # passed before the logger: its begin hook ran, it is kept


def test_evaluate_with_the_logger_prints_the_terms(capsys):
    model = keras.Sequential([keras.Input((5,)), L.Dense(1)])
    kl.regularize(model, l1_weight=0.01, l2_weight=0.001)
    model.compile(optimizer="sgd", loss="mse")
    x = np.ones((8, 5), "float32")
    capsys.readouterr()
    result = model.evaluate(x, x[:, :1], verbose=1, callbacks=[kl.PenaltyLogger(per_layer=True)],
                            return_dict=True)
    out = capsys.readouterr().out
    assert printed_keys(out.strip().splitlines()[-1])[:3] == ["loss", "data_loss", "l1_weight"]
    assert "l1_weight/" not in out and any(k.startswith("l1_weight/") for k in result)


def test_line_order_and_hidden_keys():
    bar = ProgressBar(["data_loss", "penalty", "l1_weight", "l1_weight/d"], shown=["data_loss", "l1_weight",
                                                                                   "penalty"],
                      shown_validation=["data_loss"])
    logs = {"accuracy": 1, "data_loss": 2, "l1_weight": 3, "l1_weight/d": 4, "loss": 5, "penalty": 6,
            "val_accuracy": 7, "val_data_loss": 8, "val_l1_weight": 9, "val_loss": 10, "val_penalty": 11,
            "learning_rate": 12}
    assert list(bar.line(logs)) == ["accuracy", "loss", "learning_rate", "data_loss", "l1_weight", "penalty",
                                    "val_accuracy", "val_loss", "val_data_loss"]
    assert bar.line(None) is None
    with pytest.raises(ValueError, match="sparsity_weight"):
        ProgressBar(["data_loss"], shown=["sparsity_weight"], shown_validation=[])


@pytest.mark.parametrize("bad", ["none", "", None, True])
def test_bad_progress_bar_argument(bad):
    with pytest.raises(ValueError, match=f"progress_bar={bad!r}"):
        kl.PenaltyLogger(progress_bar=bad)

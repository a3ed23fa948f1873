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


# In a terminal: one row per epoch, whatever its width.

TERMINAL_FIT = """
import time, numpy as np, keras, keras_l1l2plus as kl
rng = np.random.default_rng(0)
x = rng.normal(size=(200, 8)).astype("float32")
y = (x[:, 0] > 0).astype("int64")
model = keras.Sequential([keras.Input((8,)), keras.layers.Dense(16, activation="relu"),
                          keras.layers.Dense(2, activation="softmax")])
kl.regularize(model, l1_weight=1e-3, l1_bias=1e-4, l2_weight=1e-3, l2_bias=1e-4)
model.compile(optimizer="adam", loss="sparse_categorical_crossentropy", metrics=["accuracy"])
slow = keras.callbacks.LambdaCallback(on_train_batch_end=lambda batch, logs: time.sleep(0.06))  # every batch redraws
model.fit(x, y, batch_size=16, epochs=3, validation_split=0.2, verbose={verbose},
          callbacks=[slow, kl.PenaltyLogger(progress_bar={progress_bar!r})])
"""


def terminal_screen(tmp_path, columns, verbose="'auto'", progress_bar="short"):
    """The screen of a `columns`-wide terminal emulator (pyte) after a 3-epoch fit, 10 batches each, run on a pty."""
    import fcntl
    import os
    import struct
    import subprocess
    import sys
    import termios
    from pathlib import Path

    import pyte

    rows = 500
    leader, follower = os.openpty()
    fcntl.ioctl(follower, termios.TIOCSWINSZ, struct.pack("HHHH", rows, columns, 0, 0))
    root = str(Path(__file__).resolve().parents[1])
    env = dict(os.environ, COLUMNS=str(columns), LINES=str(rows), TF_CPP_MIN_LOG_LEVEL="3",
               KERAS_BACKEND=keras.backend.backend(),
               PYTHONPATH=os.pathsep.join([root, *filter(None, [os.environ.get("PYTHONPATH")])]))
    errors = tmp_path / "stderr.txt"
    with open(errors, "wb") as stderr:
        child = subprocess.Popen([sys.executable, "-c", TERMINAL_FIT.format(verbose=verbose, progress_bar=progress_bar)],
                                 stdin=subprocess.DEVNULL, stdout=follower, stderr=stderr, env=env, cwd=tmp_path)
    os.close(follower)
    output = b""
    while True:
        try:
            chunk = os.read(leader, 1 << 16)
        except OSError:  # EIO: the child has closed the terminal
            break
        if not chunk:
            break
        output += chunk
    os.close(leader)
    assert child.wait(timeout=300) == 0, errors.read_text()
    screen = pyte.Screen(columns, rows)
    pyte.ByteStream(screen).feed(output)
    return [row.rstrip() for row in screen.display if row.strip()]


@pytest.mark.slow
@pytest.mark.parametrize("columns, verbose", [(80, "'auto'"), (120, "'auto'"), (80, 2)])
def test_in_a_terminal_the_line_is_one_row_per_epoch(tmp_path, columns, verbose):
    screen = terminal_screen(tmp_path, columns, verbose)
    assert screen[0::2] == ["Epoch 1/3", "Epoch 2/3", "Epoch 3/3"], screen  # no wrapped leftovers between them
    assert len(screen) == 6, screen
    for row in screen[1::2]:
        assert row.startswith("10/10 ") and len(row) < columns, row
        assert re.search(r" loss=\d", row) and re.search(r" data=\d", row), row  # data: data_loss
        assert re.search(r" val_loss=\d", row) and re.search(r" val_data=\d", row), row


@pytest.mark.slow
def test_the_terminal_check_sees_kerass_own_wrapped_lines(tmp_path):
    """The emulator does catch wrapped leftovers: Keras's bar, every key, leaves them at 80 columns."""
    screen = terminal_screen(tmp_path, 80, progress_bar="all")
    assert len(screen) > 6 * 3, screen


def bar_with_target(target=10, verbose=1):
    bar = ProgressBar(["data_loss", "penalty", *TERMS, "sparsity_weight"], shown=["data_loss", *TERMS, "penalty",
                                                                                 "sparsity_weight"],
                      shown_validation=["data_loss"])
    bar.set_params({"verbose": verbose, "epochs": 3, "steps": target})
    return bar


EPOCH_LOGS = {"accuracy": 0.6438, "loss": 0.7105, "data_loss": 0.6509, "l1_weight": 0.0438, "l1_bias": 2.1365e-05,
              "l2_weight": 0.0158, "l2_bias": 3.4652e-07, "penalty": 0.0596, "sparsity_weight": 0.25,
              "val_accuracy": 0.55, "val_loss": 0.7761, "val_data_loss": 0.7166, "val_penalty": 0.0595}


@pytest.mark.parametrize("columns", [10, 30, 40, 60, 80, 100, 120, 160, 240])
@pytest.mark.parametrize("final", [False, True])
def test_the_compact_line_fits_and_keeps_the_most_important_values(columns, final):
    bar = bar_with_target()
    line = bar.compact_line(10 if final else 7, bar.line(EPOCH_LOGS), columns, final=final, seconds=1.2, per_step=0.08)
    plain = re.sub(r"\x1b\[[0-9;]*m", "", line)
    assert len(plain) <= columns - 1
    names = re.findall(r" ([\w/]+)=", plain)
    order = ["loss", "data", "accuracy", "val_loss", "val_data", "val_accuracy", "pen", "l1w", "l2w", "l1b", "l2b",
             "sp_w"]
    assert names == [n for n in ["accuracy", "loss", "data", "l1w", "l1b", "l2w", "l2b", "pen", "sp_w",
                                 "val_accuracy", "val_loss", "val_data"] if n in names]  # the logs' order
    assert set(names) == set(order[:len(names)])  # the most important ones
    if columns >= 80:
        assert {"loss", "data", "accuracy", "val_loss"} <= set(names)
    if columns >= 240:
        assert names == ["accuracy", "loss", "data", "l1w", "l1b", "l2w", "l2b", "pen", "sp_w", "val_accuracy",
                         "val_loss", "val_data"]
    assert plain.startswith("10/10" if final else " 7/10")


def test_compact_numbers_and_names():
    bar = bar_with_target(target=None, verbose=2)
    line = bar.compact_line(3, bar.line(EPOCH_LOGS), 400, final=True, seconds=61, per_step=0.0004)
    assert line == ("3/Unknown 61s 400us/step accuracy=0.644 loss=0.711 data=0.651 l1w=0.0438 l1b=2.14e-5 "
                    "l2w=0.0158 l2b=3.47e-7 pen=0.0596 sp_w=0.250 val_accuracy=0.550 val_loss=0.776 val_data=0.717")

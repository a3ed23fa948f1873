"""PenaltyLogger: exact per-step semantics, and where the numbers show up."""

import csv
import math
import os
import warnings

import keras
import numpy as np
import pytest
from backends import only_on

import keras_l1l2plus as kl

L = keras.layers
LAMBDAS = dict(l1_weight=0.01, l1_bias=0.005, l2_weight=0.001, l2_bias=0.0005)
TERMS = ("l1_weight", "l1_bias", "l2_weight", "l2_bias")
N_TRAIN, BATCH = 50, 16  # batches of 16, 16, 16 and 2 samples


def make_data(seed=0, n=N_TRAIN):
    rng = np.random.default_rng(seed)
    return rng.normal(size=(n, 5)).astype("float32"), rng.normal(size=(n, 2)).astype("float32")


def make_model(seed=0, regularized=True, **compile_kwargs):
    keras.utils.set_random_seed(seed)
    model = keras.Sequential([keras.Input((5,)), L.Dense(4, activation="tanh"), L.Dense(2)])
    rng = np.random.default_rng(seed)
    model.set_weights([rng.normal(size=w.shape).astype("float32") for w in model.get_weights()])
    if regularized:
        kl.regularize(model, **LAMBDAS)
    compile_kwargs.setdefault("optimizer", keras.optimizers.SGD(0.1))
    model.compile(loss="mse", **compile_kwargs)
    return model


def numpy_terms(weights):
    """The seed's four terms from [kernel0, bias0, kernel1, bias1] (float64)."""
    w = np.concatenate([weights[0].ravel(), weights[2].ravel()]).astype("float64")
    b = np.concatenate([weights[1].ravel(), weights[3].ravel()]).astype("float64")
    terms = {
        "l1_weight": LAMBDAS["l1_weight"] * np.abs(w).sum(),
        "l1_bias": LAMBDAS["l1_bias"] * np.abs(b).sum(),
        "l2_weight": LAMBDAS["l2_weight"] * np.square(w).sum(),
        "l2_bias": LAMBDAS["l2_bias"] * np.square(b).sum(),
    }
    terms["penalty"] = sum(terms.values())
    return terms


def numpy_mse(weights, x, y):
    """The MLP's forward pass and mean squared error, in numpy."""
    hidden = np.tanh(x.astype("float64") @ weights[0] + weights[1])
    return float(np.mean(np.square(hidden @ weights[2] + weights[3] - y)))


class Recorder(keras.callbacks.Callback):
    """Weights before each step, and copies of every batch and epoch log."""

    def __init__(self):
        super().__init__()
        self.weights, self.batch_logs, self.epoch_logs = [], [], []

    def on_train_batch_begin(self, batch, logs=None):
        self.weights.append(self.model.get_weights())

    def on_train_batch_end(self, batch, logs=None):
        self.batch_logs.append(dict(logs or {}))

    def on_epoch_end(self, epoch, logs=None):
        self.epoch_logs.append(dict(logs or {}))


def expected_running_means(recorder, x, y, batch=BATCH):
    """Per batch: batch-size-weighted running means of the terms and the data loss."""
    sizes = [min(batch, len(x) - i) for i in range(0, len(x), batch)]
    steps_per_epoch = len(sizes)
    means = []
    for epoch_start in range(0, len(recorder.weights), steps_per_epoch):
        totals, count = {}, 0
        for step, size in enumerate(sizes):
            weights = recorder.weights[epoch_start + step]
            start = step * batch
            values = numpy_terms(weights)
            values["data_loss"] = numpy_mse(weights, x[start : start + size], y[start : start + size])
            for key, value in values.items():
                totals[key] = totals.get(key, 0.0) + value * size
            count += size
            means.append({k: v / count for k, v in totals.items()})
    return means


def assert_logs_match(logs, expected, keys=("penalty", "data_loss", *TERMS), rel=1e-5):
    for key in keys:
        assert logs[key] == pytest.approx(expected[key], rel=rel, abs=1e-9), key
    assert logs["loss"] == pytest.approx(logs["data_loss"] + logs["penalty"], rel=1e-6)
    assert logs["penalty"] == pytest.approx(sum(logs[t] for t in TERMS), rel=1e-6)


@pytest.mark.parametrize(
    "compile_kwargs",
    [dict(), dict(jit_compile=True), dict(run_eagerly=True)],
    ids=["graph", "xla", "eager"],
)
def test_batch_and_epoch_logs_are_exact_running_means(compile_kwargs):
    if compile_kwargs.get("jit_compile") and keras.backend.backend() == "torch":
        pytest.skip("torch.compile takes minutes here; test_fit_step_uses_the_defined_gradient covers it")
    x, y = make_data()
    model = make_model(**compile_kwargs)
    recorder = Recorder()
    model.fit(x, y, batch_size=BATCH, epochs=2, shuffle=False, verbose=0,
              callbacks=[kl.PenaltyLogger(), recorder])
    expected = expected_running_means(recorder, x, y)
    assert len(recorder.batch_logs) == len(expected) == 8
    for logs, want in zip(recorder.batch_logs, expected):
        assert_logs_match(logs, want)
    # Epoch logs are the epoch means: the last running mean of each epoch.
    assert_logs_match(recorder.epoch_logs[0], expected[3])
    assert_logs_match(recorder.epoch_logs[1], expected[7])


@only_on("tensorflow", "jax", reason="steps_per_execution must be 1 with PyTorch")
def test_steps_per_execution_gives_the_same_logs():
    x, y = make_data()
    histories = []
    for steps in (1, 3):
        model = make_model(steps_per_execution=steps)
        histories.append(model.fit(x, y, batch_size=8, epochs=2, shuffle=False, verbose=0,
                                   callbacks=[kl.PenaltyLogger()]).history)
    for key in ("loss", "penalty", "data_loss", *TERMS):
        np.testing.assert_allclose(histories[1][key], histories[0][key], rtol=1e-5, err_msg=key)


@pytest.mark.parametrize("as_dataset", [False, True])
def test_val_data_loss_is_val_loss_minus_penalty_at_the_evaluated_weights(as_dataset):
    x, y = make_data()
    x_val, y_val = make_data(seed=1, n=20)
    model = make_model()
    validation = (x_val, y_val)
    if as_dataset:
        validation = Batches(x_val, y_val, 7)
    history = model.fit(x, y, batch_size=BATCH, epochs=1, verbose=0, validation_data=validation,
                        callbacks=[kl.PenaltyLogger()]).history
    weights = model.get_weights()
    assert history["val_data_loss"][0] == pytest.approx(numpy_mse(weights, x_val, y_val), rel=1e-5)
    assert history["val_penalty"][0] == pytest.approx(numpy_terms(weights)["penalty"], rel=1e-5)
    assert history["val_loss"][0] == pytest.approx(
        history["val_data_loss"][0] + history["val_penalty"][0], rel=1e-6
    )


class Batches(keras.utils.PyDataset):
    """(x, y) in batches of `size`: a dataset on every backend."""

    def __init__(self, x, y, size):
        super().__init__()
        self.x, self.y, self.size = x, y, size

    def __len__(self):
        return -(-len(self.x) // self.size)

    def __getitem__(self, i):
        return self.x[i * self.size:(i + 1) * self.size], self.y[i * self.size:(i + 1) * self.size]


def test_validation_split():
    x, y = make_data(n=60)
    model = make_model()
    history = model.fit(x, y, batch_size=BATCH, epochs=1, verbose=0, validation_split=0.25,
                        callbacks=[kl.PenaltyLogger()]).history
    weights = model.get_weights()
    assert history["val_data_loss"][0] == pytest.approx(numpy_mse(weights, x[45:], y[45:]), rel=1e-5)


def test_mixed_precision_policy():
    keras.config.set_dtype_policy("mixed_float16")
    x, y = make_data()
    model = make_model()
    recorder = Recorder()
    model.fit(x, y, batch_size=BATCH, epochs=1, shuffle=False, verbose=0,
              callbacks=[kl.PenaltyLogger(), recorder])
    expected = expected_running_means(recorder, x, y)
    for logs, want in zip(recorder.batch_logs, expected):
        # The penalty is computed from the float32 variables: exact. The data
        # loss is computed in float16: to float16 precision.
        assert_logs_match(logs, want, keys=("penalty", *TERMS))
        assert logs["data_loss"] == pytest.approx(want["data_loss"], rel=2e-3)


@only_on("tensorflow", reason="Keras's TensorBoard callback writes through TensorFlow")
def test_logs_through_progress_bar_history_csv_and_tensorboard_in_any_order(tmp_path, capsys):
    x, y = make_data()
    x_val, y_val = make_data(seed=1, n=20)
    for order in ("loggers_first", "loggers_last"):
        keras.utils.clear_session()
        model = make_model()
        out = tmp_path / order
        tensorboard = keras.callbacks.TensorBoard(str(out / "tb"), update_freq="batch")
        csv_logger = keras.callbacks.CSVLogger(str(out / "log.csv"))
        recorder = Recorder()
        loggers = [tensorboard, csv_logger, recorder]
        callbacks = [*loggers, kl.PenaltyLogger()] if order == "loggers_first" else [kl.PenaltyLogger(), *loggers]
        capsys.readouterr()
        history = model.fit(x, y, batch_size=BATCH, epochs=2, shuffle=False, verbose=2,
                            validation_data=(x_val, y_val), callbacks=callbacks).history
        printed = capsys.readouterr().out
        keys = ("data_loss", "penalty", *TERMS)

        # Progress bar: Keras prints each value with 4 decimals (or 4 digits
        # in scientific notation below 1e-3).
        def shown(v):
            return f"{v:.4f}" if abs(v) >= 1e-3 else f"{v:.4e}"

        for key in (*keys, "val_data_loss"):
            assert f"- {key}: {shown(history[key][-1])}" in printed, (order, key)

        # CSVLogger: columns fixed at the first epoch, values read back.
        with open(out / "log.csv") as f:
            rows = list(csv.DictReader(f))
        assert len(rows) == 2
        for key in (*keys, "val_data_loss", "val_penalty"):
            np.testing.assert_allclose([float(r[key]) for r in rows], history[key], rtol=1e-6)

        # TensorBoard: epoch scalars in train/, validation ones in validation/,
        # batch scalars at every batch (its own update_freq), read from disk.
        train = read_scalars(out / "tb" / "train")
        validation = read_scalars(out / "tb" / "validation")
        for key in keys:
            np.testing.assert_allclose(train[f"epoch_{key}"], history[key], rtol=1e-6)
            np.testing.assert_allclose(
                train[f"batch_{key}"], [logs[key] for logs in recorder.batch_logs], rtol=1e-6
            )
        np.testing.assert_allclose(validation["epoch_data_loss"], history["val_data_loss"], rtol=1e-6)


def read_scalars(folder):
    """{tag: [values in step order]} of the scalar summaries in `folder`, read by TensorBoard."""
    import tensorflow as tf
    from tensorboard.backend.event_processing import event_accumulator

    events = event_accumulator.EventAccumulator(str(folder), size_guidance={event_accumulator.TENSORS: 0})
    events.Reload()
    return {
        tag: [float(tf.make_ndarray(e.tensor_proto)) for e in sorted(events.Tensors(tag), key=lambda e: e.step)]
        for tag in events.Tags()["tensors"]
        if events.SummaryMetadata(tag).plugin_data.plugin_name == "scalars"
    }


def test_monitor_callbacks_accept_val_data_loss(tmp_path):
    x, y = make_data()
    x_val, y_val = make_data(seed=1, n=20)
    model = make_model()
    path = tmp_path / "best.keras"
    checkpoint = keras.callbacks.ModelCheckpoint(str(path), monitor="val_data_loss", save_best_only=True)
    stop = keras.callbacks.EarlyStopping(monitor="val_data_loss", patience=0, min_delta=1e9)
    plateau = keras.callbacks.ReduceLROnPlateau(monitor="val_data_loss", patience=0, min_delta=1e9, factor=0.5)
    with warnings.catch_warnings():
        warnings.simplefilter("error", UserWarning)  # "metric not available" is one
        history = model.fit(x, y, batch_size=BATCH, epochs=5, verbose=0, validation_data=(x_val, y_val),
                            callbacks=[checkpoint, stop, plateau, kl.PenaltyLogger()]).history
    # Never improves by 1e9: EarlyStopping stops after the second epoch, the
    # plateau halves the learning rate after the first.
    assert len(history["loss"]) == 2
    assert stop.stopped_epoch == 1
    assert float(model.optimizer.learning_rate) == pytest.approx(0.05)
    assert checkpoint.best == pytest.approx(min(history["val_data_loss"]))
    restored = keras.models.load_model(path)
    assert [m.name for m in restored.metrics] == [m.name for m in make_model().metrics]


def test_update_freq_controls_batch_logs_of_later_callbacks():
    x, y = make_data()
    for update_freq, expected in (("batch", [1, 1, 1, 1]), ("epoch", [0, 0, 0, 0]), (2, [0, 1, 0, 1])):
        model = make_model()
        recorder = Recorder()
        history = model.fit(x, y, batch_size=BATCH, epochs=1, verbose=0,
                            callbacks=[kl.PenaltyLogger(update_freq=update_freq), recorder]).history
        assert [int("l1_weight" in logs) for logs in recorder.batch_logs] == expected, update_freq
        assert "l1_weight" in recorder.epoch_logs[0]
        assert len(history["penalty"]) == 1


@pytest.mark.parametrize("bad", ["step", 0, -2, 1.5, True, None])
def test_bad_update_freq(bad):
    with pytest.raises(ValueError, match="update_freq"):
        kl.PenaltyLogger(update_freq=bad)
    with pytest.raises(TypeError, match="per_layer"):
        kl.PenaltyLogger(per_layer="yes")


def test_per_layer_terms_in_history():
    x, y = make_data()
    model = make_model()
    history = model.fit(x, y, batch_size=BATCH, epochs=1, verbose=0,
                        callbacks=[kl.PenaltyLogger(per_layer=True)]).history
    names = [layer.name for layer in model.layers]
    per_layer = sorted(k for k in history if "/" in k)
    assert per_layer == sorted(f"{t}/{n}" for t in TERMS for n in names)
    for term in TERMS:
        assert sum(history[f"{term}/{n}"][0] for n in names) == pytest.approx(history[term][0], rel=1e-5)


def test_uninstalled_after_fit_and_reinstalled_by_the_next():
    x, y = make_data()
    model = make_model()
    model.fit(x, y, epochs=1, verbose=0, callbacks=[kl.PenaltyLogger()])
    assert "compute_loss" not in vars(model)
    assert [m.name for m in model.metrics] == ["loss"]
    assert "data_loss" not in model.fit(x, y, epochs=1, verbose=0).history
    assert "data_loss" in model.fit(x, y, epochs=1, verbose=0, callbacks=[kl.PenaltyLogger()]).history
    assert "data_loss" not in model.evaluate(x, y, verbose=0, return_dict=True)


def test_model_without_regularizers_logs_zeros_and_warns():
    x, y = make_data()
    model = make_model(regularized=False)
    with pytest.warns(UserWarning, match="no regularized trainable variable"):
        history = model.fit(x, y, epochs=1, verbose=0, callbacks=[kl.PenaltyLogger()]).history
    assert all(history[k] == [0.0] for k in ("penalty", *TERMS))
    assert history["data_loss"] == pytest.approx(history["loss"], rel=1e-7)


def test_model_with_keras_builtin_regularizers_only():
    x, y = make_data()
    model = keras.Sequential([
        keras.Input((5,)),
        L.Dense(4, kernel_regularizer=keras.regularizers.L1L2(l1=0.01, l2=0.001),
                bias_regularizer=keras.regularizers.L2(0.0005)),
        L.Dense(2, kernel_regularizer=keras.regularizers.L1(0.01)),
    ])
    model.compile(optimizer=keras.optimizers.SGD(0.0), loss="mse")  # weights stay put
    history = model.fit(x, y, epochs=1, verbose=0, callbacks=[kl.PenaltyLogger()]).history
    k0, b0, k1 = (v.numpy().astype("float64") for v in model.trainable_weights[:3])
    assert history["l1_weight"][0] == pytest.approx(0.01 * (np.abs(k0).sum() + np.abs(k1).sum()), rel=1e-5)
    assert history["l2_weight"][0] == pytest.approx(0.001 * np.square(k0).sum(), rel=1e-5)
    assert history["l2_bias"][0] == pytest.approx(0.0005 * np.square(b0).sum(), abs=1e-12)
    assert history["penalty"][0] == pytest.approx(float(keras.ops.sum(model.losses)), rel=1e-5)


def test_nan_weights_are_logged_and_terminate_on_nan_still_stops():
    x, y = make_data()
    model = make_model()
    kernel = model.layers[0].kernel.numpy()
    kernel[0, 0] = np.nan
    model.layers[0].kernel.assign(kernel)
    recorder = Recorder()
    history = model.fit(x, y, batch_size=BATCH, epochs=3, verbose=0,
                        callbacks=[kl.PenaltyLogger(), keras.callbacks.TerminateOnNaN(), recorder]).history
    assert len(recorder.batch_logs) == 1  # stopped after the first batch
    assert math.isnan(recorder.batch_logs[0]["l1_weight"])
    assert math.isnan(recorder.batch_logs[0]["loss"])
    assert len(history["loss"]) == 1


@pytest.mark.slow
@only_on("tensorflow", reason="tf.distribute.MirroredStrategy")
def test_mirrored_strategy_on_two_logical_cpus_matches_single_device(fresh_python):
    out = fresh_python(
        """
        import json
        import tensorflow as tf
        cpu = tf.config.list_physical_devices("CPU")[0]
        tf.config.set_logical_device_configuration(
            cpu, [tf.config.LogicalDeviceConfiguration()] * 2)
        import keras, numpy as np
        import keras_l1l2plus as kl

        rng = np.random.default_rng(0)
        x = rng.normal(size=(64, 5)).astype("float32")
        y = rng.normal(size=(64, 2)).astype("float32")
        init = None

        def run(strategy):
            global init
            with strategy.scope():
                model = keras.Sequential([keras.Input((5,)), keras.layers.Dense(4, activation="tanh"),
                                          keras.layers.Dense(2)])
                if init is None:
                    init = [rng.normal(size=w.shape).astype("float32") for w in model.get_weights()]
                model.set_weights(init)
                kl.regularize(model, l1_weight=0.01, l1_bias=0.005, l2_weight=0.001, l2_bias=0.0005)
                model.compile(optimizer=keras.optimizers.SGD(0.1), loss="mse")
            schedule = kl.PenaltySchedule(l2_weight=keras.optimizers.schedules.PiecewiseConstantDecay(
                [3], [0.001, 0.01]))  # λ2w changes at step 4, the second epoch's first
            history = model.fit(x, y, batch_size=16, epochs=2, shuffle=False, verbose=0,
                                validation_data=(x[:16], y[:16]), callbacks=[kl.PenaltyLogger(), schedule])
            return history.history

        mirrored = tf.distribute.MirroredStrategy(["/cpu:0", "/cpu:1"])
        assert mirrored.num_replicas_in_sync == 2
        print(json.dumps({"single": run(tf.distribute.get_strategy()), "mirrored": run(mirrored)}))
        """
    )
    import json

    result = json.loads(out.strip().splitlines()[-1])
    single, mirrored = result["single"], result["mirrored"]
    for key in ("loss", "data_loss", "penalty", "val_data_loss", "val_loss", "lambda_l2_weight", *TERMS):
        np.testing.assert_allclose(mirrored[key], single[key], rtol=1e-5, err_msg=key)
    assert mirrored["lambda_l2_weight"] == pytest.approx([0.001, 0.01])  # steps 0-3, then 4-7: λ reached the replicas
    for h in (single, mirrored):
        np.testing.assert_allclose(
            np.array(h["data_loss"]) + np.array(h["penalty"]), h["loss"], rtol=1e-6
        )


@pytest.mark.slow
@only_on("jax", reason="keras.distribution.DataParallel over virtual CPU devices")
def test_jax_data_parallel_on_two_cpu_devices_matches_single_device(fresh_python):
    out = fresh_python(
        """
        import os
        os.environ["XLA_FLAGS"] = "--xla_force_host_platform_device_count=2"
        import json
        import jax, keras, numpy as np
        import keras_l1l2plus as kl

        assert len(jax.devices()) == 2
        rng = np.random.default_rng(0)
        x = rng.normal(size=(64, 5)).astype("float32")
        y = rng.normal(size=(64, 2)).astype("float32")

        def run(distribution):
            keras.distribution.set_distribution(distribution)
            keras.utils.set_random_seed(0)
            model = keras.Sequential([keras.Input((5,)), keras.layers.Dense(4, activation="tanh"),
                                      keras.layers.Dense(2)])
            kl.regularize(model, l1_weight=0.1, l1_bias=0.005, l2_weight=0.001, l2_bias=0.0005,
                          proximal_weight=True)
            model.compile(optimizer=kl.ProximalOptimizer(keras.optimizers.SGD(0.1)), loss="mse")
            schedule = kl.PenaltySchedule(l1_weight=keras.optimizers.schedules.PiecewiseConstantDecay(
                [6], [0.1, 0.2]))  # the proximal λ1 changes within the third epoch
            history = model.fit(x, y, batch_size=16, epochs=5, shuffle=False, verbose=0,
                                validation_data=(x[:16], y[:16]), callbacks=[kl.PenaltyLogger(), schedule])
            return history.history, [w.tolist() for w in model.get_weights()]

        single = run(None)
        parallel = run(keras.distribution.DataParallel(devices=jax.devices()))
        print(json.dumps({"single": single, "parallel": parallel}))
        """
    )
    import json

    result = json.loads(out.strip().splitlines()[-1])
    (single, w1), (parallel, w2) = result["single"], result["parallel"]
    for key in ("loss", "data_loss", "penalty", "val_data_loss", "sparsity_weight", "lambda_l1_weight", *TERMS):
        np.testing.assert_allclose(parallel[key], single[key], rtol=1e-5, atol=1e-7, err_msg=key)
    assert parallel["lambda_l1_weight"][-1] == pytest.approx(0.2)
    for a, b in zip(w1, w2):
        np.testing.assert_allclose(b, a, rtol=1e-5, atol=1e-6)
    assert sum((np.array(w) == 0).sum() for w in w1[::2]) > 0  # the proximal step made zeros


MULTI_WORKER_RUN = """
import json, os, sys
import numpy as np
import tensorflow as tf
import keras
import keras_l1l2plus as kl

plain = sys.argv[2] == "plain"  # Keras alone, no plugin: does fit work under the strategy at all?
strategy = tf.distribute.MultiWorkerMirroredStrategy() if "TF_CONFIG" in os.environ else tf.distribute.get_strategy()
rng = np.random.default_rng(0)
x = rng.normal(size=(64, 5)).astype("float32")
y = rng.normal(size=(64, 2)).astype("float32")
init = [rng.normal(size=s).astype("float32") for s in ((5, 4), (4,), (4, 2), (2,))]
with strategy.scope():
    model = keras.Sequential([keras.Input((5,)), keras.layers.Dense(4, activation="tanh"), keras.layers.Dense(2)])
    model.set_weights(init)
    if not plain:
        kl.regularize(model, l1_weight=0.01, l1_bias=0.005, l2_weight=0.001, l2_bias=0.0005, proximal_weight=True)
    optimizer = keras.optimizers.SGD(0.1)
    model.compile(optimizer=optimizer if plain else kl.ProximalOptimizer(optimizer), loss="mse")
callbacks = [] if plain else [kl.PenaltyLogger()]
history = model.fit(x, y, batch_size=16, epochs=3, shuffle=False, verbose=0, callbacks=callbacks)
with open(sys.argv[1], "w") as f:
    json.dump({"history": history.history, "weights": [w.tolist() for w in model.get_weights()],
               "replicas": strategy.num_replicas_in_sync}, f)
"""


def _free_ports(n):
    import socket

    sockets = [socket.socket() for _ in range(n)]
    try:
        for s in sockets:
            s.bind(("127.0.0.1", 0))
        return [s.getsockname()[1] for s in sockets]
    finally:
        for s in sockets:
            s.close()


@pytest.mark.slow
@only_on("tensorflow", reason="tf.distribute.MultiWorkerMirroredStrategy")
def test_multi_worker_mirrored_two_processes_match_a_single_process(tmp_path):
    import json
    import os
    import subprocess
    import sys

    script = tmp_path / "run.py"
    script.write_text(MULTI_WORKER_RUN)
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3", KERAS_BACKEND="tensorflow", CUDA_VISIBLE_DEVICES="")

    def two_workers(mode):
        """Runs the script in 2 worker processes on 127.0.0.1; (return codes, stderrs)."""
        workers = [f"127.0.0.1:{port}" for port in _free_ports(2)]
        processes = []
        try:
            for index in range(2):
                config = {"cluster": {"worker": workers}, "task": {"type": "worker", "index": index}}
                processes.append(subprocess.Popen(
                    [sys.executable, str(script), str(tmp_path / f"worker{index}.json"), mode],
                    env=dict(env, TF_CONFIG=json.dumps(config)), stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                    text=True))
            outputs = [p.communicate(timeout=300) for p in processes]
        finally:
            for p in processes:  # never leave a worker behind
                if p.poll() is None:
                    p.kill()
                    p.wait()
        return [p.returncode for p in processes], [err for _, err in outputs]

    codes, errors = two_workers("plain")
    if any(codes):
        last = [line for line in errors[0].strip().splitlines() if line.strip()][-1]
        pytest.skip(f"Keras's own fit fails under MultiWorkerMirroredStrategy here, without the plugin: {last[:300]}")
    single = subprocess.run([sys.executable, str(script), str(tmp_path / "single.json"), "plugin"], env=env,
                            capture_output=True, text=True, timeout=300)
    assert single.returncode == 0, single.stderr[-3000:]
    codes, errors = two_workers("plugin")
    for code, err in zip(codes, errors):
        assert code == 0, err[-3000:]
    expected = json.loads((tmp_path / "single.json").read_text())
    for index in range(2):
        result = json.loads((tmp_path / f"worker{index}.json").read_text())
        assert result["replicas"] == 2
        for key in ("loss", "data_loss", "penalty", "sparsity_weight", *TERMS):
            np.testing.assert_allclose(result["history"][key], expected["history"][key], rtol=1e-5, atol=1e-7,
                                       err_msg=key)
        for a, b in zip(result["weights"], expected["weights"]):
            np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)
    kernels = [np.array(w) for w in expected["weights"][::2]]
    assert sum((k == 0).sum() for k in kernels) > 0  # the proximal step made zeros


def test_a_sequential_built_at_its_first_step_is_not_warned_about():
    """A Sequential without an Input is built by the first step, after on_train_begin: no false warning."""
    x, y = make_data()
    keras.utils.set_random_seed(0)
    model = keras.Sequential([L.Dense(4, activation="tanh"), L.Dense(2)])
    kl.regularize(model, **LAMBDAS)
    model.compile(optimizer=keras.optimizers.SGD(0.0), loss="mse")  # lr 0: the weights stay where they start
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        history = model.fit(x, y, batch_size=len(x), epochs=2, verbose=0, callbacks=[kl.PenaltyLogger()]).history
    expected = numpy_terms(model.get_weights())
    for key in (*TERMS, "penalty"):
        assert history[key] == pytest.approx([expected[key]] * 2, rel=1e-5)


@pytest.mark.parametrize("batch_size", [N_TRAIN, BATCH], ids=["one_batch", "several_batches"])
def test_an_unregularized_sequential_built_at_its_first_step_is_still_warned_about(batch_size):
    x, y = make_data()
    model = keras.Sequential([L.Dense(4), L.Dense(2)])
    model.compile(optimizer="sgd", loss="mse")
    with pytest.warns(UserWarning, match="no regularized trainable variable"):
        model.fit(x, y, batch_size=batch_size, epochs=1, verbose=0, callbacks=[kl.PenaltyLogger()])


def test_sparsity_is_that_of_the_weights_the_last_steps_loss_used():
    """As documented: the weights before the last update; the model fit returns is one update further."""
    x, y = make_data()
    keras.utils.set_random_seed(0)
    model = keras.Sequential([keras.Input((5,)), L.Dense(2)])
    kl.regularize(model, l1_weight=0.5, proximal_weight=True)
    model.compile(optimizer=kl.ProximalOptimizer(keras.optimizers.SGD(0.1)), loss="mse")
    seen = Recorder()
    history = model.fit(x, y, batch_size=BATCH, epochs=2, verbose=0, shuffle=False,
                        callbacks=[kl.PenaltyLogger(), seen]).history
    before_last_update = seen.weights[-1][0]
    assert history["sparsity_weight"][-1] == pytest.approx(np.mean(before_last_update == 0), abs=1e-7)
    assert 0 < np.mean(model.layers[0].kernel.numpy() == 0)

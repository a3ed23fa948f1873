"""PenaltyLogger's attachment: nothing left behind, no retrace, custom steps, mid-fit changes."""

import json
import warnings
import zipfile

import keras
import numpy as np
import pytest
from backends import BACKEND, only_on, op_count

import keras_l1l2plus as kl
from keras_l1l2plus import L1L2Plus

L = keras.layers
LAMBDAS = dict(l1_weight=0.01, l1_bias=0.005, l2_weight=0.001, l2_bias=0.0005)
KERAS_KEYS = {"loss", "mae"}


def make_data(n=64, seed=0):
    rng = np.random.default_rng(seed)
    return rng.normal(size=(n, 5)).astype("float32"), rng.normal(size=(n, 2)).astype("float32")


def make_model(proximal=False, optimizer=None):
    keras.utils.set_random_seed(0)
    model = keras.Sequential(
        [keras.Input((5,), name="x"), L.Dense(4, activation="tanh", name="hidden"), L.Dense(2, name="out")], name="net"
    )
    kl.regularize(model, **LAMBDAS, proximal_weight=proximal)
    optimizer = optimizer or keras.optimizers.SGD(0.05, name="sgd")
    if proximal:
        optimizer = kl.ProximalOptimizer(optimizer, name="proximal")
    model.compile(optimizer=optimizer, loss="mse", metrics=["mae"])
    return model


class RaiseAt(keras.callbacks.Callback):
    """Raises `error` at train batch `batch` of epoch `epoch`."""

    def __init__(self, epoch, batch, error):
        super().__init__()
        self.epoch, self.batch, self.error, self.current = epoch, batch, error, None

    def on_epoch_begin(self, epoch, logs=None):
        self.current = epoch

    def on_train_batch_end(self, batch, logs=None):
        if (self.current, batch) == (self.epoch, self.batch):
            raise self.error


def failing_batches(x, y, fail_after):
    """A Python generator of batches of 8 that raises after `fail_after` batches."""
    def generate():
        for i in range(0, len(x), 8):
            if i // 8 == fail_after:
                raise RuntimeError("data source failed")
            yield x[i:i + 8], y[i:i + 8]
    return generate()


def saved_config(model, path):
    model.save(path)
    with zipfile.ZipFile(path) as archive:
        return json.loads(archive.read("config.json"))


def interrupt(model, how, x, y, logged):
    callbacks = [kl.PenaltyLogger()] if logged else []
    if how == "data":
        with pytest.raises(Exception, match="data source failed"):  # as the backend reraises it
            model.fit(failing_batches(x, y, 3), epochs=1, verbose=0, shuffle=False, callbacks=callbacks)
        return
    error = KeyboardInterrupt() if how == "keyboard" else ValueError("callback failed")
    with pytest.raises(type(error)):
        model.fit(x, y, batch_size=8, epochs=3, verbose=0, shuffle=False,
                  validation_data=(x[:16], y[:16]), callbacks=[*callbacks, RaiseAt(1, 2, error)])


@pytest.mark.parametrize("proximal", [False, True], ids=["l1_gradient", "proximal"])
@pytest.mark.parametrize("how", ["callback", "keyboard", "data"])
def test_an_interrupted_fit_leaves_nothing_behind(how, proximal, tmp_path):
    x, y = make_data()
    logged, control = make_model(proximal), make_model(proximal)
    interrupt(logged, how, x, y, logged=True)
    interrupt(control, how, x, y, logged=False)
    for a, b in zip(logged.get_weights(), control.get_weights()):
        np.testing.assert_array_equal(a, b)  # the logged steps trained exactly as plain ones
    assert saved_config(logged, tmp_path / "a.keras") == saved_config(control, tmp_path / "b.keras")

    histories = [m.fit(x, y, batch_size=8, epochs=2, verbose=0, shuffle=False,
                       validation_data=(x[:16], y[:16])).history for m in (logged, control)]
    assert set(histories[0]) == set(histories[1]) == KERAS_KEYS | {f"val_{k}" for k in KERAS_KEYS}
    for a, b in zip(logged.get_weights(), control.get_weights()):
        np.testing.assert_array_equal(a, b)
    assert histories[0] == histories[1]
    assert "compute_loss" not in vars(logged)
    assert [m.name for m in logged.metrics] == [m.name for m in control.metrics]
    assert set(logged.evaluate(x, y, verbose=0, return_dict=True)) == KERAS_KEYS


def test_after_an_interrupted_fit_evaluate_and_train_on_batch_are_plain():
    x, y = make_data()
    model = make_model()
    interrupt(model, "callback", x, y, logged=True)
    assert set(model.evaluate(x, y, verbose=0, return_dict=True)) == KERAS_KEYS
    assert set(model.train_on_batch(x[:8], y[:8], return_dict=True)) == KERAS_KEYS
    assert "compute_loss" not in vars(model)


def test_after_an_interrupted_fit_a_recompiled_model_is_plain():
    x, y = make_data()
    model = make_model()
    interrupt(model, "callback", x, y, logged=True)
    model.compile(optimizer=keras.optimizers.SGD(0.05), loss="mse", metrics=["mae"])
    assert set(model.fit(x, y, epochs=1, verbose=0).history) == KERAS_KEYS
    assert "compute_loss" not in vars(model)


def test_a_raising_batch_begin_hook_after_the_logger_leaves_no_logged_step():
    x, y = make_data()
    model = make_model()

    class RaiseOnBegin(keras.callbacks.Callback):
        def on_train_batch_begin(self, batch, logs=None):
            raise ValueError("begin failed")

    with pytest.raises(ValueError, match="begin failed"):
        model.fit(x, y, epochs=1, verbose=0, callbacks=[kl.PenaltyLogger(), RaiseOnBegin()])

    class Keys(keras.callbacks.Callback):
        def on_train_batch_end(self, batch, logs=None):
            self.keys = set(logs)

    keys = Keys()
    model.fit(x, y, batch_size=64, epochs=1, verbose=0, callbacks=[keys])
    assert keys.keys == KERAS_KEYS  # the stale claim was dropped at the epoch's metric reset


class CountingModel(keras.Sequential):
    """Counts how often `train_step` is run in Python: once per trace in graph mode."""

    traces = 0

    def train_step(self, *args):  # (data), or (state, data) on JAX
        CountingModel.traces += 1
        return super().train_step(*args)


@only_on("tensorflow", "jax", reason="PyTorch runs train_step eagerly at every step: there is no trace")
def test_repeated_fits_trace_each_step_once():
    x, y = make_data()
    keras.utils.set_random_seed(0)
    model = CountingModel([keras.Input((5,)), L.Dense(2)])
    kl.regularize(model, **LAMBDAS)
    model.compile(optimizer="sgd", loss="mse")
    CountingModel.traces = 0
    fits = []
    for logged in (True, True, True, False, False, True, False):
        callbacks = [kl.PenaltyLogger()] if logged else []
        history = model.fit(x, y, batch_size=64, epochs=1, verbose=0, callbacks=callbacks).history
        assert ("penalty" in history) is logged
        fits.append(CountingModel.traces)
    assert fits == [1, 1, 1, 2, 2, 2, 2]  # one trace of the logged step, one of the plain step
    kl.regularize(model, l2_weight=0.1)  # a new penalty: traced again
    model.fit(x, y, batch_size=64, epochs=1, verbose=0, callbacks=[kl.PenaltyLogger()])
    assert CountingModel.traces == 3


@only_on("tensorflow", "torch", reason="a stateful train_step(data); JAX's is train_step(state, data)")
def test_a_train_step_that_never_calls_compute_loss_is_an_error():
    class OwnLoss(keras.Sequential):
        def train_step(self, data):
            x, y = data
            y_pred = self(x, training=True)
            loss = keras.ops.mean(keras.ops.square(y - y_pred))  # no compute_loss: no penalty
            return {"loss": loss}

    x, y = make_data()
    model = OwnLoss([keras.Input((5,)), L.Dense(2)])
    kl.regularize(model, **LAMBDAS)
    model.compile(optimizer="sgd", loss="mse")
    with pytest.raises(RuntimeError, match=r"OwnLoss\.train_step never called compute_loss"):
        model.fit(x, y, epochs=1, verbose=0, callbacks=[kl.PenaltyLogger()])
    assert set(model.fit(x, y, epochs=1, verbose=0).history) == {"loss"}


@only_on("tensorflow", reason="the keras.io guide's TensorFlow train_step")
def test_the_keras_io_custom_train_step_logs_exact_terms():
    """The "customizing what happens in fit" step: every metric gets update_state(y, y_pred)."""
    import tensorflow as tf

    class CustomModel(keras.Sequential):
        def train_step(self, data):
            x, y = data
            with tf.GradientTape() as tape:
                y_pred = self(x, training=True)
                loss = self.compute_loss(y=y, y_pred=y_pred)
            gradients = tape.gradient(loss, self.trainable_variables)
            self.optimizer.apply(gradients, self.trainable_variables)
            for metric in self.metrics:
                if metric.name == "loss":
                    metric.update_state(loss)
                else:
                    metric.update_state(y, y_pred)
            return {m.name: m.result() for m in self.metrics}

    x, y = make_data()
    keras.utils.set_random_seed(0)
    model = CustomModel([keras.Input((5,)), L.Dense(2)])
    kl.regularize(model, **LAMBDAS)
    model.compile(optimizer=keras.optimizers.SGD(0.0), loss="mse")  # weights stay put
    history = model.fit(x, y, batch_size=16, epochs=1, verbose=0, callbacks=[kl.PenaltyLogger()]).history
    kernel, bias = (v.numpy().astype("float64") for v in model.trainable_weights)
    assert history["l1_weight"][0] == pytest.approx(0.01 * np.abs(kernel).sum(), rel=1e-6)
    assert history["l2_bias"][0] == pytest.approx(0.0005 * np.square(bias).sum(), rel=1e-6, abs=1e-12)
    assert history["loss"][0] == pytest.approx(history["data_loss"][0] + history["penalty"][0], rel=1e-6)


def test_the_metric_ignores_y_and_y_pred():
    x, y = make_data()
    model = make_model()
    model.fit(x, y, epochs=1, verbose=0, callbacks=[kl.PenaltyLogger()])
    metric = kl.logger.attachment.attachment(model).metric
    before = {k: float(v) for k, v in metric.result().items()}
    metric.update_state(y, model.predict(x, verbose=0))
    assert {k: float(v) for k, v in metric.result().items()} == before


def test_regularize_in_a_callback_acts_from_the_next_step():
    lambdas = [0.0, 0.1, 0.3]

    class WarmUp(keras.callbacks.Callback):
        def on_epoch_begin(self, epoch, logs=None):
            kl.regularize(self.model, l2_weight=lambdas[epoch])

    lr = 0.1
    keras.utils.set_random_seed(0)
    model = keras.Sequential([keras.Input((3,)), L.Dense(1, use_bias=False, kernel_initializer="ones")])
    model.compile(optimizer=keras.optimizers.SGD(lr), loss="mse")
    x = np.zeros((4, 3), "float32")  # data gradient 0: only the penalty moves the weights
    with pytest.warns(UserWarning, match="no regularized trainable variable"):  # not yet, at λ = 0
        history = model.fit(x, x[:, :1], batch_size=2, epochs=3, verbose=0, shuffle=False,
                            callbacks=[WarmUp(), kl.PenaltyLogger()]).history
    # w ← w − lr·2λ·w at each of 2 steps per epoch; the logged l2_weight is the
    # epoch mean of λ·Σw² before each step.
    w, expected = 1.0, []
    for lam in lambdas:
        terms = []
        for _ in range(2):
            terms.append(lam * 3 * w**2)
            w -= lr * 2 * lam * w
        expected.append(np.mean(terms))
    np.testing.assert_allclose(history["l2_weight"], expected, rtol=1e-5)
    np.testing.assert_allclose(model.layers[0].kernel.numpy(), np.full((3, 1), w), rtol=1e-5)


def test_the_users_own_compute_loss_is_restored():
    x, y = make_data()
    model = make_model()
    calls = []

    def compute_loss(x=None, y=None, y_pred=None, sample_weight=None, training=True):
        calls.append(training)
        return keras.Model.compute_loss(model, x, y, y_pred, sample_weight, training=training)

    model.compute_loss = compute_loss
    history = model.fit(x, y, epochs=1, verbose=0, callbacks=[kl.PenaltyLogger()]).history
    assert "penalty" in history and calls  # the logger wrapped the user's own
    assert vars(model)["compute_loss"] is compute_loss
    interrupt(model, "callback", x, y, logged=True)
    model.fit(x, y, epochs=1, verbose=0)  # heals
    assert vars(model)["compute_loss"] is compute_loss


def test_two_loggers_in_one_fit_are_refused():
    x, y = make_data()
    model = make_model()
    with pytest.raises(ValueError, match="Two PenaltyLogger callbacks"):
        model.fit(x, y, epochs=1, verbose=0, callbacks=[kl.PenaltyLogger(), kl.PenaltyLogger()])
    assert set(model.fit(x, y, epochs=1, verbose=0).history) == KERAS_KEYS
    logger = kl.PenaltyLogger()
    for _ in range(2):  # one logger in consecutive fits is fine
        assert "penalty" in model.fit(x, y, epochs=1, verbose=0, callbacks=[logger]).history


def test_evaluate_with_the_logger_on_its_own():
    x, y = make_data()
    model = make_model()
    logs = model.evaluate(x, y, batch_size=16, verbose=0, return_dict=True, callbacks=[kl.PenaltyLogger()])
    weights = [w.astype("float64") for w in model.get_weights()]
    l1 = 0.01 * (np.abs(weights[0]).sum() + np.abs(weights[2]).sum())
    assert logs["l1_weight"] == pytest.approx(l1, rel=1e-6)
    assert logs["loss"] == pytest.approx(logs["data_loss"] + logs["penalty"], rel=1e-6)
    assert set(model.evaluate(x, y, verbose=0, return_dict=True)) == KERAS_KEYS


def test_fine_tuning_workflow_regularizes_the_unfrozen_base():
    x, y = make_data()
    keras.utils.set_random_seed(0)
    base = keras.Sequential([keras.Input((5,)), L.Dense(4, activation="tanh")], name="base")
    model = keras.Sequential([base, L.Dense(2, name="head")])
    base.trainable = False
    kl.regularize(model, l2_weight=0.01)
    model.compile(optimizer=keras.optimizers.SGD(0.0), loss="mse")  # weights stay put
    history = model.fit(x, y, epochs=1, verbose=0, callbacks=[kl.PenaltyLogger()]).history
    head = model.get_layer("head").kernel.numpy().astype("float64")
    assert history["l2_weight"][0] == pytest.approx(0.01 * np.square(head).sum(), rel=1e-6)
    base.trainable = True
    model.compile(optimizer=keras.optimizers.SGD(0.0), loss="mse")  # Keras asks for it after unfreezing
    history = model.fit(x, y, epochs=1, verbose=0, callbacks=[kl.PenaltyLogger()]).history
    kernels = [v.numpy().astype("float64") for v in model.trainable_weights if v.name == "kernel"]
    assert len(kernels) == 2
    assert history["l2_weight"][0] == pytest.approx(0.01 * sum(np.square(k).sum() for k in kernels), rel=1e-6)


def test_bad_input_is_named():
    model = make_model()
    with pytest.raises(TypeError, match="model.*'x'"):
        kl.penalty_terms("x")
    with pytest.raises(TypeError, match="per_layer"):
        kl.penalty_terms(model, per_layer="yes")
    with pytest.raises(TypeError, match="recorded=5"):
        kl.penalty_terms(model, recorded=5)
    with pytest.raises(ValueError, match="l1"):
        L1L2Plus(l1=10**400)
    assert kl.PenaltyLogger(update_freq=np.int64(2)).update_freq == 2
    with pytest.raises(TypeError, match="exclude=3"):
        kl.regularize(model, exclude=3)
    with pytest.raises(TypeError, match="exclude"):
        kl.regularize(model, exclude=["hidden", 3])


def test_a_model_without_regularizers_still_warns():
    x, y = make_data()
    keras.utils.set_random_seed(0)
    model = keras.Sequential([keras.Input((5,)), L.Dense(2)])
    model.compile(optimizer="sgd", loss="mse")
    with pytest.warns(UserWarning, match="no regularized trainable variable"):
        model.fit(x, y, epochs=1, verbose=0, callbacks=[kl.PenaltyLogger()])
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        model.fit(x, y, epochs=1, verbose=0)


def test_per_layer_keys_stay_fixed_when_layers_change_mid_fit():
    class RegularizeHead(keras.callbacks.Callback):
        def on_epoch_begin(self, epoch, logs=None):
            if epoch == 1:
                kl.regularize(self.model, l2_weight=0.1)

    x, y = make_data()
    keras.utils.set_random_seed(0)
    model = keras.Sequential([keras.Input((5,)), L.Dense(4, name="a"), L.Dense(2, name="b")])
    model.layers[0].kernel.regularizer = L1L2Plus(l2=0.1)
    model.compile(optimizer=keras.optimizers.SGD(0.0), loss="mse")
    with pytest.warns(UserWarning, match="per-layer keys stay"):
        history = model.fit(x, y, epochs=2, verbose=0,
                            callbacks=[RegularizeHead(), kl.PenaltyLogger(per_layer=True)]).history
    assert "l2_weight/a" in history and "l2_weight/b" not in history
    kernels = [v.numpy().astype("float64") for v in model.trainable_weights if v.name == "kernel"]
    assert history["l2_weight"][1] == pytest.approx(0.1 * sum(np.square(k).sum() for k in kernels), rel=1e-6)


def test_an_evaluate_from_a_callback_inside_a_logged_fit_keeps_the_logger():
    x, y = make_data()

    class EvaluateAtEpochEnd(keras.callbacks.Callback):
        def on_epoch_end(self, epoch, logs=None):
            self.result = self.model.evaluate(x[:16], y[:16], verbose=0, return_dict=True)

    nested = EvaluateAtEpochEnd()
    model = make_model()
    history = model.fit(x, y, batch_size=16, epochs=3, verbose=0, validation_data=(x[:16], y[:16]),
                        callbacks=[kl.PenaltyLogger(), nested]).history
    assert len(history["penalty"]) == len(history["val_data_loss"]) == 3
    assert nested.result["loss"] == pytest.approx(nested.result["data_loss"] + nested.result["penalty"], rel=1e-6)
    assert set(model.fit(x, y, epochs=1, verbose=0).history) == KERAS_KEYS


@only_on("tensorflow", "torch", reason="a stateful train_step(data); JAX's is train_step(state, data)")
def test_the_compute_loss_error_is_raised_again_on_the_next_fit():
    class OwnLoss(keras.Sequential):
        def train_step(self, data):
            x, y = data
            return {"loss": keras.ops.mean(keras.ops.square(y - self(x, training=True)))}

    x, y = make_data()
    model = OwnLoss([keras.Input((5,)), L.Dense(2)])
    kl.regularize(model, **LAMBDAS)
    model.compile(optimizer="sgd", loss="mse")
    for _ in range(2):
        with pytest.raises(RuntimeError, match="never called compute_loss"):
            model.fit(x, y, epochs=1, verbose=0, callbacks=[kl.PenaltyLogger()])


def test_a_failure_while_attaching_leaves_the_model_plain(monkeypatch):
    import keras_l1l2plus.logger.attachment as metrics_module

    x, y = make_data()
    model = make_model()

    def broken(model, kind):
        raise OSError("cannot build")

    monkeypatch.setattr(metrics_module, "make_step_function", broken)
    with pytest.raises(OSError, match="cannot build"):
        model.fit(x, y, epochs=1, verbose=0, callbacks=[kl.PenaltyLogger()])
    monkeypatch.undo()
    assert "compute_loss" not in vars(model)
    assert [m.name for m in model.metrics] == [m.name for m in make_model().metrics]
    assert set(model.fit(x, y, epochs=1, verbose=0).history) == KERAS_KEYS


def test_per_layer_keys_follow_the_layers_from_one_fit_to_the_next():
    x, y = make_data()
    keras.utils.set_random_seed(0)
    model = keras.Sequential([keras.Input((5,)), L.Dense(4, name="a"), L.Dense(2, name="b")])
    model.layers[0].kernel.regularizer = L1L2Plus(l2=0.1)
    model.compile(optimizer="sgd", loss="mse")
    first = model.fit(x, y, epochs=1, verbose=0, callbacks=[kl.PenaltyLogger(per_layer=True)]).history
    kl.regularize(model, l2_weight=0.1)
    second = model.fit(x, y, epochs=1, verbose=0, callbacks=[kl.PenaltyLogger(per_layer=True)]).history
    assert "l2_weight/b" not in first and "l2_weight/b" in second


@only_on("tensorflow", "torch", reason="counts graph nodes (TensorFlow) or dispatched ops (PyTorch); JAX fuses")
def test_logged_step_costs_the_same_few_ops_whatever_the_number_of_variables():
    """The terms go into the running means as one product: the logger's ops per step do not grow with the model."""
    from keras_l1l2plus.logger import attachment as metrics

    extra = []
    for depth in (2, 12):
        model = keras.Sequential([keras.Input((8,)), *[keras.layers.Dense(8) for _ in range(depth)]])
        kl.regularize(model, l1_weight=0.01, l1_bias=0.001, l2_weight=0.01, l2_bias=0.001)
        model.compile("sgd", "mse")
        x, y = np.ones((4, 8), "float32"), np.zeros((4, 8), "float32")
        model.train_on_batch(x, y)
        step = lambda x, y: model.train_step((x, y))  # noqa: E731
        plain = op_count(step, x, y)
        logger = kl.PenaltyLogger()
        logger.set_model(model)
        attachment = metrics.attachment(model)
        attachment.attach(logger)
        try:
            extra.append(op_count(step, x, y) - plain)
        finally:
            attachment.detach()
    assert extra[0] == extra[1]
    assert extra[0] < 40  # a few ops: the product, the write, the loss, the result


class CallAtFirstEpochEnd(keras.callbacks.Callback):
    """At the end of epoch 0, `call(model)`; keeps what it returned."""

    def __init__(self, call):
        super().__init__()
        self.call, self.result = call, None

    def on_epoch_end(self, epoch, logs=None):
        if epoch == 0:
            self.result = self.call(self.model)


@pytest.mark.parametrize("inner", ["evaluate", "fit"])
def test_a_logger_nested_in_a_logged_fit_joins_it(inner):
    """A callback's own evaluate/fit with a PenaltyLogger logs its terms and leaves the outer fit's logging on."""
    x, y = make_data()

    def nested(model):
        if inner == "evaluate":
            return model.evaluate(x[:16], y[:16], verbose=0, return_dict=True, callbacks=[kl.PenaltyLogger()])
        logs = model.fit(x[:16], y[:16], epochs=1, verbose=0, callbacks=[kl.PenaltyLogger()]).history
        return {key: values[-1] for key, values in logs.items()}

    call = CallAtFirstEpochEnd(nested)
    model = make_model()
    history = model.fit(x, y, batch_size=16, epochs=3, verbose=0, callbacks=[kl.PenaltyLogger(), call]).history
    assert {len(values) for values in history.values()} == {3}
    assert "penalty" in history and "data_loss" in history
    for epoch in range(3):
        assert history["loss"][epoch] == pytest.approx(history["data_loss"][epoch] + history["penalty"][epoch],
                                                       rel=1e-6)
    assert call.result["loss"] == pytest.approx(call.result["data_loss"] + call.result["penalty"], rel=1e-6)
    assert set(model.fit(x, y, epochs=1, verbose=0).history) == KERAS_KEYS
    assert not {"compute_loss", "_flatten_metrics_in_order"} & set(vars(model))


def test_the_running_loggers_own_instance_given_to_a_nested_call_is_refused():
    x, y = make_data()
    logger = kl.PenaltyLogger()
    call = CallAtFirstEpochEnd(lambda model: model.fit(x[:16], y[:16], epochs=1, verbose=0, callbacks=[logger]))
    model = make_model()
    with pytest.raises(ValueError, match=r"This PenaltyLogger is logging the running fit.*PenaltyLogger\(per_layer=False\)"):
        model.fit(x, y, epochs=2, verbose=0, callbacks=[logger, call])
    fixed = CallAtFirstEpochEnd(lambda model: model.fit(x[:16], y[:16], epochs=1, verbose=0,
                                                        callbacks=[kl.PenaltyLogger(per_layer=False)]))
    history = model.fit(x, y, epochs=2, verbose=0, callbacks=[kl.PenaltyLogger(), fixed]).history  # the fix runs
    assert len(history["penalty"]) == 2


def test_a_nested_logger_with_other_keys_is_refused_by_name():
    x, y = make_data()
    call = CallAtFirstEpochEnd(lambda model: model.evaluate(x, y, verbose=0, callbacks=[kl.PenaltyLogger(per_layer=True)]))
    model = make_model()
    with pytest.raises(ValueError, match=r"per_layer=True.*PenaltyLogger\(per_layer=False\)"):
        model.fit(x, y, epochs=1, verbose=0, callbacks=[kl.PenaltyLogger(), call])
    fixed = CallAtFirstEpochEnd(lambda model: model.evaluate(x, y, verbose=0, callbacks=[kl.PenaltyLogger(per_layer=False)]))
    model.fit(x, y, epochs=1, verbose=0, callbacks=[kl.PenaltyLogger(), fixed])  # the suggested fix runs
    assert isinstance(fixed.result, list) and len(fixed.result) == 2


def _nested_results(model):
    x, y = make_data()
    return {
        "evaluate": model.evaluate(x, y, verbose=0),
        "train_on_batch": model.train_on_batch(x[:8], y[:8]),
        "test_on_batch": model.test_on_batch(x[:8], y[:8]),
    }


@pytest.mark.parametrize("metrics", [[], ["mae"]], ids=["loss_only", "with_a_metric"])
def test_nested_calls_return_what_keras_returns(metrics):
    """evaluate, train_on_batch and test_on_batch from a callback return what a control model's return."""
    x, y = make_data()
    results = {}
    for logged in (False, True):
        model = make_model()
        model.compile(optimizer=keras.optimizers.SGD(0.05), loss="mse", metrics=metrics)
        call = CallAtFirstEpochEnd(_nested_results)
        model.fit(x, y, batch_size=16, epochs=1, verbose=0,
                  callbacks=[kl.PenaltyLogger(), call] if logged else [call])
        results[logged] = call.result
    for name, control in results[False].items():
        ours = results[True][name]
        assert type(ours) is type(control), name
        np.testing.assert_allclose(ours, control, rtol=1e-6, err_msg=name)


@pytest.mark.parametrize("metrics", [[], ["mae"]], ids=["loss_only", "with_a_metric"])
def test_evaluate_with_its_own_logger_returns_what_keras_returns(metrics):
    x, y = make_data()
    model = make_model()
    model.compile(optimizer=keras.optimizers.SGD(0.05), loss="mse", metrics=metrics)
    control = model.evaluate(x, y, verbose=0)
    ours = model.evaluate(x, y, verbose=0, callbacks=[kl.PenaltyLogger()])
    assert type(ours) is type(control)
    np.testing.assert_allclose(ours, control, rtol=1e-6)
    logs = model.evaluate(x, y, verbose=0, return_dict=True, callbacks=[kl.PenaltyLogger()])
    assert {"loss", "penalty", "data_loss", *metrics} <= set(logs)
    assert "_flatten_metrics_in_order" not in vars(model)
    assert model.evaluate(x, y, verbose=0) == pytest.approx(control, rel=1e-6)


@only_on("tensorflow", "torch", reason="a stateful test_step(data); JAX's is test_step(state, data)")
def test_a_custom_test_steps_extra_values_stay_last_in_evaluates_list():
    """As Keras's own test_evaluate_with_custom_test_step_flat: the step's own keys follow the metrics."""

    class Custom(keras.Sequential):
        def test_step(self, data):
            logs = super().test_step(data)
            return {**logs, "my_custom_metric": 5.0}

    x, y = make_data()
    keras.utils.set_random_seed(0)
    model = Custom([keras.Input((5,)), L.Dense(2)])
    kl.regularize(model, **LAMBDAS)
    model.compile(optimizer="sgd", loss="mse")
    control = model.evaluate(x, y, verbose=0)
    ours = model.evaluate(x, y, verbose=0, callbacks=[kl.PenaltyLogger()])
    assert ours[-1] == control[-1] == 5.0
    assert len(ours) == len(control)


@only_on("tensorflow", "torch", reason="Keras's own JAX trainer fails when a layer is frozen mid-fit, without the "
         "plugin too (a shape mismatch in its state sync)")
def test_a_layer_frozen_between_two_epochs_keeps_loss_equal_to_data_loss_plus_penalty():
    """The logger's cached step plan follows the variables the loss regularizes (issue 27's lifecycle)."""
    x, y = make_data()

    class FreezeFirstAfterEpoch0(keras.callbacks.Callback):
        def on_epoch_end(self, epoch, logs=None):
            if epoch == 0:
                self.model.layers[0].trainable = False

    class BatchLogs(keras.callbacks.Callback):
        seen = []

        def on_train_batch_end(self, batch, logs=None):
            self.seen.append(dict(logs))

    model = make_model(optimizer=keras.optimizers.SGD(0.0))  # the weights stay: each epoch's terms are constant
    weights = [w.astype("float64") for w in model.get_weights()]
    logs = BatchLogs()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # Keras's own "trainable state changed" warning
        history = model.fit(x, y, batch_size=16, epochs=3, verbose=0,
                            callbacks=[kl.PenaltyLogger(), FreezeFirstAfterEpoch0(), logs]).history
    for point in [*logs.seen, *({k: v[e] for k, v in history.items()} for e in range(3))]:
        assert point["loss"] == pytest.approx(point["data_loss"] + point["penalty"], rel=1e-6)
    full = sum(LAMBDAS[f"{kind}_{role}"] * (np.abs(w).sum() if kind == "l1" else np.square(w).sum())
               for w, role in zip(weights, ("weight", "bias", "weight", "bias")) for kind in ("l1", "l2"))
    out_only = sum(LAMBDAS[f"{kind}_{role}"] * (np.abs(w).sum() if kind == "l1" else np.square(w).sum())
                   for w, role in zip(weights[2:], ("weight", "bias")) for kind in ("l1", "l2"))
    assert history["penalty"][0] == pytest.approx(full, rel=1e-5)
    if BACKEND == "torch":  # eager: the loss drops the frozen layer's penalty at once, and so do the logs
        assert history["penalty"][2] == pytest.approx(out_only, rel=1e-5)

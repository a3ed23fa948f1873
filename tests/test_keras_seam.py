"""Every private Keras attribute the package uses, checked against the installed Keras.

If one of these fails after a Keras upgrade, `keras_l1l2plus/_keras.py` says
what the attribute is for and what the fallback is.
"""

import inspect

import keras
import numpy as np
import pytest

from keras_l1l2plus import _keras

L = keras.layers


def compiled_model():
    model = keras.Sequential([keras.Input((3,)), L.Dense(2)])
    model.compile(optimizer="sgd", loss="mse")
    return model


def test_metric_container_gives_monitors_the_direction():
    assert _keras.MetricContainer is not keras.metrics.Metric, "MetricsList moved: monitors need mode='min'"
    try:
        from keras.src.callbacks.monitor_callback import MonitorCallback as reader
    except ImportError:  # older Keras: EarlyStopping alone reads it
        from keras.src.callbacks.early_stopping import EarlyStopping as reader

    # The monitors read the sub-metrics' `_direction` of this container class.
    source = inspect.getsource(reader)
    assert "MetricsList" in source and "_direction" in source


def test_model_metrics_list_is_what_model_metrics_reads():
    model = compiled_model()
    metric = keras.metrics.Mean(name="extra")
    _keras.add_model_metric(model, metric)
    assert model.metrics[-1] is metric
    _keras.remove_model_metric(model, metric)
    assert metric not in model.metrics


def test_compute_loss_training_flag_is_read_by_keras():
    model = compiled_model()
    assert model._compute_loss_has_training_arg is True
    assert "_compute_loss_has_training_arg" in inspect.getsource(type(model)._compute_loss)
    _keras.compute_loss_accepts_training(model, False)
    assert model._compute_loss_has_training_arg is False


def test_layer_walk_and_own_variables():
    inner = keras.Sequential([keras.Input((3,)), L.Dense(2, name="d")], name="inner")
    model = keras.Sequential([inner, L.Dense(1, name="head")])
    children = [l.name for l in _keras.flatten_layers(model) if not isinstance(l, L.InputLayer)]
    assert children == ["inner", "head"]
    assert [l.name for l in _keras.flatten_layers(inner) if not isinstance(l, L.InputLayer)] == ["d"]
    inner.trainable = False
    own = _keras.own_trainable_variables(inner.layers[0])
    assert [v.name for v in own] == ["kernel", "bias"]  # a frozen layer still lists them
    assert inner.layers[0].trainable_weights == []


@pytest.mark.parametrize(
    "optimizer,slots",
    [
        (keras.optimizers.Adam(amsgrad=True), ("_velocities", "_velocity_hats")),
        (keras.optimizers.RMSprop(centered=True), ("_velocities", "_average_gradients")),
        (keras.optimizers.Adagrad(), ("_accumulators",)),
    ],
    ids=["adam", "rmsprop", "adagrad"],
)
def test_optimizer_slots(optimizer, slots):
    variables = [keras.Variable(np.ones((2, 3), "float32")), keras.Variable(np.ones(3, "float32"))]
    optimizer.build(variables)
    for name in slots:
        assert _keras.optimizer_slot(optimizer, name, variables[1]).shape == (3,)


def test_micro_steps_count_accumulate_only_applies():
    optimizer = keras.optimizers.SGD(0.1, gradient_accumulation_steps=3)
    variable = keras.Variable(np.ones(2, "float32"))
    for _ in range(4):
        optimizer.apply([keras.ops.ones(2)], [variable])
    assert int(_keras.micro_steps(optimizer)) == 4 and int(optimizer.iterations) == 1


def test_jax_step_state_layout():
    if keras.backend.backend() != "jax":
        assert _keras.without_metric_state(("data",), [0]) == ("data",)
        return
    import keras.src.backend.jax.trainer as trainer

    # The JAX trainer calls its step functions as fn(state, data), metrics' values last.
    assert "logs, state = self.train_function(state, iterator)" in inspect.getsource(trainer.JAXTrainer.fit)
    state = (["t"], ["n"], ["o"], ["m0", "m1", "m2"])
    assert _keras.without_metric_state((state, "data"), [1]) == ((["t"], ["n"], ["o"], ["m0", "m2"]), "data")


def test_num_replicas_outside_a_strategy():
    assert _keras.num_replicas() == 1


def test_progress_bar_is_found_and_replaced_in_the_running_callback_list():
    class Replacer(keras.callbacks.Callback):
        def on_train_begin(self, logs=None):
            self.replaced = _keras.replace_progress_bar(self, lambda: Bar())

    class Bar(keras.callbacks.ProgbarLogger):
        began = False

        def on_train_begin(self, logs=None):
            super().on_train_begin(logs)
            self.began = True

    model = compiled_model()
    replacer = Replacer()
    callbacks = keras.callbacks.CallbackList([replacer], add_history=True, add_progbar=True, model=model,
                                             verbose=1, epochs=1, steps=1)
    default = callbacks._progbar
    assert type(default) is keras.callbacks.ProgbarLogger and callbacks.callbacks[-1] is default
    callbacks.on_train_begin()
    assert isinstance(replacer.replaced, Bar) and replacer.replaced.began  # its begin hook ran in that loop
    assert callbacks._progbar is replacer.replaced and callbacks.callbacks[-1] is replacer.replaced
    assert default not in callbacks.callbacks and replacer.replaced.target == 1  # params passed on
    # A bar placed before the callback already began: it is kept.
    mine = keras.callbacks.ProgbarLogger()
    callbacks = keras.callbacks.CallbackList([mine, replacer], add_progbar=True, model=model, verbose=1, epochs=1,
                                             steps=1)
    callbacks.on_train_begin()
    assert replacer.replaced is None and callbacks._progbar is mine


def test_a_threaded_state_variable_is_model_state_but_not_a_weight(tmp_path):
    model = compiled_model()
    variable = keras.Variable(0.5, trainable=False, name="lam")
    weights = len(model.weights)
    _keras.thread_state_variable(model, variable)
    _keras.thread_state_variable(model, variable)  # once only
    assert sum(v is variable for v in model.non_trainable_variables) == 1  # what the JAX trainer threads
    assert len(model.weights) == weights and len(model.get_weights()) == weights
    model.save(tmp_path / "m.keras")  # not saved: the model loads as before
    assert len(keras.models.load_model(tmp_path / "m.keras").weights) == weights
    assert _keras.state_is_threaded() == (keras.backend.backend() == "jax")


def test_forward_values_escape_a_custom_gradient_where_the_seam_says_so():
    """A sum computed in a custom gradient's forward pass, used outside it, in compiled code.

    With a gradient, JAX traces the forward pass in the caller's trace, but
    without one (a test step) in a trace of its own: the value cannot leave.
    """
    from backends import BACKEND, compiled, value_and_grad

    kept = []

    def f(x):
        @keras.ops.custom_gradient
        def double(x):
            kept.append(keras.ops.sum(x))
            return 2 * keras.ops.sum(x), lambda *args, upstream=None: 2 * keras.ops.ones_like(x)

        return double(x) + 0 * kept[-1]  # the kept value used outside the forward pass

    x = np.array([1.0, 2.0, 3.0], "float32")
    if _keras.forward_values_escape():
        value, grad = value_and_grad(f, x, mode="compiled")
        assert float(value) == 12.0 and np.allclose(keras.ops.convert_to_numpy(grad), 2.0)
        assert float(compiled(lambda: f(keras.ops.convert_to_tensor(x)))()) == 12.0
    else:
        assert BACKEND == "jax"
        import jax

        with pytest.raises(jax.errors.UnexpectedTracerError):
            compiled(lambda: f(keras.ops.convert_to_tensor(x)))()

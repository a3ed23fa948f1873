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
    assert _keras.MetricContainer.__mro__[1] is not keras.metrics.Metric, "MetricsList moved: monitors need mode='min'"
    try:
        from keras.src.callbacks.monitor_callback import MonitorCallback as reader
    except ImportError:  # older Keras: EarlyStopping alone reads it
        from keras.src.callbacks.early_stopping import EarlyStopping as reader

    # The monitors read the sub-metrics' `_direction` of this container class.
    source = inspect.getsource(reader)
    assert "MetricsList" in source and "_direction" in source

    class Probe(_keras.MetricContainer):
        def result(self):
            return {"val_like": keras.ops.zeros(())}

    probe = Probe(name="probe", lower_is_better=["a", "b"])
    assert [m.name for m in probe.metrics] == ["a", "b"] and {m._direction for m in probe.metrics} == {"down"}
    model = compiled_model()
    _keras.add_model_metric(model, probe)
    stopping = keras.callbacks.EarlyStopping(monitor="val_a", mode="auto")
    stopping.set_model(model)
    stopping._set_monitor_op()
    assert stopping.monitor_op is keras.ops.less


def test_model_metrics_list_is_what_model_metrics_reads():
    model = compiled_model()
    metric = keras.metrics.Mean(name="extra")
    _keras.add_model_metric(model, metric)
    assert model.metrics[-1] is metric
    _keras.remove_model_metric(model, metric)
    assert metric not in model.metrics


def test_compute_loss_hook_and_the_training_flag_keras_reads():
    model = compiled_model()
    assert model._compute_loss_has_training_arg is True
    assert "_compute_loss_has_training_arg" in inspect.getsource(type(model)._compute_loss)

    def own(x=None, y=None, y_pred=None, sample_weight=None):  # a user's compute_loss without training=
        return keras.ops.zeros(())

    object.__setattr__(model, "compute_loss", own)
    model._compute_loss_has_training_arg = False
    seen = []
    saved = _keras.hook_compute_loss(model, lambda inner, takes_training: seen.append((inner, takes_training))
                                     or (lambda *a, training=True: inner(*a)))
    assert seen == [(own, False)] and model._compute_loss_has_training_arg is True
    _keras.unhook_compute_loss(model, saved)
    assert vars(model)["compute_loss"] is own and model._compute_loss_has_training_arg is False
    plain = compiled_model()
    _keras.unhook_compute_loss(plain, _keras.hook_compute_loss(plain, lambda inner, takes: inner))
    assert "compute_loss" not in vars(plain) and plain._compute_loss_has_training_arg is True


def test_flattened_results_leave_the_given_keys_out():
    model = compiled_model()
    logs = {"loss": 1.0, "penalty": 0.5, "z_custom": 5.0}
    assert model._flatten_metrics_in_order(logs) == [1.0, 0.5, 5.0]  # Keras's: its metrics, then the rest sorted
    _keras.flatten_results_without(model, ["penalty"])
    assert model._flatten_metrics_in_order(logs) == [1.0, 5.0]
    assert model._flatten_metrics_in_order(logs) == [1.0, 5.0]  # stays until restored
    _keras.restore_flat_results(model)
    assert "_flatten_metrics_in_order" not in vars(model)
    _keras.flatten_results_without(model, ["penalty", "z_custom"], once=True)
    assert model._flatten_metrics_in_order(logs) == 1.0  # a lone value, as Keras returns it
    assert "_flatten_metrics_in_order" not in vars(model)
    # evaluate, train_on_batch and test_on_batch return through it.
    trainer = type(model).__mro__
    sources = "".join(inspect.getsource(getattr(t, m)) for t in trainer for m in ("evaluate", "train_on_batch",
                                                                                 "test_on_batch") if m in vars(t))
    assert sources.count("self._flatten_metrics_in_order(") >= 3


def test_the_return_dict_argument_of_the_running_evaluate_is_read():
    seen = []

    class Reader(keras.callbacks.Callback):
        def on_test_end(self, logs=None):
            seen.append(_keras.returns_flat_results(_keras.running_call(self.model)))

    model = compiled_model()
    x = np.ones((4, 3), "float32")
    model.evaluate(x, x[:, :2], verbose=0, callbacks=[Reader()])
    model.evaluate(x, x[:, :2], verbose=0, return_dict=True, callbacks=[Reader()])
    assert seen == [True, False]


def test_step_functions_and_the_plugins_own_state_on_a_model():
    model = compiled_model()
    model.make_train_function()
    function = _keras.step_function(model, "train")
    assert function is model.train_function and function is not None
    _keras.set_step_function(model, "train", None)
    assert model.train_function is None
    state = _keras.model_state(model, "probe", lambda: {"made": True})
    assert _keras.model_state(model, "probe") is state and _keras.model_state(model, "other") is None
    assert "probe" not in str(model.get_config()) and len(model.weights) == 2  # not tracked by Keras


def test_callback_model_getter_syncs_the_jax_state():
    model = compiled_model()
    synced = []
    if keras.backend.backend() == "jax":
        object.__setattr__(model, "jax_state_sync", lambda: synced.append(True))
    callback = keras.callbacks.Callback()
    callback.set_model(model)
    assert _keras.synced_model(callback) is model
    assert synced == ([True] if keras.backend.backend() == "jax" else [])


def test_callbacks_of_one_call_share_keras_params():
    model = compiled_model()
    a, b = keras.callbacks.Callback(), keras.callbacks.Callback()
    keras.callbacks.CallbackList([a, b], model=model, epochs=1, steps=1, verbose=0)
    assert a.params is b.params and _keras.same_call(a, b)
    c = keras.callbacks.Callback()
    keras.callbacks.CallbackList([c], model=model, epochs=1, steps=1, verbose=0)
    assert not _keras.same_call(a, c)
    d, e = keras.callbacks.Callback(), keras.callbacks.Callback()
    keras.callbacks.CallbackList([d, e], model=model)  # no params: hand-made, no call to share
    assert not _keras.same_call(d, e)


def test_a_call_running_on_another_thread_is_running():
    import sys
    import threading

    started, release, frames = threading.Event(), threading.Event(), []

    def worker():
        frames.append(sys._getframe())
        started.set()
        release.wait(10)

    thread = threading.Thread(target=worker)
    thread.start()
    started.wait(10)
    assert _keras.is_running(frames[0]) and not _keras.is_running(None)
    release.set()
    thread.join()
    assert not _keras.is_running(frames[0])


def test_new_variables_go_where_the_models_strategy_puts_them():
    model = compiled_model()
    with _keras.distribution_scope(model):
        variable = keras.Variable(0.0)
    assert float(variable.numpy()) == 0.0
    if keras.backend.backend() == "tensorflow":
        import tensorflow as tf

        strategy = tf.distribute.OneDeviceStrategy("/cpu:0")
        with strategy.scope():
            model = compiled_model()
        with _keras.distribution_scope(model):
            assert tf.distribute.get_strategy() is strategy


def test_a_copy_of_a_variable_is_laid_out_as_the_variable_under_a_distribution():
    """`layout_like`: {} without a distribution; on JAX, under ModelParallel, the kernel's own layout."""
    model = keras.Sequential([keras.Input((3,)), L.Dense(2, name="dense")])
    assert _keras.layout_like(model.layers[0].kernel) == {}  # no distribution
    if keras.backend.backend() != "jax":
        return  # keras.distribution runs on JAX (TensorFlow's backend has no ModelParallel variables to lay out)
    import jax

    mesh = keras.distribution.DeviceMesh((1, 1), ["batch", "model"], devices=jax.devices()[:1])
    layout_map = keras.distribution.LayoutMap(mesh)
    layout_map[".*dense/kernel"] = (None, "model")
    distribution = keras.distribution.ModelParallel(layout_map=layout_map)
    keras.distribution.set_distribution(distribution)
    try:  # one device here (the 4-device run is tests/test_distribution.py): the layouts, as Keras reads them
        kernel = keras.Sequential([keras.Input((3,)), L.Dense(2, name="dense")]).layers[0].kernel
        assert distribution.get_variable_layout(kernel).axes == (None, "model")  # the LayoutMap names the kernel
        plain = keras.Variable(np.zeros((3, 2), "float32"), name="anchor")
        assert distribution.get_variable_layout(plain).axes == (None, None)  # a path it does not name: replicated
        assert _keras.layout_like(np.zeros((3, 2))) == {}  # only a keras.Variable lends its layout
        kwargs = _keras.layout_like(kernel)
        if "layout" not in inspect.signature(keras.Variable.__init__).parameters:
            assert kwargs == {}, "this Keras's Variable takes no layout"
            return
        assert kwargs["layout"].axes == (None, "model")
        copy = keras.Variable(np.ones((3, 2), "float32"), name="anchor", **kwargs)
        assert distribution.get_variable_layout(copy).axes == (None, "model")
        np.testing.assert_array_equal(copy.numpy(), np.ones((3, 2)))
    finally:
        keras.distribution.set_distribution(None)


def test_fused_gradient_memory_rule_names_a_backend():
    assert _keras.fused_gradient_saves_memory() == (keras.backend.backend() != "tensorflow")


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
    "optimizer, slot",
    [
        (keras.optimizers.Adam(), "_velocities"),
        (keras.optimizers.Adam(amsgrad=True), "_velocity_hats"),
        (keras.optimizers.AdamW(), "_velocities"),
        (keras.optimizers.RMSprop(centered=True), "_velocities"),
        (keras.optimizers.Adagrad(), "_accumulators"),
    ],
    ids=["adam", "adam_amsgrad", "adamw", "rmsprop", "adagrad"],
)
def test_second_moments_are_the_slots_the_update_divides_by(optimizer, slot):
    variables = [keras.Variable(np.ones((2, 3), "float32")), keras.Variable(np.ones(3, "float32"))]
    optimizer.build(variables)
    optimizer.apply([keras.ops.ones((2, 3)), keras.ops.full((3,), 2.0)], variables)
    moment = _keras.second_moment(optimizer, variables[1])
    assert moment is getattr(optimizer, slot)[1] and moment.shape == (3,)
    assert float(keras.ops.max(moment)) > 0  # updated by the gradient 2
    if isinstance(optimizer, keras.optimizers.RMSprop):
        assert _keras.mean_gradient(optimizer, variables[1]) is optimizer._average_gradients[1]
    with pytest.raises(TypeError, match="no second moment"):
        _keras.second_moment(keras.optimizers.SGD(), variables[1])


def test_the_ema_average_is_the_optimizers_moving_average():
    optimizer = keras.optimizers.SGD(0.1, use_ema=True)
    variable = keras.Variable(np.ones(2, "float32"))
    optimizer.build([variable])
    average = _keras.ema_average(optimizer, variable)
    assert average is optimizer._model_variables_moving_average[0] and average.shape == (2,)


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
    _keras.release_state_variable(model, variable)
    assert not any(v is variable for v in model.non_trainable_variables)
    _keras.release_state_variable(model, variable)  # not threaded: nothing to do


def test_a_saveable_regularizer_is_walked_by_keras_saving_under_the_layer(tmp_path):
    """Keras's saving visits a KerasSaveable attribute of a layer and calls its own variables' hooks."""
    import numpy as np

    from keras_l1l2plus import L1L2Plus

    from keras.src.saving.keras_saveable import KerasSaveable

    assert issubclass(_keras.SaveableVariables, KerasSaveable) and issubclass(L1L2Plus, _keras.SaveableVariables)
    w0 = np.arange(6, dtype="float32").reshape(2, 3)
    model = keras.Sequential([keras.Input((2,)), keras.layers.Dense(3, use_bias=False)])
    layer = model.layers[0]
    layer.kernel_regularizer = L1L2Plus(l2_anchor=0.1, anchor=w0)
    model.save_weights(tmp_path / "m.weights.h5")
    other = keras.Sequential([keras.Input((2,)), keras.layers.Dense(3, use_bias=False)])
    other.layers[0].kernel_regularizer = L1L2Plus(l2_anchor=0.1, anchor=np.zeros((2, 3), "float32"))
    other.load_weights(tmp_path / "m.weights.h5")
    np.testing.assert_array_equal(keras.ops.convert_to_numpy(other.layers[0].kernel_regularizer.anchor), w0)
    from keras.src.saving.saving_lib import get_attr_skipset

    get_attr_skipset(_keras.SaveableVariables()._obj_type())  # a kind Keras's saving accepts


def test_count_nonzero_counts_exactly():
    import numpy as np

    mask = np.zeros((300, 300), bool)
    mask[::3, ::7] = True
    assert int(keras.ops.convert_to_numpy(_keras.count_nonzero(keras.ops.convert_to_tensor(mask)))) == mask.sum()
    values = np.where(mask, np.float32(-0.5), np.float32(0.0))
    values[1, 1] = np.nan  # not a zero
    variable = keras.Variable(values)
    assert int(keras.ops.convert_to_numpy(_keras.count_nonzero(variable))) == mask.sum() + 1
    assert int(keras.ops.convert_to_numpy(_keras.count_nonzero(variable.value))) == mask.sum() + 1


def test_materialize_keeps_the_values_and_is_a_barrier_on_jax():
    x = keras.ops.convert_to_tensor([[1.0, 2.0], [3.0, 4.0]])
    assert keras.ops.convert_to_numpy(_keras.materialize(x)).tolist() == [[1.0, 2.0], [3.0, 4.0]]
    if keras.backend.backend() == "jax":
        import jax

        assert "optimization_barrier" in str(jax.make_jaxpr(_keras.materialize)(x))
    else:
        assert _keras.materialize(x) is x


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


def test_every_private_keras_name_the_package_uses_is_in_the_seam_and_tested():
    """Outside `_keras.py` the package touches no private attribute it did not define itself."""
    import ast
    import re
    from pathlib import Path

    package = Path(_keras.__file__).parent
    modules = sorted(package.rglob("*.py"))
    own = set()  # private names the package itself defines
    used: dict[str, set] = {}
    for path in modules:
        tree = ast.parse(path.read_text())
        for node in ast.walk(tree):
            if isinstance(node, (ast.FunctionDef, ast.ClassDef)) and node.name.startswith("_"):
                own.add(node.name)
            elif isinstance(node, ast.Name) and isinstance(node.ctx, ast.Store) and node.id.startswith("_"):
                own.add(node.id)
            elif isinstance(node, ast.Attribute) and node.attr.startswith("_") and not node.attr.startswith("__"):
                # The package's own: what its classes set on `self` (outside the seam, which sets Keras's).
                is_self = isinstance(node.value, ast.Name) and node.value.id == "self"
                if isinstance(node.ctx, ast.Store) and is_self and path.name != "_keras.py":
                    own.add(node.attr)
                used.setdefault(path.name if path.parent == package else f"{path.parent.name}/{path.name}",
                                set()).add(node.attr)
    outside = {name for module, names in used.items() if module != "_keras.py" for name in names} - own
    assert not outside, f"private Keras names used outside _keras.py: {sorted(outside)}"
    # In _keras.py: each private Keras name, by the seam function that uses it; that function is tested here.
    tree = ast.parse(Path(_keras.__file__).read_text())
    users: dict[str, set] = {}
    calls: dict[str, set] = {}
    for top in tree.body:
        if isinstance(top, (ast.FunctionDef, ast.ClassDef)):
            for node in ast.walk(top):
                if isinstance(node, ast.Attribute) and node.attr.startswith("_") and not node.attr.startswith("__"):
                    users.setdefault(node.attr, set()).add(top.name)
                if isinstance(node, ast.Constant) and isinstance(node.value, str) and re.fullmatch(
                        r"_[a-z]\w*", node.value):  # a name given to getattr
                    users.setdefault(node.value, set()).add(top.name)
                if isinstance(node, ast.Name):
                    calls.setdefault(node.id, set()).add(top.name)
    for node in tree.body:  # a module-level name for a private attribute (_FLATTEN = "...")
        if isinstance(node, ast.Assign) and isinstance(node.value, ast.Constant) and str(node.value.value)[:1] == "_":
            for target in node.targets:
                users.setdefault(node.value.value, set()).update(calls.get(target.id, ()))
    keras_private = sorted(set(users) - own - {"_getframe"})  # sys._getframe: Python's own, documented
    assert len(keras_private) >= 10, "the walk found too little: it must not pass vacuously"
    tests = Path(__file__).read_text()

    def tested(function):
        if not function.startswith("_"):
            return f"_keras.{function}" in tests
        return any(tested(caller) for caller in calls.get(function, ()) if caller != function)

    untested = {name: sorted(users[name]) for name in keras_private if not any(tested(f) for f in users[name])}
    assert not untested, f"private Keras names in _keras.py whose seam function has no test here: {untested}"


def test_add_to_and_assign_to_write_the_variable_or_the_stateless_scope():
    """In place on PyTorch, Keras's assignments elsewhere; inside a StatelessScope the update goes to the scope."""
    variable = keras.Variable(np.array([1.0, 2.0, 3.0], "float32"), trainable=False)
    _keras.add_to(variable, keras.ops.convert_to_tensor(np.array([0.5, 0.25, -1.0], "float32")))
    np.testing.assert_array_equal(keras.ops.convert_to_numpy(variable), [1.5, 2.25, 2.0])
    _keras.assign_to(variable, keras.ops.convert_to_tensor(np.array([4.0, 5.0, 6.0], "float32")))
    np.testing.assert_array_equal(keras.ops.convert_to_numpy(variable), [4.0, 5.0, 6.0])
    with keras.StatelessScope() as scope:
        _keras.add_to(variable, keras.ops.convert_to_tensor(np.array([1.0, 1.0, 1.0], "float32")))
        np.testing.assert_array_equal(keras.ops.convert_to_numpy(scope.get_current_value(variable)), [5.0, 6.0, 7.0])
    np.testing.assert_array_equal(keras.ops.convert_to_numpy(variable), [4.0, 5.0, 6.0])  # not written
    with keras.StatelessScope() as scope:
        _keras.assign_to(variable, keras.ops.convert_to_tensor(np.array([0.0, 0.0, 1.0], "float32")))
        np.testing.assert_array_equal(keras.ops.convert_to_numpy(scope.get_current_value(variable)), [0.0, 0.0, 1.0])
    np.testing.assert_array_equal(keras.ops.convert_to_numpy(variable), [4.0, 5.0, 6.0])
    if keras.backend.backend() == "torch":
        assert _keras._in_stateless_scope is not None  # the private name is where the seam reads it


def test_entries_for_logs_are_floats_on_pytorch_and_tensors_elsewhere():
    vector = keras.ops.convert_to_tensor(np.array([0.5, 1.5, -2.0], "float32"))
    entries = _keras.entries_for_logs(vector)
    assert [float(e) for e in entries] == [0.5, 1.5, -2.0]
    if keras.backend.backend() == "torch":
        assert all(type(e) is float for e in entries)
    else:
        assert all(keras.ops.is_tensor(e) for e in entries)


@pytest.mark.parametrize("weight", [3.0, "tensor"])
def test_add_product_adds_weight_times_the_product_against_numpy(weight):
    rng = np.random.default_rng(0)
    matrix, vector = rng.normal(size=(5, 7)).astype("float32"), rng.normal(size=7).astype("float32")
    start = rng.normal(size=5).astype("float32")
    as_tensor = keras.ops.convert_to_tensor
    w = as_tensor(np.float32(3.0)) if weight == "tensor" else weight
    variable = keras.Variable(start, trainable=False)
    _keras.add_product(variable, as_tensor(matrix), as_tensor(vector), w)
    expected = start + 3.0 * (matrix.astype("float64") @ vector)
    np.testing.assert_allclose(keras.ops.convert_to_numpy(variable), expected, rtol=1e-5, atol=1e-5)
    with keras.StatelessScope() as scope:  # the update goes to the scope, the variable keeps its value
        _keras.add_product(variable, as_tensor(matrix), as_tensor(vector), w)
        updated = keras.ops.convert_to_numpy(scope.get_current_value(variable))
    np.testing.assert_allclose(updated, expected + 3.0 * (matrix.astype("float64") @ vector), rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(keras.ops.convert_to_numpy(variable), expected, rtol=1e-5, atol=1e-5)

"""PenaltySchedule: λ(t) reaches each step, without a new trace, on every backend."""

import json

import keras
import numpy as np
import pytest
from backends import BACKEND, SPE_SUPPORTED, only_on

import keras_l1l2plus as kl

L = keras.layers
SCHEDULE = keras.optimizers.schedules.PiecewiseConstantDecay([2, 5], [0.1, 0.2, 0.4])  # λ(t) by optimizer step


def lam(step):
    return 0.1 if step <= 2 else (0.2 if step <= 5 else 0.4)


def decay_model(proximal=False, **compile_kwargs):
    """One Dense kernel, no bias, inputs 0: the data loss and its gradient are 0, the penalty alone moves w."""
    keras.utils.set_random_seed(0)
    model = keras.Sequential([keras.Input((3,)), L.Dense(2, use_bias=False, kernel_initializer="ones")])
    if proximal:
        kl.regularize(model, l1_weight=1.0, proximal_weight=True)
        optimizer = kl.ProximalOptimizer(keras.optimizers.SGD(0.1))
    else:
        kl.regularize(model, l2_weight=1.0)
        optimizer = keras.optimizers.SGD(0.1)
    model.compile(optimizer=optimizer, loss="mse", **compile_kwargs)
    return model


ZEROS = (np.zeros((8, 3), "float32"), np.zeros((8, 2), "float32"))  # 8 steps of batch 1


class BatchLogs(keras.callbacks.Callback):
    def on_train_batch_end(self, batch, logs=None):
        self.seen = getattr(self, "seen", []) + [dict(logs)]


@pytest.mark.parametrize("jit_compile", [False, True] if BACKEND != "torch" else [False])
def test_each_step_uses_its_own_lambda_in_the_update_and_in_the_logs(jit_compile):
    model = decay_model(jit_compile=jit_compile)
    batches = BatchLogs()
    model.fit(*ZEROS, batch_size=1, epochs=1, verbose=0, shuffle=False,
              callbacks=[kl.PenaltySchedule(l2_weight=SCHEDULE), kl.PenaltyLogger(), batches])
    # SGD on λ(t)·Σw² alone: w ← w·(1 − 2·lr·λ(t)) at steps t = 0 … 7.
    expected = np.prod([1 - 2 * 0.1 * lam(t) for t in range(8)])
    np.testing.assert_allclose(model.layers[0].kernel.numpy(), expected, rtol=1e-5)
    # The logs: λ of each step, and l2_weight / Σw² == λ(step) (running means: take each step's own value).
    w2, running = 6.0, []
    for t, logs in enumerate(batches.seen):
        assert logs["lambda_l2_weight"] == pytest.approx(lam(t))
        running.append(logs["l2_weight"])
        own = (t + 1) * running[t] - t * running[t - 1] if t else running[0]
        assert own / w2 == pytest.approx(lam(t), rel=1e-4), t
        w2 *= (1 - 2 * 0.1 * lam(t)) ** 2


def test_a_callable_of_the_epoch_and_the_epoch_logs():
    model = decay_model()
    history = model.fit(*ZEROS, batch_size=4, epochs=3, verbose=0,
                        callbacks=[kl.PenaltyLogger(), kl.PenaltySchedule(l2_weight=lambda epoch: 0.05 * (epoch + 1))])
    np.testing.assert_allclose(history.history["lambda_l2_weight"], [0.05, 0.1, 0.15], rtol=1e-6)
    expected = np.prod([(1 - 2 * 0.1 * 0.05 * (e + 1)) ** 2 for e in range(3)])
    np.testing.assert_allclose(model.layers[0].kernel.numpy(), expected, rtol=1e-5)


def test_the_proximal_threshold_follows_the_scheduled_lambda():
    model = decay_model(proximal=True)
    model.fit(*ZEROS, batch_size=1, epochs=1, verbose=0, shuffle=False,
              callbacks=[kl.PenaltySchedule(l1_weight=keras.optimizers.schedules.PiecewiseConstantDecay(
                  [2, 5], [0.1, 0.2, 0.4]))])
    # Proximal SGD on λ1(t)·Σ|w| alone: |w| shrinks by lr·λ1(t) a step.
    np.testing.assert_allclose(model.layers[0].kernel.numpy(), 1 - 0.1 * sum(lam(t) for t in range(8)), rtol=1e-5)


class Traces(L.Layer):
    """Counts how often its Python code runs: once per trace when compiled."""

    count = 0

    def call(self, x):
        Traces.count += 1
        return x


@only_on("tensorflow", "jax", reason="PyTorch runs eagerly: no trace to count")
def test_a_new_lambda_does_not_trace_the_step_again():
    def traces(callbacks):
        keras.utils.set_random_seed(0)
        model = keras.Sequential([keras.Input((3,)), Traces(), L.Dense(2)])
        kl.regularize(model, l2_weight=0.1)
        model.compile(optimizer="sgd", loss="mse")
        Traces.count = 0
        model.fit(*ZEROS, batch_size=1, epochs=2, verbose=0, callbacks=callbacks)
        return Traces.count

    constant = traces([kl.PenaltyLogger()])
    scheduled = traces([kl.PenaltyLogger(), kl.PenaltySchedule(l2_weight=SCHEDULE)])
    assert scheduled == constant  # 16 steps with 3 different λs, traced as often as with a constant λ


@pytest.mark.skipif(not SPE_SUPPORTED, reason="steps_per_execution must be 1 with PyTorch")
def test_steps_per_execution_changes_lambda_between_executions():
    model = decay_model(steps_per_execution=4)
    model.fit(*ZEROS, batch_size=1, epochs=1, verbose=0, shuffle=False,
              callbacks=[kl.PenaltySchedule(l2_weight=SCHEDULE)])
    # Executions start at steps 0 and 4: λ(0) = 0.1 for steps 0-3, λ(4) = 0.2 for steps 4-7.
    expected = (1 - 2 * 0.1 * 0.1) ** 4 * (1 - 2 * 0.1 * 0.2) ** 4
    np.testing.assert_allclose(model.layers[0].kernel.numpy(), expected, rtol=1e-5)


def test_weights_and_saved_weights_are_unchanged_by_the_lambda_variables(tmp_path):
    model = decay_model()
    before = len(model.weights)
    model.fit(*ZEROS, batch_size=4, epochs=1, verbose=0, callbacks=[kl.PenaltySchedule(l2_weight=SCHEDULE)])
    assert len(model.weights) == before and len(model.get_weights()) == before
    assert any(v.name == "lambdas" for v in model.non_trainable_variables)  # threaded on JAX
    model.save_weights(tmp_path / "w.weights.h5")
    decay_model().load_weights(tmp_path / "w.weights.h5")


@pytest.mark.slow
def test_saved_model_holds_the_lambda_of_the_moment_in_a_fresh_process(tmp_path, fresh_python):
    model = decay_model()
    model.fit(*ZEROS, batch_size=1, epochs=1, verbose=0, callbacks=[kl.PenaltySchedule(l2_weight=SCHEDULE)])
    assert model.layers[0].kernel_regularizer.get_config()["l2"] == pytest.approx(0.4)
    model.save(tmp_path / "m.keras")
    expected = float(keras.ops.convert_to_numpy(model.losses[0]))
    out = fresh_python(f"""
        import json, keras, keras_l1l2plus
        model = keras.models.load_model({str(tmp_path / "m.keras")!r})
        reg = model.layers[0].kernel_regularizer
        print(json.dumps({{"config": reg.get_config(), "loss": float(model.losses[0])}}))
    """)
    loaded = json.loads(out.strip().splitlines()[-1])
    assert loaded["config"] == {"l1": 0.0, "l2": pytest.approx(0.4), "zero_grad": 0.0, "proximal": False}
    assert loaded["loss"] == pytest.approx(expected, rel=1e-6)


def test_config_is_plain_floats_and_the_regularizer_is_unchanged_without_a_schedule():
    model = decay_model()
    assert model.layers[0].kernel_regularizer.get_config() == {"l1": 0.0, "l2": 1.0, "zero_grad": 0.0,
                                                               "proximal": False}
    model.fit(*ZEROS, batch_size=4, epochs=1, verbose=0, callbacks=[kl.PenaltySchedule(l2_weight=0.25)])
    reg = model.layers[0].kernel_regularizer
    assert reg.scheduled and reg.get_config()["l2"] == 0.25 and "scheduled" in repr(reg)
    assert isinstance(reg.get_config()["l2"], float)


@pytest.mark.parametrize("bad", ["0.1", -1.0, float("nan"), True])
def test_bad_schedule_arguments(bad):
    with pytest.raises(ValueError, match="l1_weight"):
        kl.PenaltySchedule(l1_weight=bad)


def test_bad_values_from_a_schedule_and_missing_regularizers():
    with pytest.raises(ValueError, match="at least one"):
        kl.PenaltySchedule()
    model = decay_model()
    with pytest.raises(ValueError, match=r"l2_weight=.*invalid λ at epoch 1"):
        model.fit(*ZEROS, epochs=2, verbose=0, callbacks=[kl.PenaltySchedule(l2_weight=lambda e: 0.1 - e)])
    with pytest.raises(ValueError, match="no bias of model"):
        model.fit(*ZEROS, epochs=1, verbose=0, callbacks=[kl.PenaltySchedule(l2_bias=0.1)])


def test_with_gradient_accumulation_a_step_is_a_real_update():
    model = decay_model()
    model.compile(optimizer=keras.optimizers.SGD(0.1, gradient_accumulation_steps=2), loss="mse")
    model.fit(*ZEROS, batch_size=1, epochs=1, verbose=0, shuffle=False,
              callbacks=[kl.PenaltySchedule(l2_weight=SCHEDULE)])
    # 8 batches are 4 updates, at steps 0-3, each with the mean of its two micro-steps' gradients: λ(0…3).
    expected = np.prod([1 - 2 * 0.1 * lam(t) for t in range(4)])
    np.testing.assert_allclose(model.layers[0].kernel.numpy(), expected, rtol=1e-5)


def test_a_schedule_given_to_regularize_points_to_the_callback():
    model = keras.Sequential([keras.Input((3,)), L.Dense(1)])
    with pytest.raises(ValueError, match=r"PenaltySchedule\(l2_weight=\.\.\.\)"):
        kl.regularize(model, l2_weight=SCHEDULE)


def test_a_new_proximal_optimizer_after_a_scheduled_fit_reads_the_scheduled_lambda():
    model = decay_model(proximal=True)
    model.fit(*ZEROS, batch_size=8, epochs=1, verbose=0, callbacks=[kl.PenaltySchedule(l1_weight=0.25)])
    after_first = model.layers[0].kernel.numpy()
    np.testing.assert_allclose(after_first, 1 - 0.1 * 0.25, rtol=1e-6)
    model.compile(optimizer=kl.ProximalOptimizer(keras.optimizers.SGD(0.2)), loss="mse")  # fine-tuning
    model.fit(*ZEROS, batch_size=8, epochs=1, verbose=0)  # no schedule now: λ1 stays 0.25
    np.testing.assert_allclose(model.layers[0].kernel.numpy(), after_first - 0.2 * 0.25, rtol=1e-6)


def test_regularize_after_a_schedule_puts_constant_lambdas_back():
    model = decay_model()
    model.fit(*ZEROS, batch_size=8, epochs=1, verbose=0, callbacks=[kl.PenaltySchedule(l2_weight=0.2)])
    kl.regularize(model, l2_weight=0.05)
    history = model.fit(*ZEROS, batch_size=8, epochs=1, verbose=0, callbacks=[kl.PenaltyLogger()]).history
    assert "lambda_l2_weight" not in history and not model.layers[0].kernel_regularizer.scheduled
    history = model.fit(*ZEROS, batch_size=8, epochs=1, verbose=0,
                        callbacks=[kl.PenaltyLogger(), kl.PenaltySchedule(l2_weight=0.3)]).history
    assert history["lambda_l2_weight"] == pytest.approx([0.3])


def test_frozen_layers_are_scheduled_on_the_variable_and_the_saved_attribute():
    model = keras.Sequential([keras.Input((3,)), L.Dense(2, name="frozen"), L.Dense(1)])
    kl.regularize(model, l2_weight=1e-3)
    model.layers[0].trainable = False
    model.compile(optimizer="sgd", loss="mse")
    model.fit(*ZEROS, batch_size=8, epochs=1, verbose=0, callbacks=[kl.PenaltySchedule(l2_weight=0.5)])
    frozen = model.layers[0]
    assert frozen.kernel.regularizer.get_config()["l2"] == 0.5 == frozen.kernel_regularizer.get_config()["l2"]


def test_the_saved_lambda_is_the_value_given_and_the_hash_is_stable():
    model = decay_model()
    regularizer = model.layers[0].kernel_regularizer
    seen = {regularizer}
    model.fit(*ZEROS, batch_size=8, epochs=1, verbose=0, callbacks=[kl.PenaltySchedule(l2_weight=0.2)])
    assert regularizer.get_config()["l2"] == 0.2  # the Python float, not float32's 0.20000000298…
    assert regularizer in seen


@pytest.mark.parametrize("where", ["L1L2Plus", "regularize", "PenaltySchedule"])
def test_a_bare_variable_is_not_a_lambda(where):
    variable = keras.Variable(0.1, trainable=False)
    # Each message points to the way that works: PenaltySchedule, or (there) what it takes.
    with pytest.raises(ValueError, match="is not a schedule" if where == "PenaltySchedule" else "PenaltySchedule"):
        if where == "L1L2Plus":
            kl.L1L2Plus(l2=variable)
        elif where == "regularize":
            kl.regularize(keras.Sequential([keras.Input((3,)), L.Dense(1)]), l2_weight=variable)
        else:
            kl.PenaltySchedule(l2_weight=variable)


def test_a_fit_that_raises_leaves_the_lambda_of_the_moment_and_nothing_that_runs():
    class Stop(keras.callbacks.Callback):
        def on_train_batch_end(self, batch, logs=None):
            if batch == 3:
                raise RuntimeError("stop")

    model = decay_model()
    with pytest.raises(RuntimeError, match="stop"):
        model.fit(*ZEROS, batch_size=1, epochs=1, verbose=0, shuffle=False,
                  callbacks=[kl.PenaltyLogger(), kl.PenaltySchedule(l2_weight=SCHEDULE), Stop()])
    # Steps 0-3 ran with λ(0…3); the λ written last, before step 3, is λ(3) = 0.2.
    np.testing.assert_allclose(model.layers[0].kernel.numpy(), np.prod([1 - 0.2 * lam(t) for t in range(4)]),
                               rtol=1e-5)
    history = model.fit(*ZEROS, batch_size=1, epochs=1, verbose=0).history  # Keras's own step, λ = 0.2
    assert set(history) == {"loss"}
    control = decay_model()
    kl.regularize(control, l2_weight=0.2)
    control.compile(optimizer=keras.optimizers.SGD(0.1), loss="mse")
    control.layers[0].kernel.assign(np.full((3, 2), np.prod([1 - 0.2 * lam(t) for t in range(4)]), "float32"))
    control.fit(*ZEROS, batch_size=1, epochs=1, verbose=0)
    np.testing.assert_allclose(model.layers[0].kernel.numpy(), control.layers[0].kernel.numpy(), rtol=1e-6)


class NaNAfter(keras.optimizers.schedules.LearningRateSchedule):
    """A per-step schedule that turns NaN from step 3 on."""

    def __call__(self, step):
        step = keras.ops.convert_to_tensor(step, "float32")
        return keras.ops.where(step < 3, 0.1, float("nan"))


@pytest.mark.parametrize("returned, shown", [
    (None, "None (a function without `return` returns None)"), (float("nan"), "nan"), (float("inf"), "inf"),
    (-1.0, "-1.0"), ("0.1", "'0.1'"), (True, "True"),
], ids=["None", "nan", "inf", "negative", "str", "bool"])
def test_a_bad_value_returned_by_a_schedule_is_refused_naming_the_term_the_epoch_and_the_value(returned, shown):
    model = decay_model()
    schedule = kl.PenaltySchedule(l2_weight=lambda epoch: 0.1 if epoch == 0 else returned)
    with pytest.raises(ValueError) as error:
        model.fit(*ZEROS, epochs=2, verbose=0, callbacks=[schedule])
    assert str(error.value) == (f"PenaltySchedule(l2_weight=...) returned an invalid λ at epoch 1: {shown}. "
                                "Expected a finite, non-negative float.")
    # The fit stopped before a step with that λ: the λ of the moment is the last good one.
    assert model.layers[0].kernel_regularizer.get_config()["l2"] == 0.1


def test_a_per_step_schedule_that_turns_nan_is_refused_at_that_step():
    model = decay_model()
    with pytest.raises(ValueError, match=r"^PenaltySchedule\(l2_weight=\.\.\.\) returned an invalid λ at step 3: nan\."):
        model.fit(*ZEROS, batch_size=1, epochs=1, verbose=0, callbacks=[kl.PenaltySchedule(l2_weight=NaNAfter())])


def test_two_schedules_of_one_term_in_one_fit_are_refused():
    model = decay_model()
    with pytest.raises(ValueError, match="Two PenaltySchedule callbacks set l2_weight in one fit: pass one"):
        model.fit(*ZEROS, epochs=1, verbose=0,
                  callbacks=[kl.PenaltySchedule(l2_weight=0.1), kl.PenaltySchedule(l2_weight=0.2)])
    schedule = kl.PenaltySchedule(l2_weight=0.3)
    for _ in range(2):  # one schedule in consecutive fits is fine, as is a new one in a later fit
        model.fit(*ZEROS, epochs=1, verbose=0, callbacks=[schedule])
    model.fit(*ZEROS, epochs=1, verbose=0, callbacks=[kl.PenaltySchedule(l2_weight=0.4)])
    assert model.layers[0].kernel_regularizer.get_config()["l2"] == 0.4


def test_a_scheduled_lambda_reads_as_a_float_and_assigning_one_makes_it_constant():
    """λ has one type inside (factors.Factor); the attribute stays a float, as Keras's L1L2.l2 is."""
    model = decay_model()
    model.fit(*ZEROS, batch_size=1, epochs=1, verbose=0, callbacks=[kl.PenaltySchedule(l2_weight=SCHEDULE)])
    kernel = model.layers[0].kernel
    reg = kernel.regularizer  # the variable's: what the loss calls
    assert type(reg.l2) is float and reg.l2 == pytest.approx(lam(7), rel=1e-7)  # the λ of the last step, 7
    assert reg.factor("l2").scheduled and reg.scheduled
    reg.l2 = 0.3
    assert not reg.factor("l2").scheduled and not reg.scheduled and reg.get_config()["l2"] == 0.3
    expected = 0.3 * float(np.square(kernel.numpy().astype("float64")).sum())
    assert float(kl.penalty_terms(model)["l2_weight"]) == pytest.approx(expected, rel=1e-6)
    with pytest.raises(ValueError, match="l2"):
        reg.l2 = -1.0


def test_two_hand_made_callback_lists_are_not_one_fit():
    """A custom loop's CallbackList without params: two schedules of a term in two loops are fine."""
    model = decay_model()
    first = kl.PenaltySchedule(l2_weight=0.1)
    for schedule in (first, kl.PenaltySchedule(l2_weight=0.2)):
        keras.callbacks.CallbackList([schedule], model=model).on_train_begin()
    assert model.layers[0].kernel_regularizer.factor("l2").scheduled

"""L2 toward reference weights (L2-SP): λa·Σ(w − w₀)², its value and gradient, w₀ through saving, a closed form."""

import copy
import json
import pickle

import keras
import numpy as np
import pytest
from backends import dtype_name, to_numpy, value_and_grad

import keras_l1l2plus as kl
from keras_l1l2plus import L1L2Plus

L = keras.layers


def rng_array(shape, seed=0):
    return np.random.default_rng(seed).normal(size=shape).astype("float32")


def anchored_model(w0=None, lam=0.1, seed=0):
    """A bias-free Dense(3) on 4 features, its kernel anchored at w0 (its initial kernel when None)."""
    model = keras.Sequential([keras.Input((4,)), L.Dense(3, use_bias=False, kernel_initializer="glorot_uniform")])
    layer = model.layers[0]
    w0 = to_numpy(layer.kernel) if w0 is None else w0
    layer.kernel_regularizer = layer.kernel.regularizer = L1L2Plus(l2_anchor=lam, anchor=w0)
    return model, w0


# --- value and gradient --------------------------------------------------------------------


@pytest.mark.parametrize("mode", ["eager", "compiled", "xla"])
def test_value_and_gradient_against_numpy(mode):
    w0, w = rng_array((4, 3), 0), rng_array((4, 3), 1)
    w[0] = w0[0]  # a row at its anchor: gradient 0 there
    l1, l2, group, lam = 0.01, 0.02, 0.03, 0.4
    reg = L1L2Plus(l1=l1, l2=l2, group=group, l2_anchor=lam, anchor=w0)
    value, grad = value_and_grad(reg, w, mode)
    w64, w064 = w.astype("float64"), w0.astype("float64")
    norms = np.sqrt(np.square(w64).sum(0))
    expected = l1 * np.abs(w64).sum() + l2 * np.square(w64).sum() + group * norms.sum()
    expected += lam * np.square(w64 - w064).sum()
    assert float(to_numpy(value)) == pytest.approx(expected, rel=1e-6)
    expected_grad = l1 * np.sign(w64) + 2 * l2 * w64 + group * w64 / norms + 2 * lam * (w64 - w064)
    np.testing.assert_allclose(to_numpy(grad), expected_grad, rtol=1e-5, atol=1e-7)
    alone, alone_grad = value_and_grad(L1L2Plus(l2_anchor=lam, anchor=w0), w, mode)
    np.testing.assert_array_equal(to_numpy(alone_grad)[0], np.zeros(3))
    np.testing.assert_allclose(to_numpy(alone_grad), 2 * lam * (w64 - w064), rtol=1e-5, atol=1e-7)


def test_the_anchor_term_keeps_its_gradient_under_the_proximal_step():
    w0, w = rng_array((5, 2), 0), rng_array((5, 2), 1)
    value, grad = value_and_grad(L1L2Plus(l1=0.1, proximal=True, l2_anchor=0.5, anchor=w0), w)
    expected = 0.1 * np.abs(w).sum() + 0.5 * np.square(w.astype("float64") - w0).sum()
    assert float(to_numpy(value)) == pytest.approx(expected, rel=1e-6)
    np.testing.assert_allclose(to_numpy(grad), 2 * 0.5 * (w - w0), rtol=1e-5, atol=1e-7)


@pytest.mark.parametrize("dtype", ["float16", "bfloat16"])
def test_half_precision_is_summed_in_float32(dtype):
    w0 = np.zeros((4096, 2), "float32")
    w = np.full((4096, 2), 8.0, "float32")  # Σ(w − w₀)² = 524288: beyond float16's 65504
    value, grad = value_and_grad(L1L2Plus(l2_anchor=1.0, anchor=w0), keras.ops.cast(w, dtype))
    assert dtype_name(value) == "float32" and dtype_name(grad) == dtype
    assert float(to_numpy(value)) == pytest.approx(8192 * 64.0, rel=1e-6)
    np.testing.assert_allclose(to_numpy(grad).astype("float32"), np.full((4096, 2), 16.0), rtol=1e-2)


# --- arguments ------------------------------------------------------------------------------


def test_bad_arguments_are_named():
    with pytest.raises(ValueError, match="`anchor`.*anchor=None with l2_anchor=0.1"):
        L1L2Plus(l2_anchor=0.1)
    with pytest.raises(ValueError, match="`l2_anchor`.*l2_anchor=-1"):
        L1L2Plus(l2_anchor=-1, anchor=np.zeros(3, "float32"))
    with pytest.raises(ValueError, match="`anchor`: expected finite floats"):
        L1L2Plus(l2_anchor=0.1, anchor=np.array([1.0, np.nan], "float32"))
    with pytest.raises(TypeError, match="`anchor`"):
        L1L2Plus(l2_anchor=0.1, anchor=object())
    with pytest.raises(TypeError, match="`anchor`: expected an array of numbers"):
        L1L2Plus(l2_anchor=0.1, anchor=np.array([True, False]))
    ints = L1L2Plus(l2_anchor=0.1, anchor=np.array([1, 2]))  # whole numbers: taken as float32
    assert dtype_name(ints.anchor.value) == "float32" and to_numpy(ints.anchor).tolist() == [1.0, 2.0]
    with pytest.raises(TypeError):  # keyword only
        L1L2Plus(0.0, 0.0, 0.0, False, 0.0, "units", 0.1)
    reg = L1L2Plus(l2_anchor=0.1, anchor=np.zeros((2, 3), "float32"))
    with pytest.raises(ValueError, match=r"anchor has shape \(2, 3\).*\(3, 2\)"):
        reg(keras.ops.zeros((3, 2)))


def test_config_holds_the_shape_not_the_values_and_others_keep_their_config():
    assert L1L2Plus(l1=0.1).get_config() == {"l1": 0.1, "l2": 0.0, "zero_grad": 0.0, "proximal": False}
    w0 = rng_array((4, 3))
    reg = L1L2Plus(l2=0.01, l2_anchor=0.5, anchor=w0)
    config = reg.get_config()
    assert config["l2_anchor"] == 0.5 and config["anchor"]["shape"] == [4, 3] and config["anchor"]["dtype"] == "float32"
    json.dumps(config)
    assert repr(reg) == "L1L2Plus(l1=0.0, l2=0.01, zero_grad=0.0, l2_anchor=0.5, anchor=(4, 3))"
    assert reg.anchored and not L1L2Plus(l1=0.1).anchored
    assert reg != L1L2Plus.from_config(config) and reg == reg  # w₀ is its own: equal only to itself


def test_anchor_is_a_copy_and_not_a_weight():
    model, w0 = anchored_model()
    kernel = model.layers[0].kernel
    kernel.assign(kernel + 1.0)  # the anchor does not follow the kernel (PyTorch: no shared storage)
    np.testing.assert_array_equal(to_numpy(model.layers[0].kernel_regularizer.anchor), w0)
    assert len(model.weights) == 1 and len(model.get_weights()) == 1
    assert float(to_numpy(model.losses[0])) == pytest.approx(0.1 * 12.0, rel=1e-6)


def test_a_new_w0_reaches_a_compiled_step_at_once_except_on_jax_where_it_needs_a_new_trace():
    """What docs/design.md records: on JAX w₀ is a constant of the traced step.

    Keras's JAX trainer threads the model's variables through its jitted step;
    w₀ is the regularizer's own variable, not the model's, so the trace reads
    its value once. TensorFlow's graph and PyTorch read the variable at every
    step. When this test fails on JAX, w₀ has become state of the step: update
    the design record.
    """
    x, y = rng_array((32, 4), 2), rng_array((32, 3), 3)
    model, w0 = anchored_model(lam=1.0)  # w₀ = the kernel: the anchor term is 0
    model.compile(optimizer=keras.optimizers.SGD(0.0), loss="mse")
    w = keras.ops.convert_to_numpy(model.layers[0].kernel).astype("float64")
    data_loss = np.mean(np.square(x.astype("float64") @ w - y))
    assert model.evaluate(x, y, batch_size=32, verbose=0) == pytest.approx(data_loss, rel=1e-5)
    model.layers[0].kernel_regularizer.anchor.assign(np.zeros_like(w0))  # w₀ = 0: the term is Σw²
    with_new_w0 = data_loss + np.square(w).sum()
    traced_before = model.evaluate(x, y, batch_size=32, verbose=0)
    if keras.backend.backend() == "jax":
        assert traced_before == pytest.approx(data_loss, rel=1e-5)  # the old w₀, a constant of the trace
    else:
        assert traced_before == pytest.approx(with_new_w0, rel=1e-5)
    model.compile(optimizer=keras.optimizers.SGD(0.0), loss="mse")  # a new trace reads the new w₀
    assert model.evaluate(x, y, batch_size=32, verbose=0) == pytest.approx(with_new_w0, rel=1e-5)


# --- penalty_terms, the logger, the schedule -------------------------------------------------


def test_penalty_terms_has_the_anchor_key_only_with_an_anchor():
    plain = keras.Sequential([keras.Input((4,)), L.Dense(3, kernel_regularizer=L1L2Plus(l2=0.1))])
    assert "l2_anchor_weight" not in kl.penalty_terms(plain)
    model, w0 = anchored_model(lam=0.3)
    model.layers[0].kernel.assign(w0 * 2)
    terms = {k: float(to_numpy(v)) for k, v in kl.penalty_terms(model).items()}
    expected = 0.3 * np.square(w0.astype("float64")).sum()
    assert terms["l2_anchor_weight"] == pytest.approx(expected, rel=1e-6)
    assert terms["penalty"] == pytest.approx(expected, rel=1e-6) and terms["l2_weight"] == 0
    assert "l2_anchor_bias" not in terms


def test_logger_logs_the_anchor_term_and_loss_is_data_loss_plus_penalty():
    x, y = rng_array((64, 4), 2), rng_array((64, 3), 3)
    model, w0 = anchored_model(lam=0.2)
    model.compile(optimizer=keras.optimizers.SGD(0.05), loss="mse")
    history = model.fit(x, y, batch_size=16, epochs=3, verbose=0, shuffle=False, callbacks=[kl.PenaltyLogger()])
    logs = history.history
    assert all(v > 0 for v in logs["l2_anchor_weight"])
    np.testing.assert_allclose(logs["loss"], np.add(logs["data_loss"], logs["penalty"]), rtol=1e-5)
    np.testing.assert_allclose(logs["penalty"], logs["l2_anchor_weight"], rtol=1e-6)
    # The last value: λa·Σ(w − w₀)² of the final kernel (epoch logs are means; compare penalty_terms at the end).
    final = float(to_numpy(kl.penalty_terms(model)["l2_anchor_weight"]))
    w = to_numpy(model.layers[0].kernel).astype("float64")
    assert final == pytest.approx(0.2 * np.square(w - w0).sum(), rel=1e-5)


def test_schedule_sets_the_anchor_lambda():
    x, y = rng_array((32, 4), 2), rng_array((32, 3), 3)
    model, w0 = anchored_model(lam=0.0)
    model.layers[0].kernel.assign(w0 + 1.0)
    model.compile(optimizer=keras.optimizers.SGD(0.0), loss="mse")  # lr 0: the weights stay w₀ + 1
    logger = kl.PenaltyLogger()
    history = model.fit(x, y, batch_size=32, epochs=3, verbose=0, callbacks=[
        kl.PenaltySchedule(l2_anchor_weight=lambda epoch: [0.0, 0.5, 2.0][epoch]), logger])
    np.testing.assert_allclose(history.history["l2_anchor_weight"], [0.0, 0.5 * 12, 2.0 * 12], rtol=1e-6)
    plain = keras.Sequential([keras.Input((4,)), L.Dense(3, kernel_regularizer=L1L2Plus(l2=0.1))])
    plain.compile(optimizer="sgd", loss="mse")
    with pytest.raises(ValueError, match=r"with an anchor \(w₀\).*regularize\(model, l2_anchor_weight="):
        plain.fit(x, y, epochs=1, verbose=0, callbacks=[kl.PenaltySchedule(l2_anchor_weight=0.1)])


# --- w₀ kept: saving, clone_model, copies ---------------------------------------------------


def test_clone_model_copies_and_pickle_keeps_the_anchor():
    model, w0 = anchored_model()
    clone = keras.models.clone_model(model)
    reg = clone.layers[0].kernel_regularizer
    assert reg.anchored and reg is not model.layers[0].kernel_regularizer
    np.testing.assert_array_equal(to_numpy(reg.anchor), w0)
    for copied in (copy.deepcopy(model.layers[0].kernel_regularizer),
                   pickle.loads(pickle.dumps(model.layers[0].kernel_regularizer))):
        np.testing.assert_array_equal(to_numpy(copied.anchor), w0)
        assert copied.l2_anchor == 0.1


def test_keras_file_in_a_fresh_process_keeps_w0_and_trains_toward_it(tmp_path, fresh_python):
    x, y = rng_array((64, 4), 2), rng_array((64, 3), 3)
    model, w0 = anchored_model(lam=0.5)
    model.compile(optimizer=keras.optimizers.SGD(0.05), loss="mse")
    model.fit(x, y, batch_size=16, epochs=2, verbose=0, shuffle=False)
    model.save(tmp_path / "m.keras")
    model.save_weights(tmp_path / "m.weights.h5")
    (tmp_path / "m.json").write_text(model.to_json())
    np.save(tmp_path / "x.npy", x)
    np.save(tmp_path / "y.npy", y)
    model.fit(x, y, batch_size=16, epochs=3, verbose=0, shuffle=False)
    out = fresh_python(
        f"""
        import json, keras, numpy as np
        import keras_l1l2plus as kl

        model = keras.models.load_model({str(tmp_path / "m.keras")!r})
        x, y = np.load({str(tmp_path / "x.npy")!r}), np.load({str(tmp_path / "y.npy")!r})
        anchor = keras.ops.convert_to_numpy(model.layers[0].kernel_regularizer.anchor).tolist()
        model.fit(x, y, batch_size=16, epochs=3, verbose=0, shuffle=False)
        from_json = keras.models.model_from_json(open({str(tmp_path / "m.json")!r}).read())
        try:
            from_json.losses
            unloaded = "no error"
        except ValueError as error:
            unloaded = str(error)
        from_json.load_weights({str(tmp_path / "m.weights.h5")!r})
        json_anchor = keras.ops.convert_to_numpy(from_json.layers[0].kernel_regularizer.anchor).tolist()
        print(json.dumps({{"anchor": anchor, "kernel": keras.ops.convert_to_numpy(model.layers[0].kernel).tolist(),
                          "unloaded": unloaded, "json_anchor": json_anchor}}))
        """
    )
    result = json.loads(out.strip().splitlines()[-1])
    np.testing.assert_array_equal(np.array(result["anchor"], "float32"), w0)  # exactly
    np.testing.assert_array_equal(np.array(result["json_anchor"], "float32"), w0)
    assert "were not loaded" in result["unloaded"] and "model.load_weights" in result["unloaded"]
    np.testing.assert_allclose(result["kernel"], to_numpy(model.layers[0].kernel), rtol=1e-5, atol=1e-7)


# --- a closed form: ridge toward w₀ ------------------------------------------------------------


def test_ridge_toward_w0_reaches_the_closed_form():
    """min (1/n)‖y − Xw‖² + λ‖w − w₀‖²  ⇒  w = (XᵀX + nλI)⁻¹(Xᵀy + nλw₀)."""
    rng = np.random.default_rng(4)
    n, d, lam = 200, 5, 0.3
    x = rng.normal(size=(n, d))
    x = (x - x.mean(0)) / x.std(0)
    y = x @ rng.normal(size=(d, 1)) + 0.1 * rng.normal(size=(n, 1))
    w0 = rng.normal(size=(d, 1))
    expected = np.linalg.solve(x.T @ x + n * lam * np.eye(d), x.T @ y + n * lam * w0)
    model = keras.Sequential([keras.Input((d,)), L.Dense(1, use_bias=False, kernel_initializer="zeros")])
    layer = model.layers[0]
    layer.kernel_regularizer = layer.kernel.regularizer = L1L2Plus(l2_anchor=lam, anchor=w0.astype("float32"))
    model.compile(optimizer=keras.optimizers.SGD(0.2), loss="mse")
    model.fit(x.astype("float32"), y.astype("float32"), batch_size=n, epochs=300, verbose=0)
    np.testing.assert_allclose(to_numpy(layer.kernel), expected, rtol=1e-4, atol=1e-6)
    plain = np.linalg.solve(x.T @ x + n * lam * np.eye(d), x.T @ y)  # toward 0: a different answer
    assert np.abs(expected - plain).max() > 0.05


def test_a_bfloat16_model_takes_a_bfloat16_anchor(tmp_path):
    keras.config.set_dtype_policy("bfloat16")
    model = keras.Sequential([keras.Input((3,)), L.Dense(2, name="d")])
    kl.regularize(model, l2_anchor_weight=0.5)
    reg = model.layers[0].kernel.regularizer
    assert dtype_name(reg.anchor.value) == "bfloat16"
    model.layers[0].kernel.assign(keras.ops.cast(reg.anchor.value, "float32") + 1.0)
    assert float(to_numpy(kl.penalty_terms(model)["l2_anchor_weight"])) == pytest.approx(0.5 * 6, rel=1e-2)


def test_a_pending_anchor_is_never_passed_on_as_zeros(tmp_path):
    model, w0 = anchored_model()
    spec = model.layers[0].kernel_regularizer.get_config()
    spec["anchor"] = dict(spec["anchor"], key="a-key-from-another-process")
    pending = L1L2Plus.from_config(spec)
    assert pending.anchor_pending and L1L2Plus.from_config(pending.get_config()).anchor_pending  # clone
    for copied in (copy.deepcopy(pending), pickle.loads(pickle.dumps(pending))):
        assert copied.anchor_pending
        with pytest.raises(ValueError, match="were not loaded"):
            copied(keras.ops.zeros((4, 3)))
    other = keras.Sequential([keras.Input((4,)), L.Dense(3, use_bias=False)])
    other.layers[0].kernel_regularizer = other.layers[0].kernel.regularizer = pending
    other.save_weights(tmp_path / "pending.weights.h5")  # no zeros written for it
    model.save_weights(tmp_path / "real.weights.h5")
    with pytest.warns(UserWarning, match="have no anchor"):
        model.load_weights(tmp_path / "pending.weights.h5")  # a file without the anchor: w₀ kept, and said
    np.testing.assert_array_equal(to_numpy(model.layers[0].kernel_regularizer.anchor), w0)
    other.load_weights(tmp_path / "real.weights.h5")
    assert not pending.anchor_pending
    np.testing.assert_array_equal(to_numpy(pending.anchor), w0)


def test_a_new_anchor_reaches_a_step_traced_before_it(tmp_path):
    """`load_weights` after a fit: the next step pulls toward the loaded w₀ (on JAX, w₀ is step state)."""
    model = keras.Sequential([keras.Input((3,)), L.Dense(2, use_bias=False, name="d")])
    state = len(model.non_trainable_variables)
    kl.regularize(model, l2_anchor_weight=1.0)
    anchor = model.layers[0].kernel.regularizer.anchor
    assert sum(v is anchor for v in model.non_trainable_variables) == 1  # what the JAX trainer threads
    model.compile(optimizer=keras.optimizers.SGD(0.1), loss="mse")
    x, y = np.zeros((4, 3), "float32"), np.zeros((4, 2), "float32")
    model.fit(x, y, verbose=0)  # traced with the first w₀
    assert len(model.weights) == 1 and len(model.get_weights()) == 1
    model.layers[0].kernel.regularizer.anchor.assign(np.full((3, 2), 5.0, "float32"))
    model.save_weights(tmp_path / "w.weights.h5")
    model.layers[0].kernel.regularizer.anchor.assign(np.zeros((3, 2), "float32"))
    model.load_weights(tmp_path / "w.weights.h5")  # w₀ = 5 again, from the file
    model.layers[0].kernel.assign(np.full((3, 2), 6.0, "float32"))
    model.fit(x, y, verbose=0)  # one step: w − 0.1·2·(w − w₀) = 6 − 0.2 = 5.8 (the data loss has no gradient)
    np.testing.assert_allclose(to_numpy(model.layers[0].kernel), np.full((3, 2), 5.8), rtol=1e-6)
    kl.regularize(model, l2_weight=0.1)  # the anchored regularizer replaced: its w₀ is no longer step state
    assert len(model.non_trainable_variables) == state and not any(v is anchor for v in model.variables)

"""Installing and importing: the message when no backend is installed, the version."""

import importlib.util
import os
import subprocess
import sys

import pytest

import keras_l1l2plus as kl


def test_import_without_the_backend_names_the_extras():
    missing = [b for b in ("tensorflow", "jax", "torch") if importlib.util.find_spec(b) is None]
    if not missing:
        pytest.skip("every backend is installed here")
    env = dict(os.environ, KERAS_BACKEND=missing[0], TF_CPP_MIN_LOG_LEVEL="3")
    proc = subprocess.run([sys.executable, "-c", "import keras_l1l2plus"], env=env, capture_output=True,
                          text=True, timeout=300)
    assert proc.returncode != 0
    assert "keras-l1l2plus[tensorflow]" in proc.stderr and "keras-l1l2plus[jax]" in proc.stderr
    assert "KERAS_BACKEND" in proc.stderr


def test_version_and_public_names():
    assert kl.__version__ == "0.4.0"
    assert set(kl.__all__) == {"L1L2Plus", "PenaltyLogger", "PenaltySchedule", "ProximalOptimizer",
                               "penalty_terms", "shrink", "RegularizationPath", "regularization_path",
                               "regularize", "describe", "write_tensorboard_layout", "__version__"}


@pytest.mark.parametrize("module", ["apply", "describe", "path", "proximal", "regularizer", "schedule", "shrink", "tensorboard_layout", "terms"])
def test_docstring_examples_run(module):
    import doctest
    import importlib

    result = doctest.testmod(importlib.import_module(f"keras_l1l2plus.{module}"), optionflags=doctest.ELLIPSIS)
    assert result.attempted > 0 and result.failed == 0, result

"""keras-l1l2plus: L1 and L2 regularization for Keras 3, done properly.

Loss = DataLoss + L1w + L1b + L2w + L2b
L1 = λ1·Σ|x|,  L2 = λ2·Σx²   (separate λs for weights and biases)
"""

try:
    import keras
except ImportError as error:  # no Keras, or Keras without the backend KERAS_BACKEND names
    raise ImportError(
        "keras_l1l2plus needs Keras 3 and one of its backends. Install one of: "
        "pip install 'keras-l1l2plus[tensorflow]' (the default backend), "
        "'keras-l1l2plus[jax]' or 'keras-l1l2plus[torch]', and set KERAS_BACKEND to the "
        f"backend you installed (jax, torch; tensorflow when unset). Import error: {error}"
    ) from error
if int(keras.__version__.split(".")[0]) < 3:  # pragma: no cover - Keras 2 (tf.keras era)
    raise ImportError(f"keras_l1l2plus needs Keras 3; Keras {keras.__version__} is installed.")

from keras_l1l2plus.apply import regularize  # noqa: E402
from keras_l1l2plus.describe import describe  # noqa: E402
from keras_l1l2plus.logger import PenaltyLogger  # noqa: E402
from keras_l1l2plus.path import RegularizationPath, regularization_path  # noqa: E402
from keras_l1l2plus.proximal import ProximalL1, ProximalOptimizer  # noqa: E402, F401 - ProximalL1: removed
from keras_l1l2plus.regularizer import L1L2Plus  # noqa: E402
from keras_l1l2plus.schedule import PenaltySchedule  # noqa: E402
from keras_l1l2plus.shrink import shrink  # noqa: E402
from keras_l1l2plus.tensorboard_layout import write_tensorboard_layout  # noqa: E402
from keras_l1l2plus.terms import penalty_terms  # noqa: E402

__version__ = "0.4.0"

__all__ = [
    "L1L2Plus",
    "PenaltyLogger",
    "PenaltySchedule",
    "ProximalOptimizer",
    "RegularizationPath",
    "describe",
    "penalty_terms",
    "regularization_path",
    "regularize",
    "shrink",
    "write_tensorboard_layout",
    "__version__",
]

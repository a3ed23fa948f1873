"""keras-l1l2plus: L1 and L2 regularization for Keras 3, done properly.

    Loss = DataLoss + L1w + L1b + L2w + L2b
    L1 = λ1·Σ|x|,  L2 = λ2·Σx²   (separate λs for weights and biases)
"""

from keras_l1l2plus.apply import regularize
from keras_l1l2plus.callbacks import PenaltyLogger, ProximalL1
from keras_l1l2plus.proximal import ProximalOptimizer
from keras_l1l2plus.regularizer import L1L2Plus
from keras_l1l2plus.terms import penalty_terms

__version__ = "0.2.0"

__all__ = [
    "L1L2Plus",
    "PenaltyLogger",
    "ProximalL1",
    "ProximalOptimizer",
    "penalty_terms",
    "regularize",
    "__version__",
]

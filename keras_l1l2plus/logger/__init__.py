"""The `PenaltyLogger` wing: every penalty term as a metric of `fit` and `evaluate`.

callback.py     PenaltyLogger, the callback users pass to fit/evaluate
attachment.py   its hold on a model: the state machine, the step switches
metric.py       PenaltyMetric, the terms' running means computed in the step
progress.py     ProgressBar, the progress line that shows the terms a person reads
"""

from keras_l1l2plus.logger.callback import PenaltyLogger

__all__ = ["PenaltyLogger"]

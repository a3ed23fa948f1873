"""`regularization_path`: a model trained along a grid of λs, warm-started, to choose λ.

As glmnet and scikit-learn's `lasso_path` / `enet_path` do for linear models:
the λs that move are scaled together by one path parameter λ (their ratios
fixed, as `l1_ratio` fixes scikit-learn's), λ runs over a geometric grid

    λ_k = λ_max · eps^(k/(n−1)),   k = 0 … n−1

(λ_max·(1 + 10⁻⁵) in fact: at λ_max itself one weight sits on the
threshold, and float32 rounding in the step can tip it off 0), and each
λ's training starts from the weights (and optimizer state) the previous λ
ended with. Every λ is recorded (the data losses, the compiled
metrics, each penalty term, the exact zeros, the live groups, the epochs
and seconds it took), its weights kept, and a λ is chosen on validation
data: the minimum, or the largest λ within one standard error of it
(`rule="1se"`, with `cv=k` folds).

λ_max, the smallest λ at which every weight the moving L1 and group terms
regularize may stay exactly 0 (the first-order condition at w = 0 of
λ·Σ a·|w| + λ·Σ_g c·‖w_g‖ with the data loss's gradient g there):

    per entry (L1 only)           |g_i| ≤ λ·a
    per group (group, sparse group) ‖S(g_g, λ·a)‖₂ ≤ λ·c      (S: soft thresholding)

computed from the data loss's gradient over the training data, each
regularized variable set to 0 in turn with the others as they are, and
the largest of the variables' λs taken. For the lasso (one variable) it
is scikit-learn's `‖Xᵀy‖∞/n` (with the loss `½·(y − ŷ)²`). For a network
with several regularized layers it is the λ above which any one layer,
alone, would go to 0 from the current weights; all of them at 0 at once
is a saddle of the data loss (nothing reaches a zeroed layer's inputs,
the gradient there is 0), which a path cannot leave once there: walk such
paths with `direction="increasing"` (from the dense model to the sparse
one, as LassoNet does).

The λs are those of `PenaltySchedule` (entries of the model's λ vector),
so the whole path runs on one traced train step.
"""

from __future__ import annotations

import csv
import math
import numbers
import os
import time
import warnings
from pathlib import Path
from typing import Any, Iterable, Sequence

import keras
import numpy as np
from keras import ops

from keras_l1l2plus import _keras
from keras_l1l2plus.factors import Factor, validate_flag, validate_penalty
from keras_l1l2plus.logger.callback import PenaltyLogger
from keras_l1l2plus.regularizer import as_l1l2plus, group_axes
from keras_l1l2plus.roles import owned_trainable_variables
from keras_l1l2plus.schedule import PenaltySchedule, term_regularizers
from keras_l1l2plus.terms import LAMBDA_NAMES, penalty_terms, term_needs, term_parts

__all__ = ["RegularizationPath", "from_sklearn", "lambda_max", "regularization_path", "to_sklearn"]

DIRECTIONS = ("decreasing", "increasing")
RULES = ("min", "1se")
# The "auto" grid starts a hair above λ_max: at λ_max itself the largest data gradient equals the threshold, and
# float32 rounding in the train step can tip that weight off 0 (1e-2 under a float16 or bfloat16 compute policy).
_MARGIN = 1e-5
_SPARSE_KINDS = ("l1", "group")  # the kinds whose λ_max is defined (L2 never makes a weight 0)


# --- scikit-learn's parametrisation ----------------------------------------------------------


def from_sklearn(alpha: float, l1_ratio: float = 1.0, *, loss_scale: float = 1.0) -> dict[str, float]:
    """The plugin's `{"l1": λ1, "l2": λ2}` for scikit-learn's `alpha` and `l1_ratio` (`Lasso`, `ElasticNet`).

    scikit-learn minimises `(1/(2n))·‖y − Xw‖² + α·ρ·‖w‖₁ + ½·α·(1 − ρ)·‖w‖²`.
    A Keras data loss that is `loss_scale` times its first term (1 for
    `½·Σ_k (y − ŷ)²` per example, Keras's mean over the batch; 2 for Keras's
    `"mse"` on one output) has the same minimiser with

        λ1 = loss_scale·α·ρ,   λ2 = loss_scale·α·(1 − ρ)/2
    """
    alpha = validate_penalty(alpha, "alpha")
    l1_ratio = _fraction(l1_ratio, "l1_ratio")
    loss_scale = _positive(loss_scale, "loss_scale")
    return {"l1": loss_scale * alpha * l1_ratio, "l2": loss_scale * alpha * (1 - l1_ratio) / 2}


def to_sklearn(l1: float, l2: float = 0.0, *, loss_scale: float = 1.0) -> tuple[float, float]:
    """scikit-learn's `(alpha, l1_ratio)` for the plugin's λ1 and λ2: the inverse of `from_sklearn`."""
    l1, l2 = validate_penalty(l1, "l1"), validate_penalty(l2, "l2")
    loss_scale = _positive(loss_scale, "loss_scale")
    alpha = (l1 + 2 * l2) / loss_scale
    return alpha, (l1 / loss_scale / alpha if alpha else 1.0)


def _fraction(value: Any, name: str) -> float:
    if isinstance(value, bool) or not isinstance(value, numbers.Real) or not 0 <= value <= 1:
        raise ValueError(f"Invalid value for argument `{name}`: expected a float in [0, 1]. Received: {name}={value!r}")
    return float(value)


def _positive(value: Any, name: str) -> float:
    if isinstance(value, bool) or not isinstance(value, numbers.Real) or not (value > 0 and math.isfinite(value)):
        raise ValueError(
            f"Invalid value for argument `{name}`: expected a finite float > 0. Received: {name}={value!r}"
        )
    return float(value)


# --- which λs move -------------------------------------------------------------------------


def _moving_terms(model: Any, terms: Any) -> dict[str, float]:
    """`{term: ratio}`: the λs the path scales, λ_term = λ·ratio."""
    if terms is None:  # every λ the model has now, in the ratios it has now (anchors stay: they are no sparsity λ)
        values = {}
        for term in LAMBDA_NAMES:
            if term_parts(term)[0] == "l2_anchor":
                continue
            found = [r.factor(term_parts(term)[0]).value for r in term_regularizers(model, term)]
            if found and max(found) > 0:
                values[term] = max(found)
        if not values:
            raise ValueError(
                "regularization_path: the model has no L1L2Plus with a λ > 0, so there is no λ to move. "
                "Put them on first, e.g. keras_l1l2plus.regularize(model, l1_weight=1e-3, proximal_weight=True), "
                "or name them: terms={'l1_weight': 1.0}."
            )
        reference = next((values[t] for t in values if term_parts(t)[0] in _SPARSE_KINDS), max(values.values()))
        return {term: value / reference for term, value in values.items()}
    if isinstance(terms, str):
        terms = {terms: 1.0}
    elif isinstance(terms, dict):
        terms = dict(terms)
    elif isinstance(terms, Iterable):
        terms = {term: 1.0 for term in terms}
    else:
        raise TypeError(
            "Invalid value for argument `terms`: expected a term name, a list of them or a dict "
            f"{{term: ratio}}. Received: terms={terms!r}"
        )
    unknown = [t for t in terms if t not in LAMBDA_NAMES]
    if unknown or not terms:
        raise ValueError(
            f"Invalid value for argument `terms`: expected names among {LAMBDA_NAMES}. Received: terms={terms!r}"
        )
    for term, ratio in terms.items():
        _positive(ratio, f"terms[{term!r}]")
        if not term_regularizers(model, term):
            what = term_needs(term)
            raise ValueError(
                f"Invalid value for argument `terms`: no {term_parts(term)[1]} of model {model.name!r} has an "
                f"L1L2Plus {what} for {term!r}. Put them on first, e.g. "
                f"keras_l1l2plus.regularize(model, {term}=<a λ>). Received: terms={terms!r}"
            )
    return {term: float(ratio) for term, ratio in terms.items()}


def _sparse_targets(model: Any, ratios: dict[str, float]) -> list[tuple[Any, float, float, str | None]]:
    """`(variable, a, c, groups)` for each variable a moving L1 (a) or group (c) term regularizes."""
    targets = []
    for owned in owned_trainable_variables(model):
        regularizer = as_l1l2plus(owned.variable.regularizer)
        if regularizer is None:
            continue
        a = ratios.get(f"l1_{owned.role}", 0.0)
        c = ratios.get(f"group_{owned.role}", 0.0) if not regularizer.factor("group").is_zero else 0.0
        if a or c:
            targets.append((owned.variable, a, c, regularizer.groups if c else None))
    return targets


# --- λ_max ---------------------------------------------------------------------------------


def _batches(x: Any, y: Any, batch_size: int):
    first = keras.tree.flatten(x)[0]
    n = int(first.shape[0])
    for start in range(0, n, batch_size):
        rows = slice(start, start + batch_size)
        piece = keras.tree.map_structure(lambda a, rows=rows: a[rows], x)
        yield piece, (None if y is None else keras.tree.map_structure(lambda a, rows=rows: a[rows], y))


def _data_loss_gradients(model: Any, x: Any, y: Any, variables: list, batch_size: int) -> list[np.ndarray]:
    """∂(data loss)/∂v over the whole of (x, y), for each variable, as float64 numpy (a mean of batch means)."""
    if model.optimizer is None or not getattr(model, "compiled", True):
        raise ValueError(
            "regularization_path: the model is not compiled, so its data loss is not known. "
            "Compile it first: model.compile(optimizer=..., loss=...)."
        )
    totals = [np.zeros(v.shape, "float64") for v in variables]
    count = 0

    def data_loss(xb, yb):
        y_pred = model(xb, training=False)
        total = model.compute_loss(x=xb, y=yb, y_pred=y_pred)
        return total - penalty_terms(model)["penalty"]  # Keras's loss is the data loss plus the penalty

    chosen = {id(v) for v in variables}
    others = [v for v in model.variables if id(v) not in chosen]
    gradient = _keras.gradients(data_loss, variables, others)  # made once: compiled once on JAX
    for xb, yb in _batches(x, y, batch_size):
        size = int(keras.tree.flatten(xb)[0].shape[0])
        for total, grad in zip(totals, gradient(xb, yb)):
            total += size * ops.convert_to_numpy(ops.cast(grad, "float32")).astype("float64")
        count += size
    return [total / count for total in totals]


def _group_lambda(g: np.ndarray, a: float, c: float) -> float:
    """The smallest λ ≥ 0 with ‖S(g, λ·a)‖₂ ≤ λ·c (bisection, to float64 precision)."""
    norm = float(np.linalg.norm(g))
    if norm == 0:
        return 0.0
    hi = norm / c if c else float(np.abs(g).max()) / a
    lo = 0.0
    for _ in range(200):
        mid = (lo + hi) / 2
        shrunk = np.sign(g) * np.maximum(np.abs(g) - mid * a, 0)
        if np.linalg.norm(shrunk) <= mid * c:
            hi = mid
        else:
            lo = mid
    return hi


def lambda_max(model: keras.Model, x: Any, y: Any = None, *, terms: Any = None, batch_size: int = 256) -> float:
    """The smallest path λ at which the moving L1 and group terms' weights may all stay exactly 0.

    See the module docstring: for an L1 term, `max |g_i| / a`; for a group
    term, `max_g ‖g_g‖ / c`; for both, per group the λ with
    `‖S(g_g, λ·a)‖ = λ·c`; g the data loss's gradient over `(x, y)` at each
    such variable set to 0 in turn (restored after), a and c the terms'
    ratios; the largest over the variables.

    Args:
        model: a compiled Keras model with `L1L2Plus` regularizers.
        x, y: the training data (arrays, or lists or dicts of arrays).
        terms: the moving λs, as `regularization_path` takes them.
        batch_size: the gradient is accumulated over batches of this size.
    """
    ratios = _moving_terms(model, terms)
    targets = _sparse_targets(model, ratios)
    if not targets:
        raise ValueError(
            "lambda_max: no moving L1 or group term (L2 never makes a weight exactly 0, so it has no λ_max). "
            f"Moving terms: {sorted(ratios)}. Give `lambdas` explicitly, or move an l1_* or group_* term."
        )
    variables = [t[0] for t in targets]
    moving_anchors = [t for t in ratios if term_parts(t)[0] == "l2_anchor"]
    if moving_anchors:
        raise ValueError(
            f"lambda_max: the anchor terms {moving_anchors} move, and λ_max is not defined for them (they pull "
            "toward w₀, not 0). Give `lambdas` explicitly, or move the l1_* and group_* terms only. "
            f"Received: terms={terms!r}"
        )
    grads = []
    for variable in variables:  # each alone at 0, the others as they are (see the module docstring)
        saved = ops.convert_to_numpy(variable)
        try:
            variable.assign(ops.zeros(variable.shape, variable.dtype))
            grads.append(_data_loss_gradients(model, x, y, [variable], batch_size)[0])
        finally:
            variable.assign(saved)
        regularizer = as_l1l2plus(variable.regularizer)
        if regularizer.anchored and regularizer.l2_anchor:  # the smooth anchor term's gradient at 0: −2·λa·w₀
            grads[-1] = grads[-1] - 2 * regularizer.l2_anchor * ops.convert_to_numpy(regularizer.anchor).astype(
                grads[-1].dtype
            )
    best = 0.0
    for (_, a, c, groups), g in zip(targets, grads):
        if not c:
            best = max(best, float(np.abs(g).max()) / a)
            continue
        axes = group_axes(tuple(g.shape), groups)
        moved = np.moveaxis(g, [i for i in range(g.ndim) if i not in axes], list(range(g.ndim - len(axes))))
        per_group = moved.reshape(-1, int(np.prod([g.shape[i] for i in axes], dtype=int)) if axes else 1)
        best = max(best, max(_group_lambda(row, a, c) for row in per_group))
    return best


# --- the path --------------------------------------------------------------------------------


class RegularizationPath:
    """What `regularization_path` trained: one record per λ, the weights, and the choice of λ.

    Attributes:
        lambdas: the path parameter λ at each point, in the order trained.
        terms: `{term: ratio}`, so λ_term = λ·ratio at each point.
        records: one dict per λ: `lambda`, `lambda_<term>` for each moving
            term, the last epoch's logs (`loss`, `data_loss`, the compiled
            metrics, each penalty term, their `val_` copies), `zeros_weight`
            and `zeros_bias` (fractions of exactly-zero entries among the
            weights and biases an L1 or group term regularizes, at the
            end weights), `live_groups` (groups with an entry ≠ 0, where
            group terms are used), `epochs`, `seconds`.
        cv: with `cv=k`: `{"mean": [...], "se": [...], "folds": [[...]]}` of
            the monitored value per λ, else None.
        monitor: the value `best` compares (`val_data_loss` with validation
            data, else `data_loss`).
    """

    def __init__(self, model: Any, terms: dict[str, float], monitor: str, keep: Any):
        self.model = model
        self.terms = terms
        self.monitor = monitor
        self.lambdas: list[float] = []
        self.records: list[dict[str, Any]] = []
        self.cv: dict[str, Any] | None = None
        self.lambda_max: float | None = None
        self._keep = keep  # True: in memory; a Path: a folder; False: not kept
        self._weights: list[list[np.ndarray]] = []

    def __len__(self) -> int:
        return len(self.lambdas)

    def __repr__(self) -> str:
        done = f"{len(self)} λs" + (f", {self.lambdas[0]:.3g} … {self.lambdas[-1]:.3g}" if self.lambdas else "")
        return f"<RegularizationPath of {self.model.name!r}: {done}, terms={self.terms}>"

    # -- recording
    def _add(self, lam: float, record: dict[str, Any]) -> None:
        self.lambdas.append(lam)
        self.records.append(record)
        if self._keep is True:
            self._weights.append([np.array(w) for w in self.model.get_weights()])
        elif self._keep:
            self.model.save_weights(self._weights_file(len(self.lambdas) - 1))

    def _weights_file(self, index: int) -> Path:
        return Path(self._keep) / f"lambda_{index:03d}.weights.h5"

    # -- reading
    def values(self, key: str) -> list[float]:
        """`key` of every record (NaN where a record lacks it)."""
        return [float(r.get(key, math.nan)) for r in self.records]

    def index(self, lam: float | None = None, *, rule: str | None = None) -> int:
        """The position of `lam` on the path (the nearest λ), or of the λ `rule` chooses (see `best`)."""
        if not self.lambdas:
            raise ValueError("This RegularizationPath has no λ yet.")
        if rule is not None:
            return self._chosen(rule)
        if lam is None:
            raise ValueError(
                'Give a λ or a rule: path.index(0.01), path.model_at(rule="min"). Received: lam=None, rule=None'
            )
        lam = validate_penalty(lam, "lam")
        return int(np.argmin([abs(math.log(max(v, 1e-300)) - math.log(max(lam, 1e-300))) for v in self.lambdas]))

    def _chosen(self, rule: str) -> int:
        if rule not in RULES:
            raise ValueError(f"Invalid value for argument `rule`: expected one of {RULES}. Received: rule={rule!r}")
        if self.cv is not None:
            mean, se = np.asarray(self.cv["mean"]), np.asarray(self.cv["se"])
        else:
            mean, se = np.asarray(self.values(self.monitor)), None
        if np.all(np.isnan(mean)):
            raise ValueError(f"No record has {self.monitor!r}: nothing to choose λ by.")
        best = int(np.nanargmin(mean))
        if rule == "min":
            return best
        if se is None:
            raise ValueError(
                'Invalid value for argument `rule`: "1se" needs the standard error of the monitored value, '
                f"which cross-validation gives: regularization_path(..., cv=5). Received: rule={rule!r}"
            )
        within = [i for i in range(len(mean)) if mean[i] <= mean[best] + se[best]]
        return max(within, key=lambda i: self.lambdas[i])  # the largest λ, the sparsest model

    def weights_at(self, lam: float | None = None, *, rule: str | None = None) -> list[np.ndarray]:
        """The weights (as `model.get_weights()`) at `lam`, or at the λ `rule` chooses."""
        i = self.index(lam, rule=rule)
        if self._keep is True:
            return [np.array(w) for w in self._weights[i]]
        if self._keep:
            clone = _clone(self.model)
            clone.load_weights(self._weights_file(i))
            return clone.get_weights()
        raise ValueError("The weights were not kept: run regularization_path(..., keep_weights=True) or a folder.")

    def model_at(self, lam: float | None = None, *, rule: str | None = None) -> keras.Model:
        """A new model (from the path's model's config, compiled as it is) with the weights and λs at that point."""
        i = self.index(lam, rule=rule)
        clone = _clone(self.model)
        clone.set_weights(self.weights_at(self.lambdas[i]))
        for term, ratio in self.terms.items():
            for regularizer in term_regularizers(clone, term):
                regularizer.schedule(term_parts(term)[0], Factor(self.lambdas[i] * ratio))
        _compile_like(clone, self.model)
        return clone

    def best(self, rule: str = "min") -> keras.Model:
        """The model at the λ that `rule` chooses: `"min"`, the lowest monitored value (the `cv` mean with
        cross-validation); `"1se"`, the largest λ whose mean is within one standard error of that minimum
        (needs `cv`)."""
        return self.model_at(rule=rule)

    # -- output
    def to_csv(self, path: str | os.PathLike) -> Path:
        """One row per λ, one column per record key (and `cv_mean`, `cv_se` with `cv`); returns the path."""
        path = Path(path)
        keys: list[str] = []
        for record in self.records:
            keys += [k for k in record if k not in keys]
        rows = [dict(r) for r in self.records]
        if self.cv is not None:
            keys += ["cv_mean", "cv_se"]
            for row, mean, se in zip(rows, self.cv["mean"], self.cv["se"]):
                row.update(cv_mean=mean, cv_se=se)
        with path.open("w", newline="") as file:
            writer = csv.DictWriter(file, fieldnames=keys)
            writer.writeheader()
            writer.writerows(rows)
        return path

    def plot(self, ax: Any = None):
        """glmnet's picture: the monitored value (with standard errors under `cv`) and the exact zeros
        against log λ, the λs `min` and `1se` choose marked; with ≤ 100 kept weights, the coefficient
        paths below. Returns the matplotlib figure."""
        import matplotlib.pyplot as plt

        coefficients = self._keep is True and sum(w.size for w in self._weights[0]) <= 100 if self._weights else False
        if ax is None:
            fig, axes = plt.subplots(2 if coefficients else 1, 1, figsize=(7, 7 if coefficients else 4), sharex=True)
            ax = axes[0] if coefficients else axes
        else:
            fig, coefficients = ax.figure, False
        lam = np.asarray(self.lambdas)
        if self.cv is not None:
            ax.errorbar(
                lam,
                self.cv["mean"],
                yerr=self.cv["se"],
                fmt="o-",
                ms=3,
                capsize=2,
                label=f"{self.monitor} (cv mean ± se)",
            )
        else:
            ax.plot(lam, self.values(self.monitor), "o-", ms=3, label=self.monitor)
        ax.set_xscale("log")
        ax.set_ylabel(self.monitor)
        for rule, style in (("min", "--"), ("1se", ":")):
            try:
                ax.axvline(self.lambdas[self._chosen(rule)], color="k", ls=style, lw=1, label=f"λ ({rule})")
            except ValueError:
                pass
        zeros = ax.twinx()
        zeros.plot(lam, self.values("zeros_weight"), "s-", color="tab:red", ms=3, label="zeros_weight")
        zeros.set_ylabel("fraction of exact zeros", color="tab:red")
        handles = ax.get_legend_handles_labels()
        more = zeros.get_legend_handles_labels()
        ax.legend(handles[0] + more[0], handles[1] + more[1], loc="best", fontsize=8)
        if coefficients:
            flat = np.array([np.concatenate([w.ravel() for w in weights]) for weights in self._weights])
            axes[1].plot(lam, flat)
            axes[1].set_xscale("log")
            axes[1].set_ylabel("weights")
            axes[1].set_xlabel("λ")
        else:
            ax.set_xlabel("λ")
        fig.tight_layout()
        return fig

    def _write_tensorboard(self, log_dir: Path, index: int) -> None:
        from tensorboard.compat.proto import event_pb2, summary_pb2
        from tensorboard.summary.writer.event_file_writer import EventFileWriter

        record = self.records[index]
        values = [
            summary_pb2.Summary.Value(tag=f"path/{key}", simple_value=float(value))
            for key, value in record.items()
            if isinstance(value, numbers.Real) and not isinstance(value, bool)
        ]
        writer = EventFileWriter(str(log_dir), filename_suffix=".path")
        try:
            writer.add_event(
                event_pb2.Event(wall_time=time.time(), step=index, summary=summary_pb2.Summary(value=values))
            )
        finally:
            writer.close()


def _clone(model: Any) -> keras.Model:
    """A new, uncompiled model from `model`'s config (`clone_model` would compile it from the compile config,
    which fails for a loss function Keras cannot look up; `_compile_like` compiles it after)."""
    try:
        clone = type(model).from_config(model.get_config())
    except (NotImplementedError, TypeError, ValueError) as error:
        raise TypeError(
            f"RegularizationPath: model {model.name!r} cannot be rebuilt from its config ({error}); take the "
            "weights instead: model.set_weights(path.weights_at(λ))."
        ) from error
    if not clone.built:
        clone.build(model.input_shape)
    return clone


def _compile_like(clone: Any, model: Any) -> None:
    """Compiles `clone` as `model` is compiled: from its compile config, with `model.loss` itself where the
    config names a loss Keras cannot look up (a function of the user's that is not registered)."""
    config = model.get_compile_config() if hasattr(model, "get_compile_config") else None
    if not config:
        return
    try:
        clone.compile_from_config(config)
    except (TypeError, ValueError):
        config = dict(config, loss=model.loss, optimizer=keras.optimizers.deserialize(config["optimizer"]))
        metrics = config.pop("metrics", None)
        weighted = config.pop("weighted_metrics", None)
        clone.compile(
            **config,
            metrics=keras.saving.deserialize_keras_object(metrics) if metrics else None,
            weighted_metrics=keras.saving.deserialize_keras_object(weighted) if weighted else None,
        )


def _grid(lambdas: Any, lam_max: float | None, n_lambdas: int, eps: float, direction: str) -> list[float]:
    if isinstance(lambdas, str):
        if lambdas != "auto":
            raise ValueError(
                f'Invalid value for argument `lambdas`: expected "auto" or a sequence of floats ≥ 0. '
                f"Received: lambdas={lambdas!r}"
            )
        if not lam_max > 0:
            raise ValueError(
                f"regularization_path: λ_max is {lam_max!r}: with each regularized variable at 0 no gradient reaches "
                "it (a network whose layers feed each other through ReLUs at zero bias, or data the model already "
                'fits exactly), so "auto" has no top to start from. Give the λs: '
                "lambdas=[0.1, 0.03, 0.01, 0.003, 0.001] (with direction='increasing' for a network)."
            )
        narrow = keras.config.dtype_policy().compute_dtype in ("float16", "bfloat16")
        top = lam_max * (1 + (1e-2 if narrow else _MARGIN))
        grid = [top * eps ** (k / (n_lambdas - 1)) for k in range(n_lambdas)] if n_lambdas > 1 else [top]
        return grid if direction == "decreasing" else grid[::-1]
    if not isinstance(lambdas, Sequence) and not isinstance(lambdas, np.ndarray):
        raise ValueError(
            f'Invalid value for argument `lambdas`: expected "auto" or a sequence of floats ≥ 0. '
            f"Received: lambdas={lambdas!r}"
        )
    grid = [validate_penalty(v, "lambdas") for v in list(lambdas)]
    if not grid:
        raise ValueError("Invalid value for argument `lambdas`: the sequence is empty. Received: lambdas=[]")
    return grid


def _zeros_and_groups(model: Any, ratios: dict[str, float]) -> dict[str, float]:
    """Exact zeros among the weights and biases an L1 or group term regularizes, and live groups."""
    counts = {"weight": [0, 0], "bias": [0, 0]}
    live, with_groups = 0, False
    for owned in owned_trainable_variables(model):
        regularizer = as_l1l2plus(owned.variable.regularizer)
        if regularizer is None:
            continue
        value = ops.convert_to_numpy(owned.variable)
        if not (regularizer.factor("l1").is_zero and regularizer.factor("group").is_zero):
            counts[owned.role][0] += int(np.sum(value == 0))
            counts[owned.role][1] += value.size
        if not regularizer.factor("group").is_zero:
            with_groups = True
            axes = group_axes(value.shape, regularizer.groups)
            nonzero = value != 0
            live += int(np.sum(np.any(nonzero, axis=axes) if axes else nonzero))
    result = {f"zeros_{role}": (zeros / size if size else 0.0) for role, (zeros, size) in counts.items()}
    if with_groups:
        result["live_groups"] = float(live)
    return result


def regularization_path(
    model: keras.Model,
    x: Any = None,
    y: Any = None,
    *,
    lambdas: Any = "auto",
    terms: Any = None,
    n_lambdas: int = 20,
    eps: float = 1e-3,
    direction: str = "decreasing",
    epochs: int = 10,
    patience: int | None = None,
    tol: float | None = None,
    batch_size: int | None = None,
    validation_data: Any = None,
    validation_split: float = 0.0,
    cv: int | None = None,
    reset_optimizer: bool = False,
    keep_weights: Any = True,
    log_dir: Any = None,
    verbose: int = 1,
    callbacks: Sequence[Any] = (),
    **fit_kwargs: Any,
) -> RegularizationPath:
    """Trains `model` along a grid of λs, each warm-started from the last, and records every point.

    The moving λs (`terms`) are set by a `PenaltySchedule` (`λ_term =
    λ·ratio`), so every point runs the same traced train step. The whole
    path is one `fit`: each λ has a stage of `epochs` epochs (or fewer, with
    `patience`), starting from the weights and optimizer state the previous
    stage ended with, and is recorded when its stage ends; a `PenaltyLogger`
    logs the terms. See `keras_l1l2plus.path` for λ_max and the grid.

    Example:

    >>> import keras, numpy as np, keras_l1l2plus as kl
    >>> rng = np.random.default_rng(0)
    >>> x = rng.normal(size=(100, 5)).astype("float32"); y = x[:, :2].sum(1, keepdims=True)
    >>> model = keras.Sequential([keras.Input((5,)), keras.layers.Dense(1, use_bias=False, kernel_initializer="zeros")])
    >>> model = kl.regularize(model, l1_weight=0.1, proximal_weight=True)
    >>> model.compile(optimizer=kl.ProximalOptimizer(keras.optimizers.SGD(0.1)), loss="mse")
    >>> path = kl.regularization_path(model, x, y, n_lambdas=5, epochs=20, batch_size=100, verbose=0)
    >>> [round(z, 1) for z in path.values("zeros_weight")]
    [1.0, 0.6, 0.6, 0.6, 0.6]

    Args:
        model: a compiled Keras model whose `L1L2Plus` regularizers carry the
            λs to move (`regularize`).
        x, y: training data, as `fit` takes it; `lambdas="auto"` and `cv`
            need arrays (or lists or dicts of arrays).
        lambdas: `"auto"` (a geometric grid of `n_lambdas` from λ_max down to
            `eps·λ_max`), or the λs, trained in the order given.
        terms: which λs move: a name among `l1_weight`, `l1_bias`,
            `l2_weight`, `l2_bias`, `group_weight`, `group_bias`, a list of
            them (equal), or `{term: ratio}`. Default: every λ > 0 on the
            model, in the ratios they have now, relative to the first L1 or
            group one (so the path's λ is that term's λ).
        n_lambdas, eps: the `"auto"` grid's size and λ_min / λ_max.
        direction: `"decreasing"` (glmnet: from λ_max down, warm starts from
            sparse to dense) or `"increasing"` (the same grid from the
            smallest λ up: from the dense model to the sparse one, as LassoNet
            does; what a network with several regularized layers needs).
        epochs: epochs per λ (the budget).
        patience: with it, a λ's stage ends when the monitored value has not
            improved for `patience` epochs, and its best weights are put back
            (as `EarlyStopping(restore_best_weights=True)` would).
        tol: with it, a λ's stage also ends when the training `loss` fell by
            less than `tol` (relative) over its last epoch: converged, as
            scikit-learn's `tol` ends its coordinate descent.
        batch_size, validation_data, validation_split, callbacks, **fit_kwargs:
            passed to the `fit` (a callback sees the whole path as one fit
            of up to `len(lambdas)·epochs` epochs).
        cv: k ≥ 2: k folds of (x, y) (contiguous, as scikit-learn's `KFold`
            without shuffling), each a path from the same starting weights
            over the same grid, validated on its fold; `best` then chooses by
            the folds' mean and standard error; the returned path itself is
            then trained on all of (x, y).
        reset_optimizer: start every λ from the optimizer state the path
            started with (default False: carried over, a warm start of the
            moments as well as the weights).
        keep_weights: True (in memory), a folder (a `.weights.h5` per λ),
            or False.
        log_dir: a directory for TensorBoard: each λ is a step of
            `path/<record key>` scalars.
        verbose: 0 silent, 1 one line per λ, 2 that and `fit`'s own lines.

    Returns:
        A `RegularizationPath`. The model is left as the path ends: the last
        λ's weights, its λs scheduled (a later `fit` trains with them; the
        saved config holds them); `path.best()` or `path.model_at(λ)` give
        another point as a new model. If a λ's training raises, the
        exception carries the path of the λs done so far as
        `error.regularization_path`.
    """
    if not isinstance(model, keras.Model):
        raise TypeError(
            f"Invalid value for argument `model`: expected a compiled Keras model. Received: model={model!r}"
        )
    ratios = _moving_terms(model, terms)
    if direction not in DIRECTIONS:
        raise ValueError(
            f"Invalid value for argument `direction`: expected one of {DIRECTIONS}. Received: direction={direction!r}"
        )
    if isinstance(n_lambdas, bool) or not isinstance(n_lambdas, numbers.Integral) or n_lambdas < 1:
        raise ValueError(
            f"Invalid value for argument `n_lambdas`: expected an int ≥ 1. Received: n_lambdas={n_lambdas!r}"
        )
    if isinstance(eps, bool) or not isinstance(eps, numbers.Real) or not 0 < eps < 1:
        raise ValueError(f"Invalid value for argument `eps`: expected a float in (0, 1). Received: eps={eps!r}")
    if isinstance(epochs, bool) or not isinstance(epochs, numbers.Integral) or epochs < 1:
        raise ValueError(f"Invalid value for argument `epochs`: expected an int ≥ 1. Received: epochs={epochs!r}")
    if cv is not None and (isinstance(cv, bool) or not isinstance(cv, numbers.Integral) or cv < 2):
        raise ValueError(f"Invalid value for argument `cv`: expected None or an int ≥ 2. Received: cv={cv!r}")
    reset_optimizer = validate_flag(reset_optimizer, "reset_optimizer")
    if tol is not None and (isinstance(tol, bool) or not isinstance(tol, numbers.Real) or not tol >= 0):
        raise ValueError(f"Invalid value for argument `tol`: expected None or a float ≥ 0. Received: tol={tol!r}")
    if patience is not None and (
        isinstance(patience, bool) or not isinstance(patience, numbers.Integral) or patience < 1
    ):
        raise ValueError(
            f"Invalid value for argument `patience`: expected None or an int ≥ 1. Received: patience={patience!r}"
        )
    if model.optimizer is None:
        raise ValueError(
            "regularization_path: the model is not compiled. Compile it first: model.compile(optimizer=..., loss=...)."
        )
    keep = keep_weights
    if not isinstance(keep, bool):
        if not isinstance(keep, (str, os.PathLike)):
            raise TypeError(
                "Invalid value for argument `keep_weights`: expected True, False or a folder. "
                f"Received: keep_weights={keep_weights!r}"
            )
        keep = Path(keep)
        keep.mkdir(parents=True, exist_ok=True)
    if "initial_epoch" in fit_kwargs or "epochs" in fit_kwargs:
        raise ValueError(
            "regularization_path runs one fit of len(lambdas)·epochs epochs from epoch 0; it does not take "
            f"`initial_epoch`. Received: {sorted(k for k in fit_kwargs if k in ('initial_epoch', 'epochs'))}"
        )
    if isinstance(lambdas, str) or cv is not None:
        needs = 'lambdas="auto"' if isinstance(lambdas, str) else "cv"
        for name, data in (("x", x), ("y", y)):
            leaves = keras.tree.flatten(data) if data is not None else []
            if not leaves or not all(hasattr(leaf, "shape") and len(leaf.shape) for leaf in leaves):
                raise TypeError(
                    f"Invalid value for argument `{name}`: {needs} needs x and y as arrays (or lists or dicts of "
                    f"arrays); give the λs explicitly (lambdas=[...]) to train on a dataset or generator. "
                    f"Received: {name}={type(data).__name__}"
                )
    validating = validation_data is not None or validation_split or cv is not None
    monitor = "val_data_loss" if validating else "data_loss"
    lam_max = lambda_max(model, x, y, terms=ratios, batch_size=batch_size or 256) if isinstance(lambdas, str) else None
    grid = _grid(lambdas, lam_max, int(n_lambdas), float(eps), direction)
    if not model.optimizer.built:
        model.optimizer.build(model.trainable_variables)
    start_weights = [np.array(w) for w in model.get_weights()]
    # By variable: a ProximalOptimizer adds a copy of the λ vector when a schedule first sets a proximal λ.
    start_optimizer = [(v, ops.convert_to_numpy(v)) for v in model.optimizer.variables]
    run = dict(
        epochs=int(epochs),
        patience=patience,
        tol=tol,
        batch_size=batch_size,
        callbacks=list(callbacks),
        reset_optimizer=reset_optimizer,
        start_optimizer=start_optimizer,
        verbose=verbose,
        fit_kwargs=fit_kwargs,
    )
    folds = None
    if cv is not None:
        folds = []
        n = int(keras.tree.flatten(x)[0].shape[0])
        sizes = [n // int(cv) + (1 if k < n % int(cv) else 0) for k in range(int(cv))]  # KFold's
        edges = np.concatenate([[0], np.cumsum(sizes)])
        for k in range(int(cv)):
            held = np.arange(edges[k], edges[k + 1])
            kept = np.setdiff1d(np.arange(n), held)

            def part(data, rows):
                return None if data is None else keras.tree.map_structure(lambda a: np.asarray(a)[rows], data)

            fold = RegularizationPath(model, ratios, monitor, False)
            if verbose:
                print(f"regularization_path: fold {k + 1}/{cv}")
            _walk(fold, grid, part(x, kept), part(y, kept), (part(x, held), part(y, held)), 0.0, None, run)
            folds.append(fold.values(monitor))
            model.set_weights(start_weights)
            _reset(model, start_optimizer)
    path = RegularizationPath(
        model, ratios, "val_data_loss" if validation_data is not None or validation_split else monitor, keep
    )
    path.lambda_max = lam_max
    if folds is not None:
        matrix = np.asarray(folds, "float64")
        path.monitor = monitor
        path.cv = {
            "mean": matrix.mean(axis=0).tolist(),
            "se": (matrix.std(axis=0, ddof=1) / math.sqrt(len(folds))).tolist(),
            "folds": matrix.tolist(),
        }
    _walk(path, grid, x, y, validation_data, validation_split, Path(log_dir) if log_dir else None, run)
    return path


def _reset(model: Any, values: list) -> None:
    """The optimizer's variables back to `values` (`(variable, value)` pairs taken before the path)."""
    for variable, value in values:
        variable.assign(value)


class _Stages(keras.callbacks.Callback):
    """Drives one `fit` along the grid: λ `k` for its stage of epochs, recorded when the stage ends.

    A stage ends after `epochs` epochs, or, with `patience`, when the
    monitored value has not improved for `patience` epochs (the stage's best
    weights are then put back, as `EarlyStopping(restore_best_weights=True)`
    does); the last stage stops the fit. The λs themselves are written by a
    `PenaltySchedule` whose per-epoch function reads `lam`.
    """

    def __init__(self, path: RegularizationPath, grid: list[float], log_dir: Path | None, run: dict):
        super().__init__()
        self.path, self.grid, self.log_dir, self.run = path, grid, log_dir, run
        self.stage = 0
        self._begin_stage()

    @property
    def lam(self) -> float:
        return self.grid[self.stage]

    def _begin_stage(self) -> None:
        self.epochs = 0
        self.last_loss = math.inf
        self.best, self.best_weights, self.best_logs, self.waited = math.inf, None, None, 0
        self.began = time.perf_counter()

    def on_epoch_begin(self, epoch, logs=None):
        if self.epochs == 0 and self.stage and self.run["reset_optimizer"]:
            _keras.synced_model(self)  # on JAX: the next step takes its state from the variables assigned here
            _reset(self.path.model, self.run["start_optimizer"])

    def on_epoch_end(self, epoch, logs=None):
        logs = dict(logs or {})
        self.epochs += 1
        model = _keras.synced_model(self)
        patience = self.run["patience"]
        done = self.epochs >= self.run["epochs"]
        loss, tol = logs.get("loss", math.nan), self.run["tol"]
        if tol is not None and self.last_loss - loss < tol * abs(self.last_loss):  # converged (inf: first epoch)
            done = True
        self.last_loss = loss
        if patience is not None:
            value = logs.get(self.path.monitor, math.nan)
            if value < self.best:
                self.best, self.best_weights, self.waited = value, model.get_weights(), 0
                self.best_logs = logs
            else:
                self.waited += 1
            if self.waited >= patience or done:
                done = True
                if self.best_weights is not None:
                    model.set_weights(self.best_weights)
                    logs = self.best_logs
        if done:
            self._record(logs)
            if self.stage + 1 == len(self.grid):
                model.stop_training = True
            else:
                self.stage += 1
                self._begin_stage()

    def _record(self, logs: dict) -> None:
        path, lam = self.path, self.lam
        seconds = time.perf_counter() - self.began
        values = {term: lam * ratio for term, ratio in path.terms.items()}
        record = {"lambda": lam, **{f"lambda_{t}": v for t, v in values.items()}}
        record.update(
            {key: float(value) for key, value in logs.items() if not key.startswith(("lambda_", "val_lambda_"))}
        )
        record.update(_zeros_and_groups(path.model, path.terms))
        record.update(epochs=self.epochs, seconds=seconds)
        path._add(lam, record)
        if self.log_dir is not None:
            path._write_tensorboard(self.log_dir, len(path) - 1)
        if self.run["verbose"]:
            shown = record.get(path.monitor, math.nan)
            groups = f", live_groups {int(record['live_groups'])}" if "live_groups" in record else ""
            print(
                f"λ {len(path)}/{len(self.grid)}: λ={lam:.4g}, {path.monitor} {shown:.4g}, "
                f"zeros_weight {record['zeros_weight']:.3f}{groups}, {self.epochs} epochs, {seconds:.1f} s"
            )


def _walk(path: RegularizationPath, grid: list[float], x, y, validation_data, validation_split, log_dir, run) -> None:
    """Trains `path.model` along `grid` in one `fit` (see `_Stages`), recording each λ into `path`."""
    model = path.model
    stages = _Stages(path, grid, log_dir, run)
    schedule = PenaltySchedule(
        **{term: (lambda epoch, ratio=ratio: stages.lam * ratio) for term, ratio in path.terms.items()}
    )
    try:
        model.fit(
            x,
            y,
            batch_size=run["batch_size"],
            epochs=len(grid) * run["epochs"],
            validation_data=validation_data,
            validation_split=validation_split,
            verbose=2 if run["verbose"] == 2 else 0,
            callbacks=[stages, schedule, PenaltyLogger(), *run["callbacks"]],
            **run["fit_kwargs"],
        )
    except BaseException as error:
        error.regularization_path = path
        if hasattr(error, "add_note"):
            error.add_note(f"regularization_path: the {len(path)} λs done so far are in error.regularization_path")
        raise
    if len(path) < len(grid):
        warnings.warn(
            f"regularization_path: the fit ended after {len(path)} of {len(grid)} λs (a callback stopped it, "
            "e.g. EarlyStopping; use `patience` to end each λ early instead). The path holds the λs done.",
            stacklevel=3,
        )

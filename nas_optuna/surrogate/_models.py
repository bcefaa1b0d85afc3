"""The regressors a surrogate may be, as scikit-learn models and as plain arrays.

Fitting uses scikit-learn. A fitted model is then turned into numbers only
(:func:`export_model`): the trees' public ``tree_`` arrays (``children_left``,
``children_right``, ``feature``, ``threshold``, ``value``) for gradient boosting and random
forests; the training inputs and dual coefficients for kernel ridge and the Gaussian
process. :func:`predict_arrays` predicts from those numbers alone, so a saved surrogate is
loaded without unpickling anything (see :mod:`nas_optuna.surrogate._file`), and a test
checks it against scikit-learn's own ``predict`` for every kind.

Choices (the papers give none; NAS-Bench-301 compared the same families):

* ``gradient_boosting``: 300 trees of depth 3, learning rate 0.05, 80% subsampling, Huber
  loss (a search's rewards have a long tail of failing architectures, e.g. 0.21 against a
  median of 0.64 in ``benchmarks/data/surrogate_template.csv``; squared error chases it:
  5-fold CV Spearman 0.711 squared vs 0.736 Huber on that table);
* ``random_forest``: 300 trees, leaves of at least 2 samples;
* ``kernel_ridge``: RBF kernel on standardised features, ``alpha`` 1.0, ``gamma``
  ``1 / n_features``;
* ``gaussian_process``: ``C * RBF(l) + White`` on standardised features and centred
  targets, hyperparameters by maximum marginal likelihood.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

import numpy as np

from nas_optuna.registry import Registry

__all__ = ["MODELS", "export_model", "make_model", "predict_arrays"]


def _gradient_boosting(seed: int) -> Any:
    from sklearn.ensemble import GradientBoostingRegressor

    return GradientBoostingRegressor(loss="huber", n_estimators=300, max_depth=3,
                                     learning_rate=0.05, subsample=0.8, random_state=seed)


def _random_forest(seed: int) -> Any:
    from sklearn.ensemble import RandomForestRegressor

    return RandomForestRegressor(n_estimators=300, min_samples_leaf=2, random_state=seed,
                                 n_jobs=1)


def _kernel_ridge(seed: int) -> Any:
    from sklearn.kernel_ridge import KernelRidge

    return _Standardised(lambda n: KernelRidge(kernel="rbf", alpha=1.0, gamma=1.0 / n))


def _gaussian_process(seed: int) -> Any:
    from sklearn.gaussian_process import GaussianProcessRegressor
    from sklearn.gaussian_process.kernels import RBF, ConstantKernel, WhiteKernel

    def build(n: int) -> Any:
        kernel = ConstantKernel() * RBF(length_scale=float(np.sqrt(n))) + WhiteKernel()
        return GaussianProcessRegressor(kernel, normalize_y=False, random_state=seed)

    return _Standardised(build)


#: Model name -> factory ``(seed) -> unfitted regressor``.
MODELS: Registry[Callable[[int], Any]] = Registry("surrogate model")
MODELS.add("gradient_boosting", _gradient_boosting)
MODELS.add("random_forest", _random_forest)
MODELS.add("kernel_ridge", _kernel_ridge)
MODELS.add("gaussian_process", _gaussian_process)


def make_model(name: str, seed: int = 0) -> Any:
    """An unfitted regressor with ``fit(x, y)`` and ``predict(x)``.

    Raises:
        UnknownNameError: ``name`` is not in :data:`MODELS`.
    """
    return MODELS.get(name)(seed)


class _Standardised:
    """Standardised features and centred targets around a kernel regressor (a minimal
    ``StandardScaler`` pipeline whose numbers :func:`export_model` can read)."""

    def __init__(self, build: Callable[[int], Any]) -> None:
        self._build = build

    def get_params(self, deep: bool = True) -> dict[str, Any]:
        return {"build": self._build}

    def set_params(self, **params: Any) -> _Standardised:
        self._build = params.get("build", self._build)
        return self

    def fit(self, x: np.ndarray, y: np.ndarray) -> _Standardised:
        x = np.asarray(x, dtype=float)
        self.mean_ = x.mean(axis=0)
        scale = x.std(axis=0)
        self.scale_ = np.where(scale > 0, scale, 1.0)
        self.y_mean_ = float(np.mean(y))
        self.model_ = self._build(x.shape[1])
        self.model_.fit((x - self.mean_) / self.scale_, np.asarray(y, float) - self.y_mean_)
        return self

    def predict(self, x: np.ndarray) -> np.ndarray:
        z = (np.asarray(x, dtype=float) - self.mean_) / self.scale_
        return self.model_.predict(z) + self.y_mean_


# --- numbers only -------------------------------------------------------------------------
def export_model(name: str, model: Any) -> dict[str, np.ndarray]:
    """The fitted ``model``'s numbers, enough for :func:`predict_arrays`."""
    if name in ("gradient_boosting", "random_forest"):
        trees = ([e[0] for e in model.estimators_] if name == "gradient_boosting"
                 else list(model.estimators_))
        arrays = _pack_trees(trees)
        if name == "gradient_boosting":
            zero = np.zeros((1, model.n_features_in_))
            arrays["init"] = np.asarray([float(model.init_.predict(zero)[0])])
            arrays["scale"] = np.asarray([float(model.learning_rate)])
        else:
            arrays["init"] = np.asarray([0.0])
            arrays["scale"] = np.asarray([1.0 / len(trees)])
        return arrays
    inner = model.model_
    arrays = {"mean": model.mean_, "feature_scale": model.scale_,
              "y_mean": np.asarray([model.y_mean_])}
    if name == "kernel_ridge":
        arrays.update(x_train=np.asarray(inner.X_fit_, float),
                      coef=np.asarray(inner.dual_coef_, float).ravel(),
                      kernel=np.asarray([1.0, float(inner.gamma)]))
        return arrays
    # Gaussian process: k(x, x') = C exp(-|x - x'|^2 / (2 l^2)) (+ white noise, which is 0
    # between distinct inputs); the predictive mean is k(x, X_train) @ alpha_.
    params = inner.kernel_.get_params()
    constant = float(params["k1__k1__constant_value"])
    length = float(np.mean(params["k1__k2__length_scale"]))
    arrays.update(x_train=np.asarray(inner.X_train_, float),
                  coef=np.asarray(inner.alpha_, float).ravel(),
                  kernel=np.asarray([constant, 1.0 / (2.0 * length ** 2)]))
    return arrays


def predict_arrays(name: str, arrays: Mapping[str, np.ndarray], x: np.ndarray) -> np.ndarray:
    """Predictions of an exported model for the rows of ``x``."""
    x = np.asarray(x, dtype=float)
    if name in ("gradient_boosting", "random_forest"):
        return float(arrays["init"][0]) + float(arrays["scale"][0]) * _trees_sum(arrays, x)
    z = (x - arrays["mean"]) / arrays["feature_scale"]
    amplitude, gamma = (float(v) for v in arrays["kernel"])
    squared = (np.sum(z ** 2, axis=1)[:, None] + np.sum(arrays["x_train"] ** 2, axis=1)[None]
               - 2.0 * z @ arrays["x_train"].T)
    kernel = amplitude * np.exp(-gamma * np.maximum(squared, 0.0))
    return kernel @ arrays["coef"] + float(arrays["y_mean"][0])


def _pack_trees(trees: list[Any]) -> dict[str, np.ndarray]:
    parts: dict[str, list[np.ndarray]] = {k: [] for k in ("left", "right", "feature",
                                                          "threshold", "leaf_value")}
    offsets = [0]
    for tree in trees:
        t = tree.tree_
        base = offsets[-1]
        left, right = t.children_left.astype(np.int64), t.children_right.astype(np.int64)
        parts["left"].append(np.where(left >= 0, left + base, -1))
        parts["right"].append(np.where(right >= 0, right + base, -1))
        parts["feature"].append(t.feature.astype(np.int64))
        parts["threshold"].append(t.threshold.astype(np.float64))
        parts["leaf_value"].append(t.value.reshape(t.node_count, -1)[:, 0].astype(np.float64))
        offsets.append(base + t.node_count)
    arrays = {k: np.concatenate(v) for k, v in parts.items()}
    arrays["roots"] = np.asarray(offsets[:-1], dtype=np.int64)
    return arrays


def _trees_sum(arrays: Mapping[str, np.ndarray], x: np.ndarray) -> np.ndarray:
    # scikit-learn's trees compare float32 inputs with float64 thresholds.
    x = x.astype(np.float32).astype(np.float64)
    left, right = arrays["left"], arrays["right"]
    feature, threshold = arrays["feature"], arrays["threshold"]
    roots = arrays["roots"]
    rows = np.repeat(np.arange(len(x)), len(roots))
    node = np.tile(roots, len(x))
    while True:
        inner = left[node] >= 0
        if not inner.any():
            break
        at = node[inner]
        go_left = x[rows[inner], feature[at]] <= threshold[at]
        node[inner] = np.where(go_left, left[at], right[at])
    return arrays["leaf_value"][node].reshape(len(x), len(roots)).sum(axis=1)

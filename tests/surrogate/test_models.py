"""Every surrogate model predicts from its exported numbers exactly as scikit-learn does."""

from __future__ import annotations

import numpy as np
import pytest

from nas_optuna.exceptions import ConfigError
from nas_optuna.surrogate import MODELS
from nas_optuna.surrogate._models import export_model, make_model, predict_arrays


@pytest.mark.parametrize("name", MODELS.names())
def test_exported_numbers_predict_as_the_fitted_model(name: str) -> None:
    rng = np.random.default_rng(0)
    # One-hot blocks and small integers, like an encoded search space.
    x = np.concatenate([np.eye(4)[rng.integers(0, 4, 80)], rng.integers(1, 5, (80, 3))], 1)
    y = x[:, 0] * 0.3 + 0.05 * x[:, 5] + rng.normal(0, 0.01, 80)
    model = make_model(name, seed=0).fit(x[:60], y[:60])
    arrays = export_model(name, model)
    assert all(isinstance(a, np.ndarray) and a.dtype != object for a in arrays.values())
    np.testing.assert_allclose(predict_arrays(name, arrays, x[60:]), model.predict(x[60:]),
                               rtol=0, atol=1e-10)


def test_an_unknown_model_is_named_with_the_known_ones() -> None:
    with pytest.raises(ConfigError, match="unknown surrogate model 'svm'.*gradient_boosting"):
        make_model("svm")

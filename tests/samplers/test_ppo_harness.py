"""PPOSampler against Optuna's own sampler conformance suite."""

from __future__ import annotations

from collections.abc import Callable

import pytest
from optuna.samplers import BaseSampler
from optuna.testing.pytest_samplers import BasicSamplerTestCase, MultiObjectiveSamplerTestCase

from nas_optuna.samplers import PPOSampler

# RelativeSamplerTestCase does not apply: PPOSampler is define-by-run. Its controller emits
# one decision per suggest call (sample_independent), so infer_relative_search_space and
# sample_relative return {}, while that suite expects sample_relative to fill the search
# space it is given.


class TestPPOSampler(BasicSamplerTestCase, MultiObjectiveSamplerTestCase):
    @pytest.fixture
    def sampler(self) -> Callable[[], BaseSampler]:
        # The harness calls the factory once per study it creates.
        return lambda: PPOSampler(seed=0)

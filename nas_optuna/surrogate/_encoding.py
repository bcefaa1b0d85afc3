"""Stored trial params as a fixed-width numeric vector, and back.

One column group per parameter, from the trials' own Optuna distributions:

* a categorical parameter: one 0/1 column per choice (all zeros when inactive);
* an integer or float parameter: its value as a number (the logarithm when the
  distribution is ``log=True``), 0 when inactive;
* every *conditional* parameter (absent from at least one trial the encoding was built
  from, e.g. a cell's second input when its first operation needs one): one more 0/1
  ``active`` column, so that "inactive" and "value 0" differ.

The encoding is data (:meth:`ParamEncoding.to_dict`), stored with a fitted surrogate;
:meth:`ParamEncoding.decode` inverts :meth:`ParamEncoding.encode` exactly.
"""

from __future__ import annotations

import dataclasses
import json
import math
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import numpy as np
import optuna
from optuna.distributions import (
    BaseDistribution,
    CategoricalDistribution,
    FloatDistribution,
    IntDistribution,
)

from nas_optuna.exceptions import ConfigError

__all__ = ["ParamEncoding"]


@dataclasses.dataclass(frozen=True)
class _Param:
    name: str
    kind: str  # "categorical", "int" or "float"
    choices: tuple[Any, ...] = ()
    log: bool = False
    conditional: bool = False

    @property
    def width(self) -> int:
        return (len(self.choices) if self.kind == "categorical" else 1) + int(self.conditional)


@dataclasses.dataclass(frozen=True)
class ParamEncoding:
    """How a trial's params become a feature vector.

    Example:
        >>> import optuna
        >>> optuna.logging.set_verbosity(optuna.logging.WARNING)
        >>> study = optuna.create_study()
        >>> for _ in range(3):
        ...     t = study.ask()
        ...     op = t.suggest_categorical("op", ["conv", "pool"])
        ...     n = t.suggest_int("repeats", 1, 4)
        ...     _ = study.tell(t, 0.0)
        >>> encoding = ParamEncoding.from_trials(study.trials)
        >>> encoding.columns
        ['op=conv', 'op=pool', 'repeats']
        >>> encoding.decode(encoding.encode([{"op": "pool", "repeats": 3}])[0])
        {'op': 'pool', 'repeats': 3}
    """

    params: tuple[_Param, ...]

    @classmethod
    def from_trials(cls, trials: Iterable[optuna.trial.FrozenTrial]) -> ParamEncoding:
        """The encoding of every parameter the trials used, in first-seen order.

        Raises:
            ConfigError: No trial has params, or a parameter's distribution changes between
                trials in a way that cannot share one encoding.
        """
        trials = [t for t in trials if t.params]
        if not trials:
            raise ConfigError("no trial with params to build an encoding from")
        found: dict[str, BaseDistribution] = {}
        counts: dict[str, int] = {}
        for trial in trials:
            for name, distribution in trial.distributions.items():
                counts[name] = counts.get(name, 0) + 1
                if name not in found:
                    found[name] = distribution
                elif found[name] != distribution:
                    found[name] = _merge(name, found[name], distribution)
        return cls(tuple(_param(name, found[name], counts[name] < len(trials))
                         for name in found))

    # --- the vector ---------------------------------------------------------------------
    @property
    def columns(self) -> list[str]:
        """One readable name per column."""
        names: list[str] = []
        for p in self.params:
            if p.kind == "categorical":
                names += [f"{p.name}={_label(c)}" for c in p.choices]
            else:
                names.append(f"log({p.name})" if p.log else p.name)
            if p.conditional:
                names.append(f"{p.name}:active")
        return names

    def encode(self, params_list: Sequence[Mapping[str, Any]]) -> np.ndarray:
        """``(len(params_list), len(columns))`` float64 features.

        A parameter the encoding does not know is ignored (a surrogate cannot use it);
        a known categorical value it has not seen is encoded as all zeros.

        Raises:
            ConfigError: A numeric parameter's value is not a number (or not positive on a
                log scale).
        """
        out = np.zeros((len(params_list), sum(p.width for p in self.params)))
        for row, params in enumerate(params_list):
            col = 0
            for p in self.params:
                present = p.name in params
                if present:
                    value = params[p.name]
                    if p.kind == "categorical":
                        for i, choice in enumerate(p.choices):
                            if _same(choice, value):
                                out[row, col + i] = 1.0
                    else:
                        out[row, col] = _number(p, value)
                col += p.width
                if p.conditional:
                    out[row, col - 1] = float(present)
        return out

    def decode(self, vector: Sequence[float]) -> dict[str, Any]:
        """The params a row of :meth:`encode` came from."""
        params: dict[str, Any] = {}
        col = 0
        for p in self.params:
            block = np.asarray(vector[col:col + p.width], dtype=float)
            col += p.width
            if p.conditional and block[-1] < 0.5:
                continue
            if p.kind == "categorical":
                hot = block[:len(p.choices)]
                if hot.max(initial=0.0) > 0.5:
                    params[p.name] = p.choices[int(np.argmax(hot))]
            else:
                value = math.exp(block[0]) if p.log else float(block[0])
                params[p.name] = int(round(value)) if p.kind == "int" else value
        return params

    # --- storage ------------------------------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        """A JSON-serialisable description (choices must be JSON values)."""
        return {"params": [dataclasses.asdict(p) | {"choices": list(p.choices)}
                           for p in self.params]}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> ParamEncoding:
        """Inverse of :meth:`to_dict`.

        Raises:
            ConfigError: The description is malformed.
        """
        try:
            params = tuple(_Param(str(p["name"]), str(p["kind"]), tuple(p["choices"]),
                                  bool(p["log"]), bool(p["conditional"]))
                           for p in data["params"])
        except (KeyError, TypeError) as error:
            raise ConfigError(f"malformed parameter encoding: {error!r}") from None
        if any(p.kind not in ("categorical", "int", "float") for p in params):
            raise ConfigError("malformed parameter encoding: unknown parameter kind")
        return cls(params)


def _param(name: str, distribution: BaseDistribution, conditional: bool) -> _Param:
    if isinstance(distribution, CategoricalDistribution):
        choices = tuple(distribution.choices)
        try:
            json.dumps(list(choices))
        except TypeError:
            raise ConfigError(f"parameter {name!r}: choices are not JSON values") from None
        return _Param(name, "categorical", choices, conditional=conditional)
    if isinstance(distribution, IntDistribution):
        return _Param(name, "int", log=distribution.log, conditional=conditional)
    if isinstance(distribution, FloatDistribution):
        return _Param(name, "float", log=distribution.log, conditional=conditional)
    raise ConfigError(f"parameter {name!r}: unsupported distribution {distribution!r}")


def _merge(name: str, a: BaseDistribution, b: BaseDistribution) -> BaseDistribution:
    """Two trials' distributions of one parameter: categoricals' choices united, numeric
    ranges widened; a change of kind or scale is refused."""
    if isinstance(a, CategoricalDistribution) and isinstance(b, CategoricalDistribution):
        choices = list(a.choices) + [c for c in b.choices
                                     if not any(_same(c, d) for d in a.choices)]
        return CategoricalDistribution(choices)
    for kind in (IntDistribution, FloatDistribution):
        if isinstance(a, kind) and isinstance(b, kind) and a.log == b.log:
            return kind(min(a.low, b.low), max(a.high, b.high), log=a.log)
    raise ConfigError(f"parameter {name!r} has incompatible distributions across trials: "
                      f"{a!r} and {b!r}")


def _same(a: Any, b: Any) -> bool:
    return type(a) is type(b) and a == b or (a is None and b is None)


def _label(choice: Any) -> str:
    return choice if isinstance(choice, str) else json.dumps(choice)


def _number(p: _Param, value: Any) -> float:
    try:
        number = float(value)
    except (TypeError, ValueError):
        raise ConfigError(f"parameter {p.name!r}: {value!r} is not a number") from None
    if p.log:
        if number <= 0:
            raise ConfigError(f"parameter {p.name!r}: {value!r} is not positive (log scale)")
        return math.log(number)
    return number

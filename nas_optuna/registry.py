"""A small name -> factory registry, the pattern behind ops, spaces, datasets, samplers.

Modelled on how timm and segmentation-models-pytorch register models and encoders: a
decorator registers a factory under a stable name, and lookups of unknown names raise an
error that lists the valid choices.

Example:
    >>> from nas_optuna.registry import Registry
    >>> colours = Registry("colour")
    >>> @colours.register("red")
    ... def _red() -> str:
    ...     return "#f00"
    >>> colours.get("red")()
    '#f00'
"""

from __future__ import annotations

import inspect
from collections.abc import Callable, Iterable, Iterator, Mapping
from typing import Any, Generic, TypeVar

from nas_optuna.exceptions import ConfigError, UnknownNameError

T = TypeVar("T")


class Registry(Generic[T]):
    """Maps stable names to objects (usually factories).

    Args:
        kind: What the registry holds, used in error messages ("operation", "space", ...).
    """

    def __init__(self, kind: str) -> None:
        self.kind = kind
        self._entries: dict[str, T] = {}

    def register(self, name: str) -> Callable[[T], T]:
        """Decorator registering ``obj`` under ``name``; a name may be registered once."""

        def decorator(obj: T) -> T:
            self.add(name, obj)
            return obj

        return decorator

    def add(self, name: str, obj: T) -> None:
        """Registers ``obj`` under ``name``."""
        if name in self._entries:
            raise ValueError(f"{self.kind} {name!r} is already registered")
        self._entries[name] = obj

    def get(self, name: str) -> T:
        """Returns the entry for ``name``.

        Raises:
            UnknownNameError: ``name`` is not registered; the message lists valid names.
        """
        try:
            return self._entries[name]
        except (KeyError, TypeError):
            choices = ", ".join(sorted(self._entries))
            raise UnknownNameError(
                f"unknown {self.kind} {name!r}; choose one of: {choices}"
            ) from None

    def names(self) -> list[str]:
        """Registered names, in registration order."""
        return list(self._entries)

    def __contains__(self, name: object) -> bool:
        return name in self._entries

    def __iter__(self) -> Iterator[str]:
        return iter(self._entries)

    def __len__(self) -> int:
        return len(self._entries)


def check_options(target: Callable[..., Any], options: Mapping[str, Any], what: str, *,
                  exclude: Iterable[str] = (), required: bool = False) -> None:
    """Checks config ``options`` against the keyword parameters of ``target``.

    Args:
        target: The class or factory the options will be passed to.
        options: The options a config gives.
        what: How the error names the target, e.g. ``"sampler 'tpe'"``.
        exclude: Parameters the caller sets itself (e.g. ``seed``): not options.
        required: Also refuse a parameter without default that ``options`` lacks.

    Raises:
        ConfigError: ``{what} has no option 'x'; accepted: ...`` (or ``needs option``).

    Example:
        >>> def factory(width, depth=2, *, seed=None): ...
        >>> check_options(factory, {"depth": 3}, "toy", exclude={"seed"})
        >>> check_options(factory, {"wdith": 3}, "toy")
        Traceback (most recent call last):
        ...
        nas_optuna.exceptions.ConfigError: toy has no option 'wdith'; accepted: width, depth, seed
    """
    skip = set(exclude)
    parameters = [p for p in inspect.signature(target).parameters.values()
                  if p.name != "self" and p.name not in skip
                  and p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY)]
    accepted = ", ".join(p.name for p in parameters) or "none"
    names = {p.name for p in parameters}
    unknown = sorted(set(options) - names)
    if unknown:
        raise ConfigError(f"{what} has no option {unknown[0]!r}; accepted: {accepted}")
    if required:
        missing = [p.name for p in parameters if p.default is p.empty and p.name not in options]
        if missing:
            raise ConfigError(f"{what} needs option {missing[0]!r}; accepted: {accepted}")


"""The contract every search space fulfils.

A search space knows Optuna's ``trial.suggest_*`` API and torch, nothing else. It turns
a trial into a frozen, JSON-serialisable *architecture* (define-by-run), and an
architecture into a :class:`~nas_optuna.networks.StemDecoderNetwork`. Building a network
never calls Optuna, and :meth:`SearchSpace.from_params` rebuilds an architecture from a
trial's stored ``params`` alone by replaying :meth:`SearchSpace.suggest` on an
:class:`optuna.trial.FixedTrial`, so the stored parameters are the single source of truth.
"""

from __future__ import annotations

import abc
from collections.abc import Mapping
from typing import Any, ClassVar, Generic, TypeVar

import optuna
from torch import nn

from nas_optuna.diagram import ArchitectureGraph
from nas_optuna.exceptions import ConfigError
from nas_optuna.networks import StemDecoderNetwork

__all__ = ["SearchSpace", "ArchT", "genotype_index"]

ArchT = TypeVar("ArchT")


class SearchSpace(abc.ABC, Generic[ArchT]):
    """Base class of the registered search spaces.

    Subclasses set :attr:`name` and :attr:`profiles` and implement the abstract methods.

    Args:
        profile: Name of a size profile, e.g. ``"search"`` (small, fast to train) or
            ``"final"`` (the released models' widths and repeats).
    """

    name: ClassVar[str]
    #: Identifies the stem (architecture and outputs), so that cached stem features and
    #: warm-up weights are shared by every space with the same stem.
    stem_id: ClassVar[str]
    #: Profile name -> settings; the first entry is the default.
    profiles: ClassVar[Mapping[str, Mapping[str, Any]]]
    #: One line for ``nas-optuna spaces``: the paper and what is searched.
    summary: ClassVar[str] = ""

    def __init__(self, profile: str = "search") -> None:
        if profile not in self.profiles:
            choices = ", ".join(self.profiles)
            raise ConfigError(
                f"unknown profile {profile!r} for space {self.name!r}; choose one of: {choices}"
            )
        self.profile = profile
        self.settings: Mapping[str, Any] = self.profiles[profile]

    # --- define-by-run -------------------------------------------------------------
    @abc.abstractmethod
    def suggest(self, trial: optuna.trial.BaseTrial) -> ArchT:
        """Suggests one architecture through ``trial.suggest_*`` calls."""

    def from_params(self, params: Mapping[str, Any]) -> ArchT:
        """Rebuilds the architecture a trial sampled from its stored ``params``.

        Raises:
            ConfigError: A parameter is missing or not a valid choice.
        """
        try:
            return self.suggest(optuna.trial.FixedTrial(dict(params)))
        except (ValueError, KeyError) as error:
            raise ConfigError(
                f"params do not describe a {self.name} architecture: {error}"
            ) from None

    def random_architecture(self, seed: int | None = None) -> ArchT:
        """Samples one architecture uniformly at random (Optuna's RandomSampler)."""
        # A throwaway in-memory study; its "study created" log line is noise here, and the
        # caller's logging level is restored afterwards.
        level = optuna.logging.get_verbosity()
        optuna.logging.set_verbosity(optuna.logging.WARNING)
        try:
            study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=seed))
        finally:
            optuna.logging.set_verbosity(level)
        return self.suggest(study.ask())

    @abc.abstractmethod
    def size(self) -> int:
        """Number of distinct architectures in the space.

        Choices that build the same network (e.g. the two inputs of a symmetric
        aggregation given in either order) count once; the module docstring states which
        symmetries are used, so the figure can be compared with the paper's.
        """

    # --- the authors' genotype lists -----------------------------------------------
    @abc.abstractmethod
    def from_genotype(self, genotype: Any) -> ArchT:
        """Converts the authors' released genotype list into an architecture."""

    @abc.abstractmethod
    def to_genotype(self, arch: ArchT) -> Any:
        """Converts an architecture into the authors' genotype list format."""

    @abc.abstractmethod
    def to_params(self, arch: ArchT) -> dict[str, Any]:
        """The Optuna ``params`` that make :meth:`suggest` produce ``arch``."""

    @abc.abstractmethod
    def describe(self, arch: ArchT) -> str:
        """A readable one-line genotype."""

    def features(self, arch: ArchT) -> dict[str, float]:
        """Numeric descriptors derived from ``arch`` alone (no network is built).

        A surrogate model (:mod:`nas_optuna.surrogate`) uses them beside the raw params:
        a property such as the output stride is a complex function of many params that a
        few hundred trained architectures cannot teach a regressor. The names are fixed
        per space and options; the default is none.

        Example:
            >>> from search_spaces import get_space
            >>> space = get_space("template")
            >>> space.features(space.random_architecture(seed=0))["output_stride"]
            4.0
        """
        return {}

    # --- networks -------------------------------------------------------------------
    @abc.abstractmethod
    def build_stem(self) -> nn.Module:
        """The fixed stem (randomly initialised; the trainer loads or trains weights)."""

    @abc.abstractmethod
    def build_decoder(self, arch: ArchT, num_classes: int) -> nn.Module:
        """The generated part: takes the stem's feature list, returns logits."""

    def build(
        self, arch: ArchT, num_classes: int, stem: nn.Module | None = None
    ) -> StemDecoderNetwork:
        """Builds the whole network; pass ``stem`` to reuse already initialised weights."""
        return StemDecoderNetwork(
            stem if stem is not None else self.build_stem(), self.build_decoder(arch, num_classes)
        )

    def options(self) -> dict[str, Any]:
        """JSON-able description of the space, stored on the study."""
        return {"name": self.name, "profile": self.profile}

    # --- pictures -------------------------------------------------------------------
    @abc.abstractmethod
    def graph(self, arch: ArchT) -> ArchitectureGraph:
        """The architecture as a diagram, built from ``arch`` (the network is not traced).

        Drawn at the level of detail of the paper's figures, for this space's profile and
        options: data flows from the ``input`` nodes to the ``output`` nodes; a design
        shared by several cells may be drawn once, as a separate part with its own input
        and output. Render it with :func:`nas_optuna.diagram.render_svg`.

        Example:
            >>> from nas_optuna.diagram import render_svg
            >>> from search_spaces import get_space
            >>> space = get_space("template")
            >>> svg = render_svg(space.graph(space.random_architecture(seed=0)))
        """


def genotype_index(value: Any) -> int:
    """An index from an authors' genotype list: a non-negative integer (not a bool).

    Raises:
        ValueError: ``value`` is not one.
    """
    if isinstance(value, bool) or int(value) != value or int(value) < 0:
        raise ValueError(f"{value!r} is not a non-negative index")
    return int(value)

"""The name -> factory registry behind ops, spaces, datasets, samplers and pruners."""

from __future__ import annotations

import pytest

from nas_optuna.exceptions import ConfigError, UnknownNameError
from nas_optuna.registry import Registry


def test_register_get_and_list() -> None:
    registry: Registry[int] = Registry("number")
    registry.add("one", 1)

    @registry.register("two")
    def _two() -> int:
        return 2

    assert registry.get("one") == 1
    assert registry.get("two")() == 2
    assert registry.names() == ["one", "two"]
    assert "two" in registry and "three" not in registry
    assert len(registry) == 2


def test_unknown_name_lists_the_choices_and_is_a_config_error() -> None:
    registry: Registry[int] = Registry("number")
    registry.add("one", 1)
    with pytest.raises(UnknownNameError) as info:
        registry.get("uno")
    assert isinstance(info.value, ConfigError)
    assert str(info.value) == "unknown number 'uno'; choose one of: one"


def test_names_register_once() -> None:
    registry: Registry[int] = Registry("number")
    registry.add("one", 1)
    with pytest.raises(ValueError, match="already registered"):
        registry.add("one", 2)


def test_check_options_names_unknown_and_missing_options() -> None:
    import pytest

    from nas_optuna.exceptions import ConfigError
    from nas_optuna.registry import check_options

    class Thing:
        def __init__(self, size: int, colour: str = "red", *, seed: int | None = None) -> None:
            pass

    check_options(Thing, {"size": 1}, "thing 'x'", exclude={"seed"}, required=True)
    with pytest.raises(ConfigError, match=r"^thing 'x' has no option 'seed'; accepted: "
                                          r"size, colour$"):
        check_options(Thing, {"seed": 1}, "thing 'x'", exclude={"seed"})
    with pytest.raises(ConfigError, match=r"^thing 'x' needs option 'size'; accepted: "
                                          r"size, colour, seed$"):
        check_options(Thing, {"colour": "blue"}, "thing 'x'", required=True)

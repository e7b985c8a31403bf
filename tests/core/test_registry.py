"""harness.core.registry: a registry discovers its package's modules, refuses bad and doubled names, and validates
the keys entries declare (Option) as strictly as the harness's own."""

import sys
import textwrap

import pytest

from harness.core import plugins
from harness.core.registry import NAME_LENGTH, InvalidKeys, Option, Registry, did_you_mean, validate_options


@pytest.fixture
def demo_package(tmp_path, monkeypatch):
    """A package ``demo_things`` whose registry THINGS is filled by its modules (one private, left out)."""
    package = tmp_path / "demo_things"
    package.mkdir()
    (package / "__init__.py").write_text(
        "from harness.core.registry import Registry\nTHINGS = Registry('thing', 'demo_things')\n"
    )
    for module, name in [("zeta", "zeta"), ("alpha", "alpha"), ("_private", "hidden")]:
        (package / f"{module}.py").write_text(
            textwrap.dedent(f"""
                from demo_things import THINGS

                @THINGS.register({name!r})
                class Thing:
                    pass
            """)
        )
    monkeypatch.syspath_prepend(str(tmp_path))
    import demo_things

    yield demo_things.THINGS
    plugins.untrack(demo_things.THINGS)
    for name in [m for m in sys.modules if m.startswith("demo_things")]:
        del sys.modules[name]


def test_a_registry_discovers_its_package_on_first_use_and_skips_private_modules(demo_package):
    assert "demo_things.alpha" not in sys.modules  # nothing imported before it is asked
    assert demo_package.names() == ["alpha", "zeta"]
    assert list(demo_package) == ["alpha", "zeta"]  # modules in pkgutil's (alphabetical) order
    assert "hidden" not in demo_package and "alpha" in demo_package
    assert demo_package.get("zeta").__module__ == "demo_things.zeta"
    assert demo_package.source("alpha") is None  # the package's own entry: no plugin hash in the trial id
    with pytest.raises(KeyError, match="unknown thing 'beta'; known: alpha, zeta"):
        demo_package.get("beta")


@pytest.fixture
def things():
    """An empty registry of this test's own, no longer tracked by harness.core.plugins after it."""
    registry = Registry("thing")
    yield registry
    plugins.untrack(registry)


def test_names_must_be_folder_safe_identifiers(things):
    things.register("a" * NAME_LENGTH)(object())
    for bad in ["2fast", "a-b", "a b", "", "a" * (NAME_LENGTH + 1), "../x"]:
        with pytest.raises(plugins.PluginError, match="a name is a letter, then letters, digits or _"):
            things.register(bad)(object())
    assert things.names() == ["a" * NAME_LENGTH]


def test_the_same_entry_twice_is_one_and_another_under_its_name_is_refused(things):
    first = things.register("mixer")(type("Mixer", (), {}))
    assert things.register("mixer")(first) is first  # a module imported twice
    with pytest.raises(plugins.PluginError) as err:
        things.register("mixer")(type("Other", (), {}))
    assert str(err.value) == (
        "the harness: registers thing 'mixer', which the harness already registers; choose another name"
    )
    assert things.items() == [("mixer", first)]


OPTIONS = {
    "dropout": Option(0.1, "the dropout rate", gt=0, lt=1),
    "members": Option(4, "members", ge=1),
    "mode": Option("fast", "how", choices=("fast", "exact")),
}


def test_declared_keys_are_validated_strictly():
    assert validate_options("m", OPTIONS, {"dropout": 0.5, "members": 2, "mode": "exact"}) == {
        "dropout": 0.5,
        "members": 2,
        "mode": "exact",
    }
    assert validate_options("m", OPTIONS, {"dropout": 0.5}) == {"dropout": 0.5}  # only what was set
    with pytest.raises(InvalidKeys) as err:
        validate_options("m", OPTIONS, {"dropout": 1, "members": "2", "mode": "slow", "dropuot": 0.2})
    problems = dict(err.value.problems)
    assert problems["dropout"] == "Input should be less than 1"
    assert problems["members"] == "Input should be a valid integer"  # no '2' for 2
    assert problems["mode"] == "Input should be 'fast' or 'exact'"
    assert problems["dropuot"] == "Extra inputs are not permitted"
    with pytest.raises(InvalidKeys, match="dropout: Input should be a finite number"):
        validate_options("m", OPTIONS, {"dropout": float("nan")})


def test_an_option_describes_its_type_and_bounds():
    assert [o.describe() for o in OPTIONS.values()] == ["float, > 0, < 1", "int, >= 1", "fast | exact"]


def test_did_you_mean_names_the_closest_candidate_or_nothing():
    assert did_you_mean("widht", ["width", "depth", "method"]) == " (did you mean 'width'?)"
    assert did_you_mean("zzz", ["width", "depth"]) == ""

import pytest

from src.utils.registry import Registry


def test_build_passes_kwargs_and_unknown_lists_names():
    reg = Registry("thing")

    @reg.register()
    class Alpha:
        def __init__(self, a=1):
            self.a = a

    @reg.register("beta")
    class Beta:
        pass

    assert reg.build({"type": "Alpha", "a": 3}).a == 3
    with pytest.raises(KeyError) as e:
        reg.build({"type": "Gamma"})
    assert "Alpha" in str(e.value) and "beta" in str(e.value) and "Gamma" in str(e.value)
    with pytest.raises(KeyError, match="'type'"):
        reg.build({"a": 1})
    with pytest.raises(TypeError, match="Alpha"):
        reg.build({"type": "Alpha", "nope": 1})


def test_double_registration_is_refused():
    reg = Registry("thing")

    @reg.register("x")
    class A:
        pass

    with pytest.raises(KeyError, match="already registered"):
        @reg.register("x")
        class B:
            pass


def test_project_registries_are_filled_by_package_imports():
    import src.models  # noqa: F401
    import src.trainer  # noqa: F401
    from src.utils.registry import MODELS, TRAINERS

    assert "MeanScaleDemo" in MODELS
    assert "RateDistortionDemoTrainer" in TRAINERS

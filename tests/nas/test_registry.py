import pytest

from nas.registry import Registry


def test_duplicate_names_are_errors():
    reg = Registry("thing")
    reg.register("a", 1)
    with pytest.raises(ValueError, match="duplicate thing name 'a'"):
        reg.register("a", 2)


def test_unknown_name_lists_valid_ones():
    reg = Registry("thing")
    reg.register("alpha", 1)
    reg.register("beta", 2)
    with pytest.raises(KeyError, match="valid names: alpha, beta"):
        reg.get("gamma")


def test_decorator_form():
    reg = Registry("thing")

    @reg.register("f")
    def f():
        return 3

    assert reg.get("f")() == 3 and "f" in reg and len(reg) == 1


def test_builtin_registries_are_populated():
    from hardware import RUNNERS
    from nas.controllers import CONTROLLERS
    from search_spaces import SPACES

    assert {"mbv3", "mobiledet"} <= set(SPACES)
    assert {"onnxruntime", "torch_cpu"} <= set(RUNNERS)
    assert {"random", "evolution", "tpe", "nsga2"} <= set(CONTROLLERS)

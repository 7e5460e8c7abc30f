"""The ``table`` accuracy source: strict lookups in a CSV benchmark table."""
import pytest

from nas.sources import ACCURACY_SOURCES, make_source
from tests.nas.sources.nb201 import A, B, C, memory_context


@pytest.fixture
def ctx(tmp_path):
    (tmp_path / "acc.csv").write_text(f"index,arch,cifar10,cifar100\n0,{A},93.5,70.1\n1,{B},80.0,50.5\n")
    return memory_context(tmp_path)


def test_looks_up_the_named_column(ctx):
    source = make_source({"table": "acc.csv", "column": "cifar100"}, ACCURACY_SOURCES, ctx, "accuracy")
    space = ctx.space
    assert source.evaluate([space.parse(B), space.parse(A)]) == [{"accuracy": 50.5}, {"accuracy": 70.1}]
    assert source.metrics == {"accuracy": "maximize"}
    assert source.fingerprint()["column"] == "cifar100"


def test_missing_arch_is_named(ctx):
    source = make_source({"table": "acc.csv", "column": "cifar10"}, ACCURACY_SOURCES, ctx, "accuracy")
    with pytest.raises(ValueError, match=r"no row for arch \|avg_pool_3x3~0\|"):
        source.evaluate([ctx.space.parse(C)])


def test_bad_recipes_are_named(ctx, tmp_path):
    with pytest.raises(ValueError, match="no column 'imagenet'; columns: cifar10, cifar100"):
        make_source({"table": "acc.csv", "column": "imagenet"}, ACCURACY_SOURCES, ctx, "accuracy")
    with pytest.raises(ValueError, match=r"accuracy\.column: required key is missing"):
        make_source({"table": "acc.csv"}, ACCURACY_SOURCES, ctx, "accuracy")
    with pytest.raises(FileNotFoundError, match="does not exist"):
        make_source({"table": "nope.csv", "column": "cifar10"}, ACCURACY_SOURCES, ctx, "accuracy")
    (tmp_path / "fb.csv").write_text("arch,cifar10\nk3_e1-skip,50\n")
    with pytest.raises(ValueError, match="line 2: not an arch of space 'nb201'"):
        make_source({"table": "fb.csv", "column": "cifar10"}, ACCURACY_SOURCES, ctx, "accuracy")

"""Search spaces, resolved by name through ``SPACES``."""
from nas.registry import Registry
from search_spaces.base import SearchSpace

SPACES: Registry[type[SearchSpace]] = Registry("search space")


def register_space(cls: type[SearchSpace]) -> type[SearchSpace]:
    SPACES.register(cls.name, cls)
    return cls


def make_space(name: str, **options) -> SearchSpace:
    """Instantiate a registered space; bad options name the space."""
    return SPACES.create(name, **options)


from search_spaces.mbv3 import MBV3Space  # noqa: E402
from search_spaces.mobiledet import MobileDetSpace  # noqa: E402
from search_spaces.hybrid_slm import HybridSLMSpace  # noqa: E402
from search_spaces.nb201 import NB201Space  # noqa: E402
from search_spaces.fbnet import FBNetSpace  # noqa: E402

register_space(MBV3Space)
register_space(MobileDetSpace)
register_space(HybridSLMSpace)
register_space(NB201Space)
register_space(FBNetSpace)

__all__ = ["SPACES", "SearchSpace", "make_space", "register_space"]

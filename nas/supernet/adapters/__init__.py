"""The built-in supernet adapters, one module per search space.

Importing this package registers each adapter in
:data:`nas.supernet.elastic.SUPERNETS` (``nas/supernet/__init__.py`` does, so
any ``nas.supernet`` import has them).  A new space adds a module here that
subclasses :class:`nas.supernet.elastic.Supernet`, registers it, and is
imported below.
"""
from nas.supernet.adapters.mbv3 import MBV3Supernet
from nas.supernet.adapters.mobiledet import MobileDetSupernet

__all__ = ["MBV3Supernet", "MobileDetSupernet"]

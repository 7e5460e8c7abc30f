"""Weight-sharing supernets (once-for-all / BigNAS style) for accuracy estimates.

* :mod:`nas.supernet.elastic`: the engine (slicing, activation, extraction) and
  the ``SUPERNETS`` registry, one supernet per space
* :mod:`nas.supernet.adapters`: one module per space (``mbv3``, ``mobiledet``);
  imported here, so importing any ``nas.supernet`` module registers them
* :mod:`nas.supernet.config`: the recipe's ``supernet:`` section
* :mod:`nas.supernet.train`: sandwich-rule training with in-place distillation,
  checkpoints every epoch and exact resume
* :mod:`nas.supernet.evaluate`: BN recalibration and accuracy of sub-networks
* :mod:`nas.supernet.source`: the ``accuracy: {supernet: CKPT}`` source
"""
from nas.supernet import adapters  # noqa: F401  (registers the built-in supernets)

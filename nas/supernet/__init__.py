"""Weight-sharing supernets (once-for-all / BigNAS style) for accuracy estimates.

* :mod:`nas.supernet.elastic`: the supernets (``SUPERNETS`` registry, one per space)
* :mod:`nas.supernet.config`: the recipe's ``supernet:`` section
* :mod:`nas.supernet.train`: sandwich-rule training with in-place distillation,
  checkpoints every epoch and exact resume
* :mod:`nas.supernet.evaluate`: BN recalibration and accuracy of sub-networks
* :mod:`nas.supernet.source`: the ``accuracy: {supernet: CKPT}`` source
"""

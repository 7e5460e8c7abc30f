"""Pure-PyTorch operators and model of the ``hybrid_slm`` space.

* :mod:`.spec`       layer tokens and :class:`~.spec.SLMConfig` (no torch import)
* :mod:`.layers`     RMSNorm, short causal conv, RoPE, SwiGLU FFN
* :mod:`.attention`  grouped-query full / sliding-window attention + KV cache
* :mod:`.recurrence` the chunked (parallel) and recurrent gated linear scan
* :mod:`.ssm`        Mamba2-style SSM and Gated DeltaNet layers
* :mod:`.model`      :class:`~.model.HybridLM`: prefill, cached decode, generate
* :mod:`.kernels`    optional fused GPU kernels (lazy import)
* :mod:`.cost`       analytic prefill/decode FLOPs, bytes and state size
* :mod:`.export`     checkpoint + JSON config, ONNX prefill graph checked with ONNX Runtime

Kept import-light on purpose: importing the space must not pull in torch.
"""

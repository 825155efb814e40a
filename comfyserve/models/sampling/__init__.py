"""Sampling in the k-diffusion formulation ComfyUI uses.

``schedule`` (model sigmas), ``schedulers`` (step sigmas), ``samplers`` and ``unipc`` (the solvers),
``noise`` (seeded CPU noise), ``prediction``, ``conditioning`` and ``guidance`` (the denoiser with CFG),
``ksampler`` (KSampler's semantics: :func:`~comfyserve.models.sampling.ksampler.run_ksampler`).
"""

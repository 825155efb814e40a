"""Thin Lambda handlers: each builds its dependencies once per cold start and delegates to comfyserve."""

"""adapters/local."""

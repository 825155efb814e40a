"""adapters/aws."""

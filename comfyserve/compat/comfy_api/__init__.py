"""``comfy_api``: the versioned node API (``v0_0_2`` progress helpers, ``latest.io`` V3 schemas) and the video
types (``input``, ``input_impl``, ``util``)."""

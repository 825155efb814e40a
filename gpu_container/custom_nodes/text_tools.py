"""An example pack baked into the image: plain text nodes (no torch, nothing from ComfyUI)."""

from __future__ import annotations

from typing import Any


class TextJoin:
    """Joins two strings with a separator."""

    @classmethod
    def INPUT_TYPES(cls) -> dict[str, Any]:
        return {
            "required": {
                "first": ("STRING", {"default": ""}),
                "second": ("STRING", {"default": ""}),
                "separator": ("STRING", {"default": " "}),
            }
        }

    RETURN_TYPES = ("STRING",)
    FUNCTION = "join"
    CATEGORY = "utils/text"

    def join(self, first: str, second: str, separator: str) -> tuple[str]:
        return (f"{first}{separator}{second}",)


NODE_CLASS_MAPPINGS = {"TextJoin": TextJoin}
NODE_DISPLAY_NAME_MAPPINGS = {"TextJoin": "Join Text"}

"""ComfyUI's model-patch nodes: RescaleCFG (``comfy_extras/nodes_model_advanced``) and FreeU / FreeU_V2
(``comfy_extras/nodes_freelunch``). Each returns a clone of its MODEL carrying the patch; the model it was
given, and the UNet all clones share, are left as they are."""

from __future__ import annotations

from typing import Any

from comfyserve.engine.errors import NodeInputError
from comfyserve.models.freeu import FreeUPatch
from comfyserve.models.handles import DiffusionModel
from comfyserve.models.sampling.cfg import rescale_cfg_function


def _model(model: Any) -> DiffusionModel:
    if not isinstance(model, DiffusionModel):
        raise NodeInputError(f"model must be a MODEL, got {type(model).__name__}")
    return model


class RescaleCFG:
    CATEGORY = "advanced/model"
    RETURN_TYPES = ("MODEL",)
    FUNCTION = "patch"

    @classmethod
    def INPUT_TYPES(cls) -> dict[str, Any]:
        return {
            "required": {
                "model": ("MODEL",),
                "multiplier": ("FLOAT", {"default": 0.7, "min": 0.0, "max": 1.0, "step": 0.01}),
            }
        }

    def patch(self, model: DiffusionModel, multiplier: float) -> tuple[DiffusionModel]:
        return (_model(model).clone(cfg_function=rescale_cfg_function(multiplier)),)


def _scale(default: float) -> tuple[str, dict[str, float]]:
    return ("FLOAT", {"default": default, "min": 0.0, "max": 10.0, "step": 0.01})


def _freeu(model: DiffusionModel, b1: float, b2: float, s1: float, s2: float, v2: bool) -> tuple[DiffusionModel]:
    model = _model(model)
    patch = FreeUPatch(int(model.unet.config.block_out_channels[0]), b1, b2, s1, s2, v2=v2)
    return (model.clone(output_block_patches=(*model.output_block_patches, patch)),)


class FreeU:
    """FreeU: the backbone features of the first two output stages scaled by ``b1``/``b2``, their skip features'
    low frequencies by ``s1``/``s2``."""

    CATEGORY = "model_patches/unet"
    RETURN_TYPES = ("MODEL",)
    FUNCTION = "patch"
    V2 = False
    DEFAULT_B = (1.1, 1.2)

    @classmethod
    def INPUT_TYPES(cls) -> dict[str, Any]:
        b1, b2 = cls.DEFAULT_B
        return {
            "required": {"model": ("MODEL",), "b1": _scale(b1), "b2": _scale(b2), "s1": _scale(0.9), "s2": _scale(0.2)}
        }

    def patch(self, model: DiffusionModel, b1: float, b2: float, s1: float, s2: float) -> tuple[DiffusionModel]:
        return _freeu(model, b1, b2, s1, s2, v2=self.V2)


class FreeU_V2(FreeU):
    """FreeU_V2: the backbone scale weighted by each pixel's normalised mean activation."""

    V2 = True
    DEFAULT_B = (1.3, 1.4)


NODE_CLASS_MAPPINGS = {"RescaleCFG": RescaleCFG, "FreeU": FreeU, "FreeU_V2": FreeU_V2}

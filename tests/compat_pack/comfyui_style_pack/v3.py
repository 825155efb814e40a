from comfy_api.latest import ComfyExtension, io


class PackScale(io.ComfyNode):
    @classmethod
    def define_schema(cls):
        return io.Schema(
            node_id="PackScale",
            display_name="Pack Scale",
            category="_for_testing",
            inputs=[
                io.Image.Input("image"),
                io.Float.Input("factor", default=1.0, min=0.0, max=4.0),
                io.Combo.Input("mode", options=["multiply", "add"]),
            ],
            outputs=[io.Image.Output(display_name="scaled")],
            hidden=[io.Hidden.unique_id],
        )

    @classmethod
    def validate_inputs(cls, factor, mode):
        return True if factor != 3.0 else "3.0 is unlucky"

    @classmethod
    def execute(cls, image, factor, mode):
        scaled = image * factor if mode == "multiply" else image + factor
        return io.NodeOutput(scaled, ui={"node": [cls.hidden.unique_id]})


class Extension(ComfyExtension):
    async def get_node_list(self):
        return [PackScale]


async def comfy_entrypoint():
    return Extension()

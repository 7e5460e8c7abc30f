import numpy as np
import pytest

from hardware.onnx_io import export_onnx, verify_onnx
from search_spaces import make_space

SMALL = {"mbv3": {"resolutions": [32], "widths": [0.75], "num_classes": 10},
         "mobiledet": {"resolutions": [32], "num_classes": 10}}


@pytest.mark.parametrize("name", ["mbv3", "mobiledet"])
def test_exported_onnx_reproduces_pytorch(tmp_path, name):
    space = make_space(name, **SMALL[name])
    arch = space.sample(np.random.default_rng(0))
    model = space.build(arch)
    path = tmp_path / "m.onnx"
    export_onnx(model, space.example_input(arch), path)
    assert path.stat().st_size > 0
    assert verify_onnx(path, model, space.example_input(arch, seed=1)) <= 1e-4

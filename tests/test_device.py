import pytest
import torch

from qsenn_core.device import prepare_model, resolve_device, to_device
from qsenn_core.errors import ParamsError


def test_resolve_device_rules() -> None:
    assert resolve_device("cpu") == torch.device("cpu")
    expected = "cuda" if torch.cuda.is_available() else "cpu"
    assert resolve_device("auto").type == expected
    assert resolve_device(None).type == expected
    assert resolve_device(torch.device("cpu")) == torch.device("cpu")
    with pytest.raises(ParamsError, match="device: 'tpu' is not one of auto, cpu, cuda"):
        resolve_device("tpu")
    if not torch.cuda.is_available():
        with pytest.raises(ParamsError, match="device: cuda"):
            resolve_device("cuda")


def test_cpu_moves_keep_layout() -> None:
    cpu = torch.device("cpu")
    images = torch.zeros(2, 3, 4, 4)
    assert to_device(images, cpu).is_contiguous()
    model = prepare_model(torch.nn.Conv2d(3, 1, 1), cpu)
    assert next(model.parameters()).device == cpu

"""Export for deployment: ONNX run in ONNX Runtime and torch.export programs match PyTorch with the same noise,
at any batch size; untraceable classifiers and refused sizes get errors that name the cause."""

from __future__ import annotations

import json

import pytest
import torch
from torch import nn

from impure import PurifiedClassifier, Purifier, PurifierConfig
from impure.cli import main
from impure.export import ExportError, export_onnx, export_program, exported_inputs

ort = pytest.importorskip("onnxruntime", reason="ONNX Runtime runs the exported files: pip install -e '.[test]'")


def _purifier(preset: str, **overrides) -> Purifier:
    torch.manual_seed(0)
    return Purifier(PurifierConfig.preset(preset, **overrides)).eval()


class SmallClassifier(nn.Module):
    """A traceable stand-in for a deployed classifier: images in [0, 1] -> 10 logits."""

    def __init__(self) -> None:
        super().__init__()
        self.features = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.ReLU(), nn.AdaptiveAvgPool2d(1))
        self.head = nn.Linear(8, 10)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.head(self.features((images - 0.5) / 0.25).flatten(1))


def _reference(model: nn.Module, inputs: dict[str, torch.Tensor]) -> torch.Tensor:
    purifier = model.purifier if isinstance(model, PurifiedClassifier) else model
    noise = {k: v for k, v in inputs.items() if k != "images"}
    with torch.no_grad():
        purified = purifier(inputs["images"], **noise)
        return model.classifier(purified) if isinstance(model, PurifiedClassifier) else purified


@pytest.mark.parametrize("preset", ["tiny", "tiny-conv"])
def test_onnx_in_onnx_runtime_matches_pytorch_with_the_same_noise_at_any_batch(tmp_path, preset):
    torch.manual_seed(1)
    model = PurifiedClassifier(_purifier(preset), SmallClassifier().eval()).eval()
    path = export_onnx(model, tmp_path / "defended.onnx", batch_size=2)
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    assert [i.name for i in session.get_inputs()] == ["images", "image_noise", "feature_noise"]
    assert [o.name for o in session.get_outputs()] == ["logits"]
    for batch in (1, 5):  # traced with 2: the batch size is free
        inputs = exported_inputs(model, batch_size=batch, seed=batch)
        logits = session.run(None, {name: tensor.numpy() for name, tensor in inputs.items()})[0]
        torch.testing.assert_close(torch.from_numpy(logits), _reference(model, inputs), atol=1e-4, rtol=0)
    manifest = json.loads((tmp_path / "defended.onnx.json").read_text())
    width = 16 if preset == "tiny-conv" else 32
    assert manifest["inputs"] == {"images": ["batch", 3, 32, 32], "image_noise": ["batch", 3, 32, 32],
                                  "feature_noise": ["batch", 64, width]}
    assert manifest["output"] == "logits" and manifest["noise_t"] == [400, 600]


def test_a_torch_export_program_of_the_bundled_purifier_replays_its_noise(tmp_path):
    purifier = Purifier.from_pretrained("impure/cifar10")
    path = export_program(purifier, tmp_path / "purifier.pt2")
    module = torch.export.load(str(path)).module()
    inputs = exported_inputs(purifier, batch_size=3, seed=4)
    with torch.no_grad():
        torch.testing.assert_close(module(*inputs.values()), _reference(purifier, inputs), atol=1e-5, rtol=0)
    assert not list(tmp_path.glob(".*"))  # written atomically: no temporary file left


def test_a_token_mode_purifier_has_no_noise_inputs_and_a_fixed_batch_can_be_asked_for(tmp_path):
    purifier = _purifier("tiny", mask_mode="token")
    path = export_onnx(purifier, tmp_path / "token.onnx", batch_size=3, dynamic_batch=False, image_size=(24, 40))
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    assert [(i.name, i.shape) for i in session.get_inputs()] == [("images", [3, 3, 24, 40])]
    inputs = exported_inputs(purifier, batch_size=3, image_size=(24, 40))
    purified = session.run(None, {"images": inputs["images"].numpy()})[0]
    torch.testing.assert_close(torch.from_numpy(purified), _reference(purifier, inputs), atol=1e-4, rtol=0)


class Untraceable(SmallClassifier):
    def forward(self, images: torch.Tensor) -> torch.Tensor:
        if images.mean() > 0.5:  # Python control flow on a tensor's value
            return super().forward(images)
        return -super().forward(images)


def test_bad_exports_name_their_cause(tmp_path):
    purifier = _purifier("tiny")
    with pytest.raises(ExportError, match=r"the classifier \(Untraceable\) cannot be traced by torch\.export"):
        export_program(PurifiedClassifier(purifier, Untraceable().eval()), tmp_path / "x.pt2")
    with pytest.raises(ExportError, match=r"image_size 80x80 exceeds the largest size this purifier takes, 64 px"):
        export_program(purifier, tmp_path / "x.pt2", image_size=80)
    with pytest.raises(ExportError, match="export takes a Purifier"):
        export_program(nn.Identity(), tmp_path / "x.pt2")
    assert not (tmp_path / "x.pt2").exists()


def test_the_export_command_writes_the_file_and_its_inputs(tmp_path, capsys):
    folder = tmp_path / "tiny"
    _purifier("tiny-conv").save_pretrained(folder)
    out = tmp_path / "served" / "purifier.onnx"
    assert main(["export", "-o", str(out), "--purifier", str(folder), "--noise-t", "100/150"]) == 0
    manifest = json.loads((tmp_path / "served" / "purifier.onnx.json").read_text())
    assert out.is_file() and manifest["noise_t"] == [100, 150]
    assert main(["export", "-o", str(out), "--purifier", str(folder)]) == 1  # never replaced without --force
    assert "pass --force" in capsys.readouterr().err
    assert main(["export", "-o", str(tmp_path / "x.bin"), "--purifier", str(folder)]) == 1
    assert "name it .onnx or .pt2" in capsys.readouterr().err

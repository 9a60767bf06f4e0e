"""Model cards: what `save_pretrained` and `push_to_hub` write, parsed back with `huggingface_hub.ModelCard`."""

from __future__ import annotations

import pytest
import torch
from huggingface_hub import ModelCard

from impure import Purifier, PurifierConfig
from impure.classifiers import cifar_resnet20
from impure.data import load_npz
from impure.evaluation import evaluate


@pytest.fixture(scope="module")
def purifier():
    torch.manual_seed(0)
    return Purifier(PurifierConfig.preset("tiny")).eval()


@pytest.fixture(scope="module")
def result(shared_dir, purifier):
    images, labels = load_npz(shared_dir / "data" / "cifar10" / "test_dev.npz")
    classifier = cifar_resnet20(shared_dir / "models" / "cifar10_resnet20.safetensors")
    return evaluate(classifier, (images[:8], labels[:8]), purifier, attacks=["fgsm"], threat="both",
                    eot_samples=2, batch_size=8, device="cpu", progress=False)


def test_save_pretrained_writes_a_card_the_hub_parses(tmp_path, purifier):
    purifier.save_pretrained(tmp_path / "plain")
    card = ModelCard.load(tmp_path / "plain" / "README.md")
    assert card.data.library_name == "impure" and card.data.license == "mit"
    assert {"adversarial-purification", "arxiv:2311.15339"} <= set(card.data.tags)
    assert card.data.datasets == ["cifar10"]  # a 32-px purifier
    assert "More Information Needed" not in card.text and "https://arxiv.org/abs/2311.15339" in card.text
    config = purifier.config
    assert f"ViT, width {config.encoder_width}, depth {config.encoder_depth}" in card.text
    assert 'Purifier.from_pretrained("my-impure-purifier")' in card.text
    assert card.data.eval_results is None  # nothing measured, no model-index
    assert "pixel head" not in card.text and "noisy-pixel skip" not in card.text  # options off: no rows


@pytest.mark.parametrize("option", [dict(pixel_head_width=8), dict(noisy_skip=True)])
def test_the_card_names_the_design_options_beyond_the_reference(tmp_path, option):
    """A checkpoint of a design `from_reference` cannot build says so on its card, with its setting."""
    config = PurifierConfig.preset("tiny", **option)
    Purifier(config).save_pretrained(tmp_path)
    text = ModelCard.load(tmp_path / "README.md").text
    if "pixel_head_width" in option:
        assert "| pixel head | 8 channels, three 3 x 3 convolutions per decoder copy" in text
    else:
        assert "| noisy-pixel skip | a per-patch linear map" in text and "sigma_data 0.5" in text


def test_evaluation_and_training_go_on_the_card_and_into_the_model_index(tmp_path, purifier, result):
    folder = tmp_path / "measured"
    purifier.save_pretrained(folder)
    (folder / "README.md").write_text("my own card")
    purifier.save_pretrained(folder)
    assert (folder / "README.md").read_text() == "my own card"  # a card is kept unless a new one is asked for
    purifier.save_pretrained(folder, evaluation=result, training={"stage": "finetune", "optim": {"steps": 7}},
                             name="someone/tiny")
    card = ModelCard.load(folder / "README.md")
    assert card.data.model_name == "someone/tiny" and "# someone/tiny" in card.text
    metrics = {entry.metric_name: entry.metric_value for entry in card.data.eval_results}
    assert metrics[f"clean accuracy ({result.classifier})"] == round(100 * result.defended_accuracy, 2)
    grey = next(name for name in metrics if name.startswith("grey-box robust accuracy, mean of fgsm"))
    assert metrics[grey] == round(100 * result.mean["grey-box"], 2)
    assert "model-index" in (folder / "README.md").read_text()
    assert f"| fgsm | {100 * result.robust_accuracy('fgsm'):.1f} | " in card.text
    assert "8 images" in card.text and "EOT over 2 draws" in card.text
    assert "- `optim`: steps = 7" in card.text and "- `stage`: finetune" in card.text
    loaded = Purifier.from_pretrained(folder)  # the card does not disturb loading
    assert loaded.config == purifier.config


def test_push_to_hub_uploads_the_card_named_after_the_repository(tmp_path, purifier, result, monkeypatch):
    from huggingface_hub import hub_mixin

    uploaded = {}

    class FakeApi:  # no Hub here: capture what would be uploaded
        def __init__(self, token=None):
            pass

        def create_repo(self, repo_id, **kwargs):
            return type("Repo", (), {"repo_id": repo_id})()

        def upload_folder(self, repo_id, folder_path, **kwargs):
            uploaded.update({path.name: path.read_bytes() for path in folder_path.iterdir()})
            return f"https://huggingface.co/{repo_id}/commit/0"

    monkeypatch.setattr(hub_mixin, "HfApi", FakeApi)
    url = purifier.push_to_hub("someone/tiny-purifier", evaluation=result)
    assert url.endswith("/commit/0")
    assert {"config.json", "model.safetensors", "README.md"} <= set(uploaded)
    card = ModelCard(uploaded["README.md"].decode())
    assert card.data.model_name == "someone/tiny-purifier" and card.data.eval_results

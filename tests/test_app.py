"""`impure app`: the Gradio web demo, served on 127.0.0.1 and driven through gradio_client (real HTTP)."""

from __future__ import annotations

import socket

import numpy as np
import pytest
from PIL import Image

from impure.app import attack_and_purify, sample_names
from impure.cli import main
from impure.demo import CIFAR10_CLASSES, load_demo_images

gradio = pytest.importorskip("gradio", reason='the web demo needs the app extra: pip install "impure[app]"')
gradio_client = pytest.importorskip("gradio_client", reason="gradio_client comes with the app extra")


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@pytest.fixture(scope="module")
def served():
    from impure.app import serve

    port = _free_port()
    app = serve("127.0.0.1", port, block=False, quiet=True)
    yield f"http://127.0.0.1:{port}/"
    app.close()


def test_the_page_attacks_and_purifies_through_http(served):
    client = gradio_client.Client(served, verbose=False)
    sample = sample_names()[0]
    outputs = client.predict(None, sample, "impure/cifar10", "impure/cifar10-resnet20", "PGD", 8, 5, 1.0, 0,
                             api_name="/purify")
    clean, adversarial, purified, residual, clean_top, adversarial_top, purified_top = outputs
    images = [np.asarray(Image.open(path).convert("RGB")) for path in (clean, adversarial, purified, residual)]
    assert all(image.shape == (224, 224, 3) for image in images)
    # The clean image is the sample, upscaled 7x; the adversarial one differs by at most 8/255.
    expected = (load_demo_images()[0][0].permute(1, 2, 0).numpy() * 255).round().astype(np.uint8)
    np.testing.assert_array_equal(images[0][::7, ::7], expected)
    assert np.abs(images[1].astype(int) - images[0].astype(int)).max() <= 8
    for top in (clean_top, adversarial_top, purified_top):
        assert len(top["confidences"]) == 3 and top["label"] in CIFAR10_CLASSES
    assert clean_top["label"] == "airplane" != adversarial_top["label"]  # PGD fools the bare classifier
    direct = attack_and_purify(None, sample, steps=5)  # what the page shows is the library's result
    assert purified_top["label"] == max(direct["purified_top3"], key=direct["purified_top3"].get)


def test_an_uploaded_image_is_resized_and_a_bad_choice_is_a_message(served, tmp_path):
    client = gradio_client.Client(served, verbose=False)
    photo = tmp_path / "photo.png"
    Image.fromarray(np.random.default_rng(0).integers(0, 255, (96, 128, 3), dtype=np.uint8)).save(photo)
    outputs = client.predict(gradio_client.handle_file(str(photo)), None, "impure/cifar10",
                             "impure/cifar10-resnet20", "FGSM", 4, 1, 1.0, 0, api_name="/purify")
    assert np.asarray(Image.open(outputs[0])).shape[:2] == (224, 224)
    with pytest.raises(Exception, match="no bundled weights named 'impure/nope'"):
        client.predict(None, sample_names()[0], "impure/nope", "impure/cifar10-resnet20", "PGD", 8, 2, 1.0, 0,
                       api_name="/purify")


def test_cli_has_host_and_port_options(capsys):
    with pytest.raises(SystemExit):
        main(["app", "--help"])
    text = capsys.readouterr().out
    assert "--host" in text and "127.0.0.1" in text and "--port" in text

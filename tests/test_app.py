"""`impure app`: the Gradio web demo, served on 127.0.0.1 and driven through gradio_client (real HTTP)."""

from __future__ import annotations

import socket
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from impure.app import attack_and_purify, sample_names
from impure.cli import main
from impure.demo import CIFAR10_CLASSES, DEFAULT_CLASSIFIER, load_demo_images

gradio = pytest.importorskip("gradio", reason='the web demo needs the app extra: pip install "impure[app]"')
gradio_client = pytest.importorskip("gradio_client", reason="gradio_client comes with the app extra")
RECIPES = Path(__file__).resolve().parents[1] / "recipes"


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@pytest.fixture(scope="module")
def served():
    from impure.app import serve

    port = _free_port()
    app = serve("127.0.0.1", port, block=False)
    yield f"http://127.0.0.1:{port}/"
    app.close()


def test_the_page_attacks_and_purifies_through_http(served):
    client = gradio_client.Client(served, verbose=False)
    sample = sample_names()[0]
    outputs = client.predict(None, sample, "impure/cifar10", DEFAULT_CLASSIFIER, "PGD", 8, 5, 1.0, 0,
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
                             DEFAULT_CLASSIFIER, "FGSM", 4, 1, 1.0, 0, api_name="/purify")
    assert np.asarray(Image.open(outputs[0])).shape[:2] == (224, 224)
    with pytest.raises(Exception, match="no bundled weights named 'impure/nope'"):
        client.predict(None, sample_names()[0], "impure/nope", DEFAULT_CLASSIFIER, "PGD", 8, 2, 1.0, 0,
                       api_name="/purify")


def test_cli_has_host_and_port_options(capsys):
    with pytest.raises(SystemExit):
        main(["app", "--help"])
    text = capsys.readouterr().out
    assert "--host" in text and "127.0.0.1" in text and "--port" in text


def test_the_page_opens_on_a_worked_example_the_defence_saves_beside_the_measured_rate():
    from impure.app import build_app, saved_example
    from impure.demo import CIFAR10_CLASSES, load_demo_images

    app = build_app()
    values = {c["props"].get("label"): c["props"].get("value") for c in app.config["components"]}
    sample = saved_example()
    example = attack_and_purify(None, sample)  # the page's defaults: PGD-10 at 8/255, seed 0
    truth = CIFAR10_CLASSES[int(load_demo_images()[1][sample_names().index(sample)])]
    tops = {name: max(example[f"{name}_top3"], key=example[f"{name}_top3"].get)
            for name in ("clean", "adversarial", "purified")}
    assert tops == {"clean": truth, "adversarial": tops["adversarial"], "purified": truth}
    assert tops["adversarial"] != truth  # the attack fools the bare classifier; the purifier saves it
    from impure.app import measured_rate

    shown = [c["props"]["value"] for c in app.config["components"] if c["props"].get("elem_id") == "measured-rate"]
    assert shown == [measured_rate()] and "% are not saved" in shown[0]  # from the classifier's card
    for label in ("clean", "adversarial", "purified"):
        assert values[label] is not None, f"the {label!r} image is empty when the page opens"
    for name, label in (("clean", "clean: top-3"), ("purified", "purified adversarial: top-3")):
        assert values[label]["label"] == max(example[f"{name}_top3"], key=example[f"{name}_top3"].get)


def test_serving_prints_no_share_hint(capfd):
    from impure.app import serve

    app = serve("127.0.0.1", _free_port(), block=False)
    app.close()
    assert "share=True" not in capfd.readouterr().out


@pytest.mark.parametrize("width,height", [(1400, 1000), (1000, 800)])
def test_the_first_view_in_headless_chromium_shows_the_example_and_the_button_and_cuts_no_label(
        served, tmp_path, monkeypatch, width, height):
    pytest.importorskip("playwright", reason="the screenshot test needs playwright (the test extra)")
    monkeypatch.syspath_prepend(str(RECIPES))
    import screenshot_app

    from impure.app import saved_example

    if screenshot_app.find_chromium() is None:
        pytest.skip("no Chromium on PATH (Debian: apt-get install chromium); .ci/run installs it where it can")
    view = screenshot_app.first_view(served, tmp_path / "app.png", width=width, height=height)
    button = view["button"]
    assert button is not None and button["y"] + button["height"] <= height, f"run button below the fold: {button}"
    assert view["images"] >= 4  # clean, adversarial, purified and residual, already computed
    assert view["clipped"] == [], f"texts cut off at {width} x {height}: {view['clipped']}"
    example = attack_and_purify(None, saved_example())
    assert view["labels"][0] == max(example["clean_top3"], key=example["clean_top3"].get)
    screenshot = Image.open(tmp_path / "app.png")
    assert screenshot.size == (width, height)


def test_every_failure_reaches_the_page_as_the_library_s_message_and_8_requests_are_served_at_once(served, tmp_path):
    """A real client: a file that is not an image, an image too large and an image in a mode without RGB each get
    the library's own message; 8 concurrent requests all get their results."""
    from concurrent.futures import ThreadPoolExecutor

    client = gradio_client.Client(served, verbose=False)
    settings = ("impure/cifar10", DEFAULT_CLASSIFIER, "FGSM", 4, 1, 1.0, 0)
    (tmp_path / "notes.png").write_text("not an image")
    Image.new("L", (8000, 5001)).save(tmp_path / "huge.png")  # 40.008 megapixels, cheap to write
    Image.new("I;16", (40, 40)).save(tmp_path / "deep.png")  # a 16-bit grey PNG: converts, so it is served
    for name, message in (("notes.png", "notes.png is not an image this page can read"),
                          ("huge.png", "huge.png is 8000 x 5001 pixels, larger than the 40 megapixels")):
        with pytest.raises(Exception, match=message):
            client.predict(gradio_client.handle_file(str(tmp_path / name)), None, *settings, api_name="/purify")
    deep = client.predict(gradio_client.handle_file(str(tmp_path / "deep.png")), None, *settings, api_name="/purify")
    assert np.asarray(Image.open(deep[0])).shape[:2] == (224, 224)

    def one(index: int) -> str:
        outputs = gradio_client.Client(served, verbose=False).predict(
            None, sample_names()[index], *settings, api_name="/purify")
        return outputs[4]["label"]

    with ThreadPoolExecutor(8) as pool:
        labels = list(pool.map(one, range(8)))
    assert len(labels) == 8 and all(label in CIFAR10_CLASSES for label in labels)

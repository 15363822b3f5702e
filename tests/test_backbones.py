"""Backbone weights: none, a local file, an http URL (loopback server), and the offline error."""

from __future__ import annotations

import functools
import http.server
import threading
from pathlib import Path

import pytest
import torch
import torchvision

from nevisbench.run.backbones import build_backbone
from nevisbench.errors import ConfigError


@pytest.fixture
def reference_weights(tmp_path: Path) -> tuple[Path, dict[str, torch.Tensor]]:
    model = torchvision.models.resnet18()
    path = tmp_path / "serve" / "resnet18-tiny.pth"
    path.parent.mkdir()
    torch.save(model.state_dict(), path)
    return path, model.state_dict()


def test_none_gives_random_features_of_the_right_width():
    model, dim = build_backbone("resnet18", "none")
    assert dim == 512 and model(torch.randn(2, 3, 32, 32)).shape == (2, 512)


def test_local_file_is_loaded_without_its_classifier(reference_weights):
    path, state = reference_weights
    model, _ = build_backbone("resnet18", str(path))
    assert torch.equal(model.conv1.weight, state["conv1.weight"])
    assert not any(k.startswith("fc.") for k in model.state_dict())


def test_url_is_downloaded_into_the_hub_cache(reference_weights, tmp_path):
    path, state = reference_weights
    handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=str(path.parent))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        url = f"http://127.0.0.1:{server.server_address[1]}/{path.name}"
        model, _ = build_backbone("resnet18", url)
    finally:
        server.shutdown()
    assert torch.equal(model.layer4[1].conv2.weight, state["layer4.1.conv2.weight"])
    assert (Path(torch.hub.get_dir()) / "checkpoints" / path.name).is_file()


def test_unreachable_weights_give_a_clear_error():
    with pytest.raises(ConfigError) as info:
        build_backbone("resnet18", "http://127.0.0.1:9/resnet18.pth")  # nothing listens on port 9
    message = str(info.value)
    assert "Cannot download backbone weights for resnet18" in message
    assert "backbone.weights=/path/to/resnet18.pth" in message and "backbone.weights=none" in message


def test_weights_of_another_architecture_are_refused(reference_weights):
    path, _ = reference_weights
    with pytest.raises(ConfigError, match="do not fit resnet50"):
        build_backbone("resnet50", str(path))

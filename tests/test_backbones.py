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


def _serve(folder: Path):
    handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=str(folder))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server


@pytest.mark.parametrize(("content", "expected"), [
    (b"", "the file is empty"),
    (b"hello, I am a text file\n", "not a readable PyTorch state dict"),
])
def test_a_local_file_that_is_not_weights_is_one_clear_line(tmp_path, content, expected):
    path = tmp_path / "weights.pth"
    path.write_bytes(content)
    with pytest.raises(ConfigError) as info:
        build_backbone("resnet18", str(path))
    message = str(info.value)
    assert expected in message and "\n" not in message and "weights_only=False" not in message


def test_a_file_holding_something_else_than_a_state_dict_is_refused(tmp_path):
    path = tmp_path / "list.pth"
    torch.save([1, 2, 3], path)
    with pytest.raises(ConfigError, match="is not a state dict of tensors"):
        build_backbone("resnet18", str(path))
    with pytest.raises(ConfigError, match="no such file"):
        build_backbone("resnet18", str(tmp_path / "missing.pth"))


def test_a_url_serving_something_else_leaves_nothing_in_the_hub_cache(tmp_path):
    served = tmp_path / "serve"
    served.mkdir()
    torch.save({"not": "tensors"}, served / "bad.pth")
    (served / "text.pth").write_text("<html>proxy login</html>")
    server = _serve(served)
    try:
        for name, expected in (("bad.pth", "is not a state dict of tensors"), ("text.pth", "are invalid")):
            url = f"http://127.0.0.1:{server.server_address[1]}/{name}"
            with pytest.raises(ConfigError, match=expected):
                build_backbone("resnet18", url)
            assert not (Path(torch.hub.get_dir()) / "checkpoints" / name).exists()
    finally:
        server.shutdown()

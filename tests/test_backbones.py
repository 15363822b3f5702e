"""Backbones: the registry (every entry built, run and counted at a small size), the learners'
family rules, learners that bring their own network, what results and `flops` name; and weights:
none, a local file, an http URL (loopback server), the offline error."""

from __future__ import annotations

import functools
import http.server
import json
import threading
from pathlib import Path

import pytest
import torch
import torchvision
from conftest import register_learner, run_cli
from torch import nn

from nevisbench.analysis.labels import label_runs
from nevisbench.analysis.runs import _run as read_summary
from nevisbench.backbones import (
    FAMILIES,
    REGISTRY_TAG,
    backbone_spec,
    create_backbone,
    list_backbones,
    register_backbone,
    registry,
)
from nevisbench.backbones.weights import cached_path
from nevisbench.compute.flops import StepCounter
from nevisbench.config import compose
from nevisbench.errors import ConfigError, PluginError
from nevisbench.run.learner.backbone import build_backbone, describe_backbone, start_backbone
from nevisbench.run.learner.plugin import build_learner
from nevisbench.run.probe import step_flops
from nevisbench.run.runner import run
from nevisbench.testing import TINY


@pytest.fixture
def reference_weights(tmp_path: Path) -> tuple[Path, dict[str, torch.Tensor]]:
    model = torchvision.models.resnet18()
    path = tmp_path / "serve" / "resnet18-tiny.pth"
    path.parent.mkdir()
    torch.save(model.state_dict(), path)
    return path, model.state_dict()


def test_none_gives_random_features_of_the_right_width():
    model, dim = build_backbone("resnet18", "none", image_size=32)
    assert dim == 512 and model(torch.randn(2, 3, 32, 32)).shape == (2, 512)


def test_local_file_is_loaded_without_its_classifier(reference_weights):
    path, state = reference_weights
    model, _ = build_backbone("resnet18", str(path), image_size=32)
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
        model, _ = build_backbone("resnet18", url, image_size=32)
    finally:
        server.shutdown()
    assert torch.equal(model.layer4[1].conv2.weight, state["layer4.1.conv2.weight"])
    assert cached_path(url).is_file()  # keyed by the whole URL (tests/test_offline.py)


def test_unreachable_weights_give_a_clear_error():
    with pytest.raises(ConfigError) as info:
        build_backbone("resnet18", "http://127.0.0.1:9/resnet18.pth", image_size=32)  # nothing listens on port 9
    message = str(info.value)
    assert "Cannot download backbone weights for resnet18" in message
    assert "backbone.weights=/path/to/resnet18.pth" in message and "backbone.weights=none" in message


def test_weights_of_another_architecture_are_refused(reference_weights):
    path, _ = reference_weights
    with pytest.raises(ConfigError, match="do not fit resnet50"):
        build_backbone("resnet50", str(path), image_size=32)


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
        build_backbone("resnet18", str(path), image_size=32)
    message = str(info.value)
    assert expected in message and "\n" not in message and "weights_only=False" not in message


def test_a_file_holding_something_else_than_a_state_dict_is_refused(tmp_path):
    path = tmp_path / "list.pth"
    torch.save([1, 2, 3], path)
    with pytest.raises(ConfigError, match="is not a state dict of tensors"):
        build_backbone("resnet18", str(path), image_size=32)
    with pytest.raises(ConfigError, match="no such file"):
        build_backbone("resnet18", str(tmp_path / "missing.pth"), image_size=32)


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
                build_backbone("resnet18", url, image_size=32)
            assert not cached_path(url).exists()
    finally:
        server.shutdown()


# ---- the registry: every entry is built, run and counted the moment it is registered ----

def _params(name: str) -> int:
    """Parameters of a registry entry without building it (torchvision's weight metadata)."""
    spec = backbone_spec(name)
    return torchvision.models.get_model_weights(name).DEFAULT.meta["num_params"] if spec.pretrained else 0


def _size(name: str) -> int:
    """The smallest size >= 32 the entry takes."""
    spec = backbone_spec(name)
    size = max(32, spec.min_image_size)
    return -(-size // spec.image_multiple) * spec.image_multiple


# entries over 30M parameters take seconds each to build on a CPU: the slow tier builds them
REGISTERED = [pytest.param(n, marks=pytest.mark.slow) if _params(n) > 30e6 else n for n in list_backbones()]
SMALL = [n for n in list_backbones() if _params(n) <= 6e6]


@pytest.mark.parametrize("name", REGISTERED)
def test_every_registered_backbone_gives_pooled_features_of_its_feature_dim(name):
    model, dim = create_backbone(name, image_size=_size(name))
    assert model.train()(torch.randn(2, 3, _size(name), _size(name))).shape == (2, dim)
    assert not any(isinstance(m, nn.Linear) and m.out_features == 1000 for m in model.modules())  # no ImageNet head


@pytest.mark.parametrize("name", SMALL)
def test_a_training_step_of_every_small_backbone_is_counted(name):
    model, dim = create_backbone(name, image_size=_size(name))
    with StepCounter(model) as counter:
        model(torch.randn(2, 3, _size(name), _size(name))).sum().backward()
    assert counter.result(2).algo_forward > 0 and counter.result(2).algo_backward > counter.result(2).algo_forward


def test_torchvision_entries_are_torchvision_names_and_the_families_are_all_there():
    known = set(torchvision.models.list_models(module=torchvision.models))
    assert {n for n in list_backbones() if backbone_spec(n).source == "torchvision"} <= known
    assert {backbone_spec(n).family for n in list_backbones()} == set(FAMILIES)
    assert {"mobilenet_v3_small", "efficientnet_b0", "convnext_tiny", "vit_b_16", "vit_tiny", "resnet50"} <= set(list_backbones())


def test_feature_dims_are_derived_from_the_network():
    assert create_backbone("mobilenet_v3_small", image_size=32)[1] == 1024  # its pre-logits layer
    assert create_backbone("vit_tiny", image_size=32)[1] == 192
    assert create_backbone("regnet_x_400mf", image_size=32)[1] == 400


def test_a_new_entry_is_created_and_a_name_registered_twice_is_refused(monkeypatch):
    monkeypatch.setattr(registry, "_REGISTRY", dict(registry._REGISTRY))

    @register_backbone("pool_only", family="resnet")
    def pool_only(*, image_size):
        return nn.Sequential(nn.Conv2d(3, 5, 1), nn.AdaptiveAvgPool2d(1), nn.Flatten())

    model, dim = create_backbone("pool_only", image_size=16)
    assert dim == 5 and getattr(model, REGISTRY_TAG) == "pool_only"
    with pytest.raises(ConfigError, match="Backbone 'pool_only' is registered twice"):
        register_backbone("pool_only", family="resnet")(pool_only)

    @register_backbone("unpooled", family="resnet")
    def unpooled(*, image_size):
        return nn.Conv2d(3, 5, 1)

    with pytest.raises(ConfigError, match=r"Backbone 'unpooled' returns \(1, 5, 16, 16\), not pooled features"):
        create_backbone("unpooled", image_size=16)


def test_vit_weights_are_fitted_to_the_run_s_image_size(tmp_path):
    source, _ = create_backbone("vit_tiny", image_size=32)
    path = tmp_path / "vit.pth"
    torch.save(source.state_dict(), path)
    model, _ = build_backbone("vit_tiny", str(path), image_size=64)  # 16 -> 64 patches: positions interpolated
    assert model.encoder.pos_embedding.shape[1] == 1 + 64
    assert torch.equal(model.conv_proj.weight, source.conv_proj.weight)


def test_a_mobilenet_state_dict_with_its_classifier_loads(tmp_path):
    full = torchvision.models.mobilenet_v3_small()
    path = tmp_path / "mnv3.pth"
    torch.save(full.state_dict(), path)
    model, _ = build_backbone("mobilenet_v3_small", str(path), image_size=32)
    assert torch.equal(model.classifier[0].weight, full.classifier[0].weight)


# ---- config errors: one line, before anything is built or written ----

@pytest.mark.parametrize(("overrides", "expected"), [
    (["backbone.name=mobilenetv3_small"], "Unknown value for 'backbone.name': 'mobilenetv3_small'. Valid: "),
    (["backbone.name=mobilenetv3_small"], "Did you mean 'mobilenet_v3_small'?"),
    (["backbone.name=vit_tiny", "data.image_size=36"], "backbone 'vit_tiny' needs >= 8 and a multiple of 8"),
    (["backbone.name=convnext_tiny", "data.image_size=16"], "'data.image_size': 16; backbone 'convnext_tiny' needs >= 32"),
    (["backbone.name=vit_tiny", "backbone.weights=imagenet"], "backbone 'vit_tiny' has no pretrained weights"),
    (["learner=ft_block_3to3", "backbone.name=vit_b_16"],
     "learner 'ft_block' needs a resnet backbone (torchvision ResNet with conv1, layer1..layer4"),
    (["learner=weight_prune", "backbone.name=vit_tiny"], "learner 'weight_prune' needs a resnet/mobilenet/efficientnet"),
])
def test_bad_backbone_settings_are_one_line(overrides, expected):
    with pytest.raises(ConfigError) as info:
        compose(overrides)
    assert expected in str(info.value) and "\n" not in str(info.value)


RESNET_ONLY = ["conv_prune", "channel_prune", "ft_block", "truncated", "adp1x1", "learned_prune"]


@pytest.mark.parametrize("learner", RESNET_ONLY)
def test_the_paper_learners_refuse_other_families_and_keep_resnets(learner):
    with pytest.raises(ConfigError, match=f"learner '{learner}' needs a resnet backbone.*got backbone.name='mobilenet_v3_small'"):
        compose([f"learner={learner}", "backbone.name=mobilenet_v3_small"])
    assert compose([f"learner={learner}", "backbone.name=resnext50_32x4d"]).backbone.name == "resnext50_32x4d"


@pytest.mark.slow
def test_a_refused_backbone_writes_no_run_folder(tmp_path):
    cfg = compose(["learner=ft_block_3to3", "backbone.name=resnet18", f"out_dir={tmp_path}"])
    cfg.backbone.name = "vit_tiny"  # as if the config check were bypassed
    with pytest.raises(ConfigError, match="learner 'ft_block' needs a resnet backbone"):
        run(cfg)
    assert not any(tmp_path.iterdir())


def test_weight_prune_masks_every_conv_of_a_mobilenet():
    cfg = compose(["learner=weight_prune", "learner.sparsity=0.5", "backbone.name=mobilenet_v3_small", "data.image_size=32"])
    backbone, dim = start_backbone(cfg)
    learner = build_learner(cfg, dim)
    pruned = learner.prepare(backbone)
    convs = [m for m in pruned.modules() if isinstance(m, nn.Conv2d)]
    assert convs and all(hasattr(m, "weight_mask") for m in convs)
    kept = sum(float(m.weight_mask.sum()) for m in convs) / sum(m.weight_mask.numel() for m in convs)
    assert 0.45 < kept < 0.6  # half, plus each output channel's best weight


# ---- runs name the architecture that ran ----

def _run(tmp_path, *overrides):
    cfg = compose([*TINY, "stream.tasks=[faces]", "budget.milestones=0", "train.max_steps=2", f"out_dir={tmp_path}", *overrides])
    folder = run(cfg)
    return json.loads((folder / "summary.json").read_text())


@pytest.mark.parametrize(("name", "arch"), [pytest.param("mobilenet_v3_small", "MobileNetV3", marks=pytest.mark.slow),
                                            ("vit_tiny", "VisionTransformer")])
def test_a_mobilenet_and_a_vit_run_the_demo_and_are_named(tmp_path, name, arch):
    summary = _run(tmp_path, f"backbone.name={name}", "data.image_size=32")
    assert summary["backbone"]["name"] == name and summary["backbone"]["arch"] == arch
    assert summary["backbone"]["source"] == "config" and summary["tasks"][0]["status"] == "ok"
    report = step_flops(compose([f"backbone.name={name}", "data.image_size=32"]), num_classes=10)
    assert report["backbone"]["name"] == name and report["train_step"]["algorithmic"]["total"] > 0


@pytest.mark.slow
def test_a_learner_that_brings_its_own_network_needs_no_backbone_built(tmp_path, monkeypatch):
    register_learner(monkeypatch, "own", "backbone_learners:OwnNetwork")
    monkeypatch.setattr("nevisbench.run.learner.backbone.create_backbone", lambda *a, **k: pytest.fail("a backbone was built"))
    summary = _run(tmp_path, "learner=own", "backbone.name=vit_tiny", "data.image_size=12")  # 12: not vit_tiny's size
    assert summary["backbone"] == {"name": "_Tiny", "arch": "_Tiny", "params": 3 * 8 * 9 + 8, "source": "learner"}


def test_a_search_over_learner_keys_of_a_learner_that_brings_its_own_network_is_one_line(monkeypatch):
    register_learner(monkeypatch, "own", "backbone_learners:OwnNetwork")
    cfg = compose(["learner=own", "search=custom", "search.space.learner.width=choice(4,8)"])
    with pytest.raises(ConfigError, match="learner 'own' brings its own backbone, and a search over learner.* keys"):
        start_backbone(cfg)
    assert start_backbone(compose(["learner=own", "search=custom", "search.space.train.lr=choice(0.1,0.2)"])) == (None, None)


def test_a_learner_that_swaps_in_a_registry_network_is_named_by_it(tmp_path, monkeypatch):
    register_learner(monkeypatch, "swap", "backbone_learners:OwnRegistryNetwork")
    report = step_flops(compose(["learner=swap", "backbone.name=resnet18", "data.image_size=16"]), num_classes=10)
    assert report["backbone"]["name"] == "mobilenet_v3_small" and report["backbone"]["source"] == "learner"
    assert report["backbone"]["arch"] == "MobileNetV3"


def test_a_truncated_resnet_is_still_the_configured_backbone():
    cfg = compose(["learner=truncated", "backbone.name=resnet18", "data.image_size=16"])
    backbone, dim = start_backbone(cfg)
    learner = build_learner(cfg, dim)
    info = describe_backbone(learner, backbone, learner.prepare(backbone))
    assert info["name"] == "resnet18" and info["source"] == "config" and info["params"] < 11_176_512


@pytest.mark.slow
def test_a_learner_that_brings_a_network_without_its_feature_dim_is_one_line(monkeypatch, tmp_path):
    register_learner(monkeypatch, "nodim", "backbone_learners:NoFeatureDim")
    with pytest.raises(PluginError, match="Learner 'nodim': feature_dim is 0 after prepare"):
        _run(tmp_path, "learner=nodim")


@pytest.mark.slow
def test_figures_name_the_backbone_of_each_curve_when_runs_differ():
    def run(backbone, error):  # a learner that brought its own network: config.yaml still says resnet18
        task = {"task": "faces", "domain": "face", "status": "ok", "test_error": error, "flops": {"train": 1e9}}
        summary = {"learner": "finetune", "learner_config": {"name": "finetune"}, "scenario": "transfer", "stream": "demo",
                   "backbone": {"name": backbone}, "tasks": [task], "point": {"flops": 1e9, "error": error},
                   "final_mean_error": error}
        return read_summary(Path(backbone), summary, {"backbone.name": "resnet18", "train.max_steps": 2, "seed": 0})

    runs = label_runs([run("mobilenet_v3_small", 0.3), run("vit_tiny", 0.4)])
    assert [r.label for r in runs] == ["finetune (backbone.name=mobilenet_v3_small)", "finetune (backbone.name=vit_tiny)"]
    assert [r.label for r in label_runs([run("vit_tiny", 0.4)])] == ["finetune"]


@pytest.mark.slow
def test_the_cli_lists_backbones_and_names_the_one_flops_counted():
    listed = json.loads(run_cli("list", "backbones", "--json").stdout)
    assert {"name": "vit_tiny", "family": "vit", "source": "nevisbench", "pretrained": False} == {
        k: v for k, v in next(r for r in listed if r["name"] == "vit_tiny").items() if k in ("name", "family", "source", "pretrained")}
    proc = run_cli("flops", "backbone.name=mobilenet_v3_small", "data.image_size=32", "--num-classes", "10")
    assert proc.returncode == 0 and "FLOPs per image: finetune on mobilenet_v3_small at 32px" in proc.stdout
    proc = run_cli("flops", "learner=ft_head", "backbone.name=vit_tiny")
    assert proc.returncode == 2 and "learner 'ft_block' needs a resnet backbone" in proc.stderr and "Traceback" not in proc.stderr

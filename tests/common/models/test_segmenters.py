import socket

import pytest
import ultralytics.utils

from multimodal_suite.common.models import ModelSpec, ModelUnavailableError, build_module, family, load_model
from multimodal_suite.common.models.segmenters import resolve_weights


@pytest.fixture
def no_network(monkeypatch):
    def refuse(*args, **kwargs):
        raise AssertionError("the network was contacted")

    monkeypatch.setattr(socket, "getaddrinfo", refuse)
    monkeypatch.setattr(socket, "create_connection", refuse)


@pytest.fixture
def weights_dir(monkeypatch, tmp_path):
    """An empty ultralytics weights directory, whatever this machine has cached."""
    folder = tmp_path / "ultralytics_weights"
    folder.mkdir()
    monkeypatch.setattr(ultralytics.utils, "SETTINGS", {"weights_dir": str(folder)})
    return folder


@pytest.mark.parametrize("name, architecture, module_class", [("sam", "mobile_sam", "SAMModel"),
                                                               ("yolo_seg", "yolo26n-seg", "YOLO")])
def test_built_from_config_is_a_segmenter_without_embedding_or_image_settings(name, architecture, module_class):
    loaded = load_model({"source": "config", "family": name, "config": {"architecture": architecture}, "seed": 0})

    assert type(loaded.module).__name__ == module_class
    assert loaded.output_dim is None and loaded.image_size is None
    assert loaded.family.preprocessing(loaded.module, loaded.spec) is None
    with pytest.raises(ValueError, match="is not an image encoder family"):
        loaded.family.features(loaded.module, None)


def test_config_names_a_known_architecture_only():
    with pytest.raises(ValueError, match=r"sam config: unknown architecture 'sam3'; known: \[.*'mobile_sam'"):
        build_module({"source": "config", "family": "sam", "config": {"architecture": "sam3"}})
    with pytest.raises(ValueError, match="takes exactly one key, 'architecture'"):
        build_module({"source": "config", "family": "yolo_seg", "config": {"architecture": "yolo26n-seg", "nc": 3}})


@pytest.mark.parametrize("name", ["sam", "fastsam", "yolo_seg"])
def test_segmenter_families_take_weights_files_not_hub_ids(name):
    with pytest.raises(ValueError, match=f"family {name!r} loads from source path"):
        ModelSpec.parse({"source": "hf", "family": name, "id": "ultralytics/weights"})


def test_weights_resolve_to_the_path_or_ultralytics_weights_directory(weights_dir, tmp_path):
    local = tmp_path / "my-seg.pt"
    local.write_bytes(b"x")
    (weights_dir / "yolo11n-seg.pt").write_bytes(b"x")

    assert resolve_weights(ModelSpec.parse({"source": "path", "family": "yolo_seg", "path": str(local)})) == str(local)
    named = ModelSpec.parse({"source": "path", "family": "yolo_seg", "path": "yolo11n-seg.pt"})
    assert resolve_weights(named) == str(weights_dir / "yolo11n-seg.pt")


@pytest.mark.parametrize("name, weights", [("sam", "sam_b.pt"), ("fastsam", "FastSAM-s.pt"),
                                           ("yolo_seg", "yolo11n-seg.pt")])
def test_missing_weights_raise_the_offline_error_without_network(name, weights, weights_dir, no_network,
                                                                 monkeypatch, tmp_path):
    monkeypatch.chdir(tmp_path)
    with pytest.raises(ModelUnavailableError) as caught:
        build_module({"source": "path", "family": name, "path": weights})
    message = str(caught.value)
    assert f"Cannot load {name} model {weights!r} (no such file, nor in ultralytics' weights directory" in message
    assert "downloads are off (`allow_download: true`" in message
    assert "`kedro run --env demo`" in message and f"`{{source: path, path: /models/{weights}, family: {name}}}`" in message


def test_a_missing_file_path_is_not_looked_up_or_downloaded(weights_dir, no_network):
    spec = {"source": "path", "family": "yolo_seg", "path": "/models/none/yolo.pt", "allow_download": True}
    with pytest.raises(ModelUnavailableError, match=r"'/models/none/yolo.pt' \(no such file\)\. Either run"):
        build_module(spec)


@pytest.mark.parametrize("name, file_name", [("sam", "mobile_sam.pt"), ("fastsam", "FastSAM-s.pt"),
                                             ("yolo_seg", "yolo11n-seg.pt")])
def test_a_broken_weights_file_is_unavailable_not_a_crash(name, file_name, tmp_path, no_network):
    broken = tmp_path / file_name
    broken.write_bytes(b"not a checkpoint")
    with pytest.raises(ModelUnavailableError, match=f"{broken} is not loadable: "):
        build_module({"source": "path", "family": name, "path": str(broken)})


def test_sam_weights_file_name_must_name_the_architecture(tmp_path):
    weights = tmp_path / "my_sam.pt"
    weights.write_bytes(b"x")
    with pytest.raises(ValueError, match="ultralytics picks the SAM architecture from the file name"):
        family("sam").load_pretrained(str(weights), ModelSpec.parse({"source": "path", "family": "sam",
                                                                     "path": str(weights)}), local_only=True)

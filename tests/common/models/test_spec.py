import pytest

from multimodal_suite.common.models import FAMILIES, ModelSpec, ModelUnavailableError, load_model, offline_error

TINY_SIGLIP = {
    "source": "config",
    "family": "siglip_vision",
    "seed": 0,
    "config": {"image_size": 32, "patch_size": 16, "hidden_size": 32, "intermediate_size": 64,
               "num_hidden_layers": 1, "num_attention_heads": 2},
}


def test_spec_parse_validates_and_hash_is_stable():
    spec = ModelSpec.parse(TINY_SIGLIP)
    assert spec.spec_hash == ModelSpec.parse(dict(TINY_SIGLIP)).spec_hash
    changed = dict(TINY_SIGLIP, seed=1)
    assert ModelSpec.parse(changed).spec_hash != spec.spec_hash
    with pytest.raises(ValueError, match="'source' must be one of"):
        ModelSpec.parse({"source": "s3", "family": "clip"})
    with pytest.raises(ValueError, match="needs a 'id' key"):
        ModelSpec.parse({"source": "hf", "family": "clip"})
    # keys of another source (left by a soft-merged override) do not enter the spec
    merged = ModelSpec.parse({**TINY_SIGLIP, "id": "google/siglip-so400m-patch14-384"})
    assert merged.id is None and merged.spec_hash == spec.spec_hash


@pytest.mark.parametrize("spec, expected", [
    (TINY_SIGLIP, "4a3f90271649d1143e664c543ebb5ea0"),
    ({"source": "hf", "family": "clip", "id": "openai/clip-vit-base-patch32"}, "725a26ed59d0d882d491bee0ef1c0851"),
    ({"source": "bundled", "name": "all-MiniLM-L6-v2"}, "61f9d21512e0c83ef172f531b041e2fe"),
    ({"source": "path", "family": "timm", "path": "/models/r", "model_name": "resnet50", "image_size": 256},
     "4c0be6934ab370d82f748b857103bd17"),
], ids=["config", "hf", "bundled", "path-with-options"])
def test_spec_hash_is_pinned(spec, expected):
    # Every cached embedding is keyed by this hash: a different value means every cache is recomputed.
    assert ModelSpec.parse(spec).spec_hash == expected


def test_to_dict_parses_back_to_the_same_spec():
    for raw in (TINY_SIGLIP, {"source": "hf", "family": "sentence_transformer", "id": "a/b", "max_seq_length": 64}):
        spec = ModelSpec.parse(raw)
        assert ModelSpec.parse(spec.to_dict()) == spec


def test_unknown_family_is_rejected_listing_the_registered_ones():
    with pytest.raises(ValueError, match="'family' must be one of the registered families") as error:
        ModelSpec.parse({"source": "hf", "family": "resnet", "id": "x/y"})
    assert all(repr(name) in str(error.value) for name in FAMILIES)
    with pytest.raises(ValueError, match="got None"):
        ModelSpec.parse({"source": "hf", "id": "x/y"})  # only bundled specs may leave the family out


def test_bundled_specs_default_to_sentence_transformers():
    assert ModelSpec.parse({"source": "bundled", "name": "all-MiniLM-L6-v2"}).family == "sentence_transformer"


def test_family_limits_sources_and_options():
    with pytest.raises(ValueError, match="family 'fastsam' loads from source path, not 'config'"):
        ModelSpec.parse({"source": "config", "family": "fastsam", "config": {"architecture": "FastSAM-s"}})
    with pytest.raises(ValueError, match=r"unknown option\(s\) \['allow_downloads'\] for family 'sam'"):
        ModelSpec.parse({"source": "path", "family": "sam", "path": "sam_b.pt", "allow_downloads": True})


def test_describe_says_random_weights_for_config_specs():
    assert "RANDOM weights (seed 0)" in ModelSpec.parse(TINY_SIGLIP).describe()
    assert "pretrained" in ModelSpec.parse({"source": "hf", "family": "clip", "id": "a/b"}).describe()


def test_offline_error_names_both_ways_out():
    spec = ModelSpec.parse({"source": "hf", "family": "clip", "id": "openai/clip-vit-base-patch32"})
    message = str(offline_error(spec, TimeoutError()))
    assert "'openai/clip-vit-base-patch32' from the Hugging Face hub" in message and "TimeoutError" in message
    assert "`kedro run --env demo`" in message
    assert "`{source: path, path: /models/clip-vit-base-patch32, family: clip}`" in message


def test_missing_local_path_is_clear(tmp_path):
    with pytest.raises(ModelUnavailableError, match="does not exist"):
        load_model({"source": "path", "family": "clip", "path": str(tmp_path / "nope")})

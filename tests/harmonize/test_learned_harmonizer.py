"""The learned harmonizer: it re-lights toy objects towards the truth, touches nothing else,
loads safetensors only, resolves as builtin:toy-harmonizer and runs in the stage."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from freemask.config import HarmonizeConfig, RunConfig
from freemask.errors import FreemaskError
from freemask.harmonize import LearnedHarmonizer, LightNet, load_light_net, run_harmonize
from freemask.harmonize.learned import LightNetSettings, save_light_net
from freemask.harmonize.stage import harmonize_sample, make_harmonizer
from freemask.models import builtin_model_folder
from freemask.records import Instance, Sample, read_manifest, write_manifest
from freemask.storage import LocalStorage, encode_image, read_image
from freemask.toyworld import harmonizer as toy_harmonizer
from freemask.toyworld.harmonizer import (
    TrainSettings,
    checkpoint_step,
    toy_composite,
    toy_harmonizer_path,
    toy_pairs,
    train_light_net,
)
from freemask.toyworld.render import OBJECTS

# Fresh composites: neither the training (7,000,000 + i), held-out (8,000,000 + i) nor the
# benchmark's (below 300,000) seeds.
FRESH_SEED = 9_000_000
TINY = LightNetSettings(width=4, hidden=8, input_size=16)


def fmse(image: np.ndarray, target: np.ndarray, mask: np.ndarray) -> float:
    return float(((image[mask].astype(float) - target[mask].astype(float)) ** 2).mean())


def tiny_net(bias: float = 0.3) -> LightNet:
    """A seeded untrained net whose head brightens every object (a visible change)."""
    torch.manual_seed(0)
    model = LightNet.from_settings(TINY)
    with torch.no_grad():
        model.head[-1].bias[:3] = bias
    return model.eval()


def learned_settings(weights: str = "builtin:toy-harmonizer") -> HarmonizeConfig:
    return HarmonizeConfig(method="learned", weights=weights, device="cpu")


def test_shipped_harmonizer_brings_fresh_toy_objects_to_their_true_light() -> None:
    harmonizer = make_harmonizer(learned_settings())
    before, after = [], []
    for index in range(8):
        composite, target, owners, _ = toy_composite(FRESH_SEED + index)
        masks = [owners == k for k in range(owners.max() + 1) if (owners == k).any()]
        harmonized, _ = harmonize_sample(composite, masks, harmonizer)
        before += [fmse(composite, target, mask) for mask in masks]
        after += [fmse(harmonized, target, mask) for mask in masks]
    print(f"fMSE none {np.mean(before):.0f} -> learned {np.mean(after):.0f}")
    assert np.mean(after) < 0.6 * np.mean(before)


def test_only_the_object_pixels_change() -> None:
    rng = np.random.default_rng(0)
    image = rng.integers(20, 200, (48, 40, 3), dtype=np.uint8)  # not square, not 128 px
    mask = np.zeros((48, 40), bool)
    mask[10:30, 8:25] = True
    others = np.zeros_like(mask)
    others[30:40, 20:35] = True
    result = LearnedHarmonizer(tiny_net())(image, mask, others)
    assert result.dtype == np.uint8 and result.shape == image.shape
    assert np.array_equal(result[~mask], image[~mask])
    assert (result[mask].astype(int) > image[mask]).mean() > 0.9  # brightened


def test_an_empty_mask_changes_nothing() -> None:
    image = np.full((16, 16, 3), 90, np.uint8)
    empty = np.zeros((16, 16), bool)
    assert np.array_equal(LearnedHarmonizer(tiny_net())(image, empty, empty), image)


def test_a_folder_of_pickled_weights_is_refused_naming_the_folder(tmp_path) -> None:
    folder = tmp_path / "pickled-harmonizer"
    folder.mkdir()
    torch.save(tiny_net().state_dict(), folder / "model.pth")
    (folder / "config.json").write_text(json.dumps(TINY.__dict__))
    with pytest.raises(
        FreemaskError, match=r"pickled-harmonizer.*no model\.safetensors.*model\.pth"
    ):
        make_harmonizer(learned_settings(str(folder)))


def test_weights_of_another_shape_are_refused(tmp_path) -> None:
    save_light_net(tiny_net(), TINY, tmp_path)
    (tmp_path / "config.json").write_text(json.dumps({**TINY.__dict__, "width": 8}))
    with pytest.raises(FreemaskError, match="not a learned harmonizer"):
        load_light_net(tmp_path)


def test_saved_weights_load_back_unchanged(tmp_path) -> None:
    model = tiny_net()
    save_light_net(model, TINY, tmp_path)
    loaded = load_light_net(tmp_path)
    for name, value in model.state_dict().items():
        assert torch.equal(value, loaded.state_dict()[name]), name


def test_builtin_toy_harmonizer_resolves_to_the_shipped_folder() -> None:
    folder = builtin_model_folder("builtin:toy-harmonizer", "harmonize.weights")
    assert folder == toy_harmonizer_path()
    assert (folder / "model.safetensors").stat().st_size < 2_000_000
    assert "Held-out" in (folder / "MODEL_CARD.md").read_text()
    assert sum(p.numel() for p in load_light_net(folder).parameters()) < 400_000


def test_learned_method_needs_weights() -> None:
    with pytest.raises(ValueError, match="'learned' needs weights"):
        RunConfig.model_validate({"classes": ["ball"], "harmonize": {"method": "learned"}})


def write_toy_samples(root, count: int = 2) -> None:
    """Toy composites as a finished stage output: semantic masks and instances are exact."""
    storage = LocalStorage(root)
    samples = []
    for index in range(count):
        composite, _, owners, classes = toy_composite(FRESH_SEED + 100 + index)
        semantic = np.zeros(owners.shape, np.uint8)
        instances = []
        for k, name in enumerate(classes):
            semantic[owners == k] = OBJECTS.index(name) + 1
            if (owners == k).any():
                instances.append(Instance.from_mask(name, OBJECTS.index(name) + 1, owners == k))
        sample = Sample(
            id=f"t{index}",
            image=f"images/t{index}.png",
            semantic_mask=f"masks/t{index}.png",
            width=owners.shape[1],
            height=owners.shape[0],
            instances=instances,
        )
        storage.write_bytes(sample.image, encode_image(composite, sample.image))
        storage.write_bytes(sample.semantic_mask, encode_image(semantic, sample.semantic_mask))
        samples.append(sample)
    write_manifest(storage, samples)
    storage.write_bytes("_SUCCESS", b"{}\n")


def test_stage_runs_learned_end_to_end_and_changes_only_objects(tmp_path) -> None:
    write_toy_samples(tmp_path / "in")
    config = RunConfig.model_validate(
        {
            "classes": list(OBJECTS),
            "workdir": str(tmp_path),
            "harmonize": {"method": "learned", "weights": "builtin:toy-harmonizer"},
        }
    )
    result = run_harmonize(config, str(tmp_path / "in"), str(tmp_path / "out"))
    source, output = LocalStorage(tmp_path / "in"), LocalStorage(tmp_path / "out")
    assert result.dropped == 0
    for before, after in zip(read_manifest(source), read_manifest(output), strict=True):
        original = read_image(source, before.image, mode="RGB")
        harmonized = read_image(output, after.image, mode="RGB")
        objects = read_image(source, before.semantic_mask) > 0
        assert np.array_equal(harmonized[~objects], original[~objects])
        assert not np.array_equal(harmonized[objects], original[objects])
        assert source.read_bytes(before.semantic_mask) == output.read_bytes(after.semantic_mask)
        assert after.scores["harmonize_mean_change"] > 0


def test_training_in_chunks_trains_the_model_one_run_trains(tmp_path) -> None:
    pairs = toy_pairs(3, FRESH_SEED + 200)
    settings = TrainSettings(steps=4, batch_size=2)
    whole = train_light_net(pairs, settings, TINY)
    checkpoint = tmp_path / "checkpoint.pt"
    train_light_net(pairs, settings, TINY, checkpoint=checkpoint, until_step=1)
    assert checkpoint_step(checkpoint) == 1
    train_light_net(pairs, settings, TINY, checkpoint=checkpoint, until_step=3)
    chunked = train_light_net(pairs, settings, TINY, checkpoint=checkpoint)
    assert checkpoint_step(checkpoint) == 4
    for name, value in whole.state_dict().items():
        assert torch.allclose(value, chunked.state_dict()[name]), name
    assert whole.head[-1].bias.abs().sum() > 0  # training did move it from the identity


def test_command_trains_scores_and_ships_a_folder_that_loads(tmp_path, monkeypatch) -> None:
    monkeypatch.setattr(toy_harmonizer, "SETTINGS", TrainSettings(steps=2, batch_size=2))
    monkeypatch.setattr(toy_harmonizer, "NETWORK", TINY)
    out = tmp_path / "shipped"
    argv = ["--work", str(tmp_path / "work"), "--out", str(out), "--scenes", "3"]
    assert toy_harmonizer.main([*argv, "--held-out", "2", "--chunk-steps", "1"]) == 0
    assert sorted(p.name for p in out.iterdir()) == [
        "MODEL_CARD.md",
        "config.json",
        "model.safetensors",
    ]
    assert "fMSE" in (out / "MODEL_CARD.md").read_text()
    load_light_net(out)

"""Harmonization: the iHarmony4-style gain, colour-transfer rules, PCTNet layout, the stage."""

from __future__ import annotations

import cv2
import numpy as np
import pytest
import torch

from freemask.config import RunConfig
from freemask.errors import FreemaskError
from freemask.evaluation import (
    harmonization_errors,
    perturb_colour,
    random_shape,
    sample_photographs,
)
from freemask.harmonize import (
    PCTNet,
    PCTNetHarmonizer,
    background_ring,
    harmonize_sample,
    load_pctnet,
    run_harmonize,
    transfer_colour,
)
from freemask.records import IGNORE_INDEX, Instance, Sample, read_manifest, write_manifest
from freemask.stage_output import read_rejected
from freemask.storage import LocalStorage, encode_image, read_image

SETTINGS = {"strength": 0.8, "ring_width": 12, "max_std_ratio": 1.5, "feather_sigma": 2.0}


def perturbed_cases(count: int = 20, size: int = 128):
    rng = np.random.default_rng(0)
    photos = [
        cv2.resize(p, (size, size), interpolation=cv2.INTER_AREA) for p in sample_photographs()
    ]
    cases = []
    for _ in range(count):
        original, reference = rng.choice(len(photos), 2, replace=False)
        mask = random_shape(size, rng)
        composite = perturb_colour(photos[original], mask, photos[reference], rng)
        cases.append((photos[original], mask, composite))
    return cases


def test_lighting_correction_lowers_foreground_error_on_real_photographs() -> None:
    before, after = [], []
    for original, mask, composite in perturbed_cases():
        harmonized = transfer_colour(composite, mask, np.zeros_like(mask), **SETTINGS)
        before.append(harmonization_errors(composite, original, mask)["fmse"])
        after.append(harmonization_errors(harmonized, original, mask)["fmse"])
    print(f"fMSE composite {np.mean(before):.1f} -> harmonized {np.mean(after):.1f}")
    assert np.mean(after) < 0.6 * np.mean(before)


def mean_hue_and_chroma(image: np.ndarray, mask: np.ndarray) -> tuple[float, float]:
    lab = cv2.cvtColor(image.astype(np.float32) / 255.0, cv2.COLOR_RGB2LAB)[mask]
    a, b = lab[:, 1].mean(), lab[:, 2].mean()
    return float(np.degrees(np.arctan2(b, a))), float(np.hypot(a, b))


def red_ball_on_grass() -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(0)
    image = np.clip(rng.normal([60, 150, 50], 12, (64, 64, 3)), 0, 255).astype(np.uint8)
    mask = np.zeros((64, 64), bool)
    cv2.circle(mask.view(np.uint8), (32, 32), 14, 1, -1)
    image[mask] = (200, 40, 40)
    return image, mask


def test_default_keeps_the_object_hue_and_chroma_while_colour_transfer_moves_them() -> None:
    image, mask = red_ball_on_grass()
    hue, chroma = mean_hue_and_chroma(image, mask)
    kept = transfer_colour(image, mask, np.zeros_like(mask), **SETTINGS)
    moved = transfer_colour(image, mask, np.zeros_like(mask), **SETTINGS, keep_hue=False)
    kept_hue, kept_chroma = mean_hue_and_chroma(kept, mask)
    moved_hue, _ = mean_hue_and_chroma(moved, mask)
    assert not np.array_equal(kept[mask], image[mask])  # the lightness was corrected
    assert abs(kept_hue - hue) < 2.0 and kept_chroma == pytest.approx(chroma, rel=0.05)
    assert abs(moved_hue - hue) > 45.0  # the failure the default avoids: a green "red ball"


def test_pixels_far_from_the_object_are_untouched() -> None:
    _, mask, composite = perturbed_cases(1)[0]
    harmonized = transfer_colour(composite, mask, np.zeros_like(mask), **SETTINGS)
    far = ~cv2.dilate(mask.astype(np.uint8), np.ones((9, 9), np.uint8)).astype(bool)
    assert np.array_equal(harmonized[far], composite[far])


def test_ring_leaves_out_other_objects() -> None:
    mask = np.zeros((40, 40), bool)
    mask[15:25, 15:25] = True
    others = np.zeros_like(mask)
    others[15:25, 25:35] = True
    ring = background_ring(mask, others, 4)
    assert ring.any() and not (ring & others).any() and not (ring & mask).any()


def test_spread_ratio_is_clamped() -> None:
    image = np.full((60, 60, 3), 128, np.uint8)
    mask = np.zeros((60, 60), bool)
    mask[20:40, 20:40] = True
    stripes = np.where(np.arange(20) % 2, 40, 220).astype(np.uint8)
    image[20:40, 20:40] = stripes[None, :, None]  # a vivid object on a flat grey ground
    image[0:10] = 120
    result = transfer_colour(image, mask, np.zeros_like(mask), **{**SETTINGS, "strength": 1.0})
    before = image[mask].astype(float).std()
    after = result[mask].astype(float).std()
    assert after == pytest.approx(before / 1.5, rel=0.15)  # reduced by the clamp, not flattened


def test_harmonizer_that_paints_everything_changes_only_the_sure_object_pixels() -> None:
    image = np.random.default_rng(0).integers(0, 256, (32, 32, 3), dtype=np.uint8)
    first = np.zeros((32, 32), bool)
    first[4:16, 4:16] = True
    second = np.zeros((32, 32), bool)
    second[12:24, 12:24] = True  # overlaps the first: nobody's sure pixels

    def paint_everything(img: np.ndarray, mask: np.ndarray, others: np.ndarray) -> np.ndarray:
        return np.full_like(img, 7)

    result, _ = harmonize_sample(image, [first, second], paint_everything)
    editable = (first ^ second)[..., None]
    assert np.array_equal(np.where(editable, image, result), image)
    assert (result[first & ~second] == 7).all()


def test_pctnet_follows_the_published_layout() -> None:
    model = PCTNet()
    shapes = {key: tuple(value.shape) for key, value in model.state_dict().items()}
    assert shapes["encoder.patch_to_embedding.1.weight"] == (256, 64)
    assert shapes["encoder.transformer_enc.layers.8.self_attn.in_proj_weight"] == (768, 256)
    assert shapes["encoder.transformer_enc.layers.0.linear1.weight"] == (512, 256)
    assert shapes["encoder.dec.0.weight"] == (256, 12, 4, 4)
    assert shapes["get_params.weight"] == (12, 12, 1, 1)
    assert 4.7e6 < sum(p.numel() for p in model.parameters()) < 4.9e6


def test_pctnet_weights_load_safely_and_change_only_the_object(tmp_path) -> None:
    torch.manual_seed(0)
    torch.save(PCTNet().state_dict(), tmp_path / "PCTNet_ViT.pth")
    harmonizer = PCTNetHarmonizer(load_pctnet(tmp_path))
    _, mask, composite = perturbed_cases(1, size=96)[0]
    result = harmonizer.harmonize(composite, mask)
    assert result.shape == composite.shape and result.dtype == np.uint8
    assert np.array_equal(result[~mask], composite[~mask])
    with pytest.raises(FreemaskError, match="weights file not found"):
        load_pctnet(tmp_path / "missing")
    torch.save({"other.weight": torch.zeros(1)}, tmp_path / "bad.pth")
    with pytest.raises(FreemaskError, match="not PCTNet ViT weights"):
        load_pctnet(tmp_path / "bad.pth")


def write_samples(root, bad_size=False):
    """Scenes whose instance masks are boxes around the object: the semantic mask says which
    box pixels are object (class 1), uncertain (255) or background (0)."""
    storage = LocalStorage(root)
    samples = []
    for index, (_, mask, composite) in enumerate(perturbed_cases(3, size=64)):
        identifier = f"s{index}"
        label = mask.astype(np.uint8)
        edge = cv2.dilate(label, np.ones((3, 3), np.uint8)).astype(bool) & ~mask
        label[edge] = IGNORE_INDEX
        rows, cols = np.nonzero(mask)
        box = np.zeros_like(mask)
        box[rows.min() : rows.max() + 1, cols.min() : cols.max() + 1] = True
        instance_mask = box if not (bad_size and index == 1) else box[:32]
        sample = Sample(
            id=identifier,
            image=f"images/{identifier}.png",
            semantic_mask=f"masks/{identifier}.png",
            soft_mask=f"soft_masks/{identifier}.npy",
            truth_mask=f"truth/{identifier}.png",
            width=64,
            height=64,
            instances=[Instance.from_mask("cat", 1, instance_mask)],
        )
        storage.write_bytes(sample.image, encode_image(composite, sample.image))
        storage.write_bytes(sample.semantic_mask, encode_image(label, sample.semantic_mask))
        storage.write_bytes(sample.truth_mask, encode_image(mask.astype(np.uint8), "t.png"))
        storage.write_bytes(sample.soft_mask, b"soft mask bytes, carried as they are")
        samples.append(sample)
    write_manifest(storage, samples)
    storage.write_bytes("_SUCCESS", b"{}\n")  # a finished stage output


def run_stage(tmp_path, **harmonize):
    harmonize = {"method": "color_transfer", **harmonize}
    write_samples(tmp_path / "in")
    config = RunConfig.model_validate(
        {"classes": ["cat"], "workdir": str(tmp_path), "harmonize": harmonize}
    )
    result = run_harmonize(config, str(tmp_path / "in"), str(tmp_path / "out"))
    return result, LocalStorage(tmp_path / "in"), LocalStorage(tmp_path / "out")


def test_stage_changes_images_never_masks(tmp_path) -> None:
    result, source, target = run_stage(tmp_path)
    assert result.written == 3
    for before, after in zip(read_manifest(source), read_manifest(target), strict=True):
        for path in ("semantic_mask", "soft_mask", "truth_mask"):
            assert target.read_bytes(getattr(after, path)) == source.read_bytes(
                getattr(before, path)
            )
        assert after.instances == before.instances
        assert target.read_bytes(after.image) != source.read_bytes(before.image)
        assert after.scores["harmonize_mean_change"] > 0


def test_off_by_default_copies_samples_through(tmp_path) -> None:
    write_samples(tmp_path / "in")
    config = RunConfig.model_validate({"classes": ["cat"], "workdir": str(tmp_path)})
    result = run_harmonize(config, str(tmp_path / "in"), str(tmp_path / "out"))
    source, target = LocalStorage(tmp_path / "in"), LocalStorage(tmp_path / "out")
    assert config.harmonize.method == "none" and result.written == 3
    for before, after in zip(read_manifest(source), read_manifest(target), strict=True):
        for path in before.files():
            assert target.read_bytes(path) == source.read_bytes(path)
        assert "harmonize_mean_change" not in after.scores


def test_background_inside_the_instance_box_stays_byte_identical(tmp_path) -> None:
    _, source, target = run_stage(tmp_path, keep_hue=False, white_balance=1.0)
    for before, after in zip(read_manifest(source), read_manifest(target), strict=True):
        label = read_image(source, before.semantic_mask)
        original = read_image(source, before.image, mode="RGB")
        harmonized = read_image(target, after.image, mode="RGB")
        box = before.instances[0].mask()
        outside = label != 1
        assert (box & outside).any()  # the failure case: background and band inside the box
        assert np.array_equal(harmonized[outside], original[outside])
        assert not np.array_equal(harmonized[label == 1], original[label == 1])


def test_stage_rejects_masks_of_another_size(tmp_path) -> None:
    write_samples(tmp_path / "in", bad_size=True)
    config = RunConfig.model_validate(
        {"classes": ["cat"], "workdir": str(tmp_path), "harmonize": {"method": "color_transfer"}}
    )
    result = run_harmonize(config, str(tmp_path / "in"), str(tmp_path / "out"))
    (entry,) = read_rejected(LocalStorage(tmp_path / "out"))
    assert result.dropped == 1 and entry["id"] == "s1" and "32x64" in entry["reason"]


def test_pctnet_method_needs_weights() -> None:
    with pytest.raises(ValueError, match="needs weights"):
        RunConfig.model_validate({"classes": ["cat"], "harmonize": {"method": "pctnet"}})

"""The toy world's renderer: exact masks, occlusion, captions, determinism."""

import numpy as np
import pytest

from freemask.toyworld.render import (
    COLOURS,
    CROSS_ARM,
    OBJECTS,
    RING_HOLE,
    SCENES,
    Light,
    SceneRelations,
    ToyObject,
    caption_for,
    random_scene,
    related_scene,
    render,
    shape_mask,
)


def test_semantic_mask_is_the_union_of_instances_with_class_ids() -> None:
    scene = random_scene(seed=3, size=64, objects=(2, 2))
    union = np.zeros_like(scene.semantic, dtype=bool)
    for name, mask in scene.instances:
        assert (scene.semantic[mask] == OBJECTS.index(name) + 1).all()
        assert not (union & mask).any(), "instances overlap"
        union |= mask
    assert ((scene.semantic > 0) == union).all()


def test_later_objects_occlude_earlier_ones() -> None:
    front = ToyObject("box", "red", (0.5, 0.5), 0.4)
    back = ToyObject("ball", "blue", (0.45, 0.45), 0.5)
    scene = render("floor", [back, front], 64, seed=0)
    ball, box = dict(scene.instances)["ball"], dict(scene.instances)["box"]
    assert (box == shape_mask(front, 64)).all()
    assert (ball == shape_mask(back, 64) & ~shape_mask(front, 64)).all()
    red = np.asarray(COLOURS["red"])
    # The box's pixels carry its colour (shaded), not the ball's.
    ratio = scene.image[box].astype(float).mean(axis=0) / red
    assert ratio.std() < 0.1


def test_fully_hidden_objects_leave_no_instance() -> None:
    small = ToyObject("cross", "white", (0.5, 0.5), 0.2)
    cover = ToyObject("box", "blue", (0.5, 0.5), 0.8)
    scene = render("field", [small, cover], 64, seed=0)
    assert [name for name, _ in scene.instances] == ["box"]


@pytest.mark.parametrize("name", OBJECTS)
def test_each_shape_fills_a_plausible_share_of_its_box(name: str) -> None:
    mask = shape_mask(ToyObject(name, "red", (0.5, 0.5), 0.5), 128)
    ys, xs = np.nonzero(mask)
    box_area = (np.ptp(ys) + 1) * (np.ptp(xs) + 1)
    assert 0.3 < mask.sum() / box_area <= 1.0
    assert abs(xs.mean() - 64) < 4  # centred


def test_same_seed_same_scene_and_captions_name_what_is_drawn() -> None:
    first, second = random_scene(11, 64, (1, 2)), random_scene(11, 64, (1, 2))
    assert (first.image == second.image).all() and first.caption == second.caption
    assert first.scene in SCENES and first.caption.endswith(f"on a {first.scene}")
    for name, _ in first.instances:
        assert name in first.caption
    assert caption_for("beach", []) == "a photo of a beach"
    assert (
        caption_for("sky", [ToyObject("cross", "white", (0.5, 0.5), 0.3)])
        == "a photo of a white cross on a sky"
    )


def test_one_light_falls_on_objects_and_background_alike() -> None:
    objects = [
        ToyObject("box", "white", (0.3, 0.6), 0.3),
        ToyObject("ball", "red", (0.7, 0.4), 0.3),
    ]
    light = Light(temperature=0.8, intensity=0.9, direction=1.0, falloff=0.4)
    plain = render("floor", objects, 128, seed=5)
    lit = render("floor", objects, 128, seed=5, light=light)
    assert (lit.semantic == plain.semantic).all()
    expected = np.clip(plain.image.astype(np.float32) * light.field(128), 0, 255)
    unclipped = ((plain.image > 10) & (plain.image < 250) & (expected < 250)).all(axis=-1)
    # Re-lighting the rendered pixels gives the lit render up to rounding: the same gain on
    # every pixel, object or not (uint8 truncation on both sides).
    assert np.abs(lit.image[unclipped] - expected[unclipped]).max() <= 2.0
    # Cool light: blue gains on red, and the side the light comes from is the brighter one.
    gain = light.field(128)
    assert (gain[..., 2] > gain[..., 0]).all()
    assert gain[64, 127].mean() < gain[64, 0].mean() or gain[127, 64].mean() < gain[0, 64].mean()


def test_the_same_object_under_the_scene_light_is_the_harmonization_target() -> None:
    obj = ToyObject("cone", "yellow", (0.5, 0.5), 0.4)
    scene_light = Light(temperature=-0.7, intensity=1.2, direction=2.0, falloff=0.3)
    other_light = Light(temperature=0.9, intensity=0.75, direction=4.0, falloff=0.2)
    in_scene = render("beach", [obj], 128, seed=1, light=scene_light)
    pasted = render("sky", [obj], 128, seed=2, light=other_light)
    target = render("sky", [obj], 128, seed=2, light=scene_light)
    mask = shape_mask(obj, 128)
    assert (target.image[mask] == in_scene.image[mask]).all()
    assert np.abs(pasted.image[mask].astype(int) - in_scene.image[mask]).mean() > 20


def test_shapes_have_their_holes_and_thin_arms_at_128_px() -> None:
    ring = shape_mask(ToyObject("ring", "red", (0.5, 0.5), 0.4), 128)
    assert not ring[64, 64] and ring[64, 64 + 20]
    row = ring[64]  # the hole's width: the run of background through the centre
    hole = int(np.argmax(row[64:]) + np.argmax(row[64::-1]) - 1)
    assert hole >= 16  # wider than two cells of a 16x16 attention grid at 128 px
    assert abs(hole - 0.4 * 128 * RING_HOLE) <= 2
    cross = shape_mask(ToyObject("cross", "red", (0.5, 0.5), 0.4), 128)
    arm = cross[:, 64 + 20].sum()  # a column through one horizontal arm
    assert abs(arm - 2 * CROSS_ARM * 0.4 * 128 / 2) <= 2
    assert not cross[64 - 20, 64 - 20]  # the corners between the arms are background
    assert random_scene(3).image.shape == (128, 128, 3)


def test_related_scenes_follow_the_relation_table() -> None:
    relations = SceneRelations(
        weights={"cross": {"sky": 1.0}, "ball": {"field": 1.0, "beach": 1.0}},
        heights={"cross": 0.3, "ball": 0.4},
    )
    seen = {"cross": set(), "ball": set()}
    for seed in range(40):
        scene = related_scene(seed, 128, (1, 2), relations)
        for name, mask in scene.instances:
            seen[name].add(scene.scene)
            if name == "ball" and len(scene.instances) == 1:
                rows = np.nonzero(mask.any(axis=1))[0]
                assert 0.8 * 0.4 * 128 - 2 <= np.ptp(rows) + 1 <= 1.2 * 0.4 * 128 + 2
    assert seen["cross"] == {"sky"}
    assert seen["ball"] == {"field", "beach"}


def test_the_shifted_domain_keeps_the_shapes_and_changes_the_look() -> None:
    toy, shifted = random_scene(4, domain="toy"), random_scene(4, domain="shifted")
    assert (toy.semantic == shifted.semantic).all() and toy.caption == shifted.caption
    background = toy.semantic == 0
    assert np.abs(toy.image[background].astype(int) - shifted.image[background]).mean() > 10

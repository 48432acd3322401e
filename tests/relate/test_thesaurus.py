"""The shipped thesaurus: coverage of the benchmarks, the scene hierarchy, and bad tables."""

from __future__ import annotations

from importlib import resources
from pathlib import Path

import pytest
import yaml

from freemask.relate import ThesaurusError, load_thesaurus, normalise
from freemask.relate.thesaurus import default_thesaurus_path

BENCHMARK_SIZES = {"voc": 20, "cityscapes": 19, "coco": 80, "ade20k": 150}


@pytest.fixture(scope="module")
def thesaurus():
    return load_thesaurus()


def benchmark_lists() -> dict[str, list[str]]:
    text = resources.files("freemask.relate").joinpath("class_lists.yaml").read_text()
    return yaml.safe_load(text)


@pytest.mark.parametrize("benchmark", sorted(BENCHMARK_SIZES))
def test_table_covers_every_class_of_the_benchmark(thesaurus, benchmark: str) -> None:
    names = benchmark_lists()[benchmark]
    assert len(names) == len(set(names)) == BENCHMARK_SIZES[benchmark]
    missing = [name for name in names if thesaurus.lookup(name) is None]
    assert missing == []


def test_every_entry_has_scenes_partners_size_and_support(thesaurus) -> None:
    for entry in thesaurus.classes.values():
        assert entry.scenes and all(scene in thesaurus.parents for scene in entry.scenes)
        assert 0 < entry.size <= 1
        assert all(thesaurus.lookup(partner) for partner in entry.partners)


def test_scene_words_normalise_to_one_tag(thesaurus) -> None:
    assert {thesaurus.scene(word) for word in ["grass", "Grassland", "meadow", "field"]} == {
        "field"
    }
    assert thesaurus.scene("HARBOR") == thesaurus.scene("harbour") == "harbour"
    assert thesaurus.scene("the moon") is None
    assert normalise("  Potted_Plant ") == "potted plant"


def test_aliases_reach_one_entry(thesaurus) -> None:
    assert thesaurus.lookup("couch") is thesaurus.lookup("sofa")
    assert thesaurus.lookup("airplane") is thesaurus.lookup("aeroplane")
    assert thesaurus.lookup("motorcycle").name == "motorbike"
    assert thesaurus.lookup("tv").name == "tvmonitor"


def test_scene_weights_spread_to_ancestors_with_decay(thesaurus) -> None:
    weights = thesaurus.scene_weights(thesaurus.lookup("boat"))
    assert weights["sea"] == 1.0
    assert weights["nature"] == 0.5  # sea's parent
    assert weights["outdoor"] == 0.25  # grandparent
    assert "indoor" not in weights


def test_reverse_map_is_derived_from_the_entries(thesaurus) -> None:
    reverse = thesaurus.classes_by_scene()
    for entry in thesaurus.classes.values():
        for scene, weight in thesaurus.scene_weights(entry).items():
            assert reverse[scene][entry.name] == weight
    assert {"boat", "ship", "surfboard"} <= set(reverse["sea"])
    assert "boat" not in reverse["kitchen"]


def write_table(tmp_path: Path, scenes: dict, classes: dict) -> Path:
    path = tmp_path / "thesaurus.yaml"
    path.write_text(yaml.safe_dump({"version": 1, "scenes": scenes, "classes": classes}))
    return path


BOAT = {"scenes": {"sea": 1}, "partners": [], "size": 0.3, "support": "water"}


@pytest.mark.parametrize(
    ("scenes", "classes", "message"),
    [
        (
            {"sea": {}},
            {"boat": {**BOAT, "scenes": {"lake": 1}}},
            r"classes.boat.scenes: unknown scene 'lake'",
        ),
        ({"sea": {}}, {"boat": {**BOAT, "partners": ["kraken"]}}, r"partners: unknown class"),
        ({"sea": {}}, {"boat": {**BOAT, "support": "orbit"}}, r"classes.boat.support"),
        ({"sea": {"parent": "water"}, "water": {"parent": "sea"}}, {"boat": BOAT}, "loops"),
        (
            {"sea": {}},
            {"boat": {**BOAT, "aliases": ["ship"]}, "ship": BOAT},
            "class alias 'ship' of 'boat' already names 'ship'",
        ),
    ],
)
def test_bad_table_names_the_file_and_field(tmp_path, scenes, classes, message) -> None:
    path = write_table(tmp_path, scenes, classes)
    with pytest.raises(ThesaurusError, match=message) as error:
        load_thesaurus(path)
    assert str(path) in str(error.value)


def test_a_thesaurus_on_gcs_loads_like_a_local_one(gcs_emulator, gcs_bucket, monkeypatch) -> None:
    """A pipeline's config and thesaurus live on gs://; a missing one is named whole."""
    from freemask.storage import open_storage

    monkeypatch.setenv("STORAGE_EMULATOR_HOST", gcs_emulator)
    shipped = default_thesaurus_path()
    open_storage(f"gs://{gcs_bucket}/tables").write_bytes("scenes.yaml", shipped.read_bytes())
    remote = load_thesaurus(f"gs://{gcs_bucket}/tables/scenes.yaml")
    assert remote.classes == load_thesaurus(shipped).classes
    missing = f"gs://{gcs_bucket}/tables/absent.yaml"
    with pytest.raises(ThesaurusError, match=f"^{missing}: thesaurus file not found$"):
        load_thesaurus(missing)

"""Class-balanced contact sheets: a few samples per class, the worst-scoring beside typical
ones, however skewed the stage's output."""

from freemask.local.sheets import MAX_CLASSES, PER_CLASS, WORST, pick_tiles
from freemask.records import RLE, Instance, Sample


def sample(identifier: str, classes: list[str], score: float | None) -> Sample:
    instances = [
        Instance(
            class_name=name,
            class_id=index + 1,
            bbox=(0, 0, 1, 1),
            rle=RLE(size=(1, 1), counts="01"),
        )
        for index, name in enumerate(classes)
    ]
    scores = {} if score is None else {"attention_confidence": score}
    return Sample(
        id=identifier,
        image=f"{identifier}.png",
        width=1,
        height=1,
        instances=instances,
        scores=scores,
    )


def confidence(s: Sample, name: str) -> float | None:
    return s.scores.get("attention_confidence")


def test_a_skewed_output_still_shows_every_class_worst_beside_typical() -> None:
    # Forty balls come first; the two boxes and one ring would never make a first-8 sheet.
    balls = [sample(f"ball-{i:02d}", ["ball"], i / 40) for i in range(40)]
    rest = [sample("box-0", ["box"], 0.9), sample("box-1", ["box"], 0.2)]
    rest.append(sample("ring-0", ["ring"], 0.5))
    tiles, left_out = pick_tiles([*balls, *rest], ["ball", "box", "ring"], confidence)
    assert left_out == 0
    by_class = {
        name: [t for t in tiles if t.class_name == name] for name in ("ball", "box", "ring")
    }
    ball = by_class["ball"]
    assert len(ball) == PER_CLASS
    # The two lowest scores, then the two nearest the median (0.4875): 0.475 and 0.5.
    assert [(t.kind, t.sample.id) for t in ball] == [
        ("worst", "ball-00"),
        ("worst", "ball-01"),
        ("typical", "ball-19"),
        ("typical", "ball-20"),
    ]
    assert [(t.kind, t.score) for t in by_class["box"]] == [("worst", 0.2), ("typical", 0.9)]
    assert [t.kind for t in by_class["ring"]] == ["typical"]  # one sample is not "the worst"
    assert sum(t.kind == "worst" for t in tiles) <= WORST * 3


def test_unscored_samples_are_spread_and_too_many_classes_keep_the_weakest() -> None:
    unscored = [sample(f"ball-{i:02d}", ["ball"], None) for i in range(9)]
    tiles, _ = pick_tiles(unscored, ["ball"])
    assert [t.sample.id for t in tiles] == ["ball-00", "ball-03", "ball-05", "ball-08"]
    assert {t.kind for t in tiles} == {"typical"}
    names = [f"class{i:02d}" for i in range(MAX_CLASSES + 3)]
    many = [sample(f"{name}-0", [name], i / 100) for i, name in enumerate(names)]
    tiles, left_out = pick_tiles(many, names, confidence)
    assert left_out == 3
    assert [t.class_name for t in tiles] == names[:MAX_CLASSES]  # the lowest-scoring, in order

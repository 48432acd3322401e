"""Resolving a run's classes: exact, alias and embedding matches, the relation file, errors."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

from freemask.cli import main
from freemask.config import RunConfig
from freemask.models import load_text_encoder
from freemask.relate import (
    EmbeddingMatcher,
    ThesaurusError,
    load_thesaurus,
    match_class,
    run_relate,
)


@pytest.fixture(scope="module")
def matcher():
    """The real MiniLM text encoder, loaded offline from its package."""
    thesaurus = load_thesaurus()
    return EmbeddingMatcher(thesaurus, load_text_encoder("sentence-transformers/all-MiniLM-L6-v2"))


def test_unknown_class_is_matched_to_its_nearest_entry(matcher) -> None:
    thesaurus = load_thesaurus()
    match = match_class("puppy dog", thesaurus, matcher, threshold=0.55)
    assert match.entry == "dog" and match.method == "embedding"
    assert match.score > 0.8 and match.nearest[0][0] == "dog"


def test_unmatched_class_error_lists_the_nearest_candidates(matcher) -> None:
    with pytest.raises(ThesaurusError) as error:
        match_class("quantum chromodynamics", load_thesaurus(), matcher, threshold=0.55)
    message = str(error.value)
    assert "'quantum chromodynamics' is not in the thesaurus" in message
    assert "nearest:" in message and message.count("(0.") >= 5
    assert "relate.similarity_threshold 0.55" in message


def test_relations_file_holds_scenes_partners_and_match_method(tmp_path, matcher) -> None:
    config = RunConfig.model_validate({"classes": ["boat", "couch", "cat", "sailing yacht"]})
    result = run_relate(config, None, str(tmp_path / "relate"), encoder=matcher.encoder)
    relations = json.loads((tmp_path / "relate" / "relations.json").read_text())
    classes = relations["classes"]
    assert classes["boat"]["matched_by"] == "exact"
    assert classes["couch"]["matched_by"] == "alias" and classes["couch"]["entry"] == "sofa"
    assert classes["sailing yacht"]["matched_by"] == "embedding"
    assert classes["sailing yacht"]["entry"] == "boat"
    assert classes["couch"]["partners_in_run"] == ["cat"]
    assert classes["boat"]["support"] == "water" and 0 < classes["boat"]["size"] < 1
    assert set(relations["scenes"]["sea"]) == {"boat", "sailing yacht"}
    assert result.summary == {"alias": 1, "embedding": 1, "exact": 2}
    assert (tmp_path / "relate" / "_SUCCESS").is_file()


def test_known_classes_need_no_text_encoder(tmp_path, monkeypatch) -> None:
    def refuse(_model_id):
        raise AssertionError("the text encoder must not load when every class is in the table")

    monkeypatch.setattr("freemask.relate.stage.load_text_encoder", refuse)
    config = RunConfig.model_validate({"classes": ["aeroplane", "tvmonitor"]})
    assert run_relate(config, None, str(tmp_path)).written == 2


def test_cli_relate_reports_an_unmatched_class_as_bad_input(tmp_path: Path, capsys) -> None:
    path = tmp_path / "run.yaml"
    config = {"name": "r", "workdir": str(tmp_path / "w"), "classes": ["cat", "zzqx vvbn"]}
    path.write_text(yaml.safe_dump({**config, "relate": {"similarity_threshold": 0.99}}))
    assert main(["relate", "--config", str(path)]) == 2
    assert "zzqx vvbn" in capsys.readouterr().err

"""Prompt building and locating the class word among the prompt's tokens."""

from __future__ import annotations

import pytest

from freemask.config import GenerateConfig
from freemask.errors import FreemaskError
from freemask.generate.prompts import Prompt, build_prompt, class_token_indices
from freemask.models import tiny_clip_tokenizer


@pytest.fixture(scope="module")
def tokenizer():
    return tiny_clip_tokenizer()


def test_prompt_is_reproducible_from_the_seed() -> None:
    config = GenerateConfig(
        prompt_templates=["a photo of a {adjective} {name}, {camera}", "a {name} {context}"],
        adjectives=["red", "blue", "green"],
        contexts=["outdoors", "indoors"],
        camera_words=["close up", "studio shot"],
    )
    prompts = [build_prompt("ball", seed, config) for seed in range(40)]
    assert prompts == [build_prompt("ball", seed, config) for seed in range(40)]
    assert len({prompt.text for prompt in prompts}) > 5
    assert all("ball" in prompt.text and prompt.phrase == "ball" for prompt in prompts)
    assert all("{" not in prompt.text for prompt in prompts)


def test_synonyms_replace_the_class_name() -> None:
    config = GenerateConfig(synonyms={"tvmonitor": ["tv monitor", "television"]})
    phrases = {build_prompt("tvmonitor", seed, config).phrase for seed in range(50)}
    assert phrases == {"tvmonitor", "tv monitor", "television"}
    for seed in range(10):
        prompt = build_prompt("tvmonitor", seed, config)
        assert prompt.text == f"a photo of a {prompt.phrase}"


def test_empty_word_lists_leave_no_gaps() -> None:
    config = GenerateConfig(prompt_templates=["a {adjective} {name}, {camera}"])
    assert build_prompt("cat", 0, config).text == "a cat"


@pytest.mark.parametrize(
    ("templates", "message"),
    [(["a photo"], "no {name} placeholder"), (["a {name} {mood}"], "unknown placeholder")],
)
def test_bad_templates_are_rejected(templates: list[str], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        GenerateConfig(prompt_templates=templates)


def test_multi_token_class_finds_every_token(tokenizer) -> None:
    prompt = Prompt(text="a red traffic light outdoors", phrase="traffic light")
    indices = class_token_indices(tokenizer, prompt, "s")
    tokens = tokenizer.convert_ids_to_tokens(tokenizer(prompt.text).input_ids)
    assert [tokens[index] for index in indices] == ["traffic</w>", "light</w>"]


def test_word_split_into_pieces_is_found(tokenizer) -> None:
    # "zebra" is not in the tiny vocabulary: it splits into letters, all of them captured.
    prompt = Prompt(text="a photo of a zebra", phrase="zebra")
    assert len(class_token_indices(tokenizer, prompt, "s")) == 5


def test_class_word_missing_from_prompt_names_the_sample(tokenizer) -> None:
    prompt = Prompt(text="a photo of two cats", phrase="cat")
    with pytest.raises(FreemaskError, match=r"sample cat-123: the class word 'cat'"):
        class_token_indices(tokenizer, prompt, "cat-123")

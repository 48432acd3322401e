"""Prompts for single-object images, and where the class word sits among the prompt's tokens.

A prompt comes from one of the configured templates (``{name}`` is the class, or one of its
synonyms; ``{adjective}``, ``{context}`` and ``{camera}`` draw from the configured word lists).
Every choice is drawn from the sample's seed, so a sample's prompt is reproducible.
"""

from __future__ import annotations

import random
import re
from dataclasses import dataclass
from typing import Any

from freemask.config import GenerateConfig
from freemask.errors import FreemaskError


@dataclass(frozen=True)
class Prompt:
    """A prompt's text and the phrase in it that names the object (whose attention is the mask)."""

    text: str
    phrase: str


def build_prompt(class_name: str, seed: int, config: GenerateConfig) -> Prompt:
    """Draw a prompt for ``class_name`` from the templates, synonyms and word lists, by ``seed``."""
    rng = random.Random(f"prompt|{class_name}|{seed}")
    phrase = rng.choice([class_name, *config.synonyms.get(class_name, [])])
    template = rng.choice(config.prompt_templates)
    words = {
        "adjective": rng.choice(config.adjectives) if config.adjectives else "",
        "context": rng.choice(config.contexts) if config.contexts else "",
        "camera": rng.choice(config.camera_words) if config.camera_words else "",
    }
    text = template.format(name=phrase, **words)
    # An empty word list leaves a gap: close doubled spaces and spaces before punctuation.
    text = re.sub(r"\s+([,.;:])", r"\1", re.sub(r"\s{2,}", " ", text)).strip(" ,")
    return Prompt(text=text, phrase=phrase)


def class_token_indices(tokenizer: Any, prompt: Prompt, sample_id: str) -> list[int]:
    """Positions of ``prompt.phrase``'s tokens in the tokenized prompt (start token included).

    A phrase may span several tokens ("traffic light", or a word the tokenizer splits); the
    first occurrence that fits within the tokenizer's length is used. Raises FreemaskError
    naming the sample when the phrase's tokens are not found.
    """
    prompt_ids = tokenizer(
        prompt.text, truncation=True, max_length=tokenizer.model_max_length
    ).input_ids
    phrase_ids = tokenizer(prompt.phrase, add_special_tokens=False).input_ids
    if phrase_ids:
        width = len(phrase_ids)
        for start in range(len(prompt_ids) - width + 1):
            if prompt_ids[start : start + width] == phrase_ids:
                return list(range(start, start + width))
    raise FreemaskError(
        f"sample {sample_id}: the class word {prompt.phrase!r} is not among the tokens of the "
        f"prompt {prompt.text!r} (tokens {tokenizer.convert_ids_to_tokens(prompt_ids)}); "
        "check generate.prompt_templates and generate.synonyms"
    )

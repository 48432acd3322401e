"""What a run is, for the people who open it: its description (Markdown, MLflow's
``mlflow.note.content``: the run page's description) and where it came from (MLflow's
``mlflow.source.*`` tags, with the git commit when freemask runs from a checkout)."""

from __future__ import annotations

import os
import subprocess
from contextlib import suppress
from pathlib import Path

from freemask.config import RunConfig
from freemask.redact import redact

DESCRIPTION_TAG = "mlflow.note.content"  # the run page's description (Markdown)


def describe_run(config: RunConfig) -> str:
    """What a run makes, in words (Markdown): the run page's description in MLflow and the
    report's opening lines."""
    classes = ", ".join(config.classes[:12]) + (", ..." if len(config.classes) > 12 else "")
    generate, active, segment = config.generate, config.active, config.segment
    low, high = config.compose.objects_per_image
    judge = f"`{segment.labeller}`" if segment.labeller else "a round-0 segmenter (bootstrap)"
    lines = [
        f"Synthetic segmentation dataset **{config.name}**: {len(config.classes)} classes "
        f"({classes}).",
        "",
        f"- generate: {generate.images_per_class} images per class from `{generate.model_id}`",
        f"- compose: {config.compose.images} scenes of {low}-{high} objects",
        (
            f"- active learning: up to {active.max_rounds} rounds, keep rule "
            f"`{active.keep_rule}` (IoU threshold {active.iou_threshold}), segmenter "
            f"`{segment.model_id}`, round 1 judged by {judge}"
            if active.max_rounds
            else f"- active learning: off (the unfiltered pool ships), segmenter "
            f"`{segment.model_id}` trained on it"
        ),
        f"- validation: {segment.validation or '1-in-10 split of the generated pool'}",
    ]
    if config.kubeflow.dataset_version:
        lines.append(f"- dataset version: {config.kubeflow.dataset_version}")
    lines.append(f"- work directory: `{config.workdir}`")
    return redact("\n".join(lines))


def source_tags(source_name: str, source_type: str = "LOCAL") -> dict[str, str]:
    """MLflow's source tags for a run started by ``source_name`` (``freemask run``): the
    name, the type (MLflow's SourceType: LOCAL, JOB), the freemask version, and the git commit
    (``mlflow.source.git.commit``, and the repository's address) when freemask runs from a git
    checkout; without git or outside a checkout, no git tags."""
    from importlib.metadata import PackageNotFoundError, version

    tags = {"mlflow.source.name": source_name, "mlflow.source.type": source_type}
    with suppress(PackageNotFoundError):
        tags["freemask.version"] = version("freemask")
    tags.update(git_tags(Path(__file__).resolve().parent))
    return tags


def git_tags(package: Path) -> dict[str, str]:
    """``mlflow.source.git.*`` of the checkout whose top folder holds ``package`` (this
    package's folder), or nothing: no git program, no checkout, or ``package`` installed
    elsewhere (a wheel inside another project's checkout is not that project's code)."""

    def git(*args: str) -> str | None:
        try:
            done = subprocess.run(
                ["git", "-C", str(package), *args],
                capture_output=True,
                text=True,
                timeout=10,
                env={**os.environ, "GIT_TERMINAL_PROMPT": "0"},
            )
        except (OSError, subprocess.SubprocessError):
            return None
        return done.stdout.strip() if done.returncode == 0 else None

    top = git("rev-parse", "--show-toplevel")
    if not top or Path(top).resolve() / package.name != package.resolve():
        return {}
    commit = git("rev-parse", "HEAD")
    if not commit:
        return {}
    tags = {"mlflow.source.git.commit": commit}
    remote = git("remote", "get-url", "origin")
    if remote:
        tags["mlflow.source.git.repoURL"] = redact(remote)
    return tags

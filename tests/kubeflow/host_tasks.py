"""Host-run twins of the container components: the same `freemask` command lines, run with this
machine's Python, so that kfp.local can execute the real pipeline in tests."""

from kfp import dsl

# Unused by the subprocess runner (it runs this machine's Python), but named explicitly.
HOST_IMAGE = "python:3.11"


@dsl.component(base_image=HOST_IMAGE)
def generate(
    config: str,
    classes: str,
    images_per_class: int,
    iou_threshold: float,
    max_rounds: int,
    tracking_uri: str,
    shard: int,
    shards: int,
):
    import subprocess
    import sys

    from freemask.commands import joined, runtime_argv, stage_argv

    runtime = runtime_argv(classes, images_per_class, iou_threshold, max_rounds, tracking_uri)
    argv = joined(runtime + stage_argv("generate", config, shard, shards))
    subprocess.run([sys.executable, "-m", "freemask.cli", *argv], check=True)


@dsl.component(base_image=HOST_IMAGE)
def backgrounds(
    config: str,
    classes: str,
    images_per_class: int,
    iou_threshold: float,
    max_rounds: int,
    tracking_uri: str,
    shard: int,
    shards: int,
):
    import subprocess
    import sys

    from freemask.commands import joined, runtime_argv, stage_argv

    runtime = runtime_argv(classes, images_per_class, iou_threshold, max_rounds, tracking_uri)
    argv = joined(runtime + stage_argv("backgrounds", config, shard, shards))
    subprocess.run([sys.executable, "-m", "freemask.cli", *argv], check=True)


@dsl.component(base_image=HOST_IMAGE)
def compose(
    config: str,
    classes: str,
    images_per_class: int,
    iou_threshold: float,
    max_rounds: int,
    tracking_uri: str,
    shard: int,
    shards: int,
):
    import subprocess
    import sys

    from freemask.commands import joined, runtime_argv, stage_argv

    runtime = runtime_argv(classes, images_per_class, iou_threshold, max_rounds, tracking_uri)
    argv = joined(runtime + stage_argv("compose", config, shard, shards))
    subprocess.run([sys.executable, "-m", "freemask.cli", *argv], check=True)


@dsl.component(base_image=HOST_IMAGE)
def refine(
    config: str,
    classes: str,
    images_per_class: int,
    iou_threshold: float,
    max_rounds: int,
    tracking_uri: str,
    shard: int,
    shards: int,
):
    import subprocess
    import sys

    from freemask.commands import joined, runtime_argv, stage_argv

    runtime = runtime_argv(classes, images_per_class, iou_threshold, max_rounds, tracking_uri)
    argv = joined(runtime + stage_argv("refine", config, shard, shards))
    subprocess.run([sys.executable, "-m", "freemask.cli", *argv], check=True)


@dsl.component(base_image=HOST_IMAGE)
def harmonize(
    config: str,
    classes: str,
    images_per_class: int,
    iou_threshold: float,
    max_rounds: int,
    tracking_uri: str,
    shard: int,
    shards: int,
):
    import subprocess
    import sys

    from freemask.commands import joined, runtime_argv, stage_argv

    runtime = runtime_argv(classes, images_per_class, iou_threshold, max_rounds, tracking_uri)
    argv = joined(runtime + stage_argv("harmonize", config, shard, shards))
    subprocess.run([sys.executable, "-m", "freemask.cli", *argv], check=True)


@dsl.component(base_image=HOST_IMAGE)
def relate(
    config: str,
    classes: str,
    images_per_class: int,
    iou_threshold: float,
    max_rounds: int,
    tracking_uri: str,
):
    import subprocess
    import sys

    from freemask.commands import joined, runtime_argv, stage_argv

    runtime = runtime_argv(classes, images_per_class, iou_threshold, max_rounds, tracking_uri)
    argv = joined(runtime + stage_argv("relate", config))
    subprocess.run([sys.executable, "-m", "freemask.cli", *argv], check=True)


@dsl.component(base_image=HOST_IMAGE)
def refine_train(
    config: str,
    classes: str,
    images_per_class: int,
    iou_threshold: float,
    max_rounds: int,
    tracking_uri: str,
):
    import subprocess
    import sys

    from freemask.commands import joined, refine_train_argv, runtime_argv

    runtime = runtime_argv(classes, images_per_class, iou_threshold, max_rounds, tracking_uri)
    argv = joined(runtime + refine_train_argv(config))
    subprocess.run([sys.executable, "-m", "freemask.cli", *argv], check=True)


@dsl.component(base_image=HOST_IMAGE)
def join(
    config: str,
    classes: str,
    images_per_class: int,
    iou_threshold: float,
    max_rounds: int,
    tracking_uri: str,
    stage: str,
    shards: int,
):
    import subprocess
    import sys

    from freemask.commands import join_argv, joined, runtime_argv

    runtime = runtime_argv(classes, images_per_class, iou_threshold, max_rounds, tracking_uri)
    argv = joined(runtime + join_argv(config, stage, shards))
    subprocess.run([sys.executable, "-m", "freemask.cli", *argv], check=True)


@dsl.component(base_image=HOST_IMAGE)
def start_run(
    config: str,
    classes: str,
    images_per_class: int,
    iou_threshold: float,
    max_rounds: int,
    tracking_uri: str,
) -> str:
    # Returned rather than written to an output path: kfp.local resolves return values across
    # nested pipelines. The command line is the container's, with a local output file.
    import pathlib
    import subprocess
    import sys
    import tempfile

    from freemask.commands import joined, runtime_argv, start_run_argv

    run_id = pathlib.Path(tempfile.mkdtemp()) / "run_id"
    runtime = runtime_argv(classes, images_per_class, iou_threshold, max_rounds, tracking_uri)
    argv = joined(runtime + start_run_argv(config, str(run_id)))
    subprocess.run([sys.executable, "-m", "freemask.cli", *argv], check=True)
    return run_id.read_text()


@dsl.component(base_image=HOST_IMAGE)
def prepare(
    config: str,
    classes: str,
    images_per_class: int,
    iou_threshold: float,
    max_rounds: int,
    tracking_uri: str,
    parent_run_id: str,
):
    import subprocess
    import sys

    from freemask.commands import joined, round_argv, runtime_argv

    runtime = runtime_argv(classes, images_per_class, iou_threshold, max_rounds, tracking_uri)
    argv = joined(runtime + round_argv("prepare", config, 0, parent_run_id))
    subprocess.run([sys.executable, "-m", "freemask.cli", *argv], check=True)


@dsl.component(base_image=HOST_IMAGE)
def bootstrap(
    config: str,
    classes: str,
    images_per_class: int,
    iou_threshold: float,
    max_rounds: int,
    tracking_uri: str,
    parent_run_id: str,
):
    import subprocess
    import sys

    from freemask.commands import joined, round_argv, runtime_argv

    runtime = runtime_argv(classes, images_per_class, iou_threshold, max_rounds, tracking_uri)
    argv = joined(runtime + round_argv("bootstrap", config, 0, parent_run_id))
    subprocess.run([sys.executable, "-m", "freemask.cli", *argv], check=True)


@dsl.component(base_image=HOST_IMAGE)
def pseudo_label(
    config: str,
    classes: str,
    images_per_class: int,
    iou_threshold: float,
    max_rounds: int,
    tracking_uri: str,
    round_index: int,
    parent_run_id: str,
):
    import subprocess
    import sys

    from freemask.commands import joined, round_argv, runtime_argv

    runtime = runtime_argv(classes, images_per_class, iou_threshold, max_rounds, tracking_uri)
    argv = joined(runtime + round_argv("pseudo-label", config, round_index, parent_run_id))
    subprocess.run([sys.executable, "-m", "freemask.cli", *argv], check=True)


@dsl.component(base_image=HOST_IMAGE)
def filter_round(
    config: str,
    classes: str,
    images_per_class: int,
    iou_threshold: float,
    max_rounds: int,
    tracking_uri: str,
    round_index: int,
    parent_run_id: str,
):
    import subprocess
    import sys

    from freemask.commands import joined, round_argv, runtime_argv

    runtime = runtime_argv(classes, images_per_class, iou_threshold, max_rounds, tracking_uri)
    argv = joined(runtime + round_argv("filter", config, round_index, parent_run_id))
    subprocess.run([sys.executable, "-m", "freemask.cli", *argv], check=True)


@dsl.component(base_image=HOST_IMAGE)
def train(
    config: str,
    classes: str,
    images_per_class: int,
    iou_threshold: float,
    max_rounds: int,
    tracking_uri: str,
    round_index: int,
    parent_run_id: str,
):
    import subprocess
    import sys

    from freemask.commands import joined, round_argv, runtime_argv

    runtime = runtime_argv(classes, images_per_class, iou_threshold, max_rounds, tracking_uri)
    argv = joined(runtime + round_argv("train", config, round_index, parent_run_id))
    subprocess.run([sys.executable, "-m", "freemask.cli", *argv], check=True)


@dsl.component(base_image=HOST_IMAGE)
def close(
    config: str,
    classes: str,
    images_per_class: int,
    iou_threshold: float,
    max_rounds: int,
    tracking_uri: str,
    round_index: int,
    parent_run_id: str,
    depth: int,
) -> str:
    # Returned rather than written to an output path, as in start_run.
    import pathlib
    import subprocess
    import sys
    import tempfile

    from freemask.commands import joined, round_argv, runtime_argv

    decision = pathlib.Path(tempfile.mkdtemp()) / "decision"
    runtime = runtime_argv(classes, images_per_class, iou_threshold, max_rounds, tracking_uri)
    step = round_argv("close", config, round_index, parent_run_id, max_rounds, depth, str(decision))
    subprocess.run([sys.executable, "-m", "freemask.cli", *joined(runtime + step)], check=True)
    return decision.read_text()

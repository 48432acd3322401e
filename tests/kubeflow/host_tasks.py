"""Host-run twins of the container components, so that kfp.local (whose SubprocessRunner runs
only Python components) can execute the real pipeline in tests. Each twin builds its command line
with ``freemask.commands.task_argv``, the very function the container components call, from its
own inputs; test_ir_resolution proves those argument lists equal the ones the open-source KFP
driver resolves from the compiled IR for the same inputs."""

from kfp import dsl

# Unused by the subprocess runner (it runs this machine's Python), but named explicitly.
HOST_IMAGE = "python:3.11"


@dsl.component(base_image=HOST_IMAGE)
def start_run(
    config: str,
    classes: str,
    images_per_class: str,
    iou_threshold: str,
    max_rounds: str,
    tracking_uri: str,
    dataset_version: str,
    depth: int,
) -> str:
    # Returned rather than written to an output path: kfp.local resolves return values across
    # nested pipelines. The command line is the container's, with a local output file.
    import pathlib
    import tempfile

    values = dict(locals())
    values["run_id"] = str(pathlib.Path(tempfile.mkdtemp()) / "run_id")
    import subprocess
    import sys

    from freemask.commands import task_argv

    argv = task_argv("start-run", values)
    subprocess.run([sys.executable, "-m", "freemask.cli", *argv], check=True)
    return pathlib.Path(values["run_id"]).read_text()


@dsl.component(base_image=HOST_IMAGE)
def generate(
    config: str,
    classes: str,
    images_per_class: str,
    iou_threshold: str,
    max_rounds: str,
    tracking_uri: str,
    dataset_version: str,
    shard: int,
    shards: int,
):
    values = dict(locals())
    import subprocess
    import sys

    from freemask.commands import task_argv

    argv = task_argv("generate", values)
    subprocess.run([sys.executable, "-m", "freemask.cli", *argv], check=True)


@dsl.component(base_image=HOST_IMAGE)
def refine(
    config: str,
    classes: str,
    images_per_class: str,
    iou_threshold: str,
    max_rounds: str,
    tracking_uri: str,
    dataset_version: str,
    shard: int,
    shards: int,
):
    values = dict(locals())
    import subprocess
    import sys

    from freemask.commands import task_argv

    argv = task_argv("refine", values)
    subprocess.run([sys.executable, "-m", "freemask.cli", *argv], check=True)


@dsl.component(base_image=HOST_IMAGE)
def backgrounds(
    config: str,
    classes: str,
    images_per_class: str,
    iou_threshold: str,
    max_rounds: str,
    tracking_uri: str,
    dataset_version: str,
    shard: int,
    shards: int,
):
    values = dict(locals())
    import subprocess
    import sys

    from freemask.commands import task_argv

    argv = task_argv("backgrounds", values)
    subprocess.run([sys.executable, "-m", "freemask.cli", *argv], check=True)


@dsl.component(base_image=HOST_IMAGE)
def compose(
    config: str,
    classes: str,
    images_per_class: str,
    iou_threshold: str,
    max_rounds: str,
    tracking_uri: str,
    dataset_version: str,
    shard: int,
    shards: int,
):
    values = dict(locals())
    import subprocess
    import sys

    from freemask.commands import task_argv

    argv = task_argv("compose", values)
    subprocess.run([sys.executable, "-m", "freemask.cli", *argv], check=True)


@dsl.component(base_image=HOST_IMAGE)
def harmonize(
    config: str,
    classes: str,
    images_per_class: str,
    iou_threshold: str,
    max_rounds: str,
    tracking_uri: str,
    dataset_version: str,
    shard: int,
    shards: int,
):
    values = dict(locals())
    import subprocess
    import sys

    from freemask.commands import task_argv

    argv = task_argv("harmonize", values)
    subprocess.run([sys.executable, "-m", "freemask.cli", *argv], check=True)


@dsl.component(base_image=HOST_IMAGE)
def relate(
    config: str,
    classes: str,
    images_per_class: str,
    iou_threshold: str,
    max_rounds: str,
    tracking_uri: str,
    dataset_version: str,
):
    values = dict(locals())
    import subprocess
    import sys

    from freemask.commands import task_argv

    argv = task_argv("relate", values)
    subprocess.run([sys.executable, "-m", "freemask.cli", *argv], check=True)


@dsl.component(base_image=HOST_IMAGE)
def refine_train(
    config: str,
    classes: str,
    images_per_class: str,
    iou_threshold: str,
    max_rounds: str,
    tracking_uri: str,
    dataset_version: str,
):
    values = dict(locals())
    import subprocess
    import sys

    from freemask.commands import task_argv

    argv = task_argv("refine-train", values)
    subprocess.run([sys.executable, "-m", "freemask.cli", *argv], check=True)


@dsl.component(base_image=HOST_IMAGE)
def join(
    config: str,
    classes: str,
    images_per_class: str,
    iou_threshold: str,
    max_rounds: str,
    tracking_uri: str,
    dataset_version: str,
    stage: str,
    shards: int,
):
    values = dict(locals())
    import subprocess
    import sys

    from freemask.commands import task_argv

    argv = task_argv("join", values)
    subprocess.run([sys.executable, "-m", "freemask.cli", *argv], check=True)


@dsl.component(base_image=HOST_IMAGE)
def prepare(
    config: str,
    classes: str,
    images_per_class: str,
    iou_threshold: str,
    max_rounds: str,
    tracking_uri: str,
    dataset_version: str,
    parent_run_id: str,
):
    values = dict(locals())
    import subprocess
    import sys

    from freemask.commands import task_argv

    argv = task_argv("prepare", values)
    subprocess.run([sys.executable, "-m", "freemask.cli", *argv], check=True)


@dsl.component(base_image=HOST_IMAGE)
def bootstrap(
    config: str,
    classes: str,
    images_per_class: str,
    iou_threshold: str,
    max_rounds: str,
    tracking_uri: str,
    dataset_version: str,
    parent_run_id: str,
):
    values = dict(locals())
    import subprocess
    import sys

    from freemask.commands import task_argv

    argv = task_argv("bootstrap", values)
    subprocess.run([sys.executable, "-m", "freemask.cli", *argv], check=True)


@dsl.component(base_image=HOST_IMAGE)
def pseudo_label(
    config: str,
    classes: str,
    images_per_class: str,
    iou_threshold: str,
    max_rounds: str,
    tracking_uri: str,
    dataset_version: str,
    round_index: int,
    parent_run_id: str,
):
    values = dict(locals())
    import subprocess
    import sys

    from freemask.commands import task_argv

    argv = task_argv("pseudo-label", values)
    subprocess.run([sys.executable, "-m", "freemask.cli", *argv], check=True)


@dsl.component(base_image=HOST_IMAGE)
def filter_round(
    config: str,
    classes: str,
    images_per_class: str,
    iou_threshold: str,
    max_rounds: str,
    tracking_uri: str,
    dataset_version: str,
    round_index: int,
    parent_run_id: str,
):
    values = dict(locals())
    import subprocess
    import sys

    from freemask.commands import task_argv

    argv = task_argv("filter", values)
    subprocess.run([sys.executable, "-m", "freemask.cli", *argv], check=True)


@dsl.component(base_image=HOST_IMAGE)
def train(
    config: str,
    classes: str,
    images_per_class: str,
    iou_threshold: str,
    max_rounds: str,
    tracking_uri: str,
    dataset_version: str,
    round_index: int,
    parent_run_id: str,
):
    values = dict(locals())
    import subprocess
    import sys

    from freemask.commands import task_argv

    argv = task_argv("train", values)
    subprocess.run([sys.executable, "-m", "freemask.cli", *argv], check=True)


@dsl.component(base_image=HOST_IMAGE)
def close(
    config: str,
    classes: str,
    images_per_class: str,
    iou_threshold: str,
    max_rounds: str,
    tracking_uri: str,
    dataset_version: str,
    round_index: int,
    parent_run_id: str,
    depth: int,
) -> str:
    # Returned rather than written to an output path: kfp.local resolves return values across
    # nested pipelines. The command line is the container's, with a local output file.
    import pathlib
    import tempfile

    values = dict(locals())
    values["decision"] = str(pathlib.Path(tempfile.mkdtemp()) / "decision")
    import subprocess
    import sys

    from freemask.commands import task_argv

    argv = task_argv("close", values)
    subprocess.run([sys.executable, "-m", "freemask.cli", *argv], check=True)
    return pathlib.Path(values["decision"]).read_text()

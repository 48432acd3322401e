"""What the host-run twins (host_tasks.py) run inside kfp.local's subprocesses: a task's
command line, with the launcher's part for output artifacts. No kfp import here (kfp.local's
executor imports only part of ``kfp.dsl``)."""

from typing import Any, NamedTuple


def run_twin(task: str, values: dict[str, Any], artifacts: dict[str, Any] | None = None) -> None:
    """Run ``freemask <task_argv(task, values)>`` here; give ``artifacts`` (kfp.local output
    artifacts by output name) the metadata the command writes to its executor output file."""
    import json
    import pathlib
    import tempfile

    from freemask.cli import main
    from freemask.commands import task_argv

    artifacts = artifacts or {}
    output_file = pathlib.Path(tempfile.mkdtemp()) / "output_metadata.json"
    listed = {name: {"artifacts": [{"name": name, "uri": a.uri}]} for name, a in artifacts.items()}
    document = {"outputs": {"artifacts": listed, "outputFile": str(output_file)}}
    values = {**values, "executor_input": json.dumps(document)}
    argv = task_argv(task, values)
    if main(argv) != 0:  # in this process: kfp.local already started one per task
        raise RuntimeError(f"freemask {' '.join(argv)} failed")
    if artifacts:
        written = json.loads(output_file.read_text())["artifacts"]
        for name, artifact in artifacts.items():
            artifact.metadata.update(written[name]["artifacts"][0]["metadata"])


class StartOutputs(NamedTuple):
    run_id: str

"""`run_cli`: a `flowtopo` command run in the test process (tests/conftest.py's ``cli``)."""

from __future__ import annotations


class CliResult:
    """What a `flowtopo` command gave: ``returncode``, ``stdout``, ``stderr`` (as `subprocess`)."""

    def __init__(self, returncode: int, stdout: str, stderr: str) -> None:
        self.returncode, self.stdout, self.stderr = returncode, stdout, stderr


def run_cli(*args: object, columns: int = 200) -> CliResult:
    """``flowtopo ARGS`` in this process, through the app the console script runs.

    The exit-code mapping lives inside the app (`flowtopo.cli._Commands`), so the code and the
    one-line error are the console script's; an exception the app lets through is written to
    ``stderr`` as its traceback, as the console script would print it. Spawning a Python per
    command costs ~2 s of imports (and, for commands that use Ray, a new local Ray); the
    console script itself is still run as a subprocess by test_cli_data, test_sweep_jobs and
    the cluster tests.
    """
    import traceback

    from typer.testing import CliRunner

    from flowtopo import cli

    saved = cli.console._width
    cli.console.width = columns  # as COLUMNS would set it for the console script
    try:
        res = CliRunner().invoke(cli.app, [str(a) for a in args], env={
            "MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR": "false"})
    finally:
        cli.console._width = saved
    stderr = res.stderr
    if res.exception is not None and not isinstance(res.exception, SystemExit):
        stderr += "".join(traceback.format_exception(res.exception))
    return CliResult(res.exit_code, res.stdout, stderr)

"""Shared by the entry scripts: the config folder, and clean reporting of input errors."""

from __future__ import annotations

import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

CONFIG_DIR = str(Path(__file__).resolve().parents[1] / "configs")


def report_input_errors(run: Callable[[], Any]) -> Any:
    """Call ``run``; a problem with the user's input is printed as one clear line, exit status 2.

    Data errors (missing or corrupt files, wrong bands, off-palette labels), settings that cannot
    work together, checkpoints that do not fit or are unsafe, an unwritable run folder,
    unavailable encoder weights and a diverging loss are the user's to fix, so they are reported
    without a stack trace (``HYDRA_FULL_ERROR=1`` or ``GLCNET_TRACEBACK=1`` shows it; see
    :mod:`glcnet.utils.reporting`). A run stopped by SIGTERM/SIGUSR1 prints where its checkpoint
    is and exits with 128 + the signal number. Anything else is a bug and raises.
    """
    from glcnet.training.preemption import RunStoppedError
    from glcnet.utils.reporting import input_error_message, traceback_wanted

    try:
        return run()
    except RunStoppedError as err:
        print(f"stopped: {err}", file=sys.stderr)
        sys.exit(err.exit_code)
    except Exception as err:
        message = input_error_message(err)
        if message is None or traceback_wanted():
            raise
        print(f"error: {message}", file=sys.stderr)
        sys.exit(2)


def check_run_dir_argument(argv: list[str] | None = None) -> None:
    """Refuse an unwritable ``hydra.run.dir=<folder>`` in one line, before Hydra tries it.

    Hydra creates the run folder before our code runs and reports a failure with a traceback;
    this probe-writes the folder given on the command line first (exit status 2 on failure).
    """
    from glcnet.training.output_folder import OutputFolderError, prepare_output_dir

    for arg in sys.argv[1:] if argv is None else argv:
        if arg.startswith("hydra.run.dir="):
            try:
                prepare_output_dir(arg.split("=", 1)[1], checkpoints=False)
            except OutputFolderError as err:
                print(f"error: {err}", file=sys.stderr)
                sys.exit(2)


def report_data_errors(run: Callable[[], Any]) -> Any:
    """Like :func:`report_input_errors`, for scripts that only read data (no model imports)."""
    from glcnet.data.classes import UnknownColorError
    from glcnet.data.errors import DataError, MissingDataError
    from glcnet.utils.reporting import one_line, traceback_wanted

    try:
        return run()
    except (DataError, MissingDataError, UnknownColorError) as err:
        if traceback_wanted():
            raise
        print(f"error: {one_line(err)}", file=sys.stderr)
        sys.exit(2)

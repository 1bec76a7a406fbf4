"""Run entry scripts with several command lines in one process (saves the import time).

Usage: python tests/run_many.py <json list of [script.py, [arguments...]]>

Each command line goes through the script's real ``__main__`` (Hydra's argument parsing, the run,
the error reporting and ``sys.exit``), exactly as ``python scripts/<script> args...`` does. Prints
a JSON list of ``{"code": exit status, "stderr": text, "stdout": text}``.
"""

from __future__ import annotations

import contextlib
import io
import json
import runpy
import sys
from pathlib import Path

from hydra.core.global_hydra import GlobalHydra

SCRIPTS = Path(__file__).resolve().parents[1] / "scripts"


def main() -> None:
    commands = json.loads(sys.argv[1])
    sys.path.insert(0, str(SCRIPTS))
    results = []
    real_stdout = sys.stdout
    for script, args in commands:
        out, err = io.StringIO(), io.StringIO()
        sys.argv = [str(SCRIPTS / script), *args]
        code = 0
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            try:
                runpy.run_path(str(SCRIPTS / script), run_name="__main__")
            except SystemExit as stop:
                code = stop.code if isinstance(stop.code, int) else (0 if stop.code is None else 1)
            except BaseException as exc:  # noqa: BLE001 - reported like an uncaught error
                import traceback

                traceback.print_exc(file=err)
                code = 1 if not isinstance(exc, KeyboardInterrupt) else 130
        GlobalHydra.instance().clear()
        results.append({"code": code, "stderr": err.getvalue(), "stdout": out.getvalue()})
    real_stdout.write(json.dumps(results))


if __name__ == "__main__":
    main()

"""Makes the entry scripts independent of the current directory."""

from pathlib import Path

CONFIG_DIR = str(Path(__file__).resolve().parents[1] / "configs")

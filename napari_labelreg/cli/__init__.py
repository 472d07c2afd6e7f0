"""The command line: ``napari-labelreg COMMAND`` (``main``), built from one module per group of commands."""

from .main import build_parser, main
from .options import TRAINING_SETTINGS, config_from_args, preset_value, use_from_args

__all__ = ["TRAINING_SETTINGS", "build_parser", "config_from_args", "main", "preset_value", "use_from_args"]

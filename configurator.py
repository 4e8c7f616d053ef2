"""nanoGPT-style configuration: `python train.py [config/file.py ...] [--key=value ...]`.

A script declares its settings as plain module globals, then calls `configure(globals())`. Config files are
Python that reassign those globals; `--key=value` overrides one, its value read as a Python literal (strings
may be written bare). Every name is checked against the script's own settings and every value against the
type of its default, so a typo stops the run before any work is done.
"""

import ast
import difflib
import os
import sys
from typing import Any

from errors import UserError

SETTING_TYPES = (bool, int, float, str, tuple, list, type(None))


def settings_of(namespace: dict) -> dict[str, Any]:
    """The configurable names of a script: public globals holding plain values. UPPER_CASE names are
    constants (often imported, like EOT_ID), not settings."""
    return {k: v for k, v in namespace.items()
            if not k.startswith("_") and not k.isupper() and isinstance(v, SETTING_TYPES)}


def configure(namespace: dict, argv: list[str] | None = None) -> dict[str, Any]:
    """Apply config files and --key=value overrides to `namespace`; return the final settings."""
    argv = sys.argv[1:] if argv is None else argv
    defaults = settings_of(namespace)
    if "--help" in argv or "-h" in argv:
        print_help(namespace, defaults)
        sys.exit(0)
    for arg in argv:
        if arg.startswith("--"):
            key, value = parse_override(arg, defaults)
            namespace[key] = value
        else:
            for key, value in read_config_file(arg).items():
                namespace[key] = check_type(key, value, defaults, source=arg)
    return {k: namespace[k] for k in defaults}


def print_help(namespace: dict, defaults: dict[str, Any]) -> None:
    doc = (namespace.get("__doc__") or "").strip()
    script = os.path.basename(sys.argv[0])
    if doc:
        print(doc, end="\n\n")
    print(f"usage: python {script} [config/file.py ...] [--key=value ...]\n\nsettings (default):")
    width = max(map(len, defaults), default=0)
    for key, value in defaults.items():
        print(f"  --{key.ljust(width)}  {value!r}")


def read_config_file(path: str) -> dict[str, Any]:
    """Run a Python config file and return the settings it assigns."""
    if not os.path.isfile(path):
        raise UserError(f"config file {path} not found (settings are given as --key=value; config files as paths)")
    with open(path) as f:
        source = f.read()
    assigned: dict[str, Any] = {}
    try:
        exec(compile(source, path, "exec"), assigned)
    except Exception as e:
        raise UserError(f"config file {path} failed: {type(e).__name__}: {e}") from e
    return settings_of(assigned)


def parse_override(arg: str, defaults: dict[str, Any]) -> tuple[str, Any]:
    """'--key=value' -> (key, typed value). A bare '--flag' sets a bool setting to True."""
    key, has_value, raw = arg[2:].partition("=")
    key = key.replace("-", "_")
    known_key(key, defaults, source=arg)
    if not has_value:
        if isinstance(defaults[key], bool):
            return key, True
        raise UserError(f"{arg}: give a value, e.g. --{key}={defaults[key]!r}")
    return key, check_type(key, parse_value(raw, defaults[key]), defaults, source=arg)


def parse_value(raw: str, default: Any) -> Any:
    """Read a command-line value: a Python literal, true/false for bools, else the bare string."""
    if isinstance(default, bool) and raw.lower() in ("true", "false"):
        return raw.lower() == "true"
    try:
        value = ast.literal_eval(raw)
    except (ValueError, SyntaxError, MemoryError, RecursionError):
        return raw
    if isinstance(default, str) and not isinstance(value, str):
        return raw  # --start=1+1 or --dataset=123 mean the text, not a number
    return value


def known_key(key: str, defaults: dict[str, Any], source: str) -> None:
    if key in defaults:
        return
    near = difflib.get_close_matches(key, defaults, n=3, cutoff=0.6)
    hint = f"did you mean {', '.join('--' + n for n in near)}?" if near else "run with --help to list the settings"
    raise UserError(f"unknown setting '{key}' in {source}: {hint}")


def check_type(key: str, value: Any, defaults: dict[str, Any], source: str) -> Any:
    """Return value if it fits the default's type (ints are accepted where floats are expected)."""
    known_key(key, defaults, source)
    default = defaults[key]
    if default is None or value is None:
        return value
    expected = type(default)
    if expected is float and type(value) is int:
        return float(value)
    if expected is list and type(value) is tuple or expected is tuple and type(value) is list:
        return expected(value)
    if type(value) is not expected:
        raise UserError(f"setting '{key}' got {value!r} ({type(value).__name__}) in {source}, "
                        f"expected {expected.__name__} like {default!r}")
    return value

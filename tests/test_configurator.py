"""configurator.py: config files and --key=value overrides, checked against the script's own settings."""

import subprocess
import sys
import textwrap

import pytest

from configurator import configure
from errors import UserError


def settings() -> dict:
    return {"batch_size": 12, "learning_rate": 6e-4, "compile": False, "dataset": "mini", "seed": None,
            "betas": (0.9, 0.95), "__doc__": "A demo.", "_private": 1, "EOT_ID": 50256}


def test_overrides_of_each_type():
    ns = settings()
    final = configure(ns, ["--batch_size=4", "--learning_rate=1e-3", "--compile=True", "--dataset=phi",
                           "--seed=7", "--betas=(0.8, 0.9)"])
    assert final == {"batch_size": 4, "learning_rate": 1e-3, "compile": True, "dataset": "phi", "seed": 7,
                     "betas": (0.8, 0.9)}
    assert ns["batch_size"] == 4 and ns["_private"] == 1
    with pytest.raises(UserError, match="unknown setting 'EOT_ID'"):  # constants are not settings
        configure(settings(), ["--EOT_ID=3"])


def test_friendly_forms():
    ns = settings()
    configure(ns, ["--compile", "--learning_rate=1", "--dataset=[Math] 1+1=", "--batch-size=2"])
    assert ns["compile"] is True and ns["learning_rate"] == 1.0 and isinstance(ns["learning_rate"], float)
    assert ns["dataset"] == "[Math] 1+1=" and ns["batch_size"] == 2
    configure(ns, ["--compile=false", "--dataset=123"])
    assert ns["compile"] is False and ns["dataset"] == "123"


def test_config_file_then_override(tmp_path):
    path = tmp_path / "cfg.py"
    path.write_text(textwrap.dedent("""
        import math
        batch_size = 2 ** 3
        learning_rate = 1e-4 * math.sqrt(4)
        dataset = "phi"
    """))
    ns = settings()
    configure(ns, [str(path), "--batch_size=5"])
    assert ns["batch_size"] == 5 and ns["learning_rate"] == pytest.approx(2e-4) and ns["dataset"] == "phi"


@pytest.mark.parametrize("argv, message", [
    (["--batchsize=3"], "unknown setting 'batchsize'.*did you mean --batch_size"),
    (["--batch_size=abc"], "setting 'batch_size' got 'abc' \\(str\\).*expected int"),
    (["--compile=maybe"], "setting 'compile' got 'maybe'.*expected bool"),
    (["--batch_size=1.5"], "expected int"),
    (["--batch_size"], "give a value"),
    (["no/such/config.py"], "config file no/such/config.py not found"),
])
def test_errors_name_the_problem(argv, message):
    with pytest.raises(UserError, match=message):
        configure(settings(), argv)


def test_config_file_with_unknown_key_or_bad_type(tmp_path):
    unknown = tmp_path / "unknown.py"
    unknown.write_text("learning_rat = 1.0\n")
    with pytest.raises(UserError, match="did you mean --learning_rate"):
        configure(settings(), [str(unknown)])
    wrong = tmp_path / "wrong.py"
    wrong.write_text("compile = 'yes'\n")
    with pytest.raises(UserError, match="expected bool"):
        configure(settings(), [str(wrong)])
    broken = tmp_path / "broken.py"
    broken.write_text("batch_size = 1 / 0\n")
    with pytest.raises(UserError, match="ZeroDivisionError"):
        configure(settings(), [str(broken)])


def test_help_lists_settings_and_errors_are_one_line(tmp_path):
    script = tmp_path / "script.py"
    script.write_text(textwrap.dedent('''
        """Demo script."""
        batch_size = 12
        compile = False
        from configurator import configure
        from errors import run_main
        run_main(lambda: print(configure(globals())))
    '''))
    env_path = {"PYTHONPATH": str(__import__("pathlib").Path(__file__).parent.parent)}
    shown = subprocess.run([sys.executable, str(script), "--help"], capture_output=True, text=True, env=env_path)
    assert shown.returncode == 0 and "--batch_size" in shown.stdout and "12" in shown.stdout
    failed = subprocess.run([sys.executable, str(script), "--compile=maybe"], capture_output=True, text=True,
                            env=env_path)
    assert failed.returncode == 1
    assert failed.stderr.strip().count("\n") == 0 and failed.stderr.startswith("error: ")

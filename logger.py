"""Run logging that can never stop a training run: out_dir/metrics.jsonl always, Weights & Biases when asked.

metrics.jsonl gets every dict train.py logs, one JSON object a line ({"iter": ..., the wandb fields...,
"time": unix seconds}), whether or not wandb is on; report.py plots it. A run resumed at iteration N keeps
the rows before N and rewrites the rest (the rows after N, and N's evaluation, which the resumed run redoes),
so each iteration appears once however often a run is resumed.

wandb:
With no API key (WANDB_API_KEY or a ~/.netrc entry for api.wandb.ai) the run is logged offline, to
./wandb/, and we say so: `wandb sync wandb/offline-run-*` uploads it later. If an online start fails (no
network, bad key) we fall back to offline the same way, and if wandb fails altogether, or later while
logging, we print one line and carry on without it. WANDB_MODE, when set, is respected as it is.
"""

import json
import math
import netrc
import os
import time

WANDB_HOST = "api.wandb.ai"


def has_wandb_key() -> bool:
    if os.environ.get("WANDB_API_KEY"):
        return True
    try:
        return netrc.netrc(os.environ.get("NETRC")).authenticators(WANDB_HOST) is not None
    except (OSError, netrc.NetrcParseError):
        return False


def is_eval_row(row: dict) -> bool:
    return "val/loss" in row


def read_metrics(path: str) -> list[dict]:
    """The rows of a metrics.jsonl (a torn last line, from a killed run, is skipped)."""
    rows = []
    with open(path) as f:
        for line in f:
            try:
                rows.append(json.loads(line))
            except ValueError:
                continue
    return rows


def run_environment(config: dict) -> dict:
    """Where and how a run trains, for report.py: device, precision, CPU or GPU model, torch version."""
    import platform

    import torch

    import hardware
    try:
        device = hardware.pick_device(config.get("device", "auto"))
        dtype = hardware.pick_dtype(device, config.get("dtype", "auto"))[0]
    except Exception:  # a setting train.py itself will reject with its own message
        device, dtype = str(config.get("device")), str(config.get("dtype"))
    name = torch.cuda.get_device_name(device) if device.startswith("cuda") else cpu_model() or platform.processor()
    return {"device": device, "dtype": dtype, "hardware": name, "cpu_cores": os.cpu_count(),
            "torch": torch.__version__}


def cpu_model() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return ""


class RunLogger:
    """metrics.jsonl at metrics_path (None: not written) and wandb.log when enabled, for the master process.
    start_iter: the iteration the run starts at (0, or where it resumes)."""

    def __init__(self, enabled: bool, project: str, run_name: str, config: dict, metrics_path: str | None = None,
                 start_iter: int = 0):
        self.run = None
        self.metrics_path = metrics_path
        if metrics_path:
            self._truncate(metrics_path, start_iter)
            self._write({"iter": start_iter, "event": "start", **run_environment(config)})
        if enabled:
            self.run = self._start(project, run_name, config)

    @staticmethod
    def _truncate(path: str, start_iter: int) -> None:
        """Keep the rows a run starting at start_iter will not write again (temp file, then rename)."""
        os.makedirs(os.path.dirname(path) or ".", exist_ok=True)
        if not os.path.exists(path):
            return
        keep = [r for r in read_metrics(path)
                if r.get("iter", 0) < start_iter or (r.get("iter") == start_iter and not is_eval_row(r))]
        tmp = path + ".tmp"
        with open(tmp, "w") as f:
            f.writelines(json.dumps(r) + "\n" for r in keep)
        os.replace(tmp, path)

    @staticmethod
    def _start(project: str, run_name: str, config: dict):
        try:
            import wandb
        except ImportError:
            print("wandb: not installed (pip install wandb); logging to the console only")
            return None
        mode = os.environ.get("WANDB_MODE")
        if mode is None and not has_wandb_key():
            mode = "offline"
            print("wandb: no API key found (set WANDB_API_KEY or run `wandb login`); logging offline to ./wandb, "
                  "upload later with `wandb sync wandb/offline-run-*`")
        try:
            return wandb.init(project=project, name=run_name, config=config, mode=mode,
                              settings=wandb.Settings(init_timeout=60))
        except Exception as e:  # wandb raises many kinds; none of them may end a training run
            if mode == "offline":
                print(f"wandb: could not start ({type(e).__name__}: {e}); logging to the console only")
                return None
            print(f"wandb: online start failed ({type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}); "
                  "logging offline to ./wandb instead")
            try:
                return wandb.init(project=project, name=run_name, config=config, mode="offline")
            except Exception as e2:
                print(f"wandb: offline start failed too ({type(e2).__name__}); logging to the console only")
                return None

    def _write(self, row: dict) -> None:
        row = {k: (v if not isinstance(v, float) or math.isfinite(v) else None) for k, v in row.items()}
        row["time"] = round(time.time(), 3)
        try:
            with open(self.metrics_path, "a") as f:
                f.write(json.dumps(row) + "\n")
        except OSError as e:
            print(f"metrics.jsonl: could not write ({e}); continuing without it")
            self.metrics_path = None

    def log(self, metrics: dict, step: int) -> None:
        if self.metrics_path:
            self._write({"iter": step, **metrics})
        if self.run is None:
            return
        try:
            self.run.log(metrics, step=step)
        except Exception as e:
            print(f"wandb: logging failed ({type(e).__name__}: {e}); continuing without wandb")
            self.run = None

    def finish(self) -> None:
        if self.run is not None:
            try:
                self.run.finish()
            except Exception as e:
                print(f"wandb: finish failed ({type(e).__name__}: {e})")
            self.run = None

"""Weights & Biases logging that can never stop a training run.

With no API key (WANDB_API_KEY or a ~/.netrc entry for api.wandb.ai) the run is logged offline, to
./wandb/, and we say so: `wandb sync wandb/offline-run-*` uploads it later. If an online start fails (no
network, bad key) we fall back to offline the same way, and if wandb fails altogether, or later while
logging, we print one line and carry on without it. WANDB_MODE, when set, is respected as it is.
"""

import netrc
import os

WANDB_HOST = "api.wandb.ai"


def has_wandb_key() -> bool:
    if os.environ.get("WANDB_API_KEY"):
        return True
    try:
        return netrc.netrc(os.environ.get("NETRC")).authenticators(WANDB_HOST) is not None
    except (OSError, netrc.NetrcParseError):
        return False


class RunLogger:
    """wandb.log for the master process when enabled, else nothing."""

    def __init__(self, enabled: bool, project: str, run_name: str, config: dict):
        self.run = None
        if enabled:
            self.run = self._start(project, run_name, config)

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

    def log(self, metrics: dict, step: int) -> None:
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

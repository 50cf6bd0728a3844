"""What every benchmark script shares: machine facts and the JSON result contract."""

import json
import os
import platform
import sys
from pathlib import Path


def machine() -> dict:
    import torch

    return {"python": sys.version.split()[0], "torch": torch.__version__, "platform": platform.platform(),
            "cpus": os.cpu_count(), "gpu": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None}


def emit(result: dict, out: str | None) -> int:
    """Write the result to `out` (pretty) and print it as the last stdout line (one line)."""
    if out:
        Path(out).write_text(json.dumps(result, indent=2))
    print(json.dumps(result), flush=True)
    return 0

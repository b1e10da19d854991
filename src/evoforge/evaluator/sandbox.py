"""How much a worker is isolated from the machine, by ``--sandbox``:

- ``none``: crash isolation and resource limits only; the worker inherits the full environment and
  candidates skip the static pre-check;
- ``basic`` (default): plus a scrubbed environment (no API keys, tokens, passwords, cloud credentials),
  the static pre-check, and a network namespace of its own (no network, not even loopback) where
  the OS allows one (root, or CAP_SYS_ADMIN);
- ``strict``: as ``basic``, but refuses to evaluate when the network namespace is unavailable.
"""

from __future__ import annotations

import ctypes
import functools
import re
import subprocess
import sys
from collections.abc import Callable

SANDBOXES = ("none", "basic", "strict")
CLONE_NEWNET = 0x40000000
PR_SET_PDEATHSIG = 1

# What counts as a secret, by environment variable name: kept out of workers' environments, and
# reading one is what the static pre-check rejects.
SECRET_NAME = re.compile(r"API_KEY|TOKEN|SECRET|PASSWORD|PASSWD|CREDENTIAL|_KEY$|^AWS_|^GH_|^GITHUB_TOKEN",
                         re.IGNORECASE)

_PROBE = (
    "import ctypes, sys\n"
    "libc = ctypes.CDLL(None, use_errno=True)\n"
    f"sys.exit(0 if libc.unshare({CLONE_NEWNET}) == 0 else ctypes.get_errno() or 1)\n"
)


@functools.cache
def network_isolation_unavailable() -> str | None:
    """None when a worker can have a network namespace of its own here, else the reason it can't."""
    if not sys.platform.startswith("linux"):
        return "network namespaces need Linux"
    try:
        probe = subprocess.run([sys.executable, "-c", _PROBE], capture_output=True, timeout=30, check=False)
    except (OSError, subprocess.SubprocessError) as exc:
        return f"could not probe unshare(CLONE_NEWNET): {exc}"
    if probe.returncode == 0:
        return None
    return f"unshare(CLONE_NEWNET) failed (errno {probe.returncode}); run as root or with CAP_SYS_ADMIN"


def _libc_function(name: str) -> Callable[..., int] | None:
    """A libc function, looked up in the parent so a child between fork and exec only calls it."""
    if not sys.platform.startswith("linux"):
        return None
    try:
        return getattr(ctypes.CDLL(None, use_errno=True), name)
    except (OSError, AttributeError):
        return None


def netns_entry() -> Callable[..., int] | None:
    return _libc_function("unshare")


def prctl_entry() -> Callable[..., int] | None:
    return _libc_function("prctl")

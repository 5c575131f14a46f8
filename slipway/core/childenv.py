"""Environments for the child processes that run a repository's own code (pip building its packages, its
tests): they see no credentials of ours.

A repository is untrusted input: its setup.py runs during pip installs and its tests run as code. They get
pip's configuration (index, proxy, certificates) and nothing that looks like a secret. This is hygiene, not a
sandbox: the code still runs as this user (see docs/security.md).
"""

from __future__ import annotations

import os
import re

_SECRET_NAME = re.compile(r"(TOKEN|SECRET|PASSWORD|PASSWD|CREDENTIAL|API_KEY|PRIVATE_KEY|SESSION)", re.I)
_DROP_PREFIXES = ("AWS_", "PREFECT_", "SLIPWAY_", "GIT_", "DOCKER_", "GOOGLE_", "AZURE_")
_DROP_EXACT = {"PYTHONPATH", "PYTHONHOME", "VIRTUAL_ENV", "PIP_TARGET", "PIP_PREFIX", "PIP_USER", "PIP_ROOT", "SSH_AUTH_SOCK"}


def scrubbed_environ(environ: dict[str, str] | None = None) -> dict[str, str]:
    """``os.environ`` without credentials or anything that would redirect pip's install location."""
    source = dict(os.environ if environ is None else environ)
    return {
        k: v
        for k, v in source.items()
        if k not in _DROP_EXACT and not k.startswith(_DROP_PREFIXES) and not _SECRET_NAME.search(k)
    }

"""Jobs for test_contrib_rq: each reports the process that ran it and the connection it used."""

from __future__ import annotations

import os

from rq import get_current_job


def whoami(number: int) -> list[object]:
    """The job's number, the work horse's pid, and the name of the connection serving it."""
    job = get_current_job()
    assert job is not None
    info = job.connection.client_info()
    return [number, os.getpid(), info["name"]]

"""Jobs for test_contrib_rq: each reports the process that ran it and the connection it used."""

from __future__ import annotations

import os

from rq import get_current_job

import redispool


def whoami(number: int) -> list[object]:
    """The job's number, the work horse's pid, and the name of the connection serving it."""
    job = get_current_job()
    assert job is not None
    info = job.connection.client_info()
    return [number, os.getpid(), info["name"]]


def fill_pool() -> list[object]:
    """Borrow every connection the horse's pool allows, then one more with no wait.

    Returns the horse's pid, how many were held at once, and the refusal of the extra one.
    """
    job = get_current_job()
    assert job is not None
    pool = job.connection.connection_pool
    assert isinstance(pool, redispool.ConnectionPool)
    held = [pool.acquire() for _ in range(pool.max_connections)]
    try:
        for conn in held:
            conn.send_command("PING")  # each one really is a live connection of its own
            assert conn.read_response() in (b"PONG", "PONG")
        try:
            pool.acquire(timeout=0)
        except redispool.PoolTimeout as error:
            refused = str(error)
        else:
            refused = ""
    finally:
        for conn in held:
            pool.release(conn)
    return [os.getpid(), len(held), refused]

"""Framework glue, each module behind its own extra so the core needs only redis-py.

- :mod:`redispool.contrib.flask`: ``FlaskRedisPool``, one pool per app (``redispool[flask]``).
- :mod:`redispool.contrib.prometheus`: a collector for pool metrics (``redispool[prometheus]``).
- :mod:`redispool.contrib.otel`: OpenTelemetry metrics (``redispool[otel]``).
- :mod:`redispool.contrib.celery`: Celery's broker and result backend (``redispool[celery]``).
- :mod:`redispool.contrib.rq`: RQ queues and workers (``redispool[rq]``).

Django needs no glue: its ``RedisCache`` and django-redis take ``redispool.ConnectionPool``
as their pool class (see the README). Nothing here is imported by ``import redispool``.
"""

from __future__ import annotations

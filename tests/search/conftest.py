"""Fixtures of the search tests: a real PostgreSQL server on 127.0.0.1 for the session.

``postgres_url`` is the URL of an empty database on it; ``new_database(postgres_url, name)``
(from tests.postgres_server) gives a test a clean database of its own.
"""

from tests.postgres_server import postgres_server, postgres_url

__all__ = ["postgres_server", "postgres_url"]

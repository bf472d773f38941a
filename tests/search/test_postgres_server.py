"""The PostgreSQL test server itself: a real server over TCP, and Optuna's RDBStorage on it."""

from __future__ import annotations

import optuna
import pytest
import sqlalchemy as sa

from tests.postgres_server import new_database


def test_the_server_is_a_real_postgres_that_stores_and_reads_rows(postgres_url: str) -> None:
    engine = sa.create_engine(postgres_url)
    try:
        with engine.begin() as connection:
            # A real server, reached over TCP on 127.0.0.1 (not the unix socket, not SQLite).
            assert connection.dialect.name == "postgresql"
            assert connection.dialect.driver == "psycopg2"
            assert connection.scalar(sa.text("SELECT inet_server_addr()::text")) == "127.0.0.1/32"
            assert connection.scalar(sa.text("SELECT current_database()")) == "gradwise_test"
            assert connection.scalar(sa.text("SHOW server_encoding")) == "UTF8"
            connection.execute(sa.text("CREATE TABLE runs (id serial PRIMARY KEY, loss float8)"))
            connection.execute(sa.text("INSERT INTO runs (loss) VALUES (:loss)"), {"loss": 0.25})
        with engine.connect() as connection:  # a new connection sees the committed row
            rows = connection.execute(sa.text("SELECT id, loss FROM runs")).all()
        assert [tuple(row) for row in rows] == [(1, 0.25)]
    finally:
        engine.dispose()

    # new_database: another, empty database on the same server, named as asked.
    other_url = new_database(postgres_url, "gradwise_other")
    assert other_url == postgres_url.rsplit("/", 1)[0] + "/gradwise_other"
    other = sa.create_engine(other_url)
    try:
        assert sa.inspect(other).get_table_names() == []
    finally:
        other.dispose()
    with pytest.raises(ValueError, match=r"The 'name' parameter of new_database must be"):
        new_database(postgres_url, "Robert'); DROP TABLE runs;--")


def test_optuna_rdb_storage_keeps_a_study_and_its_trials(postgres_url: str) -> None:
    url = new_database(postgres_url, "optuna_storage")
    storage = optuna.storages.RDBStorage(url)
    try:
        study = optuna.create_study(study_name="quadratic", storage=storage)
        trial = study.ask()
        x = trial.suggest_float("x", -1.0, 1.0)
        study.tell(trial, (x - 0.5) ** 2)
    finally:
        storage.remove_session()
        storage.engine.dispose()

    # Read back through a second storage: the rows live in PostgreSQL, not in memory.
    reread = optuna.storages.RDBStorage(url)
    try:
        loaded = optuna.load_study(study_name="quadratic", storage=reread)
        (stored,) = loaded.trials
        assert stored.state == optuna.trial.TrialState.COMPLETE
        assert stored.params == {"x": x}
        assert stored.value == pytest.approx((x - 0.5) ** 2, abs=0.0)
    finally:
        reread.remove_session()
        reread.engine.dispose()
    engine = sa.create_engine(url)
    try:
        with engine.connect() as connection:
            assert connection.scalar(sa.text("SELECT count(*) FROM trials")) == 1
    finally:
        engine.dispose()

"""The site catalogue in SQL: applying a file is idempotent; statuses change one at a time."""

from __future__ import annotations

import uuid

import pytest
from sqlalchemy import Engine

from broker.brokerage.catalogue import ResourceSlot, SiteConfig
from broker.errors import BadInput, NotFound
from broker.store.engine import transaction
from broker.store.sites import apply_catalogue, set_status, site_configs


def test_applying_the_same_catalogue_twice_changes_nothing(engine: Engine) -> None:
    name = f"SITE_{uuid.uuid4().hex[:8]}"
    config = SiteConfig(
        name, se="SE_1", slots=(ResourceSlot("SCORE", 1, 2000),), releases=("24.0",), max_queued=9
    )
    with transaction(engine) as conn:
        assert apply_catalogue(conn, [config]) == {name: "added"}
    with transaction(engine) as conn:
        assert apply_catalogue(conn, [config]) == {name: "unchanged"}
        assert site_configs(conn)[name] == config
    changed = SiteConfig(name, se="SE_2")
    with transaction(engine) as conn:
        assert apply_catalogue(conn, [changed]) == {name: "changed"}
        assert site_configs(conn)[name] == changed


def test_set_status_says_what_it_was_and_refuses_unknowns(engine: Engine) -> None:
    name = f"SITE_{uuid.uuid4().hex[:8]}"
    with transaction(engine) as conn:
        apply_catalogue(conn, [SiteConfig(name)])
        assert set_status(conn, name, "offline") == "online"
        assert site_configs(conn)[name].status == "offline"
        with pytest.raises(BadInput, match="must be one of"):
            set_status(conn, name, "gone")
        with pytest.raises(NotFound, match="no site 'NO_SUCH'"):
            set_status(conn, "NO_SUCH", "online")

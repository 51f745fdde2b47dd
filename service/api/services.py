"""What handlers need, built once in the app factory and handed over by dependency injection."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from litestar.datastructures import State

from service.settings import Settings
from service.store.appender import Appender
from service.store.database import Database
from service.store.reader import Reader


@dataclass(frozen=True, slots=True)
class Services:
    settings: Settings
    database: Database
    appender: Appender
    reader: Reader


def provide_services(state: State) -> Services:
    services: Any = state.services
    assert isinstance(services, Services)
    return services

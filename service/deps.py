"""The API's shared resources as typed FastAPI dependencies.

The app's lifespan (service/app.py) creates them and keeps them in `app.state`; routes declare
what they use (`engine: EngineDep`) instead of reading the state themselves. The webhook door
does not use these: it runs before FastAPI's stack, on purpose (see `service.app.RosterApp`).
"""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, Request
from sqlalchemy.ext.asyncio import AsyncEngine

from service.kafka.gateway import KafkaGateway
from service.settings import Settings


def get_engine(request: Request) -> AsyncEngine:
    engine: AsyncEngine = request.app.state.engine
    return engine


def get_kafka(request: Request) -> KafkaGateway:
    gateway: KafkaGateway = request.app.state.kafka
    return gateway


def get_settings(request: Request) -> Settings:
    settings: Settings = request.app.state.settings
    return settings


EngineDep = Annotated[AsyncEngine, Depends(get_engine)]
KafkaDep = Annotated[KafkaGateway, Depends(get_kafka)]
SettingsDep = Annotated[Settings, Depends(get_settings)]

"""An app with schema-registry topics for the CLI tests, its topics named by SKTEST_ID."""

from __future__ import annotations

import os

from pydantic import BaseModel

import streamkit as sk
from streamkit.registry import Avro

ID = os.environ.get("SKTEST_ID", "unset")


class Order(BaseModel):
    id: int
    amount: float


app = sk.App(f"regcli-{ID}")
orders = app.topic(f"regcli-orders-{ID}", key_type=Avro(str), value_type=Avro(Order))

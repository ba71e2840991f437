"""Data model of the todo service."""

from dataclasses import dataclass, field
from datetime import datetime, timezone


@dataclass
class Todo:
    """One thing to do."""

    id: int
    title: str
    done: bool = False
    created_at: datetime = field(default_factory=lambda: datetime.now(timezone.utc))

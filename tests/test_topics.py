import asyncio

from devline.settings import Settings
from streams.topics import CATALOGUE, create_topics, describe_topics, wait_for_topics


def test_create_topics_is_idempotent_and_sized(settings: Settings) -> None:
    first = asyncio.run(create_topics(settings))
    assert set(first.values()) == {"created"}
    second = asyncio.run(create_topics(settings))
    assert set(second.values()) == {"exists"}
    asyncio.run(wait_for_topics(settings))  # every partition led: counts are final
    rows = {r["topic"]: r for r in asyncio.run(describe_topics(settings))}
    assert len(rows) == len(CATALOGUE)
    assert all(r["exists"] for r in rows.values())
    assert rows[settings.topic("devline.work.dev")]["partitions"] >= 12
    assert rows[settings.topic("devline.events")]["partitions"] == settings.event_partitions

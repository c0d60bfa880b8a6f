"""Replay, verify and fork a plan from its events: pure logic over a list of `PlanEvent`s
(`streams.replay` reads them from Kafka)."""

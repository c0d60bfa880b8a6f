"""Role logic (planning, scheduling, execution) with no Kafka in it."""

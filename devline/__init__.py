"""devline: drive a development plan through parallel workers, coordinated by Kafka events."""

__version__ = "0.1.0"

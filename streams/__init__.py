"""Kafka and Faust edges: the app, topics, agents, workers and clients."""

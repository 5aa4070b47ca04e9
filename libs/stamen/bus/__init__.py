"""NATS JetStream: streams, publishing with dedup ids, durable consumers, dead letters."""

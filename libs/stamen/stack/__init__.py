"""The embedded stack: real NATS, PostgreSQL and AWS-API servers from wheels, plus supervised services."""

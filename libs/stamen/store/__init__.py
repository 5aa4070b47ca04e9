"""PostgreSQL: the source of truth. Migrations, repositories, outbox and inbox."""

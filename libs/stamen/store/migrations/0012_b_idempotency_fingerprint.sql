-- An Idempotency-Key means "this same request": the SHA-256 of the submitted spec (canonical JSON) is kept
-- with the key, so a reuse of the key with a different document is refused (IDEMPOTENCY_KEY_REUSED)
-- instead of silently answering with the first workset. Worksets submitted before have none (not compared).
ALTER TABLE worksets ADD COLUMN idempotency_fingerprint TEXT;

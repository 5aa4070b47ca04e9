-- Admission reads the oldest queued workset of every (tenant, priority) and when each queued tenant
-- was last admitted. These indexes serve both as skip scans (one index descent per tenant and
-- priority, see SchedulerRepository.queue_heads), so a decision costs the same with 100 or 100,000
-- worksets queued. worksets_queued (priority, queued_at) stays for queue-position reads.
CREATE INDEX worksets_queue_heads ON worksets (tenant_id, priority, queued_at, id) WHERE state = 'queued';

"""The portal's JSON API (/api/v1): workset intake, validation, Daylily export, schema, S3 events."""

-- The W3C trace context of the call that created each delivery, so every
-- attempt (also after a restart) continues the caller's trace at the vendor.
ALTER TABLE jobs ADD COLUMN traceparent TEXT;

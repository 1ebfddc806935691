//! One audit record as either store keeps it: `detail` as hashed, times in
//! milliseconds. Both backends read their rows into it, check the chain on
//! it and export it.

use super::AuditRecord;
use crate::store::sqlite::rows::from_ms;
use raccordo_domain::audit::record_hash;

/// One record of a tenant's chain, from the audit log or an event.
pub(crate) struct StoredAudit {
    pub(crate) tenant_id: String,
    pub(crate) seq: i64,
    pub(crate) recorded_at: i64,
    pub(crate) actor: String,
    pub(crate) action: String,
    pub(crate) practice_id: Option<String>,
    pub(crate) detail: String,
    pub(crate) prev_hash: String,
    pub(crate) hash: String,
}

impl StoredAudit {
    /// The hash the record's content and its predecessor's hash give.
    pub(crate) fn computed_hash(&self) -> String {
        record_hash(
            &self.prev_hash,
            &self.tenant_id,
            self.seq,
            self.recorded_at,
            &self.actor,
            &self.action,
            self.practice_id.as_deref(),
            &self.detail,
        )
    }

    /// The record as `raccordo audit export` prints it (`detail` as JSON
    /// when it is JSON, else as text).
    pub(crate) fn into_export(self) -> AuditRecord {
        AuditRecord {
            tenant_id: self.tenant_id,
            seq: self.seq,
            recorded_at: from_ms(self.recorded_at),
            actor: self.actor,
            action: self.action,
            practice_id: self.practice_id,
            detail: serde_json::from_str(&self.detail)
                .unwrap_or(serde_json::Value::String(self.detail)),
            prev_hash: self.prev_hash,
            hash: self.hash,
        }
    }
}

//! One audit record as either store keeps it: `detail` as hashed, times in
//! milliseconds. Both backends read their rows into it, check the chain on
//! it and export it; [`ChainWalk`] is the check, the same for both.

use super::{AuditBreak, AuditRecord};
use crate::store::sqlite::rows::from_ms;
use raccordo_domain::audit::state::{ChainRecord, StateCheck};
use raccordo_domain::audit::{GENESIS, record_hash};
use std::collections::HashMap;

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
    /// Read from an event row (else from `audit_log`).
    pub(crate) event_row: bool,
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

/// Walks the chains, record by record in (tenant, seq) order: finds the
/// first broken link of each, and hands every record that verified to the
/// practices' state check.
#[derive(Default)]
pub(crate) struct ChainWalk {
    checked: u64,
    breaks: Vec<AuditBreak>,
    /// tenant → (last seq, last hash) of each chain walked so far.
    ends: HashMap<String, (i64, String)>,
    state: StateCheck,
}

impl ChainWalk {
    /// Checks the next record's link.
    pub(crate) fn push(&mut self, record: StoredAudit) {
        self.checked += 1;
        if self
            .breaks
            .last()
            .is_some_and(|b| b.tenant_id == record.tenant_id)
        {
            return; // the first break of a chain is the one that matters
        }
        let (expected_seq, expected_prev) = match self.ends.get(&record.tenant_id) {
            Some((last_seq, last_hash)) => (last_seq + 1, last_hash.as_str()),
            None => (1, GENESIS),
        };
        let reason = if record.seq != expected_seq {
            Some(format!(
                "record {expected_seq} is missing (found {} next)",
                record.seq
            ))
        } else if record.prev_hash != expected_prev {
            Some("its prev_hash does not match the previous record's hash".to_string())
        } else if record.computed_hash() != record.hash {
            Some("its content does not match its hash (edited)".to_string())
        } else {
            None
        };
        match reason {
            Some(reason) => self.breaks.push(AuditBreak {
                tenant_id: record.tenant_id.clone(),
                seq: record.seq,
                reason,
            }),
            None => self.state.record(ChainRecord {
                tenant_id: &record.tenant_id,
                action: &record.action,
                practice_id: record.practice_id.as_deref(),
                detail: &record.detail,
                event_row: record.event_row,
            }),
        }
        self.ends
            .insert(record.tenant_id, (record.seq, record.hash));
    }

    /// Checks that each chain ends where its head (tenant, seq, hash) says:
    /// records removed from the end leave no gap, only a head that points
    /// past them. `tenant`: the only chain walked.
    pub(crate) fn check_heads(
        &mut self,
        heads: impl IntoIterator<Item = (String, i64, String)>,
        tenant: Option<&str>,
    ) {
        for (tenant_id, head_seq, head_hash) in heads {
            if tenant.is_some_and(|t| t != tenant_id)
                || self.breaks.iter().any(|b| b.tenant_id == tenant_id)
            {
                continue;
            }
            let last = self.ends.get(&tenant_id);
            let ends_at = last.map_or(0, |(s, _)| *s);
            if last.map(|(s, h)| (*s, h.as_str())) != Some((head_seq, head_hash.as_str())) {
                self.breaks.push(AuditBreak {
                    tenant_id,
                    seq: ends_at + 1,
                    reason: format!(
                        "the chain ends at record {ends_at} but its head is record {head_seq}: records were removed"
                    ),
                });
            }
        }
    }

    /// Ends the walk: the records checked, the breaks, and the state check
    /// with the records of broken chains set aside, to be given the rows.
    pub(crate) fn finish(mut self) -> (u64, Vec<AuditBreak>, StateCheck) {
        for b in &self.breaks {
            self.state.set_aside(&b.tenant_id);
        }
        (self.checked, self.breaks, self.state)
    }
}

//! Whether each practice's stored state is what its audit trail recorded.
//!
//! The hash chain proves that no record was edited or removed, but callers
//! read a practice's row, not its records: an edited status, or an edited
//! applicant id (which decides what a citizen may see), left every record
//! intact. So a verification also replays each practice's verified records
//! and compares what they produce with its row, and names the practice and
//! the field that differ. Both stores feed this one check.
//!
//! What the records say:
//! - every event record (format 1 too): the chain it is in (the tenant),
//!   and the status changes, hence the status and the outcome (a terminal
//!   change's status, reason and vendor code);
//! - format 2 event records: the service and the applicant (as a digest);
//! - [`REFERENCES_ACTION`] records: each external reference a change added,
//!   which must be stored as recorded. A stored reference no record names
//!   is not a difference: an instance of an earlier version (on PostgreSQL,
//!   while a cluster is upgraded one instance at a time) stores references
//!   without recording them.
//!
//! A field no record speaks of (the applicant of a practice recorded only
//! in format 1) is not compared. A practice with records and no row must
//! have been purged: concluded, its events gone with it.

use super::{REFERENCES_ACTION, ReferenceRecord, applicant_digest};
use crate::model::AdminStatus;
use crate::practice::EventKind;
use std::collections::{BTreeMap, HashMap, HashSet};

/// One record of a verified chain, as the check reads it.
#[derive(Debug, Clone, Copy)]
pub struct ChainRecord<'a> {
    pub tenant_id: &'a str,
    pub action: &'a str,
    pub practice_id: Option<&'a str>,
    /// As hashed.
    pub detail: &'a str,
    /// An event row's record (else one of `audit_log`: a refused call, a
    /// purge, references, or the kept record of an event since purged or
    /// stored before events carried their links).
    pub event_row: bool,
}

/// A practice's row and its references, as stored.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct PracticeRow {
    pub id: String,
    pub tenant_id: String,
    pub service_code: String,
    pub applicant_id: String,
    pub status: String,
    pub outcome_status: Option<String>,
    pub outcome_reason: Option<String>,
    pub outcome_vendor_code: Option<String>,
    pub references: Vec<ReferenceRecord>,
    /// Some of its events are no record of the chain: stored before the
    /// trail covered events.
    pub unchained_events: bool,
    /// Some of its records are not linked into the chain yet (PostgreSQL
    /// links them just after their commit): compared by a later run.
    pub pending_records: bool,
}

/// A stored field that differs from what its practice's records say.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StateDifference {
    /// The chain of the practice's records (its row's tenant if none).
    pub tenant_id: String,
    pub practice_id: String,
    /// The practice's column (`status`, `applicant_id`, `tenant_id`,
    /// `service_code`, `outcome_status`, `outcome_reason`,
    /// `outcome_vendor_code`), `external_refs`, or `practice` for the row
    /// as a whole (missing, or unknown to the trail).
    pub field: &'static str,
    /// Why, without the values of fields that may hold personal data.
    pub reason: String,
}

/// What one practice's records say so far.
#[derive(Debug, Default)]
struct Recorded {
    /// The chain of its first record.
    tenant_id: String,
    /// Another chain that has records of it too.
    other_tenant: Option<String>,
    /// The status its last status change set, and that change's reason and
    /// vendor code (the outcome's, when the status is terminal).
    status: Option<String>,
    reason: Option<String>,
    vendor_code: Option<String>,
    /// Format 2 on.
    service_code: Option<String>,
    applicant: Option<String>,
    references: BTreeMap<(String, String), ReferenceRecord>,
    /// Some of its records are event rows: its events are still stored.
    event_rows: bool,
    /// A record of it whose detail does not read as its action's.
    unreadable: bool,
}

/// An event record's `detail`, any format.
#[derive(serde::Deserialize)]
struct EventDetail {
    to_status: Option<String>,
    reason: Option<String>,
    vendor_code: Option<String>,
    service_code: Option<String>,
    applicant: Option<String>,
}

/// A references record's `detail`.
#[derive(serde::Deserialize)]
struct ReferencesDetail {
    references: Vec<ReferenceRecord>,
}

/// The check: fed with every verified record, in chain order, then with
/// every practice row.
#[derive(Debug, Default)]
pub struct StateCheck {
    practices: HashMap<String, Recorded>,
    /// Practices whose records were set aside with a broken chain.
    set_aside: HashSet<String>,
    broken: HashSet<String>,
    compared: u64,
    not_compared: u64,
}

/// How many practices a check compared, and did not.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct StateSummary {
    /// Practices whose row was compared with their records.
    pub compared: u64,
    /// Practices not compared: in a broken chain, stored before the trail
    /// covered their events, or with records not linked yet.
    pub not_compared: u64,
}

impl StateCheck {
    /// An empty check.
    pub fn new() -> Self {
        Self::default()
    }

    /// Takes one record of a chain that verified up to it.
    pub fn record(&mut self, r: ChainRecord<'_>) {
        let Some(practice_id) = r.practice_id else {
            return;
        };
        let kind = EventKind::parse(r.action);
        if kind.is_none() && r.action != REFERENCES_ACTION {
            return; // a refused call naming the practice: not its state
        }
        let rec = self
            .practices
            .entry(practice_id.to_string())
            .or_insert_with(|| Recorded {
                tenant_id: r.tenant_id.to_string(),
                ..Recorded::default()
            });
        if rec.tenant_id != r.tenant_id && rec.other_tenant.is_none() {
            rec.other_tenant = Some(r.tenant_id.to_string());
        }
        rec.event_rows |= r.event_row;
        if kind.is_none() {
            match serde_json::from_str::<ReferencesDetail>(r.detail) {
                Ok(d) => {
                    for reference in d.references {
                        let key = (reference.kind.clone(), reference.value.clone());
                        rec.references.entry(key).or_insert(reference);
                    }
                }
                Err(_) => rec.unreadable = true,
            }
            return;
        }
        let Ok(d) = serde_json::from_str::<EventDetail>(r.detail) else {
            rec.unreadable = true;
            return;
        };
        if d.service_code.is_some() {
            rec.service_code = d.service_code;
        }
        if d.applicant.is_some() {
            rec.applicant = d.applicant;
        }
        if kind == Some(EventKind::StatusChanged) {
            let Some(to) = d.to_status else {
                rec.unreadable = true;
                return;
            };
            rec.status = Some(to);
            rec.reason = d.reason;
            rec.vendor_code = d.vendor_code;
        }
    }

    /// Sets aside the records of `tenant`'s chain, which broke: what they
    /// say is not vouched for, and its practices are not compared.
    pub fn set_aside(&mut self, tenant: &str) {
        self.broken.insert(tenant.to_string());
        let ids: Vec<String> = self
            .practices
            .iter()
            .filter(|(_, r)| r.tenant_id == tenant || r.other_tenant.as_deref() == Some(tenant))
            .map(|(id, _)| id.clone())
            .collect();
        for id in ids {
            self.practices.remove(&id);
            self.set_aside.insert(id);
        }
    }

    /// The practices with records whose rows were not compared yet.
    pub fn uncompared(&self) -> Vec<String> {
        let mut ids: Vec<String> = self.practices.keys().cloned().collect();
        ids.sort();
        ids
    }

    /// Compares one practice's row with its records.
    pub fn compare(&mut self, row: &PracticeRow) -> Vec<StateDifference> {
        let rec = self.practices.remove(&row.id);
        if row.pending_records
            || self.set_aside.contains(&row.id)
            || self.broken.contains(&row.tenant_id)
        {
            self.not_compared += 1;
            return Vec::new();
        }
        let Some(rec) = rec else {
            if row.unchained_events {
                self.not_compared += 1;
                return Vec::new();
            }
            self.compared += 1;
            return vec![StateDifference {
                tenant_id: row.tenant_id.clone(),
                practice_id: row.id.clone(),
                field: "practice",
                reason: "its tenant's audit trail has no record of this practice".into(),
            }];
        };
        self.compared += 1;
        let mut out = Vec::new();
        let mut differ = |field: &'static str, reason: String| {
            out.push(StateDifference {
                tenant_id: rec.tenant_id.clone(),
                practice_id: row.id.clone(),
                field,
                reason,
            })
        };
        if rec.unreadable {
            differ(
                "practice",
                "a record of it does not read as its action's".into(),
            );
        }
        if let Some(other) = &rec.other_tenant {
            differ(
                "tenant_id",
                format!(
                    "its records are in the chains of two tenants, {} and {other}",
                    rec.tenant_id
                ),
            );
        } else if row.tenant_id != rec.tenant_id {
            differ(
                "tenant_id",
                format!(
                    "the row says {}, its records are in tenant {}'s chain",
                    shown(&row.tenant_id),
                    rec.tenant_id
                ),
            );
        }
        if let Some(service) = &rec.service_code
            && *service != row.service_code
        {
            differ(
                "service_code",
                format!(
                    "the row says {}, its records say {service}",
                    shown(&row.service_code)
                ),
            );
        }
        if let Some(applicant) = &rec.applicant
            && *applicant != applicant_digest(&row.id, &row.applicant_id)
        {
            differ(
                "applicant_id",
                "it is not the applicant its records name".into(),
            );
        }
        if let Some(status) = &rec.status {
            if *status != row.status {
                differ(
                    "status",
                    format!(
                        "the row says {}, its records say {status}",
                        shown(&row.status)
                    ),
                );
            }
            let terminal = status
                .parse::<AdminStatus>()
                .is_ok_and(AdminStatus::is_terminal);
            let (outcome, reason, vendor_code) = if terminal {
                (
                    Some(status.as_str()),
                    rec.reason.as_deref(),
                    rec.vendor_code.as_deref(),
                )
            } else {
                (None, None, None)
            };
            if row.outcome_status.as_deref() != outcome {
                differ(
                    "outcome_status",
                    format!(
                        "the row says {}, its records say {}",
                        row.outcome_status.as_deref().map_or("none".into(), shown),
                        outcome.unwrap_or("none")
                    ),
                );
            }
            if row.outcome_reason.as_deref() != reason {
                differ(
                    "outcome_reason",
                    "it is not the reason its records give for the outcome".into(),
                );
            }
            if row.outcome_vendor_code.as_deref() != vendor_code {
                differ(
                    "outcome_vendor_code",
                    "it is not the vendor code its records give for the outcome".into(),
                );
            }
        }
        let stored: BTreeMap<(&str, &str), &ReferenceRecord> = row
            .references
            .iter()
            .map(|r| ((r.kind.as_str(), r.value.as_str()), r))
            .collect();
        for ((kind, value), recorded) in &rec.references {
            match stored.get(&(kind.as_str(), value.as_str())) {
                None => differ(
                    "external_refs",
                    format!(
                        "reference {} {} is in its records but not stored",
                        shown(kind),
                        shown(value)
                    ),
                ),
                Some(r) if *r != recorded => differ(
                    "external_refs",
                    format!(
                        "reference {} {} is stored with another system or date than recorded",
                        shown(kind),
                        shown(value)
                    ),
                ),
                Some(_) => {}
            }
        }
        out
    }

    /// Ends the check: the practices with records and no row that cannot
    /// have been purged, and the counts.
    pub fn finish(self) -> (StateSummary, Vec<StateDifference>) {
        let mut missing: Vec<StateDifference> = Vec::new();
        for (id, rec) in self.practices {
            // A purge removes concluded practices with their events (their
            // records are kept in audit_log). An unknown status (records of
            // an older practice's later deliveries only) may be concluded.
            let open = rec
                .status
                .as_deref()
                .and_then(|s| s.parse::<AdminStatus>().ok())
                .is_some_and(|s| !s.is_terminal());
            let reason = if rec.event_rows {
                "its row is missing, but its events are still stored (a purge removes both)"
            } else if open {
                "its row is missing, but its records never concluded it (only concluded practices are purged)"
            } else {
                continue;
            };
            missing.push(StateDifference {
                tenant_id: rec.tenant_id,
                practice_id: id,
                field: "practice",
                reason: reason.into(),
            });
        }
        missing.sort_by(|a, b| (&a.tenant_id, &a.practice_id).cmp(&(&b.tenant_id, &b.practice_id)));
        let summary = StateSummary {
            compared: self.compared,
            not_compared: self.not_compared,
        };
        (summary, missing)
    }
}

/// A stored value in a message: quoted and escaped, at most 64 characters
/// (an edited row may hold anything).
fn shown(value: &str) -> String {
    const MAX: usize = 64;
    match value.char_indices().nth(MAX) {
        Some((cut, _)) => format!("{:?}…", &value[..cut]),
        None => format!("{value:?}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::audit::{EVENT_FORMAT, EventAudit, references_detail};

    const TENANT: &str = "016024";
    const CF: &str = "RSSMRA85M01H501Q";

    /// The detail of an event record of practice `p-1` in `format`.
    fn event(
        sequence: i64,
        from: Option<&str>,
        to: Option<&str>,
        reason: Option<&str>,
        format: Option<i64>,
    ) -> String {
        EventAudit {
            sequence,
            source: "adapter",
            from_status: from,
            to_status: to,
            from_delivery: None,
            to_delivery: None,
            reason,
            vendor_code: reason.map(|_| "V-1"),
            format: None,
            service_code: None,
            applicant: None,
            outcome_data: None,
        }
        .in_format(format, "p-1", "TARI", CF)
        .to_json()
    }

    fn feed(check: &mut StateCheck, action: &str, detail: &str) {
        check.record(ChainRecord {
            tenant_id: TENANT,
            action,
            practice_id: Some("p-1"),
            detail,
            event_row: true,
        });
    }

    fn protocol() -> ReferenceRecord {
        ReferenceRecord::new("protocol", "2026/7", "tributi", Some(1_700_000_000_000))
    }

    /// A practice submitted, approved with a protocol number, in `format`.
    fn approved(format: Option<i64>) -> StateCheck {
        let mut check = StateCheck::new();
        let f = format;
        feed(
            &mut check,
            "status",
            &event(1, None, Some("SUBMITTED"), None, f),
        );
        feed(&mut check, "delivery", &event(2, None, None, None, f));
        feed(&mut check, "call_denied", r#"{"rpc":"GetPractice"}"#);
        if format.is_some() {
            feed(
                &mut check,
                REFERENCES_ACTION,
                &references_detail(&[protocol()]),
            );
        }
        feed(
            &mut check,
            "anomaly",
            &event(3, Some("SUBMITTED"), Some("WITHDRAWN"), None, f),
        );
        feed(
            &mut check,
            "status",
            &event(4, Some("SUBMITTED"), Some("APPROVED"), Some("ok"), f),
        );
        check
    }

    fn row() -> PracticeRow {
        PracticeRow {
            id: "p-1".into(),
            tenant_id: TENANT.into(),
            service_code: "TARI".into(),
            applicant_id: CF.into(),
            status: "APPROVED".into(),
            outcome_status: Some("APPROVED".into()),
            outcome_reason: Some("ok".into()),
            outcome_vendor_code: Some("V-1".into()),
            references: vec![protocol()],
            ..PracticeRow::default()
        }
    }

    fn fields(diffs: &[StateDifference]) -> Vec<&'static str> {
        diffs.iter().map(|d| d.field).collect()
    }

    #[test]
    fn a_row_as_recorded_has_no_difference() {
        let mut check = approved(Some(EVENT_FORMAT));
        assert_eq!(check.compare(&row()), Vec::new());
        let (summary, missing) = check.finish();
        assert_eq!(summary.compared, 1);
        assert!(missing.is_empty());
    }

    #[test]
    fn each_edited_field_is_named() {
        type Edit = fn(&mut PracticeRow);
        let cases: [(&str, Edit); 8] = [
            ("status", |r| r.status = "REJECTED".into()),
            ("applicant_id", |r| {
                r.applicant_id = "VRDLGU80A01F205X".into()
            }),
            ("tenant_id", |r| r.tenant_id = "028060".into()),
            ("service_code", |r| r.service_code = "CERT".into()),
            ("outcome_status", |r| r.outcome_status = None),
            ("outcome_reason", |r| r.outcome_reason = Some("no".into())),
            ("outcome_vendor_code", |r| r.outcome_vendor_code = None),
            ("external_refs", |r| {
                r.references[0].system = "anagrafe".into()
            }),
        ];
        for (field, edit) in cases {
            let mut check = approved(Some(EVENT_FORMAT));
            let mut edited = row();
            edit(&mut edited);
            let diffs = check.compare(&edited);
            assert_eq!(fields(&diffs), [field], "{field}: {diffs:?}");
            assert!(diffs.iter().all(|d| d.practice_id == "p-1"));
            assert!(
                diffs.iter().all(|d| !d.reason.contains("VRDLGU")),
                "no applicant id in a reason: {diffs:?}"
            );
        }
    }

    #[test]
    fn an_edited_status_names_both_values() {
        let mut check = approved(Some(EVENT_FORMAT));
        let diffs = check.compare(&PracticeRow {
            status: "REJECTED".into(),
            ..row()
        });
        assert_eq!(
            diffs[0].reason,
            r#"the row says "REJECTED", its records say APPROVED"#
        );
    }

    #[test]
    fn format_one_records_vouch_for_status_and_outcome_only() {
        let mut check = approved(None);
        // No applicant or service recorded, and no reference: a stored
        // reference no record names is no difference.
        let older = PracticeRow {
            applicant_id: "VRDLGU80A01F205X".into(),
            service_code: "CERT".into(),
            ..row()
        };
        assert_eq!(check.compare(&older), Vec::new());
        let mut check = approved(None);
        let diffs = check.compare(&PracticeRow {
            status: "IN_PROGRESS".into(),
            outcome_status: None,
            outcome_reason: None,
            outcome_vendor_code: None,
            ..row()
        });
        assert_eq!(
            fields(&diffs),
            [
                "status",
                "outcome_status",
                "outcome_reason",
                "outcome_vendor_code"
            ]
        );
    }

    #[test]
    fn a_recorded_reference_must_be_stored_an_unrecorded_one_may_be() {
        let mut check = approved(Some(EVENT_FORMAT));
        let other = ReferenceRecord::new("vendor_id", "X-1", "tributi", None);
        let more = PracticeRow {
            references: vec![protocol(), other.clone()],
            ..row()
        };
        assert_eq!(check.compare(&more), Vec::new());
        let mut check = approved(Some(EVENT_FORMAT));
        let diffs = check.compare(&PracticeRow {
            references: vec![other],
            ..row()
        });
        assert_eq!(fields(&diffs), ["external_refs"]);
        assert_eq!(
            diffs[0].reason,
            r#"reference "protocol" "2026/7" is in its records but not stored"#
        );
    }

    #[test]
    fn an_open_practice_has_no_outcome() {
        let mut check = StateCheck::new();
        let f = Some(EVENT_FORMAT);
        feed(
            &mut check,
            "status",
            &event(1, None, Some("SUBMITTED"), None, f),
        );
        let open = PracticeRow {
            status: "SUBMITTED".into(),
            outcome_status: None,
            outcome_reason: None,
            outcome_vendor_code: None,
            references: Vec::new(),
            ..row()
        };
        assert_eq!(check.compare(&open), Vec::new());
    }

    #[test]
    fn a_missing_row_is_named_unless_purged() {
        // Concluded, its records kept in audit_log: purged.
        let mut check = StateCheck::new();
        check.record(ChainRecord {
            tenant_id: TENANT,
            action: "status",
            practice_id: Some("p-1"),
            detail: &event(4, Some("SUBMITTED"), Some("APPROVED"), None, None),
            event_row: false,
        });
        let (_, missing) = check.finish();
        assert!(missing.is_empty(), "{missing:?}");
        // Its events still stored.
        let (_, missing) = approved(Some(EVENT_FORMAT)).finish();
        assert_eq!(fields(&missing), ["practice"]);
        assert!(missing[0].reason.contains("events are still stored"));
        // Never concluded.
        let mut check = StateCheck::new();
        check.record(ChainRecord {
            tenant_id: TENANT,
            action: "status",
            practice_id: Some("p-1"),
            detail: &event(1, None, Some("SUBMITTED"), None, None),
            event_row: false,
        });
        let (_, missing) = check.finish();
        assert!(missing[0].reason.contains("never concluded"), "{missing:?}");
    }

    #[test]
    fn a_row_without_records_is_named_unless_older_than_the_trail() {
        let mut check = StateCheck::new();
        let diffs = check.compare(&row());
        assert_eq!(fields(&diffs), ["practice"]);
        let older = PracticeRow {
            unchained_events: true,
            ..row()
        };
        assert!(check.compare(&older).is_empty());
        let pending = PracticeRow {
            pending_records: true,
            ..row()
        };
        assert!(check.compare(&pending).is_empty());
        assert_eq!(
            check.finish().0,
            StateSummary {
                compared: 1,
                not_compared: 2
            }
        );
    }

    #[test]
    fn a_broken_chain_sets_its_practices_aside() {
        let mut check = approved(Some(EVENT_FORMAT));
        check.set_aside(TENANT);
        assert!(check.uncompared().is_empty());
        let edited = PracticeRow {
            status: "REJECTED".into(),
            ..row()
        };
        assert!(check.compare(&edited).is_empty());
        let (summary, missing) = check.finish();
        assert_eq!((summary.compared, summary.not_compared), (0, 1));
        assert!(missing.is_empty());
    }

    #[test]
    fn stored_values_are_shown_bounded_and_escaped() {
        assert_eq!(shown("A\nB"), r#""A\nB""#);
        let long = "x".repeat(100);
        assert_eq!(shown(&long), format!("{:?}…", "x".repeat(64)));
    }
}

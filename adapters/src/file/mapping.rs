//! A result row → correlation and canonical reply, by the configured
//! field names and status table.

use super::config::FieldMapping;
use super::parse::Row;
use crate::adapter::{Correlation, VendorReply};
use crate::model::ExternalRef;
use crate::outcome::collect_outcome_data;
use chrono::{DateTime, NaiveDate, Utc};
use serde_json::Value;

/// What a row says, in canonical terms.
#[derive(Debug, Clone)]
pub struct Mapped {
    pub correlation: Correlation,
    pub tenant_id: Option<String>,
    pub reply: VendorReply,
}

/// Maps one row; the error names the field and the reason (never the
/// row's content beyond the offending value).
pub fn map_row(row: &Row, f: &FieldMapping, system: &str) -> Result<Mapped, String> {
    let get = |name: &Option<String>| -> Option<String> {
        let name = name.as_deref()?;
        row.fields
            .get(name)
            .map(|v| v.trim())
            .filter(|v| !v.is_empty())
            .map(str::to_string)
    };
    let correlation = if let Some(id) = get(&f.practice_id) {
        Correlation::PracticeId(id)
    } else if let Some(op) = get(&f.operation_id) {
        Correlation::OperationId(op)
    } else if let Some(r) = get(&f.vendor_reference) {
        Correlation::ExternalRef {
            kind: f.vendor_reference_kind.clone(),
            value: r,
        }
    } else {
        let names: Vec<&str> = [&f.practice_id, &f.operation_id, &f.vendor_reference]
            .into_iter()
            .filter_map(|n| n.as_deref())
            .collect();
        return Err(format!(
            "no correlation: {} empty or missing",
            names
                .iter()
                .map(|n| format!("'{n}'"))
                .collect::<Vec<_>>()
                .join(", ")
        ));
    };
    let status = match get(&f.status) {
        None => f.default_status,
        Some(code) => {
            let found = f.status_map.get(&code).or_else(|| {
                f.status_map
                    .iter()
                    .find(|(k, _)| k.eq_ignore_ascii_case(&code))
                    .map(|(_, v)| v)
            });
            *found.ok_or_else(|| {
                format!(
                    "status '{}' in '{}' has no entry in status_map",
                    short(&code),
                    f.status.as_deref().unwrap_or_default()
                )
            })?
        }
    };
    let mut refs = Vec::new();
    if let Some(number) = get(&f.protocol_number) {
        let issued_at = match get(&f.protocol_date) {
            None => None,
            Some(d) => Some(parse_date(&d).ok_or_else(|| {
                format!(
                    "'{}' in '{}' is not a date (YYYY-MM-DD, DD/MM/YYYY or RFC 3339)",
                    short(&d),
                    f.protocol_date.as_deref().unwrap_or_default()
                )
            })?),
        };
        refs.push(ExternalRef {
            kind: "protocol".into(),
            value: number,
            system: system.into(),
            issued_at,
        });
    }
    if let Some(id) = get(&f.vendor_id) {
        refs.push(ExternalRef {
            kind: "vendor_id".into(),
            value: id,
            system: system.into(),
            issued_at: None,
        });
    }
    let mut documents = Vec::new();
    for spec in &f.base64_documents {
        if let Some(text) = row.fields.get(&spec.field) {
            documents.extend(spec.decode(text)?);
        }
    }
    let outcome_data = collect_outcome_data(&f.outcome_data, |column| {
        row.fields
            .get(column)
            .map(|v| Value::String(v.trim().to_string()))
    });
    Ok(Mapped {
        correlation,
        tenant_id: get(&f.tenant_id),
        reply: VendorReply {
            status: Some(status),
            vendor_code: get(&f.status),
            reason: get(&f.reason),
            external_refs: refs,
            documents,
            outcome_data,
            occurred_at: None,
            follow_up: None,
        },
    })
}

fn parse_date(s: &str) -> Option<DateTime<Utc>> {
    if let Ok(dt) = DateTime::parse_from_rfc3339(s) {
        return Some(dt.with_timezone(&Utc));
    }
    ["%Y-%m-%d", "%d/%m/%Y", "%Y%m%d"]
        .iter()
        .find_map(|fmt| NaiveDate::parse_from_str(s, fmt).ok())
        .and_then(|d| d.and_hms_opt(0, 0, 0))
        .map(|dt| dt.and_utc())
}

/// Vendor values in reports are bounded (a broken file can hold anything).
fn short(s: &str) -> String {
    let mut out: String = s.chars().take(40).filter(|c| !c.is_control()).collect();
    if s.chars().count() > 40 {
        out.push('…');
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::AdminStatus;

    fn mapping() -> FieldMapping {
        serde_json::from_value(serde_json::json!({
            "practice_id": "id_pratica",
            "vendor_reference": "protocollo_rif",
            "status": "esito",
            "status_map": {"OK": "APPROVED", "KO": "REJECTED"},
            "reason": "motivo",
            "protocol_number": "protocollo",
            "protocol_date": "data_protocollo",
        }))
        .unwrap()
    }

    fn row(pairs: &[(&str, &str)]) -> Row {
        Row {
            ordinal: 1,
            at: "line 2".into(),
            fields: pairs
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
        }
    }

    #[test]
    fn maps_correlation_status_and_protocol() {
        let m = map_row(
            &row(&[
                ("id_pratica", "p1"),
                ("esito", "ok"),
                ("protocollo", "2026/7"),
                ("data_protocollo", "02/03/2026"),
            ]),
            &mapping(),
            "tributi",
        )
        .unwrap();
        assert_eq!(m.correlation, Correlation::PracticeId("p1".into()));
        assert_eq!(m.reply.status, Some(AdminStatus::Approved));
        assert_eq!(m.reply.external_refs[0].value, "2026/7");
        assert_eq!(
            m.reply.external_refs[0].issued_at.unwrap().to_rfc3339(),
            "2026-03-02T00:00:00+00:00"
        );
        let by_ref = map_row(&row(&[("protocollo_rif", "X9")]), &mapping(), "t").unwrap();
        assert_eq!(
            by_ref.correlation,
            Correlation::ExternalRef {
                kind: "protocol".into(),
                value: "X9".into()
            }
        );
        assert_eq!(by_ref.reply.status, Some(AdminStatus::Registered));
    }

    #[test]
    fn maps_outcome_data_columns_and_a_base64_column() {
        let mut f = mapping();
        f.outcome_data = [
            ("importo_dovuto".to_string(), "importo".to_string()),
            ("scadenza".to_string(), "scadenza".to_string()),
        ]
        .into();
        f.base64_documents = vec![crate::outcome::Base64Document {
            field: "avviso_b64".into(),
            name: "avviso.pdf".into(),
            media_type: "application/pdf".into(),
            max_bytes: 1024,
        }];
        let m = map_row(
            &row(&[
                ("id_pratica", "p1"),
                ("importo", " 120.50 "),
                ("scadenza", ""),
                ("avviso_b64", "JVBERi0x"),
            ]),
            &f,
            "tributi",
        )
        .unwrap();
        assert_eq!(
            Value::Object(m.reply.outcome_data),
            serde_json::json!({"importo_dovuto": "120.50"})
        );
        assert_eq!(m.reply.documents[0].content, b"%PDF-1");
        assert_eq!(m.reply.documents[0].meta.name, "avviso.pdf");
        let e = map_row(&row(&[("id_pratica", "p1"), ("avviso_b64", "§§")]), &f, "t").unwrap_err();
        assert!(e.contains("avviso_b64") && e.contains("base64"), "{e}");
    }

    #[test]
    fn bad_rows_name_the_field() {
        let e = map_row(&row(&[("esito", "OK")]), &mapping(), "t").unwrap_err();
        assert!(e.contains("'id_pratica'"), "{e}");
        let e = map_row(
            &row(&[("id_pratica", "p"), ("esito", "BOH")]),
            &mapping(),
            "t",
        )
        .unwrap_err();
        assert!(e.contains("'BOH'") && e.contains("status_map"), "{e}");
        let e = map_row(
            &row(&[
                ("id_pratica", "p"),
                ("protocollo", "1"),
                ("data_protocollo", "ieri"),
            ]),
            &mapping(),
            "t",
        )
        .unwrap_err();
        assert!(e.contains("data_protocollo"), "{e}");
    }
}

//! The canonical practice model, as stored by the hub and seen by adapters.
//!
//! These types serialize to the JSON used inside the normalized message, so
//! their field names are part of the vendor contract (`docs/normalized-message.md`).

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use std::fmt;
use std::str::FromStr;

/// What the citizen and the law see.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum AdminStatus {
    /// Stored by the hub.
    Submitted,
    /// Acknowledged or protocolled by the back office; the legal term runs.
    Registered,
    /// Being processed.
    InProgress,
    /// The administration asked the applicant for more documents.
    IntegrationRequested,
    /// The applicant answered an integration request.
    Integrated,
    /// Concluded with a positive outcome.
    Approved,
    /// Concluded with a negative outcome.
    Rejected,
    /// Withdrawn by the applicant.
    Withdrawn,
    /// Cancelled by the administration.
    Cancelled,
}

impl AdminStatus {
    /// Every status, in lifecycle order.
    pub const ALL: [AdminStatus; 9] = [
        Self::Submitted,
        Self::Registered,
        Self::InProgress,
        Self::IntegrationRequested,
        Self::Integrated,
        Self::Approved,
        Self::Rejected,
        Self::Withdrawn,
        Self::Cancelled,
    ];

    /// The status's wire name (`APPROVED`, …).
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Submitted => "SUBMITTED",
            Self::Registered => "REGISTERED",
            Self::InProgress => "IN_PROGRESS",
            Self::IntegrationRequested => "INTEGRATION_REQUESTED",
            Self::Integrated => "INTEGRATED",
            Self::Approved => "APPROVED",
            Self::Rejected => "REJECTED",
            Self::Withdrawn => "WITHDRAWN",
            Self::Cancelled => "CANCELLED",
        }
    }

    /// A terminal status ends the practice: nothing may follow it.
    pub fn is_terminal(self) -> bool {
        matches!(
            self,
            Self::Approved | Self::Rejected | Self::Withdrawn | Self::Cancelled
        )
    }
}

impl fmt::Display for AdminStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for AdminStatus {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        Self::ALL
            .into_iter()
            .find(|st| st.as_str().eq_ignore_ascii_case(s))
            .ok_or_else(|| {
                let names: Vec<_> = Self::ALL.iter().map(|s| s.as_str()).collect();
                format!(
                    "unknown status '{s}' (expected one of {})",
                    names.join(", ")
                )
            })
    }
}

/// A natural person, identified by the codice fiscale.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
pub struct Person {
    /// Codice fiscale, upper case.
    pub fiscal_code: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub given_name: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub family_name: String,
}

/// A company, identified by its partita IVA.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
pub struct Company {
    /// Partita IVA, 11 digits.
    pub vat_number: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub name: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub representative: Option<Person>,
}

/// How to reach a party.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
pub struct Contacts {
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub email: String,
    /// Posta elettronica certificata.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub pec: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub phone: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub address: String,
}

/// Who the practice is about: a person or a company.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum Subject {
    Person(Person),
    Company(Company),
}

/// The applicant (*richiedente*).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Applicant {
    #[serde(flatten)]
    pub subject: Subject,
    #[serde(default)]
    pub contacts: Contacts,
}

impl Applicant {
    /// The identifier the citizen folder is keyed by: the fiscal code of a
    /// person or the VAT number of a company.
    pub fn id(&self) -> &str {
        match &self.subject {
            Subject::Person(p) => &p.fiscal_code,
            Subject::Company(c) => &c.vat_number,
        }
    }
}

/// A delegate or professional acting for the applicant (*presentatore*).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Submitter {
    pub person: Person,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub role: String,
    #[serde(default)]
    pub contacts: Contacts,
}

/// Where the practice was submitted.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum ChannelKind {
    #[default]
    Online,
    Desk,
}

/// The submission channel, with the desk operator when there is one.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
pub struct ChannelInfo {
    pub kind: ChannelKind,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub operator_id: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub desk_id: String,
}

/// A document's metadata (attachment or outcome document); the bytes live apart.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DocumentMeta {
    pub name: String,
    pub media_type: String,
    pub size_bytes: u64,
    /// Lower-case hex SHA-256 of the content.
    pub sha256: String,
}

/// A document with its bytes.
#[derive(Debug, Clone, PartialEq)]
pub struct Document {
    pub meta: DocumentMeta,
    pub content: Vec<u8>,
}

impl Document {
    /// Builds a document, computing size and SHA-256 from the bytes.
    pub fn new(name: impl Into<String>, media_type: impl Into<String>, content: Vec<u8>) -> Self {
        Self {
            meta: DocumentMeta {
                name: name.into(),
                media_type: media_type.into(),
                size_bytes: content.len() as u64,
                sha256: sha256_hex(&content),
            },
            content,
        }
    }
}

/// Lower-case hex SHA-256.
pub fn sha256_hex(bytes: &[u8]) -> String {
    use sha2::Digest;
    lower_hex(&sha2::Sha256::digest(bytes))
}

/// `bytes` as lower-case hex, without a `format!` per byte (hashes and
/// ids on every submission).
pub fn lower_hex(bytes: &[u8]) -> String {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    let mut out = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        out.push(HEX[usize::from(b >> 4)] as char);
        out.push(HEX[usize::from(b & 0xf)] as char);
    }
    out
}

/// A reference assigned outside the hub (protocol number, vendor id, …).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ExternalRef {
    /// `protocol`, `vendor_id`, `cui`, `fascicolo`, …
    pub kind: String,
    pub value: String,
    /// The adapter instance that reported it.
    #[serde(default)]
    pub system: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub issued_at: Option<DateTime<Utc>>,
}

/// What a delivery carries to the vendor: the submission itself or the
/// applicant's withdrawal.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Operation {
    Submit,
    Withdraw,
}

impl Operation {
    /// The operation's wire name.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Submit => "submit",
            Self::Withdraw => "withdraw",
        }
    }
}

impl FromStr for Operation {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "submit" => Ok(Self::Submit),
            "withdraw" => Ok(Self::Withdraw),
            other => Err(format!("unknown operation '{other}'")),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn status_names_round_trip() {
        for st in AdminStatus::ALL {
            assert_eq!(st.as_str().parse::<AdminStatus>().unwrap(), st);
        }
        assert!(
            "FOO"
                .parse::<AdminStatus>()
                .unwrap_err()
                .contains("APPROVED")
        );
    }

    #[test]
    fn applicant_json_is_flat_and_tagged() {
        let a = Applicant {
            subject: Subject::Person(Person {
                fiscal_code: "RSSMRA45D25F205N".into(),
                given_name: "Mario".into(),
                family_name: "Rossi".into(),
            }),
            contacts: Contacts::default(),
        };
        let v = serde_json::to_value(&a).unwrap();
        assert_eq!(v["type"], "person");
        assert_eq!(v["fiscal_code"], "RSSMRA45D25F205N");
        let back: Applicant = serde_json::from_value(v).unwrap();
        assert_eq!(back, a);
    }

    #[test]
    fn sha256_of_empty_input() {
        assert_eq!(
            sha256_hex(b""),
            "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
        );
    }
}

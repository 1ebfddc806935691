//! First-delivery messages handed from a deferred submission to its worker
//! in memory.
//!
//! A deferred submission builds its message before the insert; without this
//! hand-off the worker read the practice back from the store just after the
//! commit, when every reader's page cache is stale (SQLite drops a reader's
//! cache whenever the log has changed), fetching each page again. The store
//! stays the source of truth: a message not found here (evicted, a retry, a
//! restart, another hub) is built from the store as before.

use raccordo_adapters::NormalizedMessage;
use std::collections::{HashMap, VecDeque};
use std::sync::Mutex;

/// Messages kept at most. A window of the latest submissions: at thousands
/// per second it covers a backlog of a fraction of a second, which is when
/// the store's pages are stale; older entries are evicted first.
const CAPACITY: usize = 4096;

/// Bounded, first-in first-out, keyed by practice id.
#[derive(Debug, Default)]
pub struct PreparedMessages {
    inner: Mutex<Window>,
}

#[derive(Debug, Default)]
struct Window {
    by_practice: HashMap<String, NormalizedMessage>,
    /// Insertion order; may still name entries already taken.
    order: VecDeque<String>,
}

impl PreparedMessages {
    /// Keeps `message`, the first delivery of its practice, stored and
    /// committed already. Messages carrying attachments are not kept: their
    /// size is bounded by the request limits, not by this window.
    pub fn put(&self, message: NormalizedMessage) {
        if !message.attachments.is_empty() {
            return;
        }
        let mut w = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        while w.order.len() >= CAPACITY {
            if let Some(oldest) = w.order.pop_front() {
                w.by_practice.remove(&oldest);
            }
        }
        w.order.push_back(message.practice_id.clone());
        w.by_practice.insert(message.practice_id.clone(), message);
    }

    /// The first delivery of `practice_id`, if still kept; taken, so a
    /// message is handed over once at most.
    pub fn take(&self, practice_id: &str) -> Option<NormalizedMessage> {
        let mut w = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        w.by_practice.remove(practice_id)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use raccordo_adapters::model::{Applicant, ChannelInfo, Contacts, Operation, Person, Subject};

    fn message(practice_id: &str) -> NormalizedMessage {
        NormalizedMessage {
            schema: raccordo_adapters::message::SCHEMA_V1.into(),
            message_id: String::new(),
            operation: Operation::Submit,
            practice_id: practice_id.into(),
            tenant_id: "016024".into(),
            service_code: "CERT".into(),
            applicant: Applicant {
                subject: Subject::Person(Person {
                    fiscal_code: "RSSMRA45D25F205N".into(),
                    given_name: "Mario".into(),
                    family_name: "Rossi".into(),
                }),
                contacts: Contacts::default(),
            },
            submitter: None,
            channel: ChannelInfo::default(),
            data: Default::default(),
            attachments: Vec::new(),
            submitted_at: chrono::Utc::now(),
            withdrawal_reason: None,
            outcome_data: Default::default(),
        }
    }

    #[test]
    fn a_message_is_handed_over_once() {
        let prepared = PreparedMessages::default();
        prepared.put(message("p1"));
        assert_eq!(prepared.take("p1").unwrap().practice_id, "p1");
        assert!(prepared.take("p1").is_none());
        assert!(prepared.take("p2").is_none());
    }

    #[test]
    fn the_oldest_are_evicted_past_the_capacity() {
        let prepared = PreparedMessages::default();
        for i in 0..CAPACITY + 10 {
            prepared.put(message(&format!("p{i}")));
        }
        assert!(prepared.take("p0").is_none());
        assert!(prepared.take("p9").is_none());
        assert!(prepared.take("p10").is_some());
        assert!(prepared.take(&format!("p{}", CAPACITY + 9)).is_some());
        let w = prepared.inner.lock().unwrap();
        assert!(w.order.len() <= CAPACITY && w.by_practice.len() <= CAPACITY);
    }

    #[test]
    fn messages_with_attachments_are_left_to_the_store() {
        let prepared = PreparedMessages::default();
        let mut m = message("p1");
        m.attachments
            .push(raccordo_adapters::message::MessageAttachment {
                meta: raccordo_adapters::model::DocumentMeta {
                    name: "a.pdf".into(),
                    media_type: "application/pdf".into(),
                    size_bytes: 1,
                    sha256: String::new(),
                },
                content_base64: Some("AA==".into()),
            });
        prepared.put(m);
        assert!(prepared.take("p1").is_none());
    }
}

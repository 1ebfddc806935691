//! From a stored practice to the normalized message of one delivery.

use crate::config::AttachmentMode;
use crate::domain::practice::{NewPractice, Practice};
use crate::store::ClaimedJob;
use base64::Engine;
use raccordo_adapters::NormalizedMessage;
use raccordo_adapters::message::{MessageAttachment, SCHEMA_V1};
use raccordo_adapters::model::{Document, Operation};

/// Builds the message for `job` of `practice`.
pub fn build_message(
    job: &ClaimedJob,
    practice: &Practice,
    attachments: Vec<Document>,
    mode: AttachmentMode,
) -> NormalizedMessage {
    NormalizedMessage {
        schema: SCHEMA_V1.to_string(),
        message_id: job.operation_id.clone(),
        operation: job.operation,
        practice_id: practice.id.clone(),
        tenant_id: practice.tenant_id.clone(),
        service_code: practice.service_code.clone(),
        applicant: practice.content.applicant.clone(),
        submitter: practice.content.submitter.clone(),
        channel: practice.content.channel.clone(),
        data: practice.content.data.clone(),
        // A withdrawal names the attachments but does not resend them.
        attachments: message_attachments(
            &attachments,
            mode == AttachmentMode::Inline && job.operation == Operation::Submit,
        ),
        submitted_at: practice.received_at,
        withdrawal_reason: match job.operation {
            Operation::Withdraw => practice.outcome.as_ref().and_then(|o| o.reason.clone()),
            Operation::Submit => None,
        },
        outcome_data: practice.outcome_data.clone(),
    }
}

/// The message of the first delivery of `new`, built before it is stored so
/// a synchronous submission can deliver it without reading it back. Its
/// `message_id` is the operation id, which the caller sets once the store
/// has created the job.
pub fn submission_message(new: &NewPractice, mode: AttachmentMode) -> NormalizedMessage {
    NormalizedMessage {
        schema: SCHEMA_V1.to_string(),
        message_id: String::new(),
        operation: Operation::Submit,
        practice_id: new.id.clone(),
        tenant_id: new.tenant_id.clone(),
        service_code: new.service_code.clone(),
        applicant: new.content.applicant.clone(),
        submitter: new.content.submitter.clone(),
        channel: new.content.channel.clone(),
        data: new.content.data.clone(),
        attachments: message_attachments(&new.attachments, mode == AttachmentMode::Inline),
        submitted_at: new.received_at,
        withdrawal_reason: None,
        outcome_data: Default::default(),
    }
}

fn message_attachments(attachments: &[Document], with_content: bool) -> Vec<MessageAttachment> {
    attachments
        .iter()
        .map(|a| MessageAttachment {
            content_base64: with_content
                .then(|| base64::engine::general_purpose::STANDARD.encode(&a.content)),
            meta: a.meta.clone(),
        })
        .collect()
}

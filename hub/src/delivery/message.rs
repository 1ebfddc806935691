//! From a stored practice to the normalized message of one delivery.

use crate::config::AttachmentMode;
use crate::domain::practice::Practice;
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
        attachments: attachments
            .into_iter()
            .map(|a| MessageAttachment {
                // A withdrawal names the attachments but does not resend them.
                content_base64: (mode == AttachmentMode::Inline
                    && job.operation == Operation::Submit)
                    .then(|| base64::engine::general_purpose::STANDARD.encode(&a.content)),
                meta: a.meta,
            })
            .collect(),
        submitted_at: practice.received_at,
        withdrawal_reason: match job.operation {
            Operation::Withdraw => practice.outcome.as_ref().and_then(|o| o.reason.clone()),
            Operation::Submit => None,
        },
    }
}

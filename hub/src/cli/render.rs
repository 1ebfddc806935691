//! `raccordo route render`: what a vendor would receive for a sample
//! practice, without sending anything.

use anyhow::Context;
use raccordo_adapters::message::{MessageAttachment, SCHEMA_V1};
use raccordo_adapters::model::{DocumentMeta, Operation, sha256_hex};
use raccordo_adapters::{DeliveryRequest, NormalizedMessage};
use std::path::Path;
use std::sync::Arc;

/// Prints the request the route's adapter would send for `practice`.
pub fn render(
    config: &Path,
    tenant: &str,
    service: &str,
    practice: &Path,
    operation: Operation,
) -> anyhow::Result<()> {
    let cfg = crate::config::load(config)?;
    let route = cfg.route(tenant, service).with_context(|| {
        format!(
            "{}: no route serves service {service} for tenant {tenant}",
            config.display()
        )
    })?;
    let adapter_cfg = cfg
        .adapters
        .get(&route.adapter)
        .with_context(|| format!("route to '{}': no such adapter", route.adapter))?;
    let instance = crate::adapters::build(&route.adapter, adapter_cfg, &cfg.base_dir)
        .map_err(|e| anyhow::anyhow!("adapters.{}.{}: {}", route.adapter, e.key, e.reason))?;

    // The format of `practice submit` (the API's JSON), where tenant and
    // service may be left out and a withdrawal may give its reason.
    let text = std::fs::read_to_string(practice)
        .with_context(|| format!("cannot read {}", practice.display()))?;
    let mut json: serde_json::Value = serde_json::from_str(&text)
        .with_context(|| format!("{}: not valid JSON", practice.display()))?;
    let withdrawal_reason = json.as_object_mut().and_then(|o| {
        ["withdrawal_reason", "withdrawalReason"]
            .iter()
            .find_map(|k| o.remove(*k))
    });
    let withdrawal_reason = match withdrawal_reason {
        None => None,
        Some(serde_json::Value::String(r)) => Some(r),
        Some(_) => anyhow::bail!(
            "{}: withdrawal_reason: must be a string",
            practice.display()
        ),
    };
    let base = practice.parent().unwrap_or(Path::new("."));
    let request = super::practice_json::submission_from_json(&mut json, base)
        .with_context(|| practice.display().to_string())?;
    for (what, given, want) in [
        ("tenant_id", &request.tenant_id, tenant),
        ("service_code", &request.service_code, service),
    ] {
        if !given.is_empty() && given != want {
            anyhow::bail!(
                "{}: {what} is {given}, but --{} {want} was asked",
                practice.display(),
                if what == "tenant_id" {
                    "tenant"
                } else {
                    "service"
                }
            );
        }
    }
    let sample = crate::grpc::convert::submit_input(request)
        .map_err(|e| anyhow::anyhow!("{}: {}", practice.display(), e.message()))?;
    let applicant = sample
        .applicant
        .with_context(|| format!("{}: applicant: is required", practice.display()))?;
    let attachments = sample
        .attachments
        .iter()
        .map(|a| {
            use base64::Engine;
            MessageAttachment {
                meta: DocumentMeta {
                    name: a.name.clone(),
                    media_type: a.media_type.clone(),
                    size_bytes: a.content.len() as u64,
                    sha256: sha256_hex(&a.content),
                },
                content_base64: (route.attachments == crate::config::AttachmentMode::Inline)
                    .then(|| base64::engine::general_purpose::STANDARD.encode(&a.content)),
            }
        })
        .collect();
    let message = NormalizedMessage {
        schema: SCHEMA_V1.into(),
        message_id: "00000000-0000-7000-8000-000000000001".into(),
        operation,
        practice_id: "00000000-0000-7000-8000-000000000000".into(),
        tenant_id: tenant.into(),
        service_code: service.into(),
        applicant,
        submitter: sample.submitter,
        channel: sample.channel,
        data: sample.data,
        attachments,
        submitted_at: chrono::Utc::now(),
        withdrawal_reason,
        outcome_data: Default::default(),
    };
    let request = DeliveryRequest {
        message: Arc::new(message),
        attempt: 1,
        route_vars: Arc::new(route.vars.clone()),
        traceparent: None,
    };
    match instance.adapter.render(&request) {
        None => anyhow::bail!(
            "the {} adapter cannot show its requests",
            instance.adapter.kind()
        ),
        Some(Err(e)) => anyhow::bail!("adapter {}: {}", route.adapter, e.reason),
        Some(Ok(text)) => {
            print!("{text}");
            Ok(())
        }
    }
}

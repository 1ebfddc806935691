//! `raccordo route render`: what a vendor would receive for a sample
//! practice, without sending anything.

use anyhow::Context;
use raccordo_adapters::message::{MessageAttachment, SCHEMA_V1};
use raccordo_adapters::model::{
    Applicant, ChannelInfo, DocumentMeta, Operation, Submitter, sha256_hex,
};
use raccordo_adapters::{DeliveryRequest, NormalizedMessage};
use serde::Deserialize;
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// The sample practice: the same JSON as `raccordo practice submit`.
#[derive(Deserialize)]
struct Sample {
    #[serde(default)]
    tenant_id: Option<String>,
    #[serde(default)]
    service_code: Option<String>,
    applicant: Applicant,
    #[serde(default)]
    submitter: Option<Submitter>,
    #[serde(default)]
    channel: ChannelInfo,
    #[serde(default)]
    data: serde_json::Map<String, serde_json::Value>,
    #[serde(default)]
    attachments: Vec<SampleAttachment>,
    #[serde(default)]
    withdrawal_reason: Option<String>,
}

#[derive(Deserialize)]
struct SampleAttachment {
    name: String,
    media_type: String,
    #[serde(default)]
    path: Option<PathBuf>,
    #[serde(default)]
    content_base64: Option<String>,
}

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

    let text = std::fs::read_to_string(practice)
        .with_context(|| format!("cannot read {}", practice.display()))?;
    let mut de = serde_json::Deserializer::from_str(&text);
    let sample: Sample = serde_path_to_error::deserialize(&mut de)
        .map_err(|e| anyhow::anyhow!("{}: {}: {}", practice.display(), e.path(), e.inner()))?;
    for (what, given, want) in [
        ("tenant_id", &sample.tenant_id, tenant),
        ("service_code", &sample.service_code, service),
    ] {
        if let Some(g) = given.as_deref().filter(|g| *g != want) {
            anyhow::bail!(
                "{}: {what} is {g}, but --{} {want} was asked",
                practice.display(),
                if what == "tenant_id" {
                    "tenant"
                } else {
                    "service"
                }
            );
        }
    }
    let base = practice.parent().unwrap_or(Path::new("."));
    let attachments = sample
        .attachments
        .iter()
        .enumerate()
        .map(|(i, a)| {
            use base64::Engine;
            let bytes = match (&a.path, &a.content_base64) {
                (Some(p), None) => std::fs::read(base.join(p)).with_context(|| {
                    format!("attachments[{i}].path: cannot read {}", p.display())
                })?,
                (None, Some(b)) => base64::engine::general_purpose::STANDARD
                    .decode(b)
                    .with_context(|| format!("attachments[{i}].content_base64 is not base64"))?,
                _ => anyhow::bail!("attachments[{i}]: set exactly one of path and content_base64"),
            };
            Ok(MessageAttachment {
                meta: DocumentMeta {
                    name: a.name.clone(),
                    media_type: a.media_type.clone(),
                    size_bytes: bytes.len() as u64,
                    sha256: sha256_hex(&bytes),
                },
                content_base64: (route.attachments == crate::config::AttachmentMode::Inline)
                    .then(|| base64::engine::general_purpose::STANDARD.encode(&bytes)),
            })
        })
        .collect::<anyhow::Result<Vec<_>>>()?;
    let message = NormalizedMessage {
        schema: SCHEMA_V1.into(),
        message_id: "00000000-0000-7000-8000-000000000001".into(),
        operation,
        practice_id: "00000000-0000-7000-8000-000000000000".into(),
        tenant_id: tenant.into(),
        service_code: service.into(),
        applicant: sample.applicant,
        submitter: sample.submitter,
        channel: sample.channel,
        data: sample.data,
        attachments,
        submitted_at: chrono::Utc::now(),
        withdrawal_reason: sample.withdrawal_reason,
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

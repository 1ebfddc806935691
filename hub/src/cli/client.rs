//! Client commands against a running hub (the same gRPC API front offices use).

use super::connection::{self, Authorize, Target};
use super::output;
use super::{DlqCommand, PracticeCommand, ServerArgs};
use crate::grpc::convert::{applicant_pb, contacts_pb, json_to_struct, person_pb};
use anyhow::Context;
use base64::Engine;
use raccordo_adapters::model::{Applicant, ChannelInfo, ChannelKind, Submitter};
use raccordo_proto::v1 as pb;
use serde::Deserialize;
use std::path::{Path, PathBuf};
use tonic::service::interceptor::InterceptedService;
use tonic::transport::Channel;

/// A practice to submit, as JSON (see `config/examples/*.json`).
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct SubmitFile {
    tenant_id: String,
    service_code: String,
    /// Defaults to a fresh UUID: re-running the command submits again.
    #[serde(default)]
    idempotency_key: Option<String>,
    applicant: Applicant,
    #[serde(default)]
    submitter: Option<Submitter>,
    #[serde(default)]
    channel: Option<ChannelInfo>,
    #[serde(default)]
    data: serde_json::Map<String, serde_json::Value>,
    #[serde(default)]
    attachments: Vec<FileAttachment>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct FileAttachment {
    name: String,
    media_type: String,
    /// A file, relative to the JSON file.
    #[serde(default)]
    path: Option<PathBuf>,
    #[serde(default)]
    content_base64: Option<String>,
}

/// The client stack every command uses: the channel, with the credential
/// added to each call.
type Authorized = InterceptedService<Channel, Authorize>;

async fn connect(server: &ServerArgs) -> anyhow::Result<(Authorized, Target)> {
    let target = connection::resolve(&server.connection, &connection::process_env)?;
    let channel = target.connect().await?;
    Ok((InterceptedService::new(channel, target.authorize()), target))
}

/// The hub's refusal, with what to do about it: for authentication and
/// authorization failures, what was presented (never a secret) and how to
/// present something else.
fn status_error(e: tonic::Status, target: &Target) -> anyhow::Error {
    use tonic::Code;
    use tonic_types::StatusExt;
    let mut msg = format!("{:?}: {}", e.code(), e.message());
    if let Some(bad) = e.get_details_bad_request() {
        msg = format!(
            "{:?}: the request has {} problem(s)",
            e.code(),
            bad.field_violations.len()
        );
        for v in bad.field_violations {
            msg.push_str(&format!("\n  {}: {}", v.field, v.description));
        }
    }
    match e.code() {
        Code::Unauthenticated
            if target.credential().is_none() && !target.has_client_certificate() =>
        {
            msg.push_str(&format!(
                "\n  sent: {}\n  the hub at {} requires credentials: give --api-key-file FILE or \
                 --token-file FILE, set {} or {}, present a client certificate \
                 (--client-cert-file, --client-key-file), or choose a profile (--profile); \
                 see docs/cli.md",
                target.presented(),
                target.url,
                connection::ENV_API_KEY,
                connection::ENV_TOKEN,
            ));
        }
        Code::Unauthenticated | Code::PermissionDenied | Code::ResourceExhausted => {
            msg.push_str(&format!("\n  sent: {}", target.presented()));
        }
        _ => {}
    }
    anyhow::anyhow!(msg)
}

fn read_submission(file: &Path) -> anyhow::Result<pb::SubmitPracticeRequest> {
    let (text, base) = if file == Path::new("-") {
        (
            std::io::read_to_string(std::io::stdin())?,
            PathBuf::from("."),
        )
    } else {
        (
            std::fs::read_to_string(file)
                .with_context(|| format!("cannot read {}", file.display()))?,
            file.parent().map(Path::to_path_buf).unwrap_or_default(),
        )
    };
    let mut de = serde_json::Deserializer::from_str(&text);
    let s: SubmitFile = serde_path_to_error::deserialize(&mut de)
        .map_err(|e| anyhow::anyhow!("{}: {}: {}", file.display(), e.path(), e.inner()))?;
    let attachments = s
        .attachments
        .into_iter()
        .enumerate()
        .map(|(i, a)| {
            let content = match (&a.path, &a.content_base64) {
                (Some(p), None) => std::fs::read(base.join(p)).with_context(|| {
                    format!("attachments[{i}].path: cannot read {}", p.display())
                })?,
                (None, Some(b)) => base64::engine::general_purpose::STANDARD
                    .decode(b)
                    .with_context(|| format!("attachments[{i}].content_base64 is not base64"))?,
                _ => anyhow::bail!("attachments[{i}]: set exactly one of path and content_base64"),
            };
            Ok(pb::Attachment {
                name: a.name,
                media_type: a.media_type,
                size_bytes: content.len() as u64,
                sha256: String::new(),
                content,
            })
        })
        .collect::<anyhow::Result<Vec<_>>>()?;
    let channel = s.channel.unwrap_or_default();
    Ok(pb::SubmitPracticeRequest {
        tenant_id: s.tenant_id,
        service_code: s.service_code,
        applicant: Some(applicant_pb(&s.applicant)),
        submitter: s.submitter.as_ref().map(|sub| pb::Submitter {
            person: Some(person_pb(&sub.person)),
            role: sub.role.clone(),
            contacts: contacts_pb(&sub.contacts),
        }),
        channel: Some(pb::ChannelInfo {
            channel: match channel.kind {
                ChannelKind::Online => pb::Channel::Online,
                ChannelKind::Desk => pb::Channel::Desk,
            } as i32,
            operator_id: channel.operator_id,
            desk_id: channel.desk_id,
        }),
        data: Some(json_to_struct(&s.data)),
        attachments,
        idempotency_key: s
            .idempotency_key
            .unwrap_or_else(|| uuid::Uuid::now_v7().to_string()),
    })
}

/// `raccordo practice …`
pub async fn practice(server: &ServerArgs, command: PracticeCommand) -> anyhow::Result<()> {
    let (channel, target) = connect(server).await?;
    let mut client = pb::practice_service_client::PracticeServiceClient::new(channel);
    match command {
        PracticeCommand::Submit { file } => {
            let request = read_submission(&file)?;
            let reply = client
                .submit_practice(request)
                .await
                .map_err(|e| status_error(e, &target))?
                .into_inner();
            let practice = reply.practice.unwrap_or_default();
            if reply.duplicate && !server.json {
                println!(
                    "(already submitted with this idempotency key: the stored practice follows)"
                );
            }
            output::practice(&practice, server.json);
        }
        PracticeCommand::Get { tenant, id } => {
            let practice = client
                .get_practice(pb::GetPracticeRequest {
                    tenant_id: tenant,
                    practice_id: id,
                    include_events: true,
                    include_content: false,
                })
                .await
                .map_err(|e| status_error(e, &target))?
                .into_inner();
            output::practice(&practice, server.json);
        }
        PracticeCommand::List {
            tenant,
            applicant,
            service,
            status,
            limit,
            page_token,
        } => {
            let status = match status {
                Some(s) => pb::AdministrativeStatus::from_str_name(&s.to_ascii_uppercase())
                    .with_context(|| format!("--status {s} is not a status"))?
                    as i32,
                None => 0,
            };
            let reply = client
                .list_practices(pb::ListPracticesRequest {
                    tenant_id: tenant,
                    applicant_id: applicant.unwrap_or_default(),
                    service_code: service.unwrap_or_default(),
                    status,
                    submitted_from: None,
                    submitted_to: None,
                    page_size: limit,
                    page_token: page_token.unwrap_or_default(),
                })
                .await
                .map_err(|e| status_error(e, &target))?
                .into_inner();
            output::practice_list(&reply, server.json);
        }
        PracticeCommand::Watch { tenant, id, from } => {
            let mut stream = client
                .watch_practice(pb::WatchPracticeRequest {
                    tenant_id: tenant,
                    practice_id: id,
                    from_sequence: from,
                })
                .await
                .map_err(|e| status_error(e, &target))?
                .into_inner();
            while let Some(event) = stream
                .message()
                .await
                .map_err(|e| status_error(e, &target))?
            {
                output::event(&event, server.json);
            }
        }
        PracticeCommand::Withdraw {
            tenant,
            id,
            reason,
            operator,
        } => {
            let practice = client
                .withdraw_practice(pb::WithdrawPracticeRequest {
                    tenant_id: tenant,
                    practice_id: id,
                    reason: reason.unwrap_or_default(),
                    operator_id: operator.unwrap_or_default(),
                })
                .await
                .map_err(|e| status_error(e, &target))?
                .into_inner();
            output::practice(&practice, server.json);
        }
    }
    Ok(())
}

/// `raccordo status`: fails (exit code 1) when the hub is not ready.
pub async fn status(server: &ServerArgs) -> anyhow::Result<()> {
    let (channel, target) = connect(server).await?;
    let mut client = pb::delivery_admin_service_client::DeliveryAdminServiceClient::new(channel);
    let status = client
        .get_hub_status(pb::GetHubStatusRequest {})
        .await
        .map_err(|e| status_error(e, &target))?
        .into_inner();
    output::hub_status(&status, server.json);
    if !status.ready {
        anyhow::bail!("the hub is not ready");
    }
    Ok(())
}

/// `raccordo dlq …`
pub async fn dlq(server: &ServerArgs, command: DlqCommand) -> anyhow::Result<()> {
    let (channel, target) = connect(server).await?;
    let mut client = pb::delivery_admin_service_client::DeliveryAdminServiceClient::new(channel);
    match command {
        DlqCommand::List { tenant, limit } => {
            let reply = client
                .list_dead_letters(pb::ListDeadLettersRequest {
                    tenant_id: tenant.unwrap_or_default(),
                    limit,
                })
                .await
                .map_err(|e| status_error(e, &target))?
                .into_inner();
            output::dead_letters(&reply.dead_letters, server.json);
        }
        DlqCommand::Replay {
            operation_id,
            operator,
        } => {
            let dl = client
                .replay_dead_letter(pb::ReplayDeadLetterRequest {
                    operation_id,
                    operator_id: operator,
                })
                .await
                .map_err(|e| status_error(e, &target))?
                .into_inner();
            if server.json {
                output::dead_letters(&[dl], true);
            } else {
                println!(
                    "requeued {} (practice {}, adapter {})",
                    dl.operation_id, dl.practice_id, dl.adapter
                );
            }
        }
    }
    Ok(())
}

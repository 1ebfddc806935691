//! Client commands against a running hub (the same gRPC API front offices use).

use super::connection::{self, Authorize, Target};
use super::output::Printer;
use super::practice_json::read_submission;
use super::{CatalogCommand, DlqCommand, PracticeCommand, ServerArgs};
use anyhow::Context;
use raccordo_proto::v1 as pb;
use sha2::{Digest, Sha256};
use std::path::{Path, PathBuf};
use std::time::Duration;
use tonic::service::interceptor::InterceptedService;
use tonic::transport::Channel;

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

/// `raccordo practice …`
pub async fn practice(
    server: &ServerArgs,
    out: &Printer,
    command: PracticeCommand,
) -> anyhow::Result<()> {
    // Read the file before connecting: its mistakes are the first to fix.
    let submission = match &command {
        PracticeCommand::Submit { file } => Some(read_submission(file)?),
        _ => None,
    };
    let (channel, target) = connect(server).await?;
    let mut client = pb::practice_service_client::PracticeServiceClient::new(channel);
    match command {
        PracticeCommand::Submit { .. } => {
            let request = submission.expect("read above");
            let reply = client
                .submit_practice(request)
                .await
                .map_err(|e| status_error(e, &target))?
                .into_inner();
            let practice = reply.practice.unwrap_or_default();
            if reply.duplicate {
                eprintln!(
                    "(already submitted with this idempotency key: the stored practice follows)"
                );
            }
            out.practice(&practice);
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
            out.practice(&practice);
        }
        PracticeCommand::List {
            tenant,
            applicant,
            service,
            status,
            limit,
            page_token,
        } => {
            let status_code = match &status {
                Some(s) => parse_status(s, "--status")? as i32,
                None => 0,
            };
            let mut filters = vec![format!("tenant {tenant}")];
            for (name, value) in [
                ("applicant", &applicant),
                ("service", &service),
                ("status", &status),
            ] {
                if let Some(v) = value {
                    filters.push(format!("{name} {v}"));
                }
            }
            let reply = client
                .list_practices(pb::ListPracticesRequest {
                    tenant_id: tenant,
                    applicant_id: applicant.unwrap_or_default(),
                    service_code: service.unwrap_or_default(),
                    status: status_code,
                    submitted_from: None,
                    submitted_to: None,
                    page_size: limit,
                    page_token: page_token.unwrap_or_default(),
                })
                .await
                .map_err(|e| status_error(e, &target))?
                .into_inner();
            out.practice_list(&reply, &filters.join(", "));
        }
        PracticeCommand::Watch {
            tenant,
            id,
            from,
            until,
            timeout,
        } => {
            let until = until
                .as_deref()
                .map(|s| parse_status(s, "--until"))
                .transpose()?;
            let goal = match until {
                Some(s) => format!("until it is {}", s.as_str_name()),
                None => "until it concludes".to_string(),
            };
            let bound = match timeout {
                Some(t) => format!(", at most {}", humantime::format_duration(t)),
                None => ", Ctrl-C to stop".to_string(),
            };
            eprintln!("watching practice {id} of tenant {tenant} from event #{from} {goal}{bound}");
            let deadline = timeout.map(|t| tokio::time::Instant::now() + t);
            let watch = watch(&mut client, &target, out, tenant, id, from, until);
            match deadline {
                None => watch.await?,
                Some(deadline) => match tokio::time::timeout_at(deadline, watch).await {
                    Ok(result) => result?,
                    Err(_) => anyhow::bail!(
                        "timed out after {}: the practice did not reach {}",
                        humantime::format_duration(timeout.unwrap_or_default()),
                        until.map_or("a conclusion", |s| s.as_str_name())
                    ),
                },
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
            out.practice(&practice);
        }
        PracticeCommand::Document {
            tenant,
            id,
            name,
            output,
            force,
        } => {
            let practice = client
                .get_practice(pb::GetPracticeRequest {
                    tenant_id: tenant,
                    practice_id: id.clone(),
                    include_events: false,
                    include_content: true,
                })
                .await
                .map_err(|e| status_error(e, &target))?
                .into_inner();
            save_document(&practice, name.as_deref(), output.as_deref(), force)?;
        }
    }
    Ok(())
}

/// An administrative status by name, any case.
fn parse_status(s: &str, flag: &str) -> anyhow::Result<pb::AdministrativeStatus> {
    pb::AdministrativeStatus::from_str_name(&s.to_ascii_uppercase())
        .filter(|s| *s != pb::AdministrativeStatus::Unspecified)
        .with_context(|| {
            format!(
                "{flag} {s} is not a status (SUBMITTED, REGISTERED, IN_PROGRESS, \
                 INTEGRATION_REQUESTED, INTEGRATED, APPROVED, REJECTED, WITHDRAWN, CANCELLED)"
            )
        })
}

fn is_conclusion(status: i32) -> bool {
    use pb::AdministrativeStatus as S;
    [S::Approved, S::Rejected, S::Withdrawn, S::Cancelled]
        .iter()
        .any(|s| *s as i32 == status)
}

/// Prints the practice's events until it reaches `until` (or, without
/// it, until the hub ends the stream); fails if the practice concludes
/// in another status first.
async fn watch(
    client: &mut pb::practice_service_client::PracticeServiceClient<Authorized>,
    target: &Target,
    out: &Printer,
    tenant: String,
    id: String,
    from: u64,
    until: Option<pb::AdministrativeStatus>,
) -> anyhow::Result<()> {
    let mut stream = client
        .watch_practice(pb::WatchPracticeRequest {
            tenant_id: tenant,
            practice_id: id,
            from_sequence: from,
        })
        .await
        .map_err(|e| status_error(e, target))?
        .into_inner();
    let mut last = None;
    while let Some(event) = stream
        .message()
        .await
        .map_err(|e| status_error(e, target))?
    {
        out.event(&event);
        if event.to_status == 0 || event.kind == pb::EventKind::Anomaly as i32 {
            continue;
        }
        last = Some(event.to_status);
        if let Some(goal) = until {
            if event.to_status == goal as i32 {
                return Ok(());
            }
            if is_conclusion(event.to_status) {
                anyhow::bail!(
                    "the practice concluded {}: it will not be {}",
                    pb::AdministrativeStatus::try_from(event.to_status)
                        .map_or("?", |s| s.as_str_name()),
                    goal.as_str_name()
                );
            }
        }
    }
    match until {
        Some(goal) => anyhow::bail!(
            "the hub ended the stream before the practice was {} (last status {})",
            goal.as_str_name(),
            last.and_then(|s| pb::AdministrativeStatus::try_from(s).ok())
                .map_or("unknown", |s| s.as_str_name())
        ),
        None => Ok(()),
    }
}

/// Writes an outcome document after checking its SHA-256 (and size)
/// against what the hub recorded; `-` writes it to standard output.
fn save_document(
    practice: &pb::Practice,
    name: Option<&str>,
    output: Option<&Path>,
    force: bool,
) -> anyhow::Result<()> {
    let documents = practice
        .outcome
        .as_ref()
        .map(|o| o.documents.as_slice())
        .unwrap_or_default();
    let names = || {
        documents
            .iter()
            .map(|d| d.name.as_str())
            .collect::<Vec<_>>()
            .join(", ")
    };
    let document = match name {
        Some(n) => documents.iter().find(|d| d.name == n).with_context(|| {
            if documents.is_empty() {
                format!("practice {} has no outcome document", practice.id)
            } else {
                format!(
                    "practice {} has no document {n} (it has: {})",
                    practice.id,
                    names()
                )
            }
        })?,
        None => match documents {
            [] => anyhow::bail!(
                "practice {} has no outcome document (status {})",
                practice.id,
                pb::AdministrativeStatus::try_from(practice.status)
                    .map_or("?", |s| s.as_str_name())
            ),
            [only] => only,
            _ => anyhow::bail!(
                "practice {} has {} documents: name one ({})",
                practice.id,
                documents.len(),
                names()
            ),
        },
    };
    let actual: String = Sha256::digest(&document.content)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    if !actual.eq_ignore_ascii_case(&document.sha256) {
        anyhow::bail!(
            "{}: the content received has SHA-256 {actual}, not the {} recorded: nothing written",
            document.name,
            document.sha256
        );
    }
    if document.content.len() as u64 != document.size_bytes {
        anyhow::bail!(
            "{}: {} bytes received, {} recorded: nothing written",
            document.name,
            document.content.len(),
            document.size_bytes
        );
    }
    if output == Some(Path::new("-")) {
        use std::io::Write;
        let mut stdout = std::io::stdout().lock();
        stdout.write_all(&document.content)?;
        return Ok(stdout.flush()?);
    }
    // The vendor chose the name: keep its last component only, so it cannot
    // point outside the folder.
    let file_name = Path::new(&document.name)
        .file_name()
        .filter(|n| !n.is_empty() && *n != "." && *n != "..")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(format!("{}.document", practice.id)));
    let path = match output {
        Some(o) if o.is_dir() => o.join(&file_name),
        Some(o) => o.to_path_buf(),
        None => file_name,
    };
    let mut options = std::fs::OpenOptions::new();
    options.write(true);
    if force {
        options.create(true).truncate(true);
    } else {
        options.create_new(true);
    }
    let mut file = options.open(&path).map_err(|e| {
        if e.kind() == std::io::ErrorKind::AlreadyExists {
            anyhow::anyhow!(
                "{} exists: choose another --output, or --force",
                path.display()
            )
        } else {
            anyhow::anyhow!("cannot write {}: {e}", path.display())
        }
    })?;
    std::io::Write::write_all(&mut file, &document.content)
        .and_then(|()| file.sync_all())
        .with_context(|| format!("cannot write {}", path.display()))?;
    eprintln!(
        "saved {} ({}, {} bytes, SHA-256 verified) to {}",
        document.name,
        document.media_type,
        document.size_bytes,
        path.display()
    );
    Ok(())
}

/// `raccordo status`: fails (exit code 1) when the hub is not ready.
pub async fn status(server: &ServerArgs, out: &Printer) -> anyhow::Result<()> {
    let (channel, target) = connect(server).await?;
    let mut client = pb::delivery_admin_service_client::DeliveryAdminServiceClient::new(channel);
    let status = client
        .get_hub_status(pb::GetHubStatusRequest {})
        .await
        .map_err(|e| status_error(e, &target))?
        .into_inner();
    out.hub_status(&status);
    if !status.ready {
        anyhow::bail!("the hub is not ready");
    }
    Ok(())
}

/// `raccordo dlq …`
pub async fn dlq(server: &ServerArgs, out: &Printer, command: DlqCommand) -> anyhow::Result<()> {
    let (channel, target) = connect(server).await?;
    let mut client = pb::delivery_admin_service_client::DeliveryAdminServiceClient::new(channel);
    match command {
        DlqCommand::List { tenant, limit } => {
            let filters = tenant
                .as_deref()
                .map_or("every tenant".to_string(), |t| format!("tenant {t}"));
            let reply = client
                .list_dead_letters(pb::ListDeadLettersRequest {
                    tenant_id: tenant.unwrap_or_default(),
                    limit,
                })
                .await
                .map_err(|e| status_error(e, &target))?
                .into_inner();
            out.dead_letters(&reply.dead_letters, &filters);
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
            out.dead_letter(&dl);
        }
    }
    Ok(())
}

/// `raccordo catalog …`
pub async fn catalog(
    server: &ServerArgs,
    out: &Printer,
    command: CatalogCommand,
) -> anyhow::Result<()> {
    let (channel, target) = connect(server).await?;
    let mut client = pb::catalog_service_client::CatalogServiceClient::new(channel);
    match command {
        CatalogCommand::List { tenant } => {
            let reply = client
                .list_services(pb::ListServicesRequest {
                    tenant_id: tenant.clone(),
                })
                .await
                .map_err(|e| status_error(e, &target))?
                .into_inner();
            out.services(&tenant, &reply.services);
        }
    }
    Ok(())
}

/// A `--timeout` such as `30s` or `2m`.
pub fn parse_timeout(s: &str) -> Result<Duration, String> {
    humantime::parse_duration(s).map_err(|e| format!("{e} (e.g. 30s, 2m, 1h)"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn practice_with(content: &[u8], sha256: &str) -> pb::Practice {
        pb::Practice {
            id: "p-1".into(),
            outcome: Some(pb::Outcome {
                documents: vec![pb::Attachment {
                    name: "../../certificato.pdf".into(),
                    media_type: "application/pdf".into(),
                    size_bytes: content.len() as u64,
                    sha256: sha256.into(),
                    content: content.to_vec(),
                }],
                ..Default::default()
            }),
            ..Default::default()
        }
    }

    #[test]
    fn a_document_whose_hash_differs_is_not_written() {
        let dir = tempfile::tempdir().unwrap();
        let wrong = "0".repeat(64);
        let e = save_document(
            &practice_with(b"%PDF", &wrong),
            None,
            Some(dir.path()),
            false,
        )
        .unwrap_err()
        .to_string();
        assert!(e.contains("nothing written") && e.contains(&wrong), "{e}");
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 0);
    }

    #[test]
    fn a_document_is_written_inside_the_folder_under_its_last_name() {
        let dir = tempfile::tempdir().unwrap();
        let right: String = Sha256::digest(b"%PDF")
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect();
        save_document(
            &practice_with(b"%PDF", &right),
            None,
            Some(dir.path()),
            false,
        )
        .unwrap();
        assert_eq!(
            std::fs::read(dir.path().join("certificato.pdf")).unwrap(),
            b"%PDF"
        );
    }
}

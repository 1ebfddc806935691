//! The gRPC face: decode, call the practice service, encode. Nothing else.

pub mod admission;
pub mod budget;
pub mod convert;
pub mod error;
pub mod malformed;
pub mod metrics_layer;
pub mod watch;

use crate::domain::identifiers::is_istat_code;
use crate::domain::practice::Event;
use crate::domain::validate::quote;
use crate::practices::{HubError, PracticeService};
use crate::security::{Caller, caller};
use crate::store::{AuditEntry, EventFilter, PracticeFilter};
use convert::*;
use error::invalid;
use futures::Stream;
use raccordo_proto::v1 as pb;
use std::pin::Pin;
use std::sync::Arc;
use tokio_stream::StreamExt;
use tokio_stream::wrappers::ReceiverStream;
use tonic::{Request, Response, Status};

/// Implements every `raccordo.v1` service over one [`PracticeService`].
#[derive(Debug, Clone)]
pub struct Api {
    service: Arc<PracticeService>,
}

impl Api {
    /// The API over `service`.
    pub fn new(service: Arc<PracticeService>) -> Self {
        Self { service }
    }

    /// Records a refused call in the audit trail (in the background: the
    /// caller's answer does not wait for it).
    fn audit_denied(
        &self,
        caller: &Caller,
        tenant_id: Option<&str>,
        practice_id: Option<&str>,
        reason: &str,
    ) {
        let entry = AuditEntry {
            tenant_id: tenant_id.map(str::to_string),
            actor: caller.client.clone(),
            action: "call_denied".into(),
            practice_id: practice_id.map(str::to_string),
            detail: serde_json::json!({"reason": reason}),
        };
        let store = std::sync::Arc::clone(self.service.store());
        tokio::spawn(async move {
            if let Err(e) = store.record_audit(entry).await {
                tracing::error!(error = %e, "cannot record a refused call in the audit trail");
            }
        });
    }

    /// Tenant of a request, checked against the caller's scope.
    fn scoped_tenant(&self, caller: &Caller, t: &str) -> Result<String, Status> {
        let tenant_id = tenant(t)?;
        if let Err(status) = caller.check_tenant(&tenant_id) {
            self.audit_denied(caller, Some(&tenant_id), None, status.message());
            return Err(status);
        }
        Ok(tenant_id)
    }

    /// A citizen may filter only by their own fiscal code: the filter is
    /// theirs whatever the request says, and naming someone else is refused.
    fn confined_applicant(
        &self,
        caller: &Caller,
        requested: Option<String>,
    ) -> Result<Option<String>, Status> {
        let Some(own) = caller.citizen() else {
            return Ok(requested);
        };
        match requested {
            Some(other) if !other.eq_ignore_ascii_case(own) => {
                let reason = "a citizen may list only their own practices";
                self.audit_denied(caller, None, None, reason);
                Err(Status::permission_denied(reason))
            }
            _ => Ok(Some(own.to_string())),
        }
    }

    /// NOT_FOUND, exactly as for a missing practice, when a citizen asks
    /// about a practice of someone else.
    async fn check_visible(
        &self,
        caller: &Caller,
        tenant_id: &str,
        id: &str,
    ) -> Result<(), Status> {
        if caller.citizen().is_none() {
            return Ok(());
        }
        let practice = self.service.get(tenant_id, id, false).await?;
        if caller.may_see_applicant(practice.content.applicant.id()) {
            Ok(())
        } else {
            tracing::warn!(client = %caller.client, practice_id = id, "a citizen asked for another applicant's practice");
            self.audit_denied(
                caller,
                Some(tenant_id),
                Some(id),
                "another applicant's practice",
            );
            Err(Status::not_found(format!(
                "practice {id} not found in tenant {tenant_id}"
            )))
        }
    }

    /// The events a `WatchPractice` call follows, once its caller may see
    /// the practice.
    async fn practice_events(
        &self,
        request: Request<pb::WatchPracticeRequest>,
    ) -> Result<EventReceiver, Status> {
        let caller = caller(&request)?;
        let r = request.into_inner();
        let tenant_id = self.scoped_tenant(&caller, &r.tenant_id)?;
        let id = identifier("practice_id", &r.practice_id)?;
        self.check_visible(&caller, &tenant_id, &id).await?;
        Ok(self
            .service
            .watch(tenant_id, id, position("from_sequence", r.from_sequence)?)
            .await?)
    }

    /// The events a `WatchPractices` call follows; a citizen's filter is
    /// confined to their own fiscal code.
    async fn folder_events(
        &self,
        request: Request<pb::WatchPracticesRequest>,
    ) -> Result<EventReceiver, Status> {
        let caller = caller(&request)?;
        let r = request.into_inner();
        let filter = EventFilter {
            tenant_id: self.scoped_tenant(&caller, &r.tenant_id)?,
            applicant_id: self
                .confined_applicant(&caller, optional("applicant_id", &r.applicant_id)?)?
                .map(|a| a.to_ascii_uppercase()),
            service_code: optional("service_code", &r.service_code)?,
        };
        Ok(self
            .service
            .watch_many(filter, position("after_cursor", r.after_cursor)?)
            .await?)
    }
}

/// What a watch call reads: events shared with every other stream.
type EventReceiver = tokio::sync::mpsc::Receiver<Result<Arc<Event>, HubError>>;

type EventStream = Pin<Box<dyn Stream<Item = Result<pb::PracticeEvent, Status>> + Send>>;

fn tenant(t: &str) -> Result<String, Status> {
    let t = t.trim();
    if is_istat_code(t) {
        Ok(t.to_string())
    } else {
        Err(invalid(
            "tenant_id",
            "must be the 6-digit ISTAT code of the municipality",
        ))
    }
}

/// The longest identifier (practice id, service code, operation id,
/// applicant filter, operator id) a request may carry, in characters.
pub const MAX_IDENTIFIER_CHARS: usize = 128;

/// The longest withdrawal reason, in characters.
pub const MAX_REASON_CHARS: usize = 2000;

/// The longest page token, in characters (the hub's own are under 100).
const MAX_PAGE_TOKEN_CHARS: usize = 1024;

/// A required identifier: not blank, bounded, no control characters.
fn identifier(field: &str, v: &str) -> Result<String, Status> {
    optional(field, v)?.ok_or_else(|| invalid(field, "is required"))
}

/// An optional identifier (`None` when blank), checked as [`identifier`].
fn optional(field: &str, v: &str) -> Result<Option<String>, Status> {
    let v = v.trim();
    free_text(field, v, MAX_IDENTIFIER_CHARS)?;
    Ok((!v.is_empty()).then(|| v.to_string()))
}

/// Text of at most `max` characters without control characters (NUL
/// bytes, line breaks: they forge log lines and break vendor formats).
fn free_text(field: &str, v: &str, max: usize) -> Result<(), Status> {
    if v.chars().nth(max).is_some() {
        return Err(invalid(
            field,
            &format!(
                "is {} characters, more than the limit of {max}",
                v.chars().count()
            ),
        ));
    }
    if v.contains(|c: char| c.is_control() && c != '\n' && c != '\t') {
        return Err(invalid(field, "must not contain control characters"));
    }
    Ok(())
}

/// A sequence or cursor the store can hold (a signed 64-bit integer):
/// larger values would wrap to negative ones and mean "from the start".
fn position(field: &str, v: u64) -> Result<i64, Status> {
    i64::try_from(v).map_err(|_| invalid(field, &format!("must be at most {}", i64::MAX)))
}

fn event_stream(rx: EventReceiver) -> EventStream {
    Box::pin(ReceiverStream::new(rx).map(|r| r.map(|e| event_pb(&e)).map_err(Status::from)))
}

#[tonic::async_trait]
impl pb::practice_service_server::PracticeService for Api {
    async fn submit_practice(
        &self,
        request: Request<pb::SubmitPracticeRequest>,
    ) -> Result<Response<pb::SubmitPracticeResponse>, Status> {
        let caller = caller(&request)?;
        let mut input = submit_input(request.into_inner())?;
        if is_istat_code(&input.tenant_id)
            && let Err(status) = caller.check_tenant(&input.tenant_id)
        {
            self.audit_denied(&caller, Some(&input.tenant_id), None, status.message());
            return Err(status);
        }
        if let Some(own) = caller.citizen() {
            let applicant = input.applicant.as_ref().map(|a| a.id().to_string());
            if !applicant.is_some_and(|a| a.eq_ignore_ascii_case(own)) {
                self.audit_denied(
                    &caller,
                    Some(&input.tenant_id),
                    None,
                    "a citizen submitting for someone else",
                );
                return Err(Status::permission_denied(
                    "a citizen may submit only as the applicant",
                ));
            }
        }
        if let Some(operator) = &caller.operator_id {
            // The authenticated operator, not what the request claims.
            input.channel.operator_id = operator.clone();
        }
        let submitted = self.service.submit(input).await?;
        Ok(Response::new(pb::SubmitPracticeResponse {
            practice: Some(practice_pb(&submitted.practice, &[])),
            duplicate: submitted.duplicate,
        }))
    }

    async fn get_practice(
        &self,
        request: Request<pb::GetPracticeRequest>,
    ) -> Result<Response<pb::Practice>, Status> {
        let caller = caller(&request)?;
        let r = request.into_inner();
        let tenant_id = self.scoped_tenant(&caller, &r.tenant_id)?;
        let id = identifier("practice_id", &r.practice_id)?;
        let practice = self.service.get(&tenant_id, &id, r.include_content).await?;
        if !caller.may_see_applicant(practice.content.applicant.id()) {
            self.audit_denied(
                &caller,
                Some(&tenant_id),
                Some(&id),
                "another applicant's practice",
            );
            return Err(Status::not_found(format!(
                "practice {id} not found in tenant {tenant_id}"
            )));
        }
        let events = if r.include_events {
            self.service.events(&tenant_id, &id, 1).await?
        } else {
            Vec::new()
        };
        Ok(Response::new(practice_pb(&practice, &events)))
    }

    async fn list_practices(
        &self,
        request: Request<pb::ListPracticesRequest>,
    ) -> Result<Response<pb::ListPracticesResponse>, Status> {
        let caller = caller(&request)?;
        let r = request.into_inner();
        let filter = PracticeFilter {
            tenant_id: self.scoped_tenant(&caller, &r.tenant_id)?,
            applicant_id: self
                .confined_applicant(&caller, optional("applicant_id", &r.applicant_id)?)?,
            service_code: optional("service_code", &r.service_code)?,
            status: match r.status {
                0 => None,
                v => Some(status_from_pb(v).ok_or_else(|| {
                    invalid(
                        "status",
                        &format!("{v} is not a value of AdministrativeStatus"),
                    )
                })?),
            },
            submitted_from: timestamp("submitted_from", r.submitted_from.as_ref())?,
            submitted_to: timestamp("submitted_to", r.submitted_to.as_ref())?,
        };
        free_text("page_token", &r.page_token, MAX_PAGE_TOKEN_CHARS)?;
        let (practices, next) = self
            .service
            .list(filter, r.page_size, &r.page_token)
            .await?;
        Ok(Response::new(pb::ListPracticesResponse {
            practices: practices.iter().map(|p| practice_pb(p, &[])).collect(),
            next_page_token: next.unwrap_or_default(),
        }))
    }

    type WatchPracticeStream = EventStream;

    /// The hub serves this call through [`watch::PracticeServer`], which
    /// encodes each event once for all streams; this per-stream encoding is
    /// what the generated server alone would do.
    async fn watch_practice(
        &self,
        request: Request<pb::WatchPracticeRequest>,
    ) -> Result<Response<Self::WatchPracticeStream>, Status> {
        let rx = self.practice_events(request).await?;
        Ok(Response::new(event_stream(rx)))
    }

    type WatchPracticesStream = EventStream;

    /// Served through [`watch::PracticeServer`] too (see `watch_practice`).
    async fn watch_practices(
        &self,
        request: Request<pb::WatchPracticesRequest>,
    ) -> Result<Response<Self::WatchPracticesStream>, Status> {
        let rx = self.folder_events(request).await?;
        Ok(Response::new(event_stream(rx)))
    }

    async fn withdraw_practice(
        &self,
        request: Request<pb::WithdrawPracticeRequest>,
    ) -> Result<Response<pb::Practice>, Status> {
        let caller = caller(&request)?;
        let r = request.into_inner();
        let tenant_id = self.scoped_tenant(&caller, &r.tenant_id)?;
        let id = identifier("practice_id", &r.practice_id)?;
        self.check_visible(&caller, &tenant_id, &id).await?;
        let operator = match &caller.operator_id {
            Some(o) => Some(o.clone()),
            None => optional("operator_id", &r.operator_id)?,
        };
        let reason = r.reason.trim();
        free_text("reason", reason, MAX_REASON_CHARS)?;
        let reason = (!reason.is_empty()).then(|| reason.to_string());
        let practice = self
            .service
            .withdraw(&tenant_id, &id, reason, operator)
            .await?;
        Ok(Response::new(practice_pb(&practice, &[])))
    }
}

#[tonic::async_trait]
impl pb::catalog_service_server::CatalogService for Api {
    async fn list_services(
        &self,
        request: Request<pb::ListServicesRequest>,
    ) -> Result<Response<pb::ListServicesResponse>, Status> {
        let caller = caller(&request)?;
        let tenant_id = self.scoped_tenant(&caller, &request.into_inner().tenant_id)?;
        let services = self.service.catalog(&tenant_id)?;
        Ok(Response::new(pb::ListServicesResponse {
            services: services.iter().map(service_pb).collect(),
        }))
    }

    async fn get_service(
        &self,
        request: Request<pb::GetServiceRequest>,
    ) -> Result<Response<pb::Service>, Status> {
        let caller = caller(&request)?;
        let r = request.into_inner();
        let tenant_id = self.scoped_tenant(&caller, &r.tenant_id)?;
        let code = identifier("service_code", &r.service_code)?;
        let entry = self
            .service
            .catalog(&tenant_id)?
            .into_iter()
            .find(|s| s.code == code)
            .ok_or_else(|| {
                Status::not_found(format!(
                    "service {} is not offered by tenant {tenant_id}",
                    quote(&code)
                ))
            })?;
        Ok(Response::new(service_pb(&entry)))
    }
}

#[tonic::async_trait]
impl pb::delivery_admin_service_server::DeliveryAdminService for Api {
    async fn list_dead_letters(
        &self,
        request: Request<pb::ListDeadLettersRequest>,
    ) -> Result<Response<pb::ListDeadLettersResponse>, Status> {
        let caller = caller(&request)?;
        let r = request.into_inner();
        let tenant_id = match optional("tenant_id", &r.tenant_id)? {
            Some(t) => Some(self.scoped_tenant(&caller, &t)?),
            None => {
                caller.check_all_tenants()?;
                None
            }
        };
        let limit = if r.limit == 0 { 100 } else { r.limit };
        let dead = self
            .service
            .dead_letters(tenant_id.as_deref(), limit)
            .await?;
        Ok(Response::new(pb::ListDeadLettersResponse {
            dead_letters: dead.iter().map(dead_letter_pb).collect(),
        }))
    }

    async fn replay_dead_letter(
        &self,
        request: Request<pb::ReplayDeadLetterRequest>,
    ) -> Result<Response<pb::DeadLetter>, Status> {
        let caller = caller(&request)?;
        // The dead letter's tenant is known only once it is found: replay
        // is for operators of the whole hub.
        caller.check_all_tenants()?;
        let r = request.into_inner();
        let op = identifier("operation_id", &r.operation_id)?;
        free_text("operator_id", r.operator_id.trim(), MAX_IDENTIFIER_CHARS)?;
        let operator = match r.operator_id.trim() {
            "" if caller.role.is_some() => caller.client.clone(),
            given => given.to_string(),
        };
        let dl = self.service.replay(&op, &operator).await?;
        Ok(Response::new(dead_letter_pb(&dl)))
    }

    async fn get_hub_status(
        &self,
        _request: Request<pb::GetHubStatusRequest>,
    ) -> Result<Response<pb::HubStatus>, Status> {
        let crate::status::HubStatus {
            readiness,
            adapters,
        } = crate::status::hub_status(&self.service).await;
        // The store as the backlog query found it when that failed: a
        // client must not read the zeros sent then as an empty outbox.
        let store = if adapters.store.is_up() {
            readiness.store
        } else {
            adapters.store
        };
        Ok(Response::new(pb::HubStatus {
            version: readiness.version.to_string(),
            instance_id: readiness.instance_id,
            uptime_seconds: readiness.uptime_seconds,
            ready: readiness.ready,
            store_state: store.state.to_string(),
            store_reason: store.reason.unwrap_or_default(),
            adapters: adapters
                .adapters
                .into_iter()
                .map(|(name, a)| {
                    // Zeros when the store does not answer: store_state says
                    // the backlog is unknown then.
                    let b = a.backlog.unwrap_or_default();
                    pb::AdapterStatus {
                        name,
                        kind: a.kind.to_string(),
                        state: a.state.to_string(),
                        reason: a.reason.unwrap_or_default(),
                        jobs_due: b.jobs_due,
                        jobs_scheduled: b.jobs_scheduled,
                        jobs_in_flight: b.jobs_in_flight,
                        dead_letters: b.dead_letters,
                        oldest_due_age_seconds: b.oldest_due_age_seconds.unwrap_or_default(),
                        max_concurrency: a.max_concurrency as u32,
                        anomalies: b.anomalies,
                        last_anomaly_at: b.last_anomaly_at.map(to_timestamp),
                    }
                })
                .collect(),
        }))
    }
}

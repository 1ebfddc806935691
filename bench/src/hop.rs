//! The bare hop: a gRPC server on the hub's own API and stack (tonic, the
//! same protocol, `TCP_NODELAY`, mimalloc) that validates and stores
//! nothing. Run as a separate process like the hub and measured by the same
//! load, it gives the floor under the hub's numbers on this machine:
//!
//! - `echo` answers each `SubmitPractice` at once: the gRPC stack and the
//!   load generator alone;
//! - `pass-through` maps the submission to JSON, POSTs it to the vendor and
//!   maps the vendor's answer back into the reply: the pass-through the
//!   integration tools in the comparison were measured on, without the
//!   durable store.

use clap::{Args, ValueEnum};
use raccordo_proto::v1 as pb;
use std::net::SocketAddr;
use std::pin::Pin;
use tonic::codegen::tokio_stream::Stream;
use tonic::{Request, Response, Status};

/// What the hop does with a submission.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum HopKind {
    /// Answer at once.
    Echo,
    /// Call the vendor and map its answer back.
    PassThrough,
}

/// `raccordo-bench hop`: serve the bare hop (started by the harness itself).
#[derive(Debug, Args)]
pub struct HopOptions {
    /// Where to serve gRPC.
    #[arg(long)]
    pub listen: SocketAddr,
    /// The vendor a pass-through calls.
    #[arg(long)]
    pub vendor: SocketAddr,
    /// What to do with each submission.
    #[arg(long, value_enum)]
    pub kind: HopKind,
}

/// Serves until the process is killed.
pub async fn serve(o: HopOptions) -> anyhow::Result<()> {
    let (health, health_service) = tonic_health::server::health_reporter();
    health
        .set_serving::<pb::practice_service_server::PracticeServiceServer<Hop>>()
        .await;
    let hop = Hop {
        kind: o.kind,
        client: reqwest::Client::new(),
        url: format!("http://{}/pratiche", o.vendor),
    };
    let listener = tokio::net::TcpListener::bind(o.listen).await?;
    let incoming = raccordo::server::accepted_without_delay(listener);
    tonic::transport::Server::builder()
        .add_service(health_service)
        .add_service(pb::practice_service_server::PracticeServiceServer::new(hop))
        .serve_with_incoming(incoming)
        .await?;
    Ok(())
}

/// The hop's `PracticeService`: only `SubmitPractice` is served.
pub struct Hop {
    kind: HopKind,
    client: reqwest::Client,
    url: String,
}

type EventStream = Pin<Box<dyn Stream<Item = Result<pb::PracticeEvent, Status>> + Send>>;

impl Hop {
    /// Calls the vendor with the submission as JSON and returns its
    /// protocol number.
    async fn call_vendor(&self, r: &pb::SubmitPracticeRequest) -> Result<(bool, String), Status> {
        let fiscal_code = match r.applicant.as_ref().and_then(|a| a.subject.as_ref()) {
            Some(pb::applicant::Subject::Person(p)) => p.fiscal_code.as_str(),
            _ => "",
        };
        let data = r
            .data
            .clone()
            .map(raccordo::grpc::convert::struct_to_json)
            .unwrap_or_default();
        let body = serde_json::to_vec(&serde_json::json!({
            "tenant_id": r.tenant_id,
            "service_code": r.service_code,
            "fiscal_code": fiscal_code,
            "data": data,
        }))
        .map_err(|e| Status::internal(e.to_string()))?;
        let reply = self
            .client
            .post(&self.url)
            .header(reqwest::header::CONTENT_TYPE, "application/json")
            .body(body)
            .send()
            .await
            .map_err(|e| Status::unavailable(e.to_string()))?
            .bytes()
            .await
            .map_err(|e| Status::unavailable(e.to_string()))?;
        let reply: serde_json::Value =
            serde_json::from_slice(&reply).map_err(|e| Status::unavailable(e.to_string()))?;
        let approved = reply.pointer("/esito").and_then(|v| v.as_str()) == Some("OK");
        let protocol = reply
            .pointer("/protocollo/numero")
            .and_then(|v| v.as_str())
            .unwrap_or_default()
            .to_string();
        Ok((approved, protocol))
    }
}

#[tonic::async_trait]
impl pb::practice_service_server::PracticeService for Hop {
    async fn submit_practice(
        &self,
        request: Request<pb::SubmitPracticeRequest>,
    ) -> Result<Response<pb::SubmitPracticeResponse>, Status> {
        let r = request.into_inner();
        let (approved, protocol) = match self.kind {
            HopKind::Echo => (true, String::new()),
            HopKind::PassThrough => self.call_vendor(&r).await?,
        };
        let status = if approved {
            pb::AdministrativeStatus::Approved
        } else {
            pb::AdministrativeStatus::Rejected
        };
        let external_refs = if protocol.is_empty() {
            Vec::new()
        } else {
            vec![pb::ExternalRef {
                kind: "protocol".into(),
                value: protocol,
                system: "vendor".into(),
                issued_at: None,
            }]
        };
        let practice = pb::Practice {
            id: uuid::Uuid::now_v7().to_string(),
            tenant_id: r.tenant_id,
            service_code: r.service_code,
            applicant: r.applicant,
            data: r.data,
            idempotency_key: r.idempotency_key,
            status: status as i32,
            external_refs,
            mode: pb::InteractionMode::Sync as i32,
            ..Default::default()
        };
        Ok(Response::new(pb::SubmitPracticeResponse {
            practice: Some(practice),
            duplicate: false,
        }))
    }

    async fn get_practice(
        &self,
        _: Request<pb::GetPracticeRequest>,
    ) -> Result<Response<pb::Practice>, Status> {
        Err(Status::unimplemented("the bare hop stores nothing"))
    }

    async fn list_practices(
        &self,
        _: Request<pb::ListPracticesRequest>,
    ) -> Result<Response<pb::ListPracticesResponse>, Status> {
        Err(Status::unimplemented("the bare hop stores nothing"))
    }

    type WatchPracticeStream = EventStream;

    async fn watch_practice(
        &self,
        _: Request<pb::WatchPracticeRequest>,
    ) -> Result<Response<EventStream>, Status> {
        Err(Status::unimplemented("the bare hop stores nothing"))
    }

    type WatchPracticesStream = EventStream;

    async fn watch_practices(
        &self,
        _: Request<pb::WatchPracticesRequest>,
    ) -> Result<Response<EventStream>, Status> {
        Err(Status::unimplemented("the bare hop stores nothing"))
    }

    async fn withdraw_practice(
        &self,
        _: Request<pb::WithdrawPracticeRequest>,
    ) -> Result<Response<pb::Practice>, Status> {
        Err(Status::unimplemented("the bare hop stores nothing"))
    }
}

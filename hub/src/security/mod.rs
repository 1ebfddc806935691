//! Who may call the Practice API and what each caller may see.
//!
//! - [`config`]: `[clients.*]` and `[security]`.
//! - [`authn`]: API keys, JWTs, rate limits, lock-out of failing addresses
//!   and credentials.
//! - [`refusals`]: refused calls in the audit trail, aggregated.
//! - [`rules`]: the role table, one entry per RPC.
//! - [`AuthLayer`]: a tower layer in front of every gRPC service: it
//!   authenticates, checks the role against [`rules`], and hands the
//!   [`Caller`] to the handlers, which check tenant scope and citizen
//!   confinement where the request's tenant and applicant are known.

pub mod authn;
pub mod config;
pub mod refusals;
pub mod rules;

use authn::{AuthError, Authenticator};
pub use config::Role;
use refusals::RefusalAudit;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use tonic::Status;

/// The authenticated caller of one request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Caller {
    /// The client's name in the configuration (`anonymous` without clients).
    pub client: String,
    /// `None` for the anonymous caller of a hub without declared clients.
    pub role: Option<Role>,
    tenants: Vec<String>,
    /// A citizen's verified fiscal code.
    pub fiscal_code: Option<String>,
    /// An operator's id, recorded on every action.
    pub operator_id: Option<String>,
}

impl Caller {
    /// Every right: only when no client is configured (development).
    pub fn anonymous() -> Self {
        Self {
            client: "anonymous".into(),
            role: None,
            tenants: vec!["*".into()],
            fiscal_code: None,
            operator_id: None,
        }
    }

    /// A configured client.
    pub fn client(
        name: &str,
        role: Role,
        tenants: &[String],
        fiscal_code: Option<String>,
        operator_id: Option<String>,
    ) -> Self {
        Self {
            client: name.to_string(),
            role: Some(role),
            tenants: tenants.to_vec(),
            fiscal_code,
            operator_id,
        }
    }

    /// Whether this caller acts for every tenant.
    pub fn all_tenants(&self) -> bool {
        self.tenants.iter().any(|t| t == "*")
    }

    /// PERMISSION_DENIED unless the caller acts for `tenant`.
    pub fn check_tenant(&self, tenant: &str) -> Result<(), Status> {
        if self.all_tenants() || self.tenants.iter().any(|t| t == tenant) {
            Ok(())
        } else {
            tracing::warn!(client = %self.client, tenant, "call for a tenant outside the client's scope refused");
            Err(Status::permission_denied(format!(
                "client '{}' does not act for tenant {tenant}",
                self.client
            )))
        }
    }

    /// PERMISSION_DENIED unless the caller acts for every tenant.
    pub fn check_all_tenants(&self) -> Result<(), Status> {
        if self.all_tenants() {
            Ok(())
        } else {
            Err(Status::permission_denied(format!(
                "client '{}' acts for some tenants only: name one",
                self.client
            )))
        }
    }

    /// The citizen this caller is confined to, if it is a citizen portal.
    pub fn citizen(&self) -> Option<&str> {
        match self.role {
            Some(Role::Citizen) => self.fiscal_code.as_deref(),
            _ => None,
        }
    }

    /// Whether a citizen caller may see a practice of `applicant_id`;
    /// always true for other roles. Callers answer NOT_FOUND when false, so
    /// a citizen cannot learn that someone else's practice exists.
    pub fn may_see_applicant(&self, applicant_id: &str) -> bool {
        match self.role {
            Some(Role::Citizen) => self
                .fiscal_code
                .as_deref()
                .is_some_and(|fc| fc.eq_ignore_ascii_case(applicant_id.trim())),
            _ => true,
        }
    }
}

/// The caller the [`AuthLayer`] attached to `request`; refusing when none
/// is attached keeps a handler reached some other way closed.
pub fn caller<T>(request: &tonic::Request<T>) -> Result<Caller, Status> {
    request
        .extensions()
        .get::<Caller>()
        .cloned()
        .ok_or_else(|| Status::permission_denied("the call was not authenticated"))
}

/// Authenticates every call and checks its role before any handler runs.
#[derive(Clone)]
pub struct AuthLayer {
    auth: Arc<Authenticator>,
    refusals: Arc<RefusalAudit>,
}

impl std::fmt::Debug for AuthLayer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AuthLayer").finish_non_exhaustive()
    }
}

impl AuthLayer {
    /// A layer verifying with `auth` and recording refusals in `refusals`.
    pub fn new(auth: Arc<Authenticator>, refusals: Arc<RefusalAudit>) -> Self {
        Self { auth, refusals }
    }
}

impl<S> tower_layer::Layer<S> for AuthLayer {
    type Service = Authenticated<S>;

    fn layer(&self, inner: S) -> Self::Service {
        Authenticated {
            inner,
            layer: self.clone(),
        }
    }
}

/// The service [`AuthLayer`] wraps.
#[derive(Debug, Clone)]
pub struct Authenticated<S> {
    inner: S,
    layer: AuthLayer,
}

fn header<'a, B>(request: &'a http::Request<B>, name: &str) -> Option<&'a str> {
    request.headers().get(name).and_then(|v| v.to_str().ok())
}

/// Decides one call: `Ok(caller)` to go on, `Err(status)` to refuse.
fn admit<B>(layer: &AuthLayer, request: &http::Request<B>) -> Result<Caller, Status> {
    let auth = &layer.auth;
    let path = request.uri().path();
    let tls = request.extensions().get::<crate::tls::TlsConnectInfo>();
    let peer = request
        .extensions()
        .get::<tonic::transport::server::TcpConnectInfo>()
        .and_then(|c| c.remote_addr())
        .or_else(|| tls.and_then(|t| t.remote_addr))
        .map(|a| a.ip());
    let forwarded: Vec<&str> = request
        .headers()
        .get_all("x-forwarded-for")
        .iter()
        .filter_map(|v| v.to_str().ok())
        .collect();
    let client = auth.client_address(peer, &forwarded);
    let certificate = tls.and_then(|t| t.peer_certificate_sha256.as_deref());
    let bearer = header(request, "authorization").and_then(|v| {
        v.strip_prefix("Bearer ")
            .or_else(|| v.strip_prefix("bearer "))
    });
    let caller = auth
        .authenticate(header(request, "x-api-key"), bearer, certificate, client)
        .map_err(|e| {
            let source = client.map_or("unknown peer".into(), |ip| format!("unauthenticated {ip}"));
            let (source, reason) = match &e {
                AuthError::Missing => (source, "no credentials"),
                AuthError::Invalid(reason) => (source, reason.as_str()),
                AuthError::LockedOut => (source, "locked out after repeated failures"),
                AuthError::RateLimited(client) => (client.clone(), "over its rate limit"),
            };
            // One warning per source and reason per audit interval: a
            // flood must not flood the log either. The log names the
            // refusal's class only; its precise reason is audited.
            let class = e.class();
            if layer.refusals.refused(&source, path, reason) {
                tracing::warn!(rpc = path, %source, class, "call refused (repeats are counted in the audit trail)");
            } else {
                tracing::debug!(rpc = path, %source, class, "call refused");
            }
            match e {
                AuthError::Missing => Status::unauthenticated(
                    "credentials required: an x-api-key header or an authorization: Bearer token",
                ),
                AuthError::Invalid(reason) => Status::unauthenticated(reason),
                AuthError::LockedOut => Status::resource_exhausted(
                    "too many failed authentications from this address: try again later",
                ),
                AuthError::RateLimited(client) => Status::resource_exhausted(format!(
                    "client '{client}' exceeds its rate limit: slow down"
                )),
            }
        })?;
    let Some(role) = caller.role else {
        return Ok(caller);
    };
    match rules::allowed_roles(path) {
        Some(roles) if roles.contains(&role) => Ok(caller),
        _ => {
            tracing::warn!(client = %caller.client, role = role.as_str(), rpc = path, "call refused by role");
            let _ = layer.refusals.refused(
                &caller.client,
                path,
                &format!("the {} role may not call it", role.as_str()),
            );
            Err(Status::permission_denied(format!(
                "the {} role may not call {path}",
                role.as_str()
            )))
        }
    }
}

impl<S, B, RB> tower_service::Service<http::Request<B>> for Authenticated<S>
where
    S: tower_service::Service<http::Request<B>, Response = http::Response<RB>>,
    S::Future: Send + 'static,
    RB: Default + Send + 'static,
    S::Error: Send + 'static,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = Pin<Box<dyn Future<Output = Result<Self::Response, Self::Error>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut request: http::Request<B>) -> Self::Future {
        if rules::is_public(request.uri().path()) {
            return Box::pin(self.inner.call(request));
        }
        match admit(&self.layer, &request) {
            Ok(caller) => {
                request.extensions_mut().insert(caller);
                Box::pin(self.inner.call(request))
            }
            Err(status) => {
                let response = status.into_http::<RB>();
                Box::pin(async move { Ok(response) })
            }
        }
    }
}

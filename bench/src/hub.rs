//! The hub under test: a configuration for the bench, started as a separate
//! process (so its CPU and memory can be read from /proc) or in-process.

use raccordo_proto::v1 as pb;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};
use tonic::transport::Channel;

/// The tenant every bench practice belongs to.
pub const TENANT: &str = "016024";

/// Writes the bench configuration for a vendor at `vendor` into `dir`.
pub fn write_config(
    dir: &Path,
    vendor: SocketAddr,
    grpc: SocketAddr,
    http: SocketAddr,
) -> anyhow::Result<PathBuf> {
    write_config_as(dir, "bench.toml", "data", "", vendor, grpc, http)
}

/// Writes the bench configuration as `dir/file`, with the hub's data in
/// `dir/data_dir` and `store` (TOML: a `[store]` table, or nothing for the
/// embedded default) appended.
pub fn write_config_as(
    dir: &Path,
    file: &str,
    data_dir: &str,
    store: &str,
    vendor: SocketAddr,
    grpc: SocketAddr,
    http: SocketAddr,
) -> anyhow::Result<PathBuf> {
    let path = dir.join(file);
    std::fs::write(
        &path,
        format!(
            r#"
[hub]
grpc_listen = "{grpc}"
http_listen = "{http}"
data_dir = "{data_dir}"
# The fanout subscribers are one client (anonymous): room for all of them.
max_watch_streams_per_client = 1000000

[tenants."{TENANT}"]
name = "Comune di Bergamo"

[services.SYNC]
title = "Certificato (sync)"
[[services.SYNC.fields]]
name = "uso"
type = "string"
required = true

[services.DEFERRED]
title = "Dichiarazione (deferred)"
[[services.DEFERRED.fields]]
name = "uso"
type = "string"
required = true

[adapters.vendor]
kind = "rest"
base_url = "http://{vendor}"
max_concurrency = 64
[adapters.vendor.submit]
path = "/pratiche"
[adapters.vendor.response]
status_pointer = "/esito"
status_map = {{ OK = "APPROVED" }}
protocol_pointer = "/protocollo/numero"
reference_pointer = "/id"

[[routes]]
tenants = ["{TENANT}"]
service = "SYNC"
adapter = "vendor"
mode = "sync"

[[routes]]
tenants = ["{TENANT}"]
service = "DEFERRED"
adapter = "vendor"
mode = "deferred"
{store}"#
        ),
    )?;
    Ok(path)
}

/// A started hub.
pub struct Hub {
    pub channel: Channel,
    /// The hub's process id (`None` in-process).
    pub pid: Option<u32>,
    /// From spawn to `grpc.health.v1` answering SERVING.
    pub time_to_healthy: Duration,
    child: Option<Child>,
    in_process: Option<raccordo::server::RunningHub>,
}

/// Two free loopback ports (gRPC, HTTP), both held while the second is
/// chosen: asked for one after the other, the kernel may hand out the
/// same port twice.
pub fn listen_addrs() -> (SocketAddr, SocketAddr) {
    let bind = || std::net::TcpListener::bind("127.0.0.1:0").expect("a free port");
    let (grpc, http) = (bind(), bind());
    (
        grpc.local_addr().expect("a bound port"),
        http.local_addr().expect("a bound port"),
    )
}

impl Hub {
    /// Starts the hub on `config`: the binary `bin`, or in-process.
    pub async fn start(
        config: &Path,
        grpc: SocketAddr,
        bin: Option<&Path>,
        log: &str,
    ) -> anyhow::Result<Self> {
        match bin {
            Some(bin) => {
                let mut command = Command::new(bin);
                command
                    .args(["serve", "--config"])
                    .arg(config)
                    .env("RUST_LOG", log);
                Self::spawn(command, grpc).await
            }
            None => {
                let started = Instant::now();
                let cfg = raccordo::config::load(config)?;
                let hub = raccordo::server::start(cfg).await?;
                let channel = wait_healthy(grpc, None).await?;
                Ok(Self {
                    channel,
                    pid: None,
                    time_to_healthy: started.elapsed(),
                    child: None,
                    in_process: Some(hub),
                })
            }
        }
    }

    /// Starts this executable's bare hop (see `hop.rs`) in place of the hub,
    /// as a separate process measured the same way.
    pub async fn start_hop(
        kind: &str,
        vendor: SocketAddr,
        grpc: SocketAddr,
    ) -> anyhow::Result<Self> {
        let mut command = Command::new(std::env::current_exe()?);
        command
            .args(["hop", "--kind", kind, "--listen"])
            .arg(grpc.to_string())
            .arg("--vendor")
            .arg(vendor.to_string());
        Self::spawn(command, grpc).await
    }

    /// Runs `command` and waits until it serves gRPC health on `grpc`.
    async fn spawn(mut command: Command, grpc: SocketAddr) -> anyhow::Result<Self> {
        let started = Instant::now();
        let mut child = command
            .stdout(Stdio::null())
            .stderr(Stdio::inherit())
            .spawn()
            .map_err(|e| anyhow::anyhow!("cannot start {:?}: {e}", command.get_program()))?;
        let channel = match wait_healthy(grpc, Some(&mut child)).await {
            Ok(channel) => channel,
            Err(e) => {
                let _ = child.kill();
                let _ = child.wait();
                return Err(e);
            }
        };
        Ok(Self {
            channel,
            pid: Some(child.id()),
            time_to_healthy: started.elapsed(),
            child: Some(child),
            in_process: None,
        })
    }

    /// Stops the hub (SIGKILL for a process: the store is durable anyway).
    pub async fn stop(mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
        if let Some(h) = self.in_process.take() {
            let _ = h.shutdown().await;
        }
    }
}

/// Waits until the hub (or bare hop) at `addr` answers SERVING; fails at once if its
/// process (`child`) exits first, say on a configuration error.
async fn wait_healthy(addr: SocketAddr, mut child: Option<&mut Child>) -> anyhow::Result<Channel> {
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        if let Some(status) = child.as_mut().map(|c| c.try_wait()).transpose()?.flatten() {
            anyhow::bail!("the process under test exited before becoming healthy ({status})");
        }
        if let Ok(channel) = Channel::from_shared(format!("http://{addr}"))?
            .connect()
            .await
        {
            let mut health = tonic_health::pb::health_client::HealthClient::new(channel.clone());
            let serving = health
                .check(tonic_health::pb::HealthCheckRequest {
                    service: "raccordo.v1.PracticeService".into(),
                })
                .await
                .is_ok_and(|r| r.into_inner().status == 1);
            if serving {
                return Ok(channel);
            }
        }
        anyhow::ensure!(
            Instant::now() < deadline,
            "the process under test did not become healthy within 120 s"
        );
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
}

/// A submission to `service` with a unique key.
pub fn submission(service: &str, key: u64, fiscal_code: &str) -> pb::SubmitPracticeRequest {
    let mut data = prost_types::Struct::default();
    data.fields.insert(
        "uso".into(),
        prost_types::Value {
            kind: Some(prost_types::value::Kind::StringValue("ESENTE".into())),
        },
    );
    pb::SubmitPracticeRequest {
        tenant_id: TENANT.into(),
        service_code: service.into(),
        applicant: Some(pb::Applicant {
            subject: Some(pb::applicant::Subject::Person(pb::Person {
                fiscal_code: fiscal_code.into(),
                given_name: "Mario".into(),
                family_name: "Rossi".into(),
            })),
            contacts: None,
        }),
        data: Some(data),
        // Unique across invocations too: a PostgreSQL database outlives runs.
        idempotency_key: format!("bench-{}-{key}", *RUN),
        ..Default::default()
    }
}

/// This invocation's part of every idempotency key: the process id and the
/// start time, so no two invocations share keys.
static RUN: std::sync::LazyLock<String> = std::sync::LazyLock::new(|| {
    let started = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis());
    format!("{}-{started}", std::process::id())
});

/// A valid codice fiscale derived from `n` (varies the digits, recomputes the check).
pub fn fiscal_code(n: u64) -> String {
    let body = format!(
        "RSSMRA{:02}A{:02}F{:03}",
        n % 100,
        1 + (n / 100) % 28,
        (n / 2800) % 1000
    );
    let check = raccordo::domain::identifiers::fiscal_code_check_char(body.as_bytes());
    format!("{body}{check}")
}

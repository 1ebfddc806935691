//! The hubs a scenario runs against: one hub on its own embedded SQLite
//! file, or `--instances` hubs sharing a fresh PostgreSQL schema.

use crate::Options;
use crate::hub::{self, Hub};
use crate::procfs;
use crate::vendor::Vendor;
use raccordo_proto::v1 as pb;
use std::path::Path;
use tonic::transport::Channel;

/// The hubs of one scenario run, and the schema they share (PostgreSQL).
pub struct Deployment {
    pub hubs: Vec<Hub>,
    schema: Option<Schema>,
}

/// The client of every hub, for load that goes to them in turn.
pub type Client = pb::practice_service_client::PracticeServiceClient<Channel>;

impl Deployment {
    /// Starts the hubs `o` asks for, writing their configuration into `dir`
    /// (which holds the SQLite store, seeded or empty, in `dir/data`). On
    /// PostgreSQL, with `seeded`, that SQLite store is first copied into the
    /// run's schema (`raccordo store copy`'s import), so reads meet the
    /// same rows on both stores.
    pub async fn start(
        o: &Options,
        vendor: &Vendor,
        bin: Option<&Path>,
        dir: &Path,
        seeded: Option<&Path>,
    ) -> anyhow::Result<Self> {
        if o.store == "sqlite" {
            let (grpc, http) = hub::listen_addrs();
            let config = hub::write_config(dir, vendor.addr, grpc, http)?;
            let hub = Hub::start(&config, grpc, bin, &o.hub_log).await?;
            return Ok(Self {
                hubs: vec![hub],
                schema: None,
            });
        }
        let schema = Schema::create(&o.database_url).await?;
        // A file, not a variable: the in-process hub reads it as well, and
        // the URL (it carries the password) stays out of the config.
        std::fs::write(dir.join("database-url"), &schema.url)?;
        let mut store =
            "\n[store]\nkind = \"postgres\"\n[store.postgres]\nurl_file = \"database-url\"\n"
                .to_string();
        if let Some(size) = o.pg_pool_size {
            store.push_str(&format!("pool_size = {size}\n"));
        }
        let store = store.as_str();
        if let Some(db) = seeded
            && let Err(e) = import(&schema.url, db).await
        {
            schema.drop().await;
            return Err(e);
        }
        let mut deployment = Self {
            hubs: Vec::new(),
            schema: Some(schema),
        };
        // One after the other: the first creates the tables.
        for i in 0..o.instances {
            let (grpc, http) = hub::listen_addrs();
            let config = hub::write_config_as(
                dir,
                &format!("bench-{i}.toml"),
                &format!("data-{i}"),
                store,
                vendor.addr,
                grpc,
                http,
            )?;
            match Hub::start(&config, grpc, bin, &o.hub_log).await {
                Ok(hub) => deployment.hubs.push(hub),
                Err(e) => {
                    deployment.stop().await;
                    return Err(e);
                }
            }
        }
        Ok(deployment)
    }

    /// One client per hub.
    pub fn clients(&self) -> Vec<Client> {
        self.hubs
            .iter()
            .map(|h| Client::new(h.channel.clone()).max_decoding_message_size(64 << 20))
            .collect()
    }

    /// The first hub (the only one on SQLite).
    pub fn first(&self) -> &Hub {
        &self.hubs[0]
    }

    /// CPU seconds of every hub process so far (`None` in-process).
    pub fn hub_cpu_seconds(&self) -> Option<f64> {
        self.hubs
            .iter()
            .map(|h| h.pid.and_then(procfs::cpu_seconds))
            .sum()
    }

    /// CPU seconds of the PostgreSQL server's processes so far (`None` on
    /// SQLite). All of the server's processes count, other databases'
    /// work included: run the bench on a quiet server.
    pub fn database_cpu_seconds(&self) -> Option<f64> {
        self.schema.as_ref()?;
        Some(procfs::cpu_seconds_of_named("postgres"))
    }

    /// Peak RSS of the largest hub, MiB.
    pub fn peak_rss_mib(&self) -> Option<f64> {
        self.hubs
            .iter()
            .filter_map(|h| h.pid.and_then(procfs::rss_mib).map(|r| r.1))
            .reduce(f64::max)
    }

    /// Stops every hub, then drops the schema.
    pub async fn stop(self) {
        for hub in self.hubs {
            hub.stop().await;
        }
        if let Some(schema) = self.schema {
            schema.drop().await;
        }
    }
}

/// A schema of its own for one run: the bench reuses no rows of another.
struct Schema {
    name: String,
    /// The database URL with the schema as `search_path`.
    url: String,
    admin: String,
}

impl Schema {
    async fn create(database_url: &str) -> anyhow::Result<Self> {
        let name = format!("bench_{}", uuid::Uuid::new_v4().simple());
        execute(database_url, &format!("CREATE SCHEMA {name}")).await?;
        let sep = if database_url.contains('?') { '&' } else { '?' };
        Ok(Self {
            url: format!("{database_url}{sep}options=-c%20search_path%3D{name}"),
            name,
            admin: database_url.to_string(),
        })
    }

    async fn drop(self) {
        let sql = format!("DROP SCHEMA IF EXISTS {} CASCADE", self.name);
        if let Err(e) = execute(&self.admin, &sql).await {
            eprintln!("  could not drop schema {}: {e}", self.name);
        }
    }
}

/// Copies the SQLite store `db` into the (empty) schema of `url`.
async fn import(url: &str, db: &Path) -> anyhow::Result<()> {
    use raccordo::store::postgres::{PgOptions, PgStore};
    let started = std::time::Instant::now();
    let target = PgStore::open(url, &PgOptions::default(), None, None)
        .await
        .map_err(|e| anyhow::anyhow!("cannot open the bench schema: {e}"))?;
    let source = raccordo::store::sqlite::offline::Offline::take(db)
        .map_err(|e| anyhow::anyhow!("the seeded store {}: {e}", db.display()))?;
    let report = target
        .import_sqlite(source, false)
        .await
        .map_err(|e| anyhow::anyhow!("copying the seeded store into PostgreSQL failed: {e}"))?;
    // Fresh statistics, as after a restore an operator's ANALYZE would give.
    drop(target);
    execute(url, "ANALYZE").await?;
    let rows: i64 = report.rows.iter().map(|(_, n)| *n as i64).sum();
    eprintln!(
        "  seeded store copied into PostgreSQL: {rows} rows in {:.1} s",
        started.elapsed().as_secs_f64()
    );
    Ok(())
}

/// Runs one statement on a connection of its own (no TLS: the bench's
/// database is on loopback).
async fn execute(url: &str, sql: &str) -> anyhow::Result<()> {
    let (client, connection) = tokio_postgres::connect(url, tokio_postgres::NoTls)
        .await
        .map_err(|e| {
            // tokio-postgres's Display says only "db error": the server's
            // message (a missing role, a wrong password) is in the source.
            let detail = e.as_db_error().map_or_else(|| e.to_string(), |db| db.to_string());
            anyhow::anyhow!(
                "cannot connect to the bench database (--database-url / RACCORDO_BENCH_DATABASE_URL): \
                 {detail} (scripts/ensure-postgres creates the default role and database)"
            )
        })?;
    let task = tokio::spawn(connection);
    client.batch_execute(sql).await?;
    drop(client);
    let _ = task.await;
    Ok(())
}

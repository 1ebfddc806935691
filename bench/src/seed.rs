//! Seeded stores: practices written through the store API (real rows, real
//! indexes), kept as a template that every run copies, so runs that write
//! start from the same bytes and stay comparable.

use crate::hub::{TENANT, fiscal_code};
use raccordo::config::{Mode, Synchronous};
use raccordo::domain::practice::{NewPractice, PracticeContent};
use raccordo::store::Store;
use raccordo::store::sqlite::SqliteStore;
use raccordo_adapters::model::{Applicant, ChannelInfo, Person, Subject};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::task::JoinSet;
use uuid::Uuid;

/// The applicant whose folder holds 100 practices in every seeded store.
pub const FOLDER_OWNER: u64 = 7;

/// Inserts in flight while seeding: two of the writer's group-commit
/// batches (512 commands), so the next batch is queued while one commits.
const SEED_IN_FLIGHT: usize = 1024;

/// Where the hub's configuration (`data_dir = "data"`) finds the store.
pub(crate) fn db_path(dir: &Path) -> PathBuf {
    dir.join("data").join("raccordo.db")
}

/// A seeded store, never opened by a hub: runs work on copies of it.
pub struct Seeded {
    template: tempfile::TempDir,
    /// Every practice id, in insertion (time) order.
    pub ids: Arc<Vec<Uuid>>,
    /// Size of the database file divided by the number of practices.
    pub bytes_per_practice: f64,
    /// Wall time of the seeding, including the final checkpoint.
    pub seed_seconds: f64,
}

impl Seeded {
    /// Practices in the store.
    pub fn len(&self) -> usize {
        self.ids.len()
    }

    /// A fresh directory holding a copy of the seeded database, where a hub
    /// configuration can be written next to it.
    pub fn fresh_copy(&self) -> anyhow::Result<tempfile::TempDir> {
        let dir = tempfile::tempdir()?;
        std::fs::create_dir_all(dir.path().join("data"))?;
        // Only the main file: the template was checkpointed with an empty
        // WAL left behind, so the main file holds every committed row.
        let copy = db_path(dir.path());
        std::fs::copy(db_path(self.template.path()), &copy)?;
        // On disk before the hub starts: otherwise the write-back of the
        // copy would compete with the run's own fsyncs.
        std::fs::File::open(&copy)?.sync_all()?;
        Ok(dir)
    }
}

/// Writes `n` practices straight into a store (not through the API: a
/// million submissions would take longer than the benchmark), 100 of them
/// in one citizen's folder. Their jobs name an adapter the hub does not
/// run, so nothing is delivered. Many inserts are in flight at once so the
/// store's writer commits them in large groups.
///
/// The template goes under `under` (the system's temporary directory if
/// `None`); a RAM-backed directory such as `/dev/shm` spares the seeding
/// the disk, and runs still work on copies in the temporary directory.
pub async fn seed(n: usize, under: Option<&Path>) -> anyhow::Result<Seeded> {
    let started = Instant::now();
    let template = match under {
        Some(dir) => tempfile::tempdir_in(dir)?,
        None => tempfile::tempdir()?,
    };
    let db = db_path(template.path());
    let store = SqliteStore::open(&db, Synchronous::Normal, 1).await?;
    let mut ids = Vec::with_capacity(n);
    let folder_every = (n / 100).max(1);
    let mut inserts = JoinSet::new();
    for i in 0..n {
        let owner = if i % folder_every == 0 {
            FOLDER_OWNER
        } else {
            1000 + i as u64
        };
        // Time-ordered ids like the hub's (UUIDv7), so the index is realistic.
        let id = Uuid::now_v7();
        ids.push(id);
        let practice = new_practice(i, id, owner);
        if inserts.len() >= SEED_IN_FLIGHT {
            joined(inserts.join_next().await)?;
        }
        let store = store.clone();
        inserts.spawn(async move { store.insert_practice(practice, false).await.map(|(o, _)| o) });
        if i > 0 && i % 100_000 == 0 {
            eprintln!(
                "  seeded {i} practices in {:.1} s",
                started.elapsed().as_secs_f64()
            );
        }
    }
    while let Some(done) = inserts.join_next().await {
        joined(Some(done))?;
    }
    drop(store);
    let checkpointed = db.clone();
    tokio::task::spawn_blocking(move || checkpoint(&checkpointed)).await??;
    let bytes = std::fs::metadata(&db)?.len();
    Ok(Seeded {
        bytes_per_practice: bytes as f64 / n.max(1) as f64,
        seed_seconds: started.elapsed().as_secs_f64(),
        ids: Arc::new(ids),
        template,
    })
}

type Inserted = Result<
    Result<raccordo::store::InsertOutcome, raccordo::store::StoreError>,
    tokio::task::JoinError,
>;

fn joined(done: Option<Inserted>) -> anyhow::Result<()> {
    if let Some(done) = done {
        done??;
    }
    Ok(())
}

/// Moves every committed row into the main database file and empties the
/// WAL, so a copy of the main file alone is the whole store. Retries while
/// the writer thread (which closes on its own once every handle to the
/// store is dropped) still holds its connection busy.
fn checkpoint(db: &Path) -> anyhow::Result<()> {
    let conn = rusqlite::Connection::open(db)?;
    conn.busy_timeout(Duration::from_secs(10))?;
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        // (busy, frames in the WAL, frames checkpointed)
        let (busy, log, done): (i64, i64, i64) =
            conn.query_row("PRAGMA wal_checkpoint(TRUNCATE)", [], |r| {
                Ok((r.get(0)?, r.get(1)?, r.get(2)?))
            })?;
        if busy == 0 && log == done {
            return Ok(());
        }
        anyhow::ensure!(
            Instant::now() < deadline,
            "the seeded store could not be checkpointed within 120 s"
        );
        std::thread::sleep(Duration::from_millis(10));
    }
}

fn new_practice(i: usize, id: Uuid, owner: u64) -> NewPractice {
    let mut data = serde_json::Map::new();
    data.insert("uso".into(), "ESENTE".into());
    NewPractice {
        traceparent: None,
        id: id.to_string(),
        tenant_id: TENANT.into(),
        service_code: "SYNC".into(),
        idempotency_key: format!("seed-{i}"),
        content_hash: format!("{i:064}"),
        content: PracticeContent {
            applicant: Applicant {
                subject: Subject::Person(Person {
                    fiscal_code: fiscal_code(owner),
                    given_name: "Mario".into(),
                    family_name: "Rossi".into(),
                }),
                contacts: Default::default(),
            },
            submitter: None,
            channel: ChannelInfo::default(),
            data,
        },
        attachments: Vec::new(),
        mode: Mode::Deferred,
        received_at: chrono::Utc::now(),
        legal_term_days: 30,
        adapter: "seeded-not-delivered".into(),
        max_attempts: 1,
    }
}

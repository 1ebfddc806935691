//! The feed: what every instance's watchers see, whichever instance
//! committed it.
//!
//! One task per instance reads the sequenced events after the last one it
//! published, in cursor order, and publishes them on the instance's event
//! bus: in PostgreSQL mode the only publisher, so the bus carries every
//! instance's events, in cursor order, each once. It reads when woken by
//! this instance's sequencer (after a run that sequenced events) or by a
//! notification on `raccordo_events` (another instance's run), which one
//! dedicated connection LISTENs to. While that connection is down it reads
//! every [`POLL`] instead, and reconnects with backoff. A notification only
//! wakes the feed: what it publishes always comes from the store.
//!
//! The same connection hears `raccordo_work`: an adapter with new due work
//! (queued on any instance) has its delivery worker woken here, instead of
//! at its next poll.

use super::pool::Target;
use super::sequencer::{EVENTS_CHANNEL, WORK_CHANNEL};
use super::{pool, rows, tx};
use crate::bus::EventBus;
use crate::store::StoreError;
use crate::store::sqlite::rows::EVENT_COLUMNS;
use deadpool_postgres::Pool;
use std::sync::{Arc, OnceLock};
use std::time::Duration;
use tokio::sync::{Notify, mpsc};
use tokio_postgres::tls::{MakeTlsConnect, TlsConnect};
use tokio_postgres::{AsyncMessage, NoTls, SimpleQueryMessage, Socket};

/// How often the feed reads while it cannot listen (or cannot read).
pub(super) const POLL: Duration = Duration::from_secs(1);
/// The longest wait between two attempts to listen again.
const MAX_BACKOFF: Duration = Duration::from_secs(5);
/// Events read per query.
const PAGE: i64 = 1000;

/// Wakes the delivery worker of an adapter (the hub's wakers).
pub type WorkWaker = Box<dyn Fn(&str) + Send + Sync>;

/// What the listening connection tells the feed.
#[derive(Debug)]
pub(super) enum Notice {
    /// Some instance sequenced events.
    Events,
    /// This adapter has new due work.
    Work(String),
    /// The connection listens (true) or was lost (false).
    Listening(bool),
}

/// Publishes, in cursor order, every event after `cursor` (the last one
/// published), then waits for a reason to read again; until aborted.
pub(super) async fn run(
    pool: Pool,
    bus: EventBus,
    mut cursor: i64,
    sequenced: Arc<Notify>,
    mut notices: mpsc::UnboundedReceiver<Notice>,
    work: Arc<OnceLock<WorkWaker>>,
) {
    let mut listening = false;
    let mut failing = false;
    loop {
        match publish_after(&pool, &bus, &mut cursor).await {
            Ok(()) if failing => {
                tracing::info!("the event feed reads the store again");
                failing = false;
            }
            Ok(()) => {}
            Err(e) => {
                if !failing {
                    tracing::warn!(error = %e, "the event feed cannot read the store: \
                        watchers of this instance miss nothing but wait until it can");
                }
                failing = true;
            }
        }
        loop {
            tokio::select! {
                _ = sequenced.notified() => break,
                notice = notices.recv() => match notice {
                    Some(Notice::Events) => break,
                    Some(Notice::Work(adapter)) => {
                        if let Some(wake) = work.get() {
                            wake(&adapter);
                        }
                    }
                    // Listening again: read what was sequenced meanwhile.
                    Some(Notice::Listening(up)) => {
                        listening = up;
                        if up {
                            break;
                        }
                    }
                    None => return,
                },
                _ = tokio::time::sleep(POLL), if !listening || failing => break,
            }
        }
    }
}

/// Reads and publishes every sequenced event after `cursor`; all tenants',
/// as the bus carries them (each watcher filters its own).
async fn publish_after(pool: &Pool, bus: &EventBus, cursor: &mut i64) -> Result<(), StoreError> {
    let sql =
        format!("SELECT {EVENT_COLUMNS} FROM events WHERE cursor > $1 ORDER BY cursor LIMIT $2");
    loop {
        let events = tx::read(pool, &sql, &[&*cursor, &PAGE])
            .await?
            .iter()
            .map(rows::event)
            .collect::<Result<Vec<_>, _>>()?;
        let full = events.len() as i64 == PAGE;
        if let Some(last) = events.last() {
            *cursor = last.cursor;
            bus.publish(events);
        }
        if !full {
            return Ok(());
        }
    }
}

/// Keeps one connection listening on both channels, reconnecting with
/// backoff; logs once per outage. Ends when the feed is gone.
pub(super) async fn listen(target: Target, notices: mpsc::UnboundedSender<Notice>) {
    let mut config = target.config;
    // A connection that only listens sends nothing: keepalives notice a
    // silently dead peer in about a minute, not the system's two hours.
    config.keepalives(true);
    config.keepalives_idle(Duration::from_secs(30));
    let mut backoff = Duration::from_millis(100);
    let mut outage = false;
    loop {
        let (listened, error) = match target.tls.clone() {
            None => listen_once(&config, NoTls, &notices, outage).await,
            Some(tls) => listen_once(&config, tls, &notices, outage).await,
        };
        if notices.send(Notice::Listening(false)).is_err() {
            return;
        }
        if listened {
            backoff = Duration::from_millis(100);
            outage = false;
        }
        if !outage {
            tracing::warn!(error = %error, "the event feed cannot listen to PostgreSQL: \
                it reads the store every {}s until it can again", POLL.as_secs());
            outage = true;
        }
        tokio::time::sleep(backoff).await;
        backoff = (backoff * 2).min(MAX_BACKOFF);
    }
}

/// Connects, listens and forwards notifications until the connection
/// ends: (whether it listened, why it ended).
async fn listen_once<T>(
    config: &tokio_postgres::Config,
    tls: T,
    notices: &mpsc::UnboundedSender<Notice>,
    outage: bool,
) -> (bool, String)
where
    T: MakeTlsConnect<Socket>,
    T::Stream: Send + 'static,
    T::TlsConnect: Send,
    <T::TlsConnect as TlsConnect<Socket>>::Future: Send,
{
    let (client, mut connection) = match config.connect(tls).await {
        Ok(c) => c,
        Err(e) => return (false, pool::from_pg(e).to_string()),
    };
    // The channels are the database's, shared by every schema in it: the
    // schema tells this store's work notices from another hub's.
    let statement =
        format!("LISTEN {EVENTS_CHANNEL}; LISTEN {WORK_CHANNEL}; SELECT current_schema()");
    let listen = client.simple_query(&statement);
    tokio::pin!(listen);
    let mut listened = false;
    let mut own_work = String::new();
    loop {
        // The connection is driven here: it delivers the LISTEN's answer
        // and, after it, the notifications.
        tokio::select! {
            done = &mut listen, if !listened => match done {
                Ok(messages) => {
                    let schema = messages.iter().find_map(|m| match m {
                        SimpleQueryMessage::Row(row) => row.get(0).map(str::to_string),
                        _ => None,
                    });
                    own_work = format!("{}/", schema.unwrap_or_default());
                    listened = true;
                    if outage {
                        tracing::info!("the event feed listens to PostgreSQL again");
                    }
                    if notices.send(Notice::Listening(true)).is_err() {
                        return (true, "the feed stopped".into());
                    }
                }
                Err(e) => return (false, pool::from_pg(e).to_string()),
            },
            message = std::future::poll_fn(|cx| connection.poll_message(cx)) => {
                let notice = match message {
                    Some(Ok(AsyncMessage::Notification(n))) if n.channel() == WORK_CHANNEL => {
                        match n.payload().strip_prefix(own_work.as_str()) {
                            Some(adapter) => Notice::Work(adapter.to_string()),
                            None => continue, // another schema's hub
                        }
                    }
                    Some(Ok(AsyncMessage::Notification(_))) => Notice::Events,
                    Some(Ok(_)) => continue,
                    Some(Err(e)) => return (listened, pool::from_pg(e).to_string()),
                    None => return (listened, "the server closed the connection".into()),
                };
                if notices.send(notice).is_err() {
                    return (listened, "the feed stopped".into());
                }
            }
        }
    }
}

//! Crypto-shredding on PostgreSQL (the scheme is `store/shred.rs`): the period-key
//! vault in the `content_keys` table, and the pass that shreds due periods.
//!
//! Several instances share the keys: the first to seal in a period creates its key
//! (`INSERT ... ON CONFLICT DO NOTHING`, then everyone reads the one stored). A
//! period is shredded only a grace after it ended (one period, at most 5 minutes), so a batch another instance
//! sealed just before the end has committed (or failed) by then. Destroying a key
//! deletes its row and rewrites the table (`VACUUM FULL`), so no dead tuple keeps it.
//!
//! The vault is called from the codec, which is synchronous; `block` runs the query
//! on the PostgreSQL runtime over a dedicated connection (at most once per period
//! and instance, the keys are cached), so it never waits for the pool it may be
//! called under.

use super::pool::io_runtime;
use super::{content, PgError, Pool};
use crate::store::content::Codec;
use crate::store::shred::{KeyVault, Slot};
use crate::store::StoreError;
use std::future::Future;

/// How long after its end a period may be shredded: one period, at most this.
const GRACE_US: u64 = 5 * 60 * 1_000_000;
/// Values re-sealed per transaction.
const RESEAL_BATCH: i64 = 500;

/// Period keys in the `content_keys` table.
pub struct PgVault {
    pool: Pool,
}

impl PgVault {
    pub fn new(pool: Pool) -> PgVault {
        PgVault { pool }
    }
}

/// Runs `fut` on the PostgreSQL runtime and waits for it, from any thread.
fn block<T: Send + 'static>(
    fut: impl Future<Output = Result<T, PgError>> + Send + 'static,
) -> Result<T, PgError> {
    let (tx, rx) = std::sync::mpsc::sync_channel(1);
    io_runtime()?.spawn(async move {
        let _ = tx.send(fut.await);
    });
    let wait = || {
        rx.recv()
            .map_err(|_| PgError::Runtime("the PostgreSQL runtime stopped".into()))?
    };
    match tokio::runtime::Handle::try_current() {
        // A worker of a multi-thread runtime (the engine's own): hand its other
        // tasks to another worker while this one waits.
        Ok(h) if h.runtime_flavor() == tokio::runtime::RuntimeFlavor::MultiThread => {
            tokio::task::block_in_place(wait)
        }
        _ => wait(),
    }
}

/// A connection of its own for one vault operation.
async fn connect(pool: &Pool) -> Result<tokio_postgres::Client, PgError> {
    let (client, connection) = pool.connect_dedicated().await?;
    tokio::spawn(async move {
        if let Err(e) = connection.await {
            tracing::debug!(error = %e, "key vault connection closed");
        }
    });
    Ok(client)
}

impl KeyVault for PgVault {
    fn load(&self, slot: Slot) -> Result<Option<Vec<u8>>, StoreError> {
        let pool = self.pool.clone();
        Ok(block(async move {
            let client = connect(&pool).await?;
            let row = client
                .query_opt(
                    "SELECT key FROM content_keys WHERE slot = $1",
                    &[&i64::from(slot)],
                )
                .await?;
            Ok(row.map(|r| r.get::<_, Vec<u8>>(0)))
        })?)
    }

    fn create(&self, slot: Slot, stored: &[u8]) -> Result<Vec<u8>, StoreError> {
        let pool = self.pool.clone();
        let stored = stored.to_vec();
        Ok(block(async move {
            let client = connect(&pool).await?;
            client
                .execute(
                    "INSERT INTO content_keys (slot, key) VALUES ($1, $2) ON CONFLICT DO NOTHING",
                    &[&i64::from(slot), &stored],
                )
                .await?;
            let row = client
                .query_one(
                    "SELECT key FROM content_keys WHERE slot = $1",
                    &[&i64::from(slot)],
                )
                .await?;
            Ok(row.get::<_, Vec<u8>>(0))
        })?)
    }

    fn destroy(&self, slot: Slot) -> Result<(), StoreError> {
        let pool = self.pool.clone();
        Ok(block(async move {
            let client = connect(&pool).await?;
            client
                .execute(
                    "DELETE FROM content_keys WHERE slot = $1",
                    &[&i64::from(slot)],
                )
                .await?;
            // Rewrites the table so the deleted row's bytes leave its file.
            client.batch_execute("VACUUM FULL content_keys").await?;
            Ok(())
        })?)
    }
}

/// Where content values live: table and value column.
const SEALED_TABLES: [(&str, &str); 3] = [
    ("chunks", "value"),
    ("blobs", "value"),
    ("call_content", "manifest"),
];

/// Shreds every due period that ended more than a grace ago (`GRACE_US`): re-seals what is
/// alive of it into the current period, then destroys its key. Returns (keys
/// destroyed, values re-sealed). Holds the sweep lock alone per batch, as the
/// retention sweep does, so no writer takes or drops a reference meanwhile.
pub async fn shred(
    client: &mut tokio_postgres::Client,
    codec: &Codec,
) -> Result<(u64, u64), StoreError> {
    let Some(periods) = codec.periods.clone() else {
        return Ok((0, 0));
    };
    let grace = (periods.period_secs() * 1_000_000).min(GRACE_US);
    let over = periods.slot_at(crate::timefmt::now_unix_us().saturating_sub(grace));
    let due: Vec<i64> = client
        .query(
            "SELECT slot FROM content_shred_due WHERE slot < $1 ORDER BY slot",
            &[&i64::from(over)],
        )
        .await
        .map_err(PgError::from)?
        .into_iter()
        .map(|r| r.get(0))
        .collect();
    let (mut destroyed, mut resealed) = (0, 0);
    for slot in due {
        for (table, column) in SEALED_TABLES {
            loop {
                let n = reseal_batch(client, codec, table, column, slot).await?;
                resealed += n;
                if n == 0 {
                    break;
                }
            }
        }
        let Ok(period) = Slot::try_from(slot) else {
            continue;
        };
        periods.destroy(period)?;
        client
            .execute("DELETE FROM content_shred_due WHERE slot = $1", &[&slot])
            .await
            .map_err(PgError::from)?;
        destroyed += 1;
        tracing::info!(
            period = slot,
            "content key of a period destroyed (crypto-shredding)"
        );
    }
    Ok((destroyed, resealed))
}

/// Re-seals up to `RESEAL_BATCH` values of one table sealed in `slot`; the count
/// re-sealed (0 when none is left, or none could be).
async fn reseal_batch(
    client: &mut tokio_postgres::Client,
    codec: &Codec,
    table: &str,
    column: &str,
    slot: i64,
) -> Result<u64, StoreError> {
    let tx = client.transaction().await.map_err(PgError::from)?;
    tx.execute("SELECT pg_advisory_xact_lock($1)", &[&content::SWEEP_LOCK])
        .await
        .map_err(PgError::from)?;
    let rows = tx
        .query(
            &format!(
                "SELECT tableoid::regclass::text, ctid::text, {column} FROM {table} \
                 WHERE sealed_in = $1 LIMIT $2 FOR UPDATE"
            ),
            &[&slot, &RESEAL_BATCH],
        )
        .await
        .map_err(PgError::from)?;
    let mut n = 0;
    for row in &rows {
        // A row by its partition and place: ctids repeat across partitions.
        let (partition, ctid): (String, String) = (row.get(0), row.get(1));
        let stored: &[u8] = row.get(2);
        let fresh = match codec.reseal(ctid.as_bytes(), stored) {
            Ok(v) => v,
            Err(StoreError::Shredded { slot }) => {
                tracing::warn!(
                    period = slot,
                    table,
                    "a value outlived its period key; it stays unreadable"
                );
                continue;
            }
            Err(e) => return Err(e),
        };
        tx.execute(
            &format!("UPDATE {partition} SET {column} = $1 WHERE ctid = $2::text::tid"),
            &[&fresh, &ctid],
        )
        .await
        .map_err(PgError::from)?;
        n += 1;
    }
    tx.commit().await.map_err(PgError::from)?;
    Ok(n)
}

//! The live stream across instances: each batch's transaction ends with
//! `pg_notify('llmtap_batches', payload)`, which PostgreSQL delivers to every
//! listening session at commit (never for a batch rolled back); each instance listens
//! on one dedicated connection and turns notices into reads of the rows named.
//!
//! A payload names the batch's call and invocation ids, as many as fit in
//! `MAX_PAYLOAD` bytes (PostgreSQL's limit is 8,000); a batch with more sends as
//! many notices as it takes (`payloads`), all delivered at its commit.

use super::{PgError, Pool};
use serde::{Deserialize, Serialize};
use tokio::sync::mpsc;
use tokio_postgres::{AsyncMessage, GenericClient};

/// The NOTIFY channel.
pub const CHANNEL: &str = "llmtap_batches";
/// Largest payload sent; below PostgreSQL's 8,000 bytes.
pub const MAX_PAYLOAD: usize = 7900;

/// What one committed batch's notice says.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct BatchNotice {
    /// The writing instance (its own notices can be skipped: it published them).
    pub instance: String,
    pub calls: Vec<String>,
    pub invocations: Vec<String>,
    /// The batch named more ids than fit: more notices of it follow (`payloads`).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub more: bool,
}

/// The payload for a batch: ids in order while the JSON stays within `MAX_PAYLOAD`.
pub fn payload(instance: &str, calls: &[String], invocations: &[String]) -> String {
    let mut notice = BatchNotice {
        instance: instance.to_string(),
        ..BatchNotice::default()
    };
    // `{"instance":..,"calls":[],"invocations":[],"more":true}` plus each id quoted.
    let mut size = serde_json::to_string(&BatchNotice {
        more: true,
        ..notice.clone()
    })
    .map_or(0, |s| s.len());
    for (ids, into) in [(calls, 0), (invocations, 1)] {
        for id in ids {
            let cost = serde_json::to_string(id).map_or(usize::MAX, |s| s.len()) + 1;
            if notice.more || size + cost > MAX_PAYLOAD {
                notice.more = true;
                break;
            }
            size += cost;
            if into == 0 {
                notice.calls.push(id.clone());
            } else {
                notice.invocations.push(id.clone());
            }
        }
    }
    serde_json::to_string(&notice).unwrap_or_default()
}

/// The notices that name every id of a batch: as many payloads as it takes, each
/// within `MAX_PAYLOAD` (sent in one transaction, they are delivered together at
/// its commit, in order).
pub fn payloads(instance: &str, calls: &[String], invocations: &[String]) -> Vec<String> {
    let (mut calls, mut invocations) = (calls, invocations);
    let mut out = Vec::new();
    loop {
        let text = payload(instance, calls, invocations);
        let Ok(notice) = serde_json::from_str::<BatchNotice>(&text) else {
            break;
        };
        let (c, i) = (notice.calls.len(), notice.invocations.len());
        if c == 0 && i == 0 && notice.more {
            // One id longer than a payload: name it in none rather than loop.
            tracing::warn!(
                "an id too long for a batch notice; the live stream of other instances skips it"
            );
            if !calls.is_empty() {
                calls = &calls[1..];
            } else {
                invocations = &invocations[1..];
            }
            continue;
        }
        calls = &calls[c..];
        invocations = &invocations[i..];
        let done = calls.is_empty() && invocations.is_empty();
        // `more` now says whether more notices of this batch follow (false is not
        // written, so the payload only shrinks).
        let mut notice = notice;
        notice.more = !done;
        out.push(serde_json::to_string(&notice).unwrap_or(text));
        if done {
            break;
        }
    }
    out
}

/// Sends a notice within the caller's transaction (delivered when it commits).
pub async fn notify(client: &impl GenericClient, payload: &str) -> Result<(), PgError> {
    client
        .execute("SELECT pg_notify($1, $2)", &[&CHANNEL, &payload])
        .await?;
    Ok(())
}

/// Listens on a connection of its own (outside the pool's bound); every notice is
/// sent on the returned channel. The channel closes when the connection ends (the
/// caller reconnects); undecodable payloads are skipped with a warning.
pub async fn listen(pool: &Pool) -> Result<mpsc::Receiver<BatchNotice>, PgError> {
    let (client, mut connection) = pool.connect_dedicated().await?;
    let client = std::sync::Arc::new(client);
    let (tx, rx) = mpsc::channel(1024);
    let keep = client.clone();
    tokio::spawn(async move {
        // The client lives as long as the connection is driven here.
        let _client = keep;
        loop {
            match std::future::poll_fn(|cx| connection.poll_message(cx)).await {
                Some(Ok(AsyncMessage::Notification(n))) if n.channel() == CHANNEL => {
                    match serde_json::from_str::<BatchNotice>(n.payload()) {
                        Ok(notice) => {
                            if tx.send(notice).await.is_err() {
                                return;
                            }
                        }
                        Err(e) => tracing::warn!(error = %e, "undecodable batch notice"),
                    }
                }
                Some(Ok(_)) => {}
                Some(Err(e)) => {
                    tracing::warn!(error = %e, "PostgreSQL listener connection lost");
                    return;
                }
                None => return,
            }
        }
    });
    // In effect when this returns: every batch committed from now on is heard.
    client.batch_execute(&format!("LISTEN {CHANNEL}")).await?;
    Ok(rx)
}

/// Relays other instances' batches into this instance's live stream: listens,
/// reads the rows each notice names and publishes them as a `BatchWritten` (this
/// instance's own batches are published by its writer). Reconnects with backoff
/// when the listening connection is lost; stops when the handle is dropped.
pub fn relay(
    pool: Pool,
    instance: String,
    events: tokio::sync::broadcast::Sender<std::sync::Arc<crate::store::BatchWritten>>,
) -> Result<Relay, PgError> {
    let task = super::pool::io_runtime()?.spawn(async move {
        let mut backoff = std::time::Duration::from_millis(100);
        loop {
            match listen(&pool).await {
                Ok(mut notices) => {
                    backoff = std::time::Duration::from_millis(100);
                    while let Some(notice) = notices.recv().await {
                        if notice.instance == instance {
                            continue;
                        }
                        match written(&pool, &notice).await {
                            Ok(batch) => {
                                let _ = events.send(std::sync::Arc::new(batch));
                            }
                            Err(e) => {
                                tracing::warn!(error = %e, "cannot read a batch another instance wrote")
                            }
                        }
                    }
                }
                Err(e) => tracing::warn!(error = %e, "cannot listen for other instances' batches"),
            }
            tokio::time::sleep(backoff).await;
            backoff = (backoff * 2).min(std::time::Duration::from_secs(5));
        }
    });
    Ok(Relay(task))
}

/// The relay task; aborted when dropped.
pub struct Relay(tokio::task::JoinHandle<()>);

impl Drop for Relay {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// The summaries a notice names, as the live stream shows them.
async fn written(pool: &Pool, notice: &BatchNotice) -> Result<crate::store::BatchWritten, PgError> {
    let client = pool.get().await?;
    let mut batch = crate::store::BatchWritten::default();
    let rows = client
        .query(
            "SELECT summary, id FROM calls WHERE id = ANY($1) ORDER BY started_us, id",
            &[&notice.calls],
        )
        .await?;
    batch.calls = super::lists::call_summaries(
        &*client,
        rows.iter().map(|r| (r.get(0), r.get(1))).collect(),
    )
    .await?;
    for row in client
        .query(
            "SELECT id, summary FROM invocations WHERE id = ANY($1) ORDER BY started_us, id",
            &[&notice.invocations],
        )
        .await?
    {
        let id: &str = row.get(0);
        batch.invocations.push(
            serde_json::from_value(row.get(1))
                .map_err(|e| PgError::Decode(format!("summary of {id}: {e}")))?,
        );
    }
    Ok(batch)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_small_batch_names_every_id() {
        let text = payload("i1", &["c_1".into(), "c_2".into()], &["run".into()]);
        let notice: BatchNotice = serde_json::from_str(&text).unwrap();
        assert_eq!(notice.calls, vec!["c_1", "c_2"]);
        assert_eq!(notice.invocations, vec!["run"]);
        assert!(!notice.more);
    }

    #[test]
    fn a_large_batch_is_named_whole_across_several_notices() {
        let calls: Vec<String> = (0..2000).map(|i| format!("c_01J{i:023}")).collect();
        let runs: Vec<String> = (0..300).map(|i| format!("run-{i}")).collect();
        let texts = payloads("instance-a", &calls, &runs);
        assert!(texts.len() > 5, "{}", texts.len());
        let mut named_calls = Vec::new();
        let mut named_runs = Vec::new();
        for text in &texts {
            assert!(text.len() <= MAX_PAYLOAD, "{}", text.len());
            let notice: BatchNotice = serde_json::from_str(text).unwrap();
            named_calls.extend(notice.calls);
            named_runs.extend(notice.invocations);
        }
        assert_eq!(named_calls, calls);
        assert_eq!(named_runs, runs);
    }

    #[test]
    fn a_large_batch_is_cut_below_the_limit_and_says_so() {
        let calls: Vec<String> = (0..2000).map(|i| format!("c_01J{i:023}")).collect();
        let text = payload("instance-a", &calls, &["run-1".into()]);
        assert!(text.len() <= MAX_PAYLOAD, "{}", text.len());
        let notice: BatchNotice = serde_json::from_str(&text).unwrap();
        assert!(notice.more);
        assert!(notice.calls.len() > 200, "{}", notice.calls.len());
        assert_eq!(notice.calls[..], calls[..notice.calls.len()]);
        assert!(notice.invocations.is_empty());
    }
}

//! Plugin versions in the database every host shares: the components, the version each
//! plugin serves (one row, changed with its component in one transaction and announced on
//! `followup_versions`), the candidate each plugin runs beside it (shadow or canary, the
//! same way), and the hosts alive, each with what it serves.

use super::{PgDisk, VERSIONS, err};
use crate::storage::{LiveHost, SharedCandidate, SharedVersion, SharedVersions, StorageError};
use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::Notify;

/// Keeps a plugin's component (once per hash) in the transaction that points at it.
async fn keep_component(
    tx: &deadpool_postgres::Transaction<'_>,
    plugin: &str,
    hash: &str,
    bytes: &[u8],
) -> Result<(), tokio_postgres::Error> {
    tx.execute(
        "INSERT INTO plugin_components (plugin, hash, bytes) VALUES ($1, $2, $3)
         ON CONFLICT DO NOTHING",
        &[&plugin, &hash, &bytes],
    )
    .await
    .map(drop)
}

impl SharedVersions for PgDisk {
    fn host_id(&self) -> &str {
        &self.holder
    }

    fn publish(
        &self,
        plugin: &str,
        hash: &str,
        bytes: &[u8],
        how: &str,
    ) -> Result<u64, StorageError> {
        let (plugin, hash, bytes, how) = (
            plugin.to_string(),
            hash.to_string(),
            bytes.to_vec(),
            how.to_string(),
        );
        let by = self.holder.clone();
        self.query(move |mut c| async move {
            let tx = c.transaction().await?;
            keep_component(&tx, &plugin, &hash, &bytes).await?;
            let generation: i64 = tx
                .query_one(
                    "INSERT INTO plugin_serving (plugin, hash, generation, how, by_host)
                     VALUES ($1, $2, 1, $3, $4)
                     ON CONFLICT (plugin) DO UPDATE SET hash = excluded.hash,
                        generation = plugin_serving.generation + 1, how = excluded.how,
                        by_host = excluded.by_host, at = now()
                     RETURNING generation",
                    &[&plugin, &hash, &how, &by],
                )
                .await?
                .get(0);
            tx.execute("SELECT pg_notify($1, $2)", &[&VERSIONS, &plugin])
                .await?;
            tx.commit().await?;
            Ok(generation as u64)
        })
    }

    fn serving(&self) -> Result<Vec<SharedVersion>, StorageError> {
        self.query(|c| async move {
            let rows = c
                .query(
                    "SELECT plugin, hash, generation, how, by_host FROM plugin_serving",
                    &[],
                )
                .await?;
            Ok(rows
                .iter()
                .map(|r| SharedVersion {
                    plugin: r.get(0),
                    hash: r.get(1),
                    generation: r.get::<_, i64>(2) as u64,
                    how: r.get(3),
                    by: r.get(4),
                })
                .collect())
        })
    }

    fn component(&self, plugin: &str, hash: &str) -> Result<Option<Vec<u8>>, StorageError> {
        let (plugin, hash) = (plugin.to_string(), hash.to_string());
        self.query(move |c| async move {
            Ok(c.query_opt(
                "SELECT bytes FROM plugin_components WHERE plugin = $1 AND hash = $2",
                &[&plugin, &hash],
            )
            .await?
            .map(|r| r.get(0)))
        })
    }

    fn heartbeat(&self, serving: &BTreeMap<String, String>) -> Result<(), StorageError> {
        let serving = serde_json::to_string(serving).map_err(err)?;
        let id = self.holder.clone();
        self.query(move |c| async move {
            c.execute(
                "INSERT INTO hosts (id, serving) VALUES ($1, $2::TEXT::JSONB)
                 ON CONFLICT (id) DO UPDATE SET seen = now(), serving = excluded.serving",
                &[&id, &serving],
            )
            .await
            .map(drop)
        })
    }

    fn live_hosts(&self, within: Duration) -> Result<Vec<LiveHost>, StorageError> {
        let within = within.as_secs_f64();
        let rows = self.query(move |c| async move {
            c.query(
                "SELECT id, extract(epoch FROM now() - seen)::FLOAT8, serving::TEXT FROM hosts
                 WHERE seen > now() - $1::FLOAT8 * interval '1 second' ORDER BY id",
                &[&within],
            )
            .await
        })?;
        rows.iter()
            .map(|r| {
                let serving: String = r.get(2);
                Ok(LiveHost {
                    id: r.get(0),
                    seen_seconds_ago: r.get(1),
                    serving: serde_json::from_str(&serving).map_err(err)?,
                })
            })
            .collect()
    }

    fn published(&self) -> Arc<Notify> {
        self.published.clone()
    }

    fn stage(
        &self,
        plugin: &str,
        hash: &str,
        bytes: &[u8],
        mode: &str,
        percent: u8,
    ) -> Result<(), StorageError> {
        let (plugin, hash, bytes, mode) = (
            plugin.to_string(),
            hash.to_string(),
            bytes.to_vec(),
            mode.to_string(),
        );
        let by = self.holder.clone();
        self.query(move |mut c| async move {
            let tx = c.transaction().await?;
            keep_component(&tx, &plugin, &hash, &bytes).await?;
            tx.execute(
                "INSERT INTO plugin_candidates (plugin, hash, mode, percent, generation, by_host)
                 VALUES ($1, $2, $3, $4, 1, $5)
                 ON CONFLICT (plugin) DO UPDATE SET hash = excluded.hash, mode = excluded.mode,
                    percent = excluded.percent,
                    generation = plugin_candidates.generation + 1,
                    by_host = excluded.by_host, at = now()",
                &[&plugin, &hash, &mode, &i32::from(percent), &by],
            )
            .await?;
            tx.execute("SELECT pg_notify($1, $2)", &[&VERSIONS, &plugin])
                .await?;
            tx.commit().await
        })
    }

    fn unstage(&self, plugin: &str, hash: &str) -> Result<bool, StorageError> {
        let (plugin, hash) = (plugin.to_string(), hash.to_string());
        self.query(move |c| async move {
            let ended = c
                .execute(
                    "WITH ended AS (
                        DELETE FROM plugin_candidates WHERE plugin = $1 AND hash = $2
                        RETURNING plugin)
                     SELECT pg_notify($3, plugin) FROM ended",
                    &[&plugin, &hash, &VERSIONS],
                )
                .await?;
            Ok(ended > 0)
        })
    }

    fn candidates(&self) -> Result<Vec<SharedCandidate>, StorageError> {
        self.query(|c| async move {
            let rows = c
                .query(
                    "SELECT plugin, hash, mode, percent, generation, by_host FROM plugin_candidates",
                    &[],
                )
                .await?;
            Ok(rows
                .iter()
                .map(|r| SharedCandidate {
                    plugin: r.get(0),
                    hash: r.get(1),
                    mode: r.get(2),
                    percent: r.get::<_, i32>(3).clamp(0, 100) as u8,
                    generation: r.get::<_, i64>(4) as u64,
                    by: r.get(5),
                })
                .collect())
        })
    }
}

//! Versioned schema migrations, embedded from `migrations/NNNN_name.sql`.
//!
//! `migrate` runs in one transaction that first takes a transaction-level advisory
//! lock, so instances starting together apply each migration once (the others wait,
//! then find it applied). The applied versions are rows of `llmtap_schema`; a
//! database whose newest version is above the newest this binary embeds is refused
//! (`PgError::SchemaTooNew`) before anything is changed. PostgreSQL's DDL is
//! transactional, so a failed migration leaves the schema as it was.

use super::PgError;
use tokio_postgres::Client;

/// One step of the schema.
pub struct Migration {
    pub version: i32,
    pub name: &'static str,
    pub sql: &'static str,
}

/// Every migration, in version order; append only.
pub const MIGRATIONS: &[Migration] = &[
    Migration {
        version: 1,
        name: "init",
        sql: include_str!("migrations/0001_init.sql"),
    },
    Migration {
        version: 2,
        name: "invocation_last_round",
        sql: include_str!("migrations/0002_invocation_last_round.sql"),
    },
    Migration {
        version: 3,
        name: "prefix_lookups",
        sql: include_str!("migrations/0003_prefix_lookups.sql"),
    },
    Migration {
        version: 4,
        name: "drop_redundant_time_index",
        sql: include_str!("migrations/0004_drop_redundant_time_index.sql"),
    },
    Migration {
        version: 5,
        name: "facet_counts",
        sql: include_str!("migrations/0005_facet_counts.sql"),
    },
    Migration {
        version: 6,
        name: "facet_pair_counts",
        sql: include_str!("migrations/0006_facet_pair_counts.sql"),
    },
    Migration {
        version: 7,
        name: "content_keys",
        sql: include_str!("migrations/0007_content_keys.sql"),
    },
    Migration {
        version: 8,
        name: "session_models",
        sql: include_str!("migrations/0008_session_models.sql"),
    },
    Migration {
        version: 9,
        name: "no_session_subjects",
        sql: include_str!("migrations/0009_no_session_subjects.sql"),
    },
    Migration {
        version: 10,
        name: "rollup_tool_counts",
        sql: include_str!("migrations/0010_rollup_tool_counts.sql"),
    },
];

/// The advisory lock key that serialises migrations ("llmtap" in ASCII).
pub const MIGRATION_LOCK: i64 = 0x6c6c_6d74_6170;

/// The newest version this binary knows.
pub fn latest_version() -> i32 {
    MIGRATIONS.last().map(|m| m.version).unwrap_or(0)
}

/// Brings the schema to `latest_version()`; returns the migrations applied now.
pub async fn migrate(client: &mut Client) -> Result<Vec<i32>, PgError> {
    let tx = client.transaction().await?;
    tx.execute("SELECT pg_advisory_xact_lock($1)", &[&MIGRATION_LOCK])
        .await?;
    tx.batch_execute(
        "CREATE TABLE IF NOT EXISTS llmtap_schema (
             version    integer     PRIMARY KEY,
             name       text        NOT NULL,
             applied_at timestamptz NOT NULL DEFAULT now()
         )",
    )
    .await?;
    let found: i32 = tx
        .query_one("SELECT coalesce(max(version), 0) FROM llmtap_schema", &[])
        .await?
        .get(0);
    let known = latest_version();
    if found > known {
        return Err(PgError::SchemaTooNew { found, known });
    }
    let mut applied = Vec::new();
    for migration in MIGRATIONS.iter().filter(|m| m.version > found) {
        tx.batch_execute(migration.sql).await?;
        tx.execute(
            "INSERT INTO llmtap_schema (version, name) VALUES ($1, $2)",
            &[&migration.version, &migration.name],
        )
        .await?;
        applied.push(migration.version);
    }
    tx.commit().await?;
    Ok(applied)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn versions_are_consecutive_from_one_and_files_named_after_them() {
        for (i, m) in MIGRATIONS.iter().enumerate() {
            assert_eq!(m.version, i as i32 + 1);
            assert!(!m.sql.trim().is_empty(), "{}", m.name);
        }
        assert_eq!(latest_version(), MIGRATIONS.len() as i32);
    }
}

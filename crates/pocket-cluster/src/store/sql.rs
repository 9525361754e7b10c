//! What the SQL stores share: error mapping and JSON columns.

use serde::Serialize;
use serde::de::DeserializeOwned;

use super::StoreError;

/// Which database an error came from (their error codes overlap).
#[derive(Debug, Clone, Copy)]
pub(super) enum Db {
    #[cfg(feature = "sqlite")]
    Sqlite,
    #[cfg(feature = "postgres")]
    Postgres,
}

/// Wraps a database error, marking what a retry may cure: pool timeouts, I/O, a busy or
/// locked SQLite file, PostgreSQL serialization failures, deadlocks, lost connections and
/// shutdowns.
pub(super) fn backend(db: Db, what: &'static str, err: sqlx::Error) -> StoreError {
    StoreError::Backend {
        message: format!("{what} failed"),
        retryable: retryable(db, &err),
        source: Some(Box::new(err)),
    }
}

/// Whether trying again may cure this error.
pub(super) fn retryable(db: Db, err: &sqlx::Error) -> bool {
    match err {
        sqlx::Error::PoolTimedOut | sqlx::Error::Io(_) => true,
        sqlx::Error::Database(e) => retryable_code(db, e.code().as_deref(), e.message()),
        _ => false,
    }
}

fn retryable_code(db: Db, code: Option<&str>, message: &str) -> bool {
    match db {
        // Primary result codes 5 (SQLITE_BUSY) and 6 (SQLITE_LOCKED), in any extended form.
        #[cfg(feature = "sqlite")]
        Db::Sqlite => {
            code.and_then(|c| c.parse::<i32>().ok())
                .is_some_and(|c| matches!(c & 0xff, 5 | 6))
                || message.contains("database is locked")
        }
        // SQLSTATE: serialization_failure, deadlock_detected, lock_not_available,
        // too_many_connections, class 08 (connection) and 57P (operator intervention).
        #[cfg(feature = "postgres")]
        Db::Postgres => code.is_some_and(|c| {
            matches!(c, "40001" | "40P01" | "55P03" | "53300")
                || c.starts_with("08")
                || c.starts_with("57P")
        }),
    }
}

/// A row that does not decode (a bad JSON column, an unknown status).
pub(super) fn corrupt(
    what: String,
    source: Option<Box<dyn std::error::Error + Send + Sync>>,
) -> StoreError {
    StoreError::Backend {
        message: what,
        retryable: false,
        source,
    }
}

pub(super) fn to_json<T: Serialize + ?Sized>(value: &T) -> Result<String, StoreError> {
    serde_json::to_string(value)
        .map_err(|e| StoreError::Invalid(format!("not serializable as JSON: {e}")))
}

pub(super) fn from_json<T: DeserializeOwned>(column: &str, text: &str) -> Result<T, StoreError> {
    serde_json::from_str(text).map_err(|e| {
        corrupt(
            format!("column `{column}` holds bad JSON"),
            Some(Box::new(e)),
        )
    })
}

/// The columns of an [`ApprovalRecord`](super::ApprovalRecord) (table alias `a`), for both
/// SQL backends.
macro_rules! approval_columns {
    () => {
        "a.id, a.task_id, a.agent, a.call_id, a.tool, a.risk, a.arguments, a.requested_at, \
         a.decision, a.decided_at"
    };
}
pub(super) use approval_columns;

/// One [`ApprovalRecord`](super::ApprovalRecord) from a row of
/// [`approval_columns!`], on either backend (text, `BIGINT` milliseconds and JSON text
/// columns decode the same way on both).
pub(super) fn approval_row<R>(row: &R) -> Result<super::ApprovalRecord, StoreError>
where
    R: sqlx::Row,
    for<'a> &'a str: sqlx::ColumnIndex<R>,
    for<'r> String: sqlx::Decode<'r, R::Database> + sqlx::Type<R::Database>,
    for<'r> i64: sqlx::Decode<'r, R::Database> + sqlx::Type<R::Database>,
{
    fn col<'r, R, T>(row: &'r R, name: &str) -> Result<T, StoreError>
    where
        R: sqlx::Row,
        for<'a> &'a str: sqlx::ColumnIndex<R>,
        T: sqlx::Decode<'r, R::Database> + sqlx::Type<R::Database>,
    {
        row.try_get(name).map_err(|e| {
            corrupt(
                format!("column `{name}` of pocket_approvals does not decode"),
                Some(Box::new(e)),
            )
        })
    }
    let decision: Option<String> = col(row, "decision")?;
    let decided_at: Option<i64> = col(row, "decided_at")?;
    Ok(super::ApprovalRecord {
        id: col(row, "id")?,
        task_id: super::TaskId(col(row, "task_id")?),
        agent: col(row, "agent")?,
        call_id: col(row, "call_id")?,
        tool: col(row, "tool")?,
        risk: col(row, "risk")?,
        arguments: from_json("arguments", &col::<R, String>(row, "arguments")?)?,
        requested_at: super::from_ms(col(row, "requested_at")?),
        decision: decision
            .map(|d| from_json::<pocket_agent::Approval>("decision", &d))
            .transpose()?,
        decided_at: decided_at.map(super::from_ms),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[cfg(feature = "sqlite")]
    #[test]
    fn sqlite_busy_and_locked_are_retryable() {
        assert!(retryable_code(Db::Sqlite, Some("5"), "database is locked"));
        assert!(retryable_code(Db::Sqlite, Some("517"), "snapshot")); // SQLITE_BUSY_SNAPSHOT
        assert!(retryable_code(Db::Sqlite, Some("262"), "x")); // SQLITE_LOCKED_SHAREDCACHE
        assert!(!retryable_code(
            Db::Sqlite,
            Some("2067"),
            "UNIQUE constraint failed"
        ));
    }

    #[cfg(feature = "postgres")]
    #[test]
    fn postgres_transient_states_are_retryable() {
        assert!(retryable_code(Db::Postgres, Some("40001"), ""));
        assert!(retryable_code(Db::Postgres, Some("08006"), ""));
        // 42501 & 0xff == 5: SQLite's rule must not leak into PostgreSQL's.
        assert!(!retryable_code(Db::Postgres, Some("42501"), ""));
        assert!(!retryable_code(Db::Postgres, Some("23505"), ""));
    }
}

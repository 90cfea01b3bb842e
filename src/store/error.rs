//! Storage errors, classified so the HTTP edge can tell "try again later" from a bug.

/// What went wrong in the store.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The database cannot be reached (closed pool, time-out, I/O); callers may retry.
    #[error("database unavailable")]
    Unavailable(#[source] sqlx::Error),
    /// A unique constraint was violated.
    #[error("conflicting row ({constraint})")]
    Conflict { constraint: String },
    /// A stored value could not be turned back into a domain value.
    #[error("corrupt stored value in {column}: {problem}")]
    Corrupt {
        column: &'static str,
        problem: String,
    },
    /// The database URL names no supported backend.
    #[error("unsupported database URL: expected sqlite://... or postgres://...")]
    UnsupportedUrl,
    /// Migrations could not be applied.
    #[error("migration failed")]
    Migrate(#[from] sqlx::migrate::MigrateError),
    /// Any other database error.
    #[error("database error")]
    Database(#[source] sqlx::Error),
}

impl StoreError {
    /// Whether the caller should answer "unavailable, retry" rather than "internal error".
    pub fn is_unavailable(&self) -> bool {
        matches!(self, StoreError::Unavailable(_))
    }

    /// Whether a statement that failed this way may have been carried out all the same: the
    /// connection broke once it was under way, so only its answer is known to be lost.
    pub fn answer_lost(&self) -> bool {
        matches!(
            self,
            StoreError::Unavailable(sqlx::Error::Io(_) | sqlx::Error::WorkerCrashed)
        )
    }

    pub(crate) fn corrupt(column: &'static str, problem: impl ToString) -> Self {
        StoreError::Corrupt {
            column,
            problem: problem.to_string(),
        }
    }
}

impl From<sqlx::Error> for StoreError {
    fn from(err: sqlx::Error) -> Self {
        match &err {
            sqlx::Error::PoolClosed
            | sqlx::Error::PoolTimedOut
            | sqlx::Error::Io(_)
            | sqlx::Error::Tls(_)
            | sqlx::Error::WorkerCrashed => StoreError::Unavailable(err),
            sqlx::Error::Database(db) if db.is_unique_violation() => StoreError::Conflict {
                constraint: db.constraint().unwrap_or("unique").to_string(),
            },
            // SQLite's lock still held by another process when the busy timeout ran out.
            sqlx::Error::Database(db) if is_sqlite_busy(db.code().as_deref()) => {
                StoreError::Unavailable(err)
            }
            _ => StoreError::Database(err),
        }
    }
}

/// `SQLITE_BUSY` or `SQLITE_LOCKED`, extended codes included (the low byte is the primary code).
fn is_sqlite_busy(code: Option<&str>) -> bool {
    code.and_then(|c| c.parse::<i32>().ok())
        .is_some_and(|c| matches!(c & 0xff, 5 | 6))
}

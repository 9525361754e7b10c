//! Shared test utilities: one store of each kind on a manual clock, and small task helpers.

#![allow(dead_code, unreachable_pub, clippy::unwrap_used, clippy::expect_used)]

use std::io::Write;
use std::sync::{Arc, Once};
use std::time::{Duration, SystemTime};

use pocket_agent::{CheckpointRef, JournalEntry, JournalState, Message, ToolCallRecord, Usage};
use pocket_cluster::store::{ManualClock, MemoryStore, StoreOptions, TaskStore};

/// The variable naming a PostgreSQL server for the PostgreSQL cases.
pub const POSTGRES_URL_VAR: &str = "POCKET_TEST_POSTGRES_URL";

/// Where every test's clock starts: 2023-11-14T22:13:20Z, a whole millisecond.
pub fn start() -> SystemTime {
    SystemTime::UNIX_EPOCH + Duration::from_millis(1_700_000_000_000)
}

/// Which implementation a test runs against.
#[derive(Debug, Clone)]
pub enum Backend {
    /// [`MemoryStore`].
    Memory,
    /// `SqliteStore` on a file in a fresh temporary directory.
    Sqlite,
    /// `PostgresStore` in a fresh schema of the database at this URL.
    Postgres(String),
}

/// The PostgreSQL backend when [`POSTGRES_URL_VAR`] is set; otherwise says (once, past the
/// test harness's capture) that the PostgreSQL cases are skipped.
pub fn postgres() -> Option<Backend> {
    static SKIPPED: Once = Once::new();
    match std::env::var(POSTGRES_URL_VAR) {
        Ok(url) if !url.is_empty() => Some(Backend::Postgres(url)),
        _ => {
            SKIPPED.call_once(|| {
                let _ = writeln!(
                    std::io::stderr(),
                    "note: PostgreSQL store cases skipped: {POSTGRES_URL_VAR} is not set \
                     (e.g. postgres://postgres@127.0.0.1:5432/test)"
                );
            });
            None
        }
    }
}

/// A store under test with its clock; drops its database (temporary file or schema) last.
pub struct Harness {
    pub store: Arc<dyn TaskStore>,
    pub clock: ManualClock,
    /// How to open the same database again (a second process or machine).
    reopen: Reopen,
    _cleanup: Cleanup,
}

enum Reopen {
    Same,
    #[cfg(feature = "sqlite")]
    Sqlite(String),
    #[cfg(feature = "postgres")]
    Postgres(String),
}

impl Harness {
    /// The URL another process would open this store's database with (`memory:` for the
    /// memory store, which cannot be shared).
    pub fn url(&self) -> &str {
        match &self.reopen {
            Reopen::Same => "memory:",
            #[cfg(feature = "sqlite")]
            Reopen::Sqlite(url) => url,
            #[cfg(feature = "postgres")]
            Reopen::Postgres(url) => url,
        }
    }

    /// Another store on the same database and clock, as a second process or machine would
    /// open it (the memory store: the same store).
    // Without the SQL features only the memory arm is left, which needs no options.
    #[allow(unused_variables)]
    pub async fn another(&self) -> Arc<dyn TaskStore> {
        let options = StoreOptions::new().clock(self.clock.clone());
        match &self.reopen {
            Reopen::Same => Arc::clone(&self.store),
            #[cfg(feature = "sqlite")]
            Reopen::Sqlite(url) => Arc::new(
                pocket_cluster::store::SqliteStore::open(url, options)
                    .await
                    .expect("reopen SQLite store"),
            ),
            #[cfg(feature = "postgres")]
            Reopen::Postgres(url) => Arc::new(
                pocket_cluster::store::PostgresStore::connect(url, options)
                    .await
                    .expect("reconnect PostgreSQL store"),
            ),
        }
    }
}

enum Cleanup {
    None,
    #[cfg(feature = "sqlite")]
    Dir(tempfile::TempDir),
    #[cfg(feature = "postgres")]
    Schema {
        url: String,
        schema: String,
    },
}

impl Drop for Cleanup {
    fn drop(&mut self) {
        #[cfg(feature = "postgres")]
        if let Cleanup::Schema { url, schema } = self {
            let (url, schema) = (url.clone(), schema.clone());
            // Drop runs inside the test's runtime: drop the schema from a thread of its own.
            let _ = std::thread::spawn(move || {
                let rt = tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                    .expect("runtime");
                rt.block_on(async {
                    use sqlx::Connection;
                    let mut conn = sqlx::PgConnection::connect(&url).await.expect("connect");
                    sqlx::query(sqlx::AssertSqlSafe(format!(
                        "DROP SCHEMA IF EXISTS {schema} CASCADE"
                    )))
                    .execute(&mut conn)
                    .await
                    .expect("drop schema");
                });
            })
            .join();
        }
    }
}

impl Backend {
    /// A fresh, empty store of this kind on a new manual clock.
    pub async fn open(&self, options: StoreOptions) -> Harness {
        let clock = ManualClock::new(start());
        let options = options.clock(clock.clone());
        let (store, reopen, cleanup): (Arc<dyn TaskStore>, Reopen, Cleanup) = match self {
            Backend::Memory => (
                Arc::new(MemoryStore::new(options)),
                Reopen::Same,
                Cleanup::None,
            ),
            #[cfg(feature = "sqlite")]
            Backend::Sqlite => {
                let dir = tempfile::tempdir().expect("temp dir");
                let path = dir.path().join("pocket.db");
                let url = format!("sqlite://{}", path.display());
                let store = pocket_cluster::store::SqliteStore::open(&url, options)
                    .await
                    .expect("open SQLite store");
                (Arc::new(store), Reopen::Sqlite(url), Cleanup::Dir(dir))
            }
            #[cfg(feature = "postgres")]
            Backend::Postgres(url) => {
                use sqlx::Connection;
                let schema = format!("pt_{}", uuid::Uuid::now_v7().simple());
                let mut conn = sqlx::PgConnection::connect(url)
                    .await
                    .expect("connect to POCKET_TEST_POSTGRES_URL");
                sqlx::query(sqlx::AssertSqlSafe(format!("CREATE SCHEMA {schema}")))
                    .execute(&mut conn)
                    .await
                    .expect("create schema");
                let cleanup = Cleanup::Schema {
                    url: url.clone(),
                    schema: schema.clone(),
                };
                let sep = if url.contains('?') { '&' } else { '?' };
                let scoped = format!("{url}{sep}options[search_path]={schema}");
                let store = pocket_cluster::store::PostgresStore::connect(&scoped, options)
                    .await
                    .expect("connect PostgreSQL store");
                (Arc::new(store), Reopen::Postgres(scoped), cleanup)
            }
            #[allow(unreachable_patterns)]
            other => panic!("{other:?} needs its crate feature"),
        };
        Harness {
            store,
            clock,
            reopen,
            _cleanup: cleanup,
        }
    }
}

/// A run's state after a step, for checkpoints.
pub struct State {
    pub messages: Vec<Message>,
    pub tool_calls: Vec<ToolCallRecord>,
    pub iterations: u32,
}

impl State {
    /// A conversation of `turns` assistant turns after the task.
    pub fn after(turns: u32) -> Self {
        let mut messages = vec![Message::system("be brief"), Message::user("the task")];
        messages.extend((0..turns).map(|i| Message::assistant(format!("turn {i}"))));
        Self {
            messages,
            tool_calls: vec![ToolCallRecord {
                name: "calculator".into(),
                arguments: serde_json::json!({"expression": "1+1"}),
                error: None,
                duration_secs: 0.5,
            }],
            iterations: turns,
        }
    }

    /// The borrowed view a run hands its checkpointer.
    pub fn as_ref(&self) -> CheckpointRef<'_> {
        CheckpointRef {
            messages: &self.messages,
            iterations: self.iterations,
            usage: Usage {
                input_tokens: 12,
                output_tokens: 34,
            },
            tool_calls: &self.tool_calls,
        }
    }
}

/// A journal entry for a call that started.
pub fn started(call: &str) -> JournalEntry {
    JournalEntry {
        call_id: call.into(),
        tool: "shell".into(),
        state: JournalState::Started,
    }
}

/// A journal entry for a call that finished.
pub fn finished(call: &str, content: &str) -> JournalEntry {
    JournalEntry {
        call_id: call.into(),
        tool: "shell".into(),
        state: JournalState::Finished {
            content: content.into(),
            is_error: false,
        },
    }
}

/// `(status, count)` for one status out of the stats.
pub fn count(stats: &pocket_cluster::QueueStats, status: pocket_cluster::TaskStatus) -> u64 {
    stats
        .by_status
        .iter()
        .find(|(s, _)| *s == status)
        .map_or(0, |(_, n)| *n)
}

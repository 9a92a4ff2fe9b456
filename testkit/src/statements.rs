//! Counting the SQL statements a process runs, for tests that prove a
//! path costs a few round trips to SQLite rather than a few per item:
//! every statement sqlx runs is a `sqlx::query` tracing event.

/// The SQL of every statement sqlx runs in this process (its
/// `sqlx::query` events), for counting round trips to SQLite.
#[derive(Clone, Default)]
pub struct Statements(std::sync::Arc<std::sync::Mutex<Vec<String>>>);

impl Statements {
    /// Installs the counter for the whole process (nextest runs each test
    /// in a process of its own).
    pub fn install() -> Self {
        use tracing_subscriber::layer::SubscriberExt;
        let s = Self::default();
        tracing::subscriber::set_global_default(tracing_subscriber::registry().with(s.clone()))
            .expect("no other subscriber in this test's process");
        s
    }

    /// Statements whose SQL (or its summary) contains `needle`.
    pub fn matching(&self, needle: &str) -> usize {
        let all = self
            .0
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        all.iter().filter(|s| s.contains(needle)).count()
    }

    /// Forgets what was counted so far.
    pub fn clear(&self) {
        self.0
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .clear();
    }
}

impl<S: tracing::Subscriber> tracing_subscriber::Layer<S> for Statements {
    fn on_event(&self, e: &tracing::Event<'_>, _: tracing_subscriber::layer::Context<'_, S>) {
        if e.metadata().target() != "sqlx::query" {
            return;
        }
        struct Sql(String);
        impl tracing::field::Visit for Sql {
            fn record_debug(&mut self, f: &tracing::field::Field, v: &dyn std::fmt::Debug) {
                if f.name() == "summary" || f.name() == "db.statement" {
                    use std::fmt::Write;
                    let _ = write!(self.0, "{v:?} ");
                }
            }
        }
        let mut sql = Sql(String::new());
        e.record(&mut sql);
        self.0
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .push(sql.0);
    }
}

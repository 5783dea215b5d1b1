//! drover's own database, `<state>/drover/drover.sqlite`, beside Nix's (whose schema stays
//! exactly Nix's): cached build failures (`--option cache-failures true`) and the build
//! durations that give the TUI its ETAs.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::Duration;

use rusqlite::{Connection, OptionalExtension, params};

use super::StoreError;
use crate::engine::api::BuildHistory;

const SCHEMA: &str = "
create table if not exists FailedPaths (
    path text primary key not null,
    time integer not null
);
create table if not exists BuildDurations (
    id         integer primary key autoincrement not null,
    name       text not null,
    drvPath    text not null,
    durationMs integer not null,
    time       integer not null
);
create index if not exists IndexBuildDurationsName on BuildDurations(name);
";

/// How many recent builds of a name the ETA looks at.
pub const DURATION_HISTORY: usize = 5;

pub struct DroverDb {
    conn: Connection,
    path: PathBuf,
}

impl DroverDb {
    pub fn open(state_dir: &Path) -> Result<DroverDb, StoreError> {
        let path = state_dir.join("drover/drover.sqlite");
        let err = |context: &str, source| StoreError::Sqlite {
            db: path.clone(),
            context: context.to_owned(),
            source,
        };
        let conn = Connection::open(&path).map_err(|e| err("opening", e))?;
        conn.busy_timeout(Duration::from_secs(3600))
            .map_err(|e| err("setting the busy timeout", e))?;
        conn.execute_batch("pragma journal_mode = wal; pragma synchronous = normal;")
            .map_err(|e| err("setting pragmas", e))?;
        conn.execute_batch(SCHEMA)
            .map_err(|e| err("creating the schema", e))?;
        Ok(DroverDb { conn, path })
    }

    fn err(&self, context: &str, source: rusqlite::Error) -> StoreError {
        StoreError::Sqlite {
            db: self.path.clone(),
            context: context.to_owned(),
            source,
        }
    }

    /// Remembers that building `path` (an output or a `.drv`, printed) failed.
    pub fn cache_failure(&self, path: &str, time: i64) -> Result<(), StoreError> {
        self.conn
            .execute(
                "insert or replace into FailedPaths (path, time) values (?, ?)",
                params![path, time],
            )
            .map(drop)
            .map_err(|e| self.err("caching a build failure", e))
    }

    pub fn has_cached_failure(&self, path: &str) -> Result<bool, StoreError> {
        self.conn
            .prepare_cached("select 1 from FailedPaths where path = ?")
            .and_then(|mut s| s.exists([path]))
            .map_err(|e| self.err("querying cached failures", e))
    }

    pub fn clear_failure(&self, path: &str) -> Result<(), StoreError> {
        self.conn
            .execute("delete from FailedPaths where path = ?", [path])
            .map(drop)
            .map_err(|e| self.err("clearing a cached failure", e))
    }

    pub fn record_duration(
        &self,
        name: &str,
        drv_path: &str,
        duration: Duration,
        time: i64,
    ) -> Result<(), StoreError> {
        self.conn
            .execute(
                "insert into BuildDurations (name, drvPath, durationMs, time) values (?, ?, ?, ?)",
                params![name, drv_path, duration.as_millis() as i64, time],
            )
            .map(drop)
            .map_err(|e| self.err("recording a build duration", e))
    }

    /// The median of the last [`DURATION_HISTORY`] build durations of derivations called
    /// `name`, if any were recorded.
    pub fn expected_duration(&self, name: &str) -> Result<Option<Duration>, StoreError> {
        let mut ms: Vec<i64> = self
            .conn
            .prepare_cached(
                "select durationMs from BuildDurations where name = ? order by id desc limit ?",
            )
            .and_then(|mut s| {
                s.query_map(params![name, DURATION_HISTORY as i64], |r| r.get(0))?
                    .collect()
            })
            .map_err(|e| self.err("querying build durations", e))?;
        if ms.is_empty() {
            return Ok(None);
        }
        ms.sort_unstable();
        let n = ms.len();
        let median = if n % 2 == 1 {
            ms[n / 2]
        } else {
            (ms[n / 2 - 1] + ms[n / 2]) / 2
        };
        Ok(Some(Duration::from_millis(median.max(0) as u64)))
    }

    /// The time of a cached failure, if any (for `drover why`).
    pub fn failure_time(&self, path: &str) -> Result<Option<i64>, StoreError> {
        self.conn
            .query_row("select time from FailedPaths where path = ?", [path], |r| {
                r.get(0)
            })
            .optional()
            .map_err(|e| self.err("querying cached failures", e))
    }
}

/// The build-time history for ETAs ([`BuildHistory`]), from `drover.sqlite`: the median of
/// the last [`DURATION_HISTORY`] builds of a name, looked up once per name. A failing query
/// counts as no history.
pub struct DurationHistory {
    db: Mutex<DroverDb>,
    known: Mutex<HashMap<String, Option<u64>>>,
}

impl DurationHistory {
    pub fn new(db: DroverDb) -> DurationHistory {
        DurationHistory {
            db: Mutex::new(db),
            known: Mutex::new(HashMap::new()),
        }
    }
}

impl BuildHistory for DurationHistory {
    fn expected_ms(&self, name: &str) -> Option<u64> {
        let mut known = self.known.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(&ms) = known.get(name) {
            return ms;
        }
        let db = self.db.lock().unwrap_or_else(|e| e.into_inner());
        let ms = db
            .expected_duration(name)
            .ok()
            .flatten()
            .map(|d| d.as_millis() as u64);
        known.insert(name.to_owned(), ms);
        ms
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn failures_and_durations() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(dir.path().join("drover")).unwrap();
        let db = DroverDb::open(dir.path()).unwrap();
        assert!(!db.has_cached_failure("/nix/store/x").unwrap());
        db.cache_failure("/nix/store/x", 5).unwrap();
        assert!(db.has_cached_failure("/nix/store/x").unwrap());
        assert_eq!(db.failure_time("/nix/store/x").unwrap(), Some(5));
        db.clear_failure("/nix/store/x").unwrap();
        assert!(!db.has_cached_failure("/nix/store/x").unwrap());

        assert_eq!(db.expected_duration("gcc").unwrap(), None);
        for ms in [100, 900, 200, 300, 5000, 400] {
            db.record_duration("gcc", "/d", Duration::from_millis(ms), 0)
                .unwrap();
        }
        // Last five: 900, 200, 300, 5000, 400 -> median 400.
        assert_eq!(
            db.expected_duration("gcc").unwrap(),
            Some(Duration::from_millis(400))
        );
        let history = DurationHistory::new(db);
        assert_eq!(history.expected_ms("gcc"), Some(400));
        assert_eq!(history.expected_ms("zlib"), None);
    }
}

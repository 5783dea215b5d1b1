//! The store database, `<state>/db/db.sqlite`: Nix's schema version 10, row for row, so that
//! real Nix can open a store drover filled and the other way round.
//!
//! Paths are stored as full path strings, NAR hashes as `sha256:<base16>`, references in
//! `Refs` by row id, and `.drv` outputs in `DerivationOutputs`. The connection uses Nix's
//! pragmas (foreign keys, WAL, normal sync, a long busy timeout); writes run in `BEGIN
//! IMMEDIATE` transactions and are retried when SQLite still reports the database busy.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::time::Duration;

use rusqlite::{Connection, ErrorCode, OpenFlags, OptionalExtension, Transaction, params};

use crate::engine::format::{ContentAddress, Hash, StoreDir, StorePath};

use super::{PathInfo, StoreError};

/// The schema Nix 2.8 creates (its `schema.sql`, which still has `IndexReferrer`).
const SCHEMA: &str = "
create table if not exists ValidPaths (
    id               integer primary key autoincrement not null,
    path             text unique not null,
    hash             text not null, -- base16 representation
    registrationTime integer not null,
    deriver          text,
    narSize          integer,
    ultimate         integer, -- null implies \"false\"
    sigs             text, -- space-separated
    ca               text -- if not null, an assertion that the path is content-addressed
);

create table if not exists Refs (
    referrer  integer not null,
    reference integer not null,
    primary key (referrer, reference),
    foreign key (referrer) references ValidPaths(id) on delete cascade,
    foreign key (reference) references ValidPaths(id) on delete restrict
);

create index if not exists IndexReferrer on Refs(referrer);
create index if not exists IndexReference on Refs(reference);

-- A self-reference would make deleting the path violate 'on delete restrict'.
create trigger if not exists DeleteSelfRefs before delete on ValidPaths
  begin
    delete from Refs where referrer = old.id and reference = old.id;
  end;

create table if not exists DerivationOutputs (
    drv  integer not null,
    id   text not null, -- symbolic output id, usually \"out\"
    path text not null,
    primary key (drv, id),
    foreign key (drv) references ValidPaths(id) on delete cascade
);

create index if not exists IndexDerivationOutputs on DerivationOutputs(path);
";

/// The schema version Nix writes into `<state>/db/schema`.
pub const SCHEMA_VERSION: u32 = 10;

/// How long SQLite itself waits on a lock before reporting busy (Nix: one hour).
const BUSY_TIMEOUT: Duration = Duration::from_secs(3600);

pub struct Db {
    conn: Connection,
    path: PathBuf,
    store_dir: StoreDir,
}

/// One registration: the path's info and, for a `.drv`, its output name → path map.
pub struct Registration<'a> {
    pub info: &'a PathInfo,
    pub drv_outputs: &'a BTreeMap<String, StorePath>,
}

impl Db {
    /// Opens (creating when `create`) the database at `path`.
    pub fn open(path: &Path, store_dir: StoreDir, create: bool) -> Result<Db, StoreError> {
        let mut flags = OpenFlags::SQLITE_OPEN_READ_WRITE
            | OpenFlags::SQLITE_OPEN_NO_MUTEX
            | OpenFlags::SQLITE_OPEN_URI;
        if create {
            flags |= OpenFlags::SQLITE_OPEN_CREATE;
        }
        let conn = Connection::open_with_flags(path, flags).map_err(|e| StoreError::Sqlite {
            db: path.to_owned(),
            context: "opening the database".into(),
            source: e,
        })?;
        let db = Db {
            conn,
            path: path.to_owned(),
            store_dir,
        };
        db.configure(create)?;
        Ok(db)
    }

    /// Opens another store's database for reading only (nothing is created or changed).
    pub fn open_read_only(path: &Path, store_dir: StoreDir) -> Result<Db, StoreError> {
        let flags = OpenFlags::SQLITE_OPEN_READ_ONLY
            | OpenFlags::SQLITE_OPEN_NO_MUTEX
            | OpenFlags::SQLITE_OPEN_URI;
        let conn = Connection::open_with_flags(path, flags).map_err(|e| StoreError::Sqlite {
            db: path.to_owned(),
            context: "opening the database read-only".into(),
            source: e,
        })?;
        let db = Db {
            conn,
            path: path.to_owned(),
            store_dir,
        };
        db.conn
            .busy_timeout(BUSY_TIMEOUT)
            .map_err(|e| db.err("setting the busy timeout", e))?;
        Ok(db)
    }

    fn configure(&self, create: bool) -> Result<(), StoreError> {
        let c = &self.conn;
        c.busy_timeout(BUSY_TIMEOUT)
            .map_err(|e| self.err("setting the busy timeout", e))?;
        c.execute_batch("pragma foreign_keys = 1; pragma synchronous = normal;")
            .map_err(|e| self.err("setting pragmas", e))?;
        let mode: String = c
            .query_row("pragma main.journal_mode", [], |r| r.get(0))
            .map_err(|e| self.err("querying the journal mode", e))?;
        if !mode.eq_ignore_ascii_case("wal") {
            let _: String = c
                .query_row("pragma main.journal_mode = wal", [], |r| r.get(0))
                .map_err(|e| self.err("setting the journal mode", e))?;
        }
        c.execute_batch("pragma wal_autocheckpoint = 40000;")
            .map_err(|e| self.err("setting the autocheckpoint interval", e))?;
        if create {
            c.execute_batch(SCHEMA)
                .map_err(|e| self.err("creating the schema", e))?;
        }
        Ok(())
    }

    fn err(&self, context: &str, source: rusqlite::Error) -> StoreError {
        StoreError::Sqlite {
            db: self.path.clone(),
            context: context.to_owned(),
            source,
        }
    }

    fn print(&self, p: &StorePath) -> String {
        self.store_dir.display(p)
    }

    fn parse(&self, s: &str) -> Result<StorePath, StoreError> {
        self.store_dir.parse(s).map_err(|e| StoreError::CorruptDb {
            db: self.path.clone(),
            detail: format!("bad path '{s}' in the database: {e}"),
        })
    }

    /// Runs `f`, retrying while SQLite reports the database busy (another process holds the
    /// write lock beyond the busy timeout, or a WAL recovery is in progress).
    fn retry<T>(&self, mut f: impl FnMut() -> rusqlite::Result<T>) -> rusqlite::Result<T> {
        loop {
            match f() {
                Err(rusqlite::Error::SqliteFailure(e, _))
                    if matches!(e.code, ErrorCode::DatabaseBusy | ErrorCode::DatabaseLocked) =>
                {
                    std::thread::sleep(Duration::from_millis(
                        (std::process::id() as u64 * 31 + now_nanos()) % 100,
                    ));
                }
                r => return r,
            }
        }
    }

    pub fn is_valid(&self, path: &StorePath) -> Result<bool, StoreError> {
        let p = self.print(path);
        self.retry(|| {
            self.conn
                .prepare_cached("select 1 from ValidPaths where path = ?")?
                .exists([&p])
        })
        .map_err(|e| self.err("checking validity", e))
    }

    /// The info of a valid path, or `None`.
    pub fn query_path_info(&self, path: &StorePath) -> Result<Option<PathInfo>, StoreError> {
        let p = self.print(path);
        let row = self
            .retry(|| {
                self.conn
                    .prepare_cached(
                        "select id, hash, registrationTime, deriver, narSize, ultimate, sigs, ca \
                         from ValidPaths where path = ?",
                    )?
                    .query_row([&p], |r| {
                        Ok((
                            r.get::<_, i64>(0)?,
                            r.get::<_, String>(1)?,
                            r.get::<_, i64>(2)?,
                            r.get::<_, Option<String>>(3)?,
                            r.get::<_, Option<i64>>(4)?,
                            r.get::<_, Option<i64>>(5)?,
                            r.get::<_, Option<String>>(6)?,
                            r.get::<_, Option<String>>(7)?,
                        ))
                    })
                    .optional()
            })
            .map_err(|e| self.err("querying path info", e))?;
        let Some((id, hash, reg_time, deriver, nar_size, ultimate, sigs, ca)) = row else {
            return Ok(None);
        };
        let corrupt = |detail: String| StoreError::CorruptDb {
            db: self.path.clone(),
            detail: format!("invalid-path entry for '{p}': {detail}"),
        };
        let nar_hash = Hash::parse_prefixed(&hash).map_err(|e| corrupt(e.to_string()))?;
        let deriver = match deriver {
            Some(d) if !d.is_empty() => Some(self.parse(&d)?),
            _ => None,
        };
        let ca = match ca {
            Some(c) if !c.is_empty() => {
                Some(ContentAddress::parse(&c).map_err(|e| corrupt(e.to_string()))?)
            }
            _ => None,
        };
        let references = self.query_references_by_id(id)?;
        Ok(Some(PathInfo {
            path: path.clone(),
            nar_hash,
            nar_size: nar_size.unwrap_or(0).max(0) as u64,
            registration_time: reg_time,
            deriver,
            references,
            ultimate: ultimate == Some(1),
            sigs: sigs
                .map(|s| {
                    s.split(' ')
                        .filter(|x| !x.is_empty())
                        .map(String::from)
                        .collect()
                })
                .unwrap_or_default(),
            ca,
        }))
    }

    fn query_references_by_id(&self, id: i64) -> Result<BTreeSet<StorePath>, StoreError> {
        let paths: Vec<String> = self
            .retry(|| {
                self.conn
                    .prepare_cached(
                        "select path from Refs join ValidPaths on reference = id where referrer = ?",
                    )?
                    .query_map([id], |r| r.get(0))?
                    .collect()
            })
            .map_err(|e| self.err("querying references", e))?;
        paths.iter().map(|s| self.parse(s)).collect()
    }

    fn query_paths(
        &self,
        sql: &str,
        arg: &str,
        what: &str,
    ) -> Result<BTreeSet<StorePath>, StoreError> {
        let paths: Vec<String> = self
            .retry(|| {
                self.conn
                    .prepare_cached(sql)?
                    .query_map([arg], |r| r.get(0))?
                    .collect()
            })
            .map_err(|e| self.err(what, e))?;
        paths.iter().map(|s| self.parse(s)).collect()
    }

    pub fn query_referrers(&self, path: &StorePath) -> Result<BTreeSet<StorePath>, StoreError> {
        self.query_paths(
            "select path from Refs join ValidPaths on referrer = id \
             where reference = (select id from ValidPaths where path = ?)",
            &self.print(path),
            "querying referrers",
        )
    }

    /// The valid derivations that have `path` as an output.
    pub fn query_valid_derivers(
        &self,
        path: &StorePath,
    ) -> Result<BTreeSet<StorePath>, StoreError> {
        self.query_paths(
            "select v.path from DerivationOutputs d join ValidPaths v on d.drv = v.id \
             where d.path = ?",
            &self.print(path),
            "querying valid derivers",
        )
    }

    /// Output name → path of a valid derivation.
    pub fn query_derivation_outputs(
        &self,
        drv: &StorePath,
    ) -> Result<BTreeMap<String, StorePath>, StoreError> {
        let p = self.print(drv);
        let rows: Vec<(String, String)> = self
            .retry(|| {
                self.conn
                    .prepare_cached(
                        "select d.id, d.path from DerivationOutputs d \
                         join ValidPaths v on d.drv = v.id where v.path = ?",
                    )?
                    .query_map([&p], |r| Ok((r.get(0)?, r.get(1)?)))?
                    .collect()
            })
            .map_err(|e| self.err("querying derivation outputs", e))?;
        rows.into_iter()
            .map(|(name, path)| Ok((name, self.parse(&path)?)))
            .collect()
    }

    /// The valid path whose hash part is `hash_part`, if any.
    pub fn query_path_from_hash_part(
        &self,
        hash_part: &str,
    ) -> Result<Option<StorePath>, StoreError> {
        let prefix = format!("{}/{hash_part}", self.store_dir.as_str());
        let found: Option<String> = self
            .retry(|| {
                self.conn
                    .prepare_cached("select path from ValidPaths where path >= ? limit 1")?
                    .query_row([&prefix], |r| r.get(0))
                    .optional()
            })
            .map_err(|e| self.err("querying a path by hash part", e))?;
        match found {
            Some(s) if s.starts_with(&prefix) => Ok(Some(self.parse(&s)?)),
            _ => Ok(None),
        }
    }

    /// The closure of valid paths `start` over references (or referrers when `flip`), in one
    /// recursive query. Start paths that are not valid contribute nothing.
    pub fn closure(
        &self,
        start: &BTreeSet<StorePath>,
        flip: bool,
    ) -> Result<BTreeSet<StorePath>, StoreError> {
        let starts =
            serde_json::to_string(&start.iter().map(|p| self.print(p)).collect::<Vec<_>>())
                .expect("a list of strings serialises");
        let sql = if flip {
            "with recursive closure(id) as (\
               select id from ValidPaths where path in (select value from json_each(?1)) \
               union select r.referrer from Refs r join closure c on r.reference = c.id) \
             select v.path from ValidPaths v join closure c on v.id = c.id"
        } else {
            "with recursive closure(id) as (\
               select id from ValidPaths where path in (select value from json_each(?1)) \
               union select r.reference from Refs r join closure c on r.referrer = c.id) \
             select v.path from ValidPaths v join closure c on v.id = c.id"
        };
        let paths: Vec<String> = self
            .retry(|| {
                self.conn
                    .prepare_cached(sql)?
                    .query_map([&starts], |r| r.get(0))?
                    .collect()
            })
            .map_err(|e| self.err("computing a closure", e))?;
        paths.iter().map(|s| self.parse(s)).collect()
    }

    pub fn query_all_valid_paths(&self) -> Result<BTreeSet<StorePath>, StoreError> {
        let paths: Vec<String> = self
            .retry(|| {
                self.conn
                    .prepare_cached("select path from ValidPaths")?
                    .query_map([], |r| r.get(0))?
                    .collect()
            })
            .map_err(|e| self.err("listing valid paths", e))?;
        paths.iter().map(|s| self.parse(s)).collect()
    }

    /// Registers (or updates) a set of paths, their references and `.drv` outputs in one
    /// transaction. References must be valid or in the set (in any order); a reference to
    /// anything else rolls the whole set back.
    pub fn register(
        &mut self,
        regs: &[Registration<'_>],
        registration_time: i64,
    ) -> Result<(), StoreError> {
        let store_dir = self.store_dir.clone();
        let path = self.path.clone();
        let mut outcome = Ok(());
        let result = {
            let conn = &mut self.conn;
            retry_txn(conn, |tx| {
                outcome = Ok(());
                for r in regs {
                    upsert_path(tx, &store_dir, r.info, registration_time)?;
                }
                for r in regs {
                    let referrer = path_id(tx, &store_dir.display(&r.info.path))?
                        .expect("inserted just above");
                    for reference in &r.info.references {
                        let printed = store_dir.display(reference);
                        let Some(id) = path_id(tx, &printed)? else {
                            outcome = Err(StoreError::InvalidReference {
                                path: store_dir.display(&r.info.path),
                                reference: printed,
                            });
                            return Ok(false);
                        };
                        tx.prepare_cached(
                            "insert or replace into Refs (referrer, reference) values (?, ?)",
                        )?
                        .execute([referrer, id])?;
                    }
                    for (name, out) in r.drv_outputs {
                        tx.prepare_cached(
                            "insert or replace into DerivationOutputs (drv, id, path) \
                             values (?, ?, ?)",
                        )?
                        .execute(params![
                            referrer,
                            name,
                            store_dir.display(out)
                        ])?;
                    }
                }
                Ok(true)
            })
        };
        result.map_err(|e| StoreError::Sqlite {
            db: path,
            context: "registering valid paths".into(),
            source: e,
        })?;
        outcome
    }

    /// Removes a path's registration; fails if other valid paths refer to it.
    pub fn invalidate(&mut self, path: &StorePath) -> Result<(), StoreError> {
        let p = self.print(path);
        let db = self.path.clone();
        let store_dir = self.store_dir.clone();
        let mut outcome = Ok(());
        retry_txn(&mut self.conn, |tx| {
            outcome = Ok(());
            let referrers: Vec<String> = tx
                .prepare_cached(
                    "select v.path from Refs r join ValidPaths v on r.referrer = v.id \
                     where r.reference = (select id from ValidPaths where path = ?) \
                     and v.path != ?",
                )?
                .query_map([&p, &p], |r| r.get(0))?
                .collect::<Result<_, _>>()?;
            if !referrers.is_empty() {
                outcome = Err(StoreError::PathInUse {
                    path: p.clone(),
                    referrers,
                });
                return Ok(false);
            }
            tx.prepare_cached("delete from ValidPaths where path = ?")?
                .execute([&p])?;
            Ok(true)
        })
        .map_err(|e| StoreError::Sqlite {
            db,
            context: format!("invalidating {}", store_dir.display(path)),
            source: e,
        })?;
        outcome
    }

    /// Updates the hash, size, signatures, `ultimate` and CA of a registered path.
    pub fn update_path_info(&mut self, info: &PathInfo) -> Result<(), StoreError> {
        let p = self.print(&info.path);
        let (hash, ultimate, sigs, ca) = row_fields(info);
        let nar_size = nonzero(info.nar_size);
        self.retry(|| {
            self.conn
                .prepare_cached(
                    "update ValidPaths set narSize = ?, hash = ?, ultimate = ?, sigs = ?, ca = ? \
                     where path = ?",
                )?
                .execute(params![nar_size, hash, ultimate, sigs, ca, p])
        })
        .map_err(|e| self.err("updating path info", e))?;
        Ok(())
    }
}

/// Runs `body` in a `BEGIN IMMEDIATE` transaction, committing when it returns `true` and
/// rolling back when it returns `false`; busy errors restart the whole transaction.
fn retry_txn(
    conn: &mut Connection,
    mut body: impl FnMut(&Transaction<'_>) -> rusqlite::Result<bool>,
) -> rusqlite::Result<()> {
    loop {
        let attempt = (|| {
            let tx = conn.transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?;
            if body(&tx)? {
                tx.commit()
            } else {
                tx.rollback()
            }
        })();
        match attempt {
            Err(rusqlite::Error::SqliteFailure(e, _))
                if matches!(e.code, ErrorCode::DatabaseBusy | ErrorCode::DatabaseLocked) =>
            {
                std::thread::sleep(Duration::from_millis(now_nanos() % 100));
            }
            r => return r,
        }
    }
}

fn now_nanos() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.subsec_nanos() as u64)
        .unwrap_or(0)
}

fn path_id(tx: &Transaction<'_>, path: &str) -> rusqlite::Result<Option<i64>> {
    tx.prepare_cached("select id from ValidPaths where path = ?")?
        .query_row([path], |r| r.get(0))
        .optional()
}

fn nonzero(n: u64) -> Option<i64> {
    (n != 0).then_some(n as i64)
}

type RowFields = (String, Option<i64>, Option<String>, Option<String>);

fn row_fields(info: &PathInfo) -> RowFields {
    let sigs = info.sigs.iter().cloned().collect::<Vec<_>>().join(" ");
    (
        info.nar_hash.to_base16_prefixed(),
        info.ultimate.then_some(1),
        (!sigs.is_empty()).then_some(sigs),
        info.ca.map(|c| c.to_string()),
    )
}

/// Inserts a path or, if already registered, updates its info (as Nix does).
fn upsert_path(
    tx: &Transaction<'_>,
    store_dir: &StoreDir,
    info: &PathInfo,
    now: i64,
) -> rusqlite::Result<()> {
    let p = store_dir.display(&info.path);
    let (hash, ultimate, sigs, ca) = row_fields(info);
    let nar_size = nonzero(info.nar_size);
    if path_id(tx, &p)?.is_some() {
        tx.prepare_cached(
            "update ValidPaths set narSize = ?, hash = ?, ultimate = ?, sigs = ?, ca = ? \
             where path = ?",
        )?
        .execute(params![nar_size, hash, ultimate, sigs, ca, p])?;
    } else {
        let reg_time = if info.registration_time == 0 {
            now
        } else {
            info.registration_time
        };
        tx.prepare_cached(
            "insert into ValidPaths (path, hash, registrationTime, deriver, narSize, ultimate, \
             sigs, ca) values (?, ?, ?, ?, ?, ?, ?, ?)",
        )?
        .execute(params![
            p,
            hash,
            reg_time,
            info.deriver.as_ref().map(|d| store_dir.display(d)),
            nar_size,
            ultimate,
            sigs,
            ca
        ])?;
    }
    Ok(())
}

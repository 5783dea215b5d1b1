//! The TUI's log pane for finished goals, read back from the store's log directory (Nix's
//! layout, `<log dir>/drvs/xx/rest.bz2`) rather than kept in memory: what a real build hands
//! the TUI as its [`LogSource`].

use std::path::PathBuf;

use crate::app::tui::LogSource;
use crate::engine::api::GoalId;
use crate::engine::format::StoreDir;
use crate::engine::store::logs::read_log;

/// Build logs of a store.
#[derive(Debug, Clone)]
pub struct StoreLogs {
    pub store_dir: StoreDir,
    pub log_dir: PathBuf,
}

impl LogSource for StoreLogs {
    fn read(&self, _goal: GoalId, path: &str) -> Result<Vec<String>, String> {
        let drv = self.store_dir.parse(path).map_err(|e| e.to_string())?;
        if !path.ends_with(".drv") {
            return Err("a substitution keeps no build log".into());
        }
        match read_log(&self.log_dir, &drv).map_err(|e| e.to_string())? {
            Some(bytes) => Ok(String::from_utf8_lossy(&bytes)
                .lines()
                .map(str::to_owned)
                .collect()),
            None => Err(format!("no build log of {path}")),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::engine::format::StorePath;
    use crate::engine::store::logs::LogWriter;

    #[test]
    fn finished_goals_logs_come_from_the_log_directory() {
        let dir = tempfile::tempdir().unwrap();
        let logs = StoreLogs {
            store_dir: StoreDir::new("/nix/store").unwrap(),
            log_dir: dir.path().to_owned(),
        };
        let base = "2wwy2s3l015vj82n0xvikz1xnxcfaaka-hello.drv";
        let drv = StorePath::from_base_name(base).unwrap();
        let path = format!("/nix/store/{base}");
        assert!(
            logs.read(GoalId(0), &path)
                .unwrap_err()
                .contains("no build log")
        );
        let mut w = LogWriter::create(dir.path(), &drv).unwrap();
        w.write(b"unpacking\nbuilding \xff\n").unwrap();
        w.finish().unwrap();
        assert_eq!(
            logs.read(GoalId(0), &path).unwrap(),
            vec!["unpacking", "building \u{fffd}"]
        );
        assert!(logs.read(GoalId(0), "/elsewhere/x.drv").is_err());
    }
}

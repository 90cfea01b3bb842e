//! Where configuration values come from: `.env`, `.env.local`, `.env.<profile>`,
//! `.env.<profile>.local` (later files win), then the process environment, which wins over
//! every file. Only `POBLYSH_*` names are kept; an empty value counts as unset.

use std::collections::BTreeMap;
use std::path::Path;

use super::ConfigError;

const PREFIX: &str = "POBLYSH_";

/// The merged `POBLYSH_*` values.
#[derive(Clone, Debug, Default)]
pub struct Source {
    values: BTreeMap<String, String>,
}

impl Source {
    /// Values given directly, e.g. by tests.
    pub fn from_pairs<K: Into<String>, V: Into<String>>(
        pairs: impl IntoIterator<Item = (K, V)>,
    ) -> Self {
        let mut source = Source::default();
        for (k, v) in pairs {
            source.set(k.into(), v.into());
        }
        source
    }

    /// Reads the dotenv files in `dir` for the profile the environment (or the files) name,
    /// then the process environment.
    pub fn load(dir: &Path) -> Result<Self, ConfigError> {
        let env = Source::from_pairs(std::env::vars());
        let mut base = Source::default();
        base.merge_file(&dir.join(".env"))?;
        base.merge_file(&dir.join(".env.local"))?;
        let profile = env
            .get("POBLYSH_PROFILE")
            .or_else(|| base.get("POBLYSH_PROFILE"))
            .unwrap_or("local")
            .to_string();
        // A profile name goes into a file name: refuse anything but a plain word.
        if !profile
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
        {
            return Err(ConfigError::new(
                "POBLYSH_PROFILE",
                "must be one of: local, test, prod",
            ));
        }
        base.merge_file(&dir.join(format!(".env.{profile}")))?;
        base.merge_file(&dir.join(format!(".env.{profile}.local")))?;
        base.values.extend(env.values);
        Ok(base)
    }

    fn merge_file(&mut self, path: &Path) -> Result<(), ConfigError> {
        if !path.is_file() {
            return Ok(());
        }
        let name = path.display().to_string();
        let iter = dotenvy::from_path_iter(path)
            .map_err(|e| ConfigError::new(&name, format!("cannot be read: {e}")))?;
        for item in iter {
            let (key, value) =
                item.map_err(|e| ConfigError::new(&name, format!("is malformed: {e}")))?;
            self.set(key, value);
        }
        Ok(())
    }

    fn set(&mut self, key: String, value: String) {
        if !key.starts_with(PREFIX) {
            return;
        }
        if value.trim().is_empty() {
            self.values.remove(&key);
        } else {
            self.values.insert(key, value);
        }
    }

    /// The value of `name`, if set and non-empty.
    pub fn get(&self, name: &str) -> Option<&str> {
        self.values.get(name).map(String::as_str)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn later_files_win_and_profile_files_apply() {
        let dir = tempfile::tempdir().expect("tempdir");
        std::fs::write(
            dir.path().join(".env"),
            "POBLYSH_LOG_LEVEL=info\nPOBLYSH_PROFILE=test\nOTHER=x\n",
        )
        .expect("write");
        std::fs::write(dir.path().join(".env.local"), "POBLYSH_LOG_LEVEL=debug\n").expect("write");
        std::fs::write(
            dir.path().join(".env.test"),
            "POBLYSH_DB_MAX_CONNECTIONS=3\nPOBLYSH_LOG_FORMAT=json\n",
        )
        .expect("write");
        std::fs::write(dir.path().join(".env.test.local"), "POBLYSH_LOG_FORMAT=\n").expect("write");
        let mut source = Source::default();
        source.merge_file(&dir.path().join(".env")).expect("read");
        source
            .merge_file(&dir.path().join(".env.local"))
            .expect("read");
        source
            .merge_file(&dir.path().join(".env.test"))
            .expect("read");
        source
            .merge_file(&dir.path().join(".env.test.local"))
            .expect("read");
        assert_eq!(source.get("POBLYSH_LOG_LEVEL"), Some("debug"));
        assert_eq!(source.get("POBLYSH_DB_MAX_CONNECTIONS"), Some("3"));
        assert_eq!(source.get("POBLYSH_LOG_FORMAT"), None, "empty value unsets");
        assert_eq!(source.get("OTHER"), None, "only POBLYSH_ names are kept");
    }
}

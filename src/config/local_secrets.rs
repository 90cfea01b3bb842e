//! Operator tokens and the crypto key: taken from the environment, or, in the `local`
//! profile, generated once into the data directory (mode 0600; the directory, when created
//! here, 0700) and reused on later starts.

use std::io::Write;
use std::path::{Path, PathBuf};

use super::{ConfigError, Profile, Source, TokenSource};
use crate::crypto::{random_token, CryptoKey, Secret};

const TOKEN_FILE: &str = "operator_token";
const KEY_FILE: &str = "crypto_key";
const MIN_TOKEN_LEN: usize = 16;

/// Something start-up did for the operator, to be logged once telemetry is up.
#[derive(Clone, Debug)]
pub enum StartupNote {
    /// A new operator token was written to `path`; shown once so the developer can use it.
    OperatorTokenGenerated { path: PathBuf, token: Secret },
    /// The operator token was read from `path`, written by an earlier start.
    OperatorTokenReused { path: PathBuf },
    /// A new crypto key was written to `path`.
    CryptoKeyGenerated { path: PathBuf },
    /// The crypto key was read from `path`.
    CryptoKeyReused { path: PathBuf },
    /// Test profile: secrets live in memory only.
    EphemeralSecrets,
}

pub(super) fn operator_tokens(
    source: &Source,
    profile: Profile,
    data_dir: &Path,
    notes: &mut Vec<StartupNote>,
) -> Result<(Vec<Secret>, TokenSource), ConfigError> {
    let given = match (
        source.get("POBLYSH_OPERATOR_TOKENS"),
        source.get("POBLYSH_OPERATOR_TOKEN"),
    ) {
        (Some(list), _) => Some(("POBLYSH_OPERATOR_TOKENS", list, TokenSource::List)),
        (None, Some(one)) => Some(("POBLYSH_OPERATOR_TOKEN", one, TokenSource::Single)),
        (None, None) => None,
    };
    if let Some((name, text, kind)) = given {
        let tokens: Vec<Secret> = text
            .split(',')
            .map(str::trim)
            .filter(|t| !t.is_empty())
            .map(Secret::new)
            .collect();
        if tokens.is_empty() {
            return Err(ConfigError::new(name, "must list at least one token"));
        }
        if tokens.iter().any(|t| t.expose().len() < MIN_TOKEN_LEN) {
            return Err(ConfigError::new(
                name,
                format!("each token must be at least {MIN_TOKEN_LEN} characters"),
            ));
        }
        return Ok((tokens, kind));
    }
    match profile {
        Profile::Prod => Err(ConfigError::new(
            "POBLYSH_OPERATOR_TOKENS",
            "is required in the prod profile (or POBLYSH_OPERATOR_TOKEN)",
        )),
        Profile::Test => {
            notes.push(StartupNote::EphemeralSecrets);
            Ok((vec![random_token()], TokenSource::Generated))
        }
        Profile::Local => {
            let path = data_dir.join(TOKEN_FILE);
            let token = match read_secret_file(&path, "POBLYSH_OPERATOR_TOKEN")? {
                Some(token) => {
                    notes.push(StartupNote::OperatorTokenReused { path });
                    token
                }
                None => {
                    let token = random_token();
                    write_secret_file(&path, token.expose(), "POBLYSH_OPERATOR_TOKEN")?;
                    notes.push(StartupNote::OperatorTokenGenerated {
                        path,
                        token: token.clone(),
                    });
                    token
                }
            };
            Ok((vec![token], TokenSource::Generated))
        }
    }
}

pub(super) fn crypto_key(
    source: &Source,
    profile: Profile,
    data_dir: &Path,
    notes: &mut Vec<StartupNote>,
) -> Result<CryptoKey, ConfigError> {
    if let Some(text) = source.get("POBLYSH_CRYPTO_KEY") {
        return CryptoKey::from_base64(text).map_err(|p| ConfigError::new("POBLYSH_CRYPTO_KEY", p));
    }
    match profile {
        Profile::Prod => Err(ConfigError::new(
            "POBLYSH_CRYPTO_KEY",
            "is required in the prod profile (generate one with `connectors keys generate`)",
        )),
        Profile::Test => Ok(CryptoKey::generate()),
        Profile::Local => {
            let path = data_dir.join(KEY_FILE);
            match read_secret_file(&path, "POBLYSH_CRYPTO_KEY")? {
                Some(text) => {
                    let key = CryptoKey::from_base64(text.expose()).map_err(|p| {
                        ConfigError::new("POBLYSH_CRYPTO_KEY", format!("{} {p}", path.display()))
                    })?;
                    notes.push(StartupNote::CryptoKeyReused { path });
                    Ok(key)
                }
                None => {
                    let key = CryptoKey::generate();
                    write_secret_file(&path, &key.to_base64(), "POBLYSH_CRYPTO_KEY")?;
                    notes.push(StartupNote::CryptoKeyGenerated { path });
                    Ok(key)
                }
            }
        }
    }
}

fn read_secret_file(path: &Path, variable: &str) -> Result<Option<Secret>, ConfigError> {
    match std::fs::read_to_string(path) {
        Ok(text) if !text.trim().is_empty() => Ok(Some(Secret::new(text.trim()))),
        Ok(_) => Ok(None),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(ConfigError::new(
            variable,
            format!("is unset and {} cannot be read: {e}", path.display()),
        )),
    }
}

fn write_secret_file(path: &Path, value: &str, variable: &str) -> Result<(), ConfigError> {
    let fail = |e: std::io::Error| {
        ConfigError::new(
            variable,
            format!("is unset and {} cannot be written: {e}", path.display()),
        )
    };
    if let Some(dir) = path.parent() {
        create_private_dir(dir).map_err(fail)?;
    }
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        options.mode(0o600);
    }
    let mut file = options.open(path).map_err(fail)?;
    file.write_all(value.as_bytes()).map_err(fail)?;
    file.write_all(b"\n").map_err(fail)?;
    file.sync_all().map_err(fail)
}

/// Creates `dir` and any missing parents with mode 0700 on Unix: the data directory holds
/// secrets and the database, and no other user needs to list it. An existing directory is
/// left as it is (it may be shared, e.g. `.`); the files in it are 0600 regardless.
fn create_private_dir(dir: &Path) -> std::io::Result<()> {
    if dir.as_os_str().is_empty() {
        return Ok(());
    }
    let mut builder = std::fs::DirBuilder::new();
    builder.recursive(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::DirBuilderExt;
        builder.mode(0o700);
    }
    builder.create(dir)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[cfg(unix)]
    #[test]
    fn a_new_data_directory_is_private() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().expect("tempdir");
        let data = dir.path().join("data").join("nested");
        operator_tokens(&Source::default(), Profile::Local, &data, &mut Vec::new())
            .expect("generated");
        for path in [dir.path().join("data"), data.clone()] {
            let mode = std::fs::metadata(&path)
                .expect("exists")
                .permissions()
                .mode();
            assert_eq!(mode & 0o777, 0o700, "{}", path.display());
        }
        let token = std::fs::metadata(data.join(TOKEN_FILE)).expect("exists");
        assert_eq!(token.permissions().mode() & 0o777, 0o600);
    }

    #[test]
    fn local_secrets_are_generated_once_with_private_permissions_and_reused() {
        let dir = tempfile::tempdir().expect("tempdir");
        let source = Source::default();
        let mut notes = Vec::new();
        let (first, _) =
            operator_tokens(&source, Profile::Local, dir.path(), &mut notes).expect("generated");
        let key = crypto_key(&source, Profile::Local, dir.path(), &mut notes).expect("generated");
        assert!(matches!(
            notes[0],
            StartupNote::OperatorTokenGenerated { .. }
        ));
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            for file in [TOKEN_FILE, KEY_FILE] {
                let mode = std::fs::metadata(dir.path().join(file))
                    .expect("exists")
                    .permissions()
                    .mode();
                assert_eq!(mode & 0o777, 0o600, "{file}");
            }
        }
        let mut again = Vec::new();
        let (second, _) =
            operator_tokens(&source, Profile::Local, dir.path(), &mut again).expect("reused");
        let key_again =
            crypto_key(&source, Profile::Local, dir.path(), &mut again).expect("reused");
        assert_eq!(first, second);
        assert_eq!(key.key_id(), key_again.key_id());
        assert!(matches!(again[0], StartupNote::OperatorTokenReused { .. }));
    }
}

//! The four layers a setting's value may come from — flags, environment variables, the TOML file,
//! the default — first one that has it wins, with the name to blame for it in the spelling of its
//! layer. A secret may come from the file its `NAME_FILE` names, in any layer; giving both `NAME`
//! and `NAME_FILE` in one layer is an error naming both.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use super::error::ConfigError;
use super::file::{ConfigFile, file_value};
use super::parse::parse_bool;
use super::settings::{self, GUARDED_PREFIXES, Setting, flag_of};
use super::units::{parse_duration, parse_size};
use crate::cli::ServeArgs;

/// Largest secret file read.
const MAX_SECRET_FILE: u64 = 1 << 20;

/// Where settings come from. `env` is the process environment as a map (tests pass their own).
#[derive(Clone, Copy)]
pub struct Sources<'a> {
    pub flags: &'a ServeArgs,
    pub env: &'a HashMap<String, String>,
}

/// Prints the environment's variable names only: values may hold passwords.
impl std::fmt::Debug for Sources<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let mut names: Vec<&String> = self.env.keys().collect();
        names.sort();
        f.debug_struct("Sources")
            .field("flags", self.flags)
            .field("env_names", &names)
            .finish()
    }
}

/// A value found for a setting: text (flags, environment, file strings) or the file's array.
pub(super) enum Raw {
    Text(String),
    List(Vec<String>),
}

pub(super) struct Layers<'a> {
    pub(super) flags: &'a ServeArgs,
    pub(super) env: &'a HashMap<String, String>,
    pub(super) file: Option<&'a ConfigFile>,
}

impl Layers<'_> {
    /// The first layer's value for `setting`, and the name of the setting it came from; `None` if
    /// no layer gives it (the default is not consulted).
    pub(super) fn given(&self, setting: &Setting) -> Result<Option<(String, Raw)>, ConfigError> {
        let env_name = setting.name;
        let file_name = setting.file_variant();
        let file_name = file_name.as_deref();

        let plain = self
            .flags
            .get(env_name)
            .map(|value| (flag_of(env_name), Raw::Text(value.to_owned())));
        let from_file =
            file_name.and_then(|name| Some((flag_of(name), self.flags.get(name)?.to_owned())));
        if let Some(found) = secret_or_plain(plain, from_file)? {
            return Ok(Some(found));
        }

        let plain = self
            .env
            .get(env_name)
            .map(|value| (env_name.to_owned(), Raw::Text(value.clone())));
        let from_file =
            file_name.and_then(|name| Some((name.to_owned(), self.env.get(name)?.clone())));
        if let Some(found) = secret_or_plain(plain, from_file)? {
            return Ok(Some(found));
        }

        let Some(file) = self.file.filter(|_| setting.in_file) else {
            return Ok(None);
        };
        let key = setting.file_key();
        let plain = match file.table.get(&key) {
            None => None,
            Some(value) => {
                let blame = file.setting(&key);
                let raw = file_value(&blame, setting.kind, value)?;
                Some((blame, raw))
            }
        };
        let file_key = file_name.map(str::to_ascii_lowercase);
        let from_file = match file_key.and_then(|k| Some((file.table.get(&k)?, k))) {
            None => None,
            Some((value, key)) => {
                let blame = file.setting(&key);
                match file_value(&blame, settings::Kind::Text, value)? {
                    Raw::Text(path) => Some((blame, path)),
                    Raw::List(_) => {
                        return Err(ConfigError::FileType {
                            setting: blame,
                            expected: "a string",
                        });
                    }
                }
            }
        };
        secret_or_plain(plain, from_file)
    }

    /// The value given for `setting`, else its default (blamed on the environment variable).
    pub(super) fn value(&self, setting: &Setting) -> Result<Option<(String, Raw)>, ConfigError> {
        Ok(self.given(setting)?.or_else(|| {
            setting
                .default
                .map(|d| (setting.name.to_owned(), Raw::Text(d.to_owned())))
        }))
    }

    pub(super) fn text(&self, setting: &Setting) -> Result<Option<(String, String)>, ConfigError> {
        match self.value(setting)? {
            None => Ok(None),
            Some((blame, Raw::Text(value))) => Ok(Some((blame, value))),
            Some((blame, Raw::List(_))) => Err(ConfigError::FileType {
                setting: blame,
                expected: "a string",
            }),
        }
    }

    /// Space-separated words, or the file's array items.
    pub(super) fn list(
        &self,
        setting: &Setting,
    ) -> Result<Option<(String, Vec<String>)>, ConfigError> {
        Ok(self.value(setting)?.map(|(blame, raw)| {
            let items = match raw {
                Raw::Text(s) => s.split_whitespace().map(str::to_owned).collect(),
                Raw::List(items) => items
                    .into_iter()
                    .map(|i| i.trim().to_owned())
                    .filter(|i| !i.is_empty())
                    .collect(),
            };
            (blame, items)
        }))
    }

    /// A boolean setting (it has a default).
    pub(super) fn bool(&self, setting: &Setting) -> Result<bool, ConfigError> {
        match self.text(setting)? {
            None => Ok(false),
            Some((blame, value)) => parse_bool(&blame, &value),
        }
    }

    /// A size setting (it has a default); zero only where `zero_ok`.
    pub(super) fn size(&self, setting: &Setting, zero_ok: bool) -> Result<u64, ConfigError> {
        let (blame, value) = self.required(setting)?;
        let size = parse_size(&value).map_err(|source| ConfigError::Unit {
            setting: blame.clone(),
            source,
        })?;
        if size == 0 && !zero_ok {
            return Err(ConfigError::Zero {
                setting: blame,
                value,
            });
        }
        Ok(size)
    }

    /// A whole number greater than zero (it has a default).
    pub(super) fn count(&self, setting: &Setting) -> Result<usize, ConfigError> {
        let (blame, value) = self.required(setting)?;
        let trimmed = value.trim();
        if trimmed.is_empty() || !trimmed.bytes().all(|b| b.is_ascii_digit()) {
            return Err(ConfigError::Count {
                setting: blame,
                value,
            });
        }
        match trimmed.parse::<usize>() {
            Ok(0) => Err(ConfigError::Zero {
                setting: blame,
                value,
            }),
            Ok(n) => Ok(n),
            Err(_) => Err(ConfigError::Count {
                setting: blame,
                value,
            }),
        }
    }

    /// A duration setting (it has a default).
    pub(super) fn duration(&self, setting: &Setting) -> Result<Duration, ConfigError> {
        let (blame, value) = self.required(setting)?;
        parse_duration(&value).map_err(|source| ConfigError::Unit {
            setting: blame,
            source,
        })
    }

    /// A path that has a default: an empty value is an error.
    pub(super) fn path(&self, setting: &Setting) -> Result<PathBuf, ConfigError> {
        let (blame, value) = self.required(setting)?;
        if value.trim().is_empty() {
            return Err(ConfigError::Empty { setting: blame });
        }
        Ok(PathBuf::from(value))
    }

    /// An optional path: an empty value means none (so a flag can clear an environment variable).
    pub(super) fn optional_path(
        &self,
        setting: &Setting,
    ) -> Result<Option<(String, PathBuf)>, ConfigError> {
        Ok(self
            .text(setting)?
            .filter(|(_, value)| !value.trim().is_empty())
            .map(|(s, v)| (s, PathBuf::from(v))))
    }

    /// A delimiter; empty means the default, as in the seed's `${VAR:-default}`.
    pub(super) fn delimiter(&self, setting: &Setting) -> Result<String, ConfigError> {
        let given = self
            .text(setting)?
            .map(|(_, v)| v)
            .filter(|v| !v.is_empty());
        Ok(given
            .or_else(|| setting.default.map(str::to_owned))
            .unwrap_or_default())
    }

    /// The text of a setting that has a default. A setting declared without one is an empty value.
    fn required(&self, setting: &Setting) -> Result<(String, String), ConfigError> {
        self.text(setting)?.ok_or_else(|| ConfigError::Empty {
            setting: setting.name.to_owned(),
        })
    }
}

/// One layer's value for a secret: given directly (`plain`), or as a file (`from_file`: the
/// setting that named it and the path; an empty path counts as not given).
fn secret_or_plain(
    plain: Option<(String, Raw)>,
    from_file: Option<(String, String)>,
) -> Result<Option<(String, Raw)>, ConfigError> {
    let from_file = from_file.filter(|(_, path)| !path.trim().is_empty());
    match (plain, from_file) {
        (Some((setting, _)), Some((file_setting, _))) => Err(ConfigError::SecretTwice {
            setting,
            file_setting,
        }),
        (Some(found), None) => Ok(Some(found)),
        (None, Some((setting, path))) => {
            let path = PathBuf::from(path);
            let text = read_secret_file(&setting, &path)?;
            Ok(Some((
                format!("{setting} ({})", path.display()),
                Raw::Text(text),
            )))
        }
        (None, None) => Ok(None),
    }
}

/// A secret's file: at most 1 MiB of UTF-8, its final line breaks dropped. An error names the
/// setting and the path, never anything read.
pub(super) fn read_secret_file(setting: &str, path: &Path) -> Result<String, ConfigError> {
    use std::io::Read as _;
    let unreadable = |source| ConfigError::Unreadable {
        setting: setting.to_owned(),
        path: path.to_owned(),
        source,
    };
    let file = std::fs::File::open(path).map_err(unreadable)?;
    let mut bytes = Vec::new();
    file.take(MAX_SECRET_FILE + 1)
        .read_to_end(&mut bytes)
        .map_err(unreadable)?;
    if bytes.len() as u64 > MAX_SECRET_FILE {
        return Err(unreadable(std::io::Error::other("larger than 1 MiB")));
    }
    let text = String::from_utf8(bytes).map_err(|_| {
        unreadable(std::io::Error::new(
            std::io::ErrorKind::InvalidData,
            "not UTF-8",
        ))
    })?;
    Ok(text.trim_end_matches(['\n', '\r']).to_owned())
}

/// The typo guard: a variable with one of [`GUARDED_PREFIXES`] must be a known setting.
pub(super) fn check_env_names(env: &HashMap<String, String>) -> Result<(), ConfigError> {
    let mut unknown: Vec<&String> = env
        .keys()
        .filter(|name| {
            GUARDED_PREFIXES.iter().any(|p| name.starts_with(p))
                && !settings::is_known(name)
                && !is_kubernetes_service_link(name)
        })
        .collect();
    unknown.sort();
    match unknown.first() {
        Some(name) => Err(ConfigError::UnknownEnv {
            name: (*name).clone(),
        }),
        None => Ok(()),
    }
}

/// Kubernetes puts `<SERVICE>_SERVICE_HOST`, `<SERVICE>_PORT`, `<SERVICE>_PORT_3128_TCP_ADDR`, …
/// into every pod's environment: a Service named `cache` or `tls-frontend` must not stop start-up.
fn is_kubernetes_service_link(name: &str) -> bool {
    let parts: Vec<&str> = name.split('_').collect();
    name.ends_with("_SERVICE_HOST")
        || name.contains("_SERVICE_PORT")
        || name.ends_with("_PORT")
        || parts.windows(3).any(|w| {
            w[0] == "PORT"
                && !w[1].is_empty()
                && w[1].bytes().all(|b| b.is_ascii_digit())
                && matches!(w[2], "TCP" | "UDP" | "SCTP")
        })
}

//! The `--config` TOML file: parsed once, its keys checked against the known settings, its values
//! turned into the text form flags and environment variables use, its per-registry overrides
//! (`[registry."host"]`) and the TOML-only access rules (`[groups]`, `[[access]]`).

use std::collections::BTreeMap;
use std::path::PathBuf;

use super::error::ConfigError;
use super::layers::{Raw, Sources};
use super::parse::parse_auth_mode;
use super::settings::{self, Kind};
use super::tags::TagSettings;
use super::{AuthMode, ManifestCache};
use crate::access::rules::AccessRule;
use crate::registry::host::RegistryHost;

/// The file's table of per-registry settings.
const REGISTRY_KEY: &str = "registry";
/// The file's `[groups]` table (TOML only).
const GROUPS_KEY: &str = "groups";
/// The file's `[[access]]` entries (TOML only).
const ACCESS_KEY: &str = "access";

/// Converts a file value to the textual form flags and environment variables use.
pub(super) fn file_value(
    setting: &str,
    kind: Kind,
    value: &toml::Value,
) -> Result<Raw, ConfigError> {
    let wrong = |expected| {
        Err(ConfigError::FileType {
            setting: setting.to_owned(),
            expected,
        })
    };
    match (kind, value) {
        (_, toml::Value::String(s)) => Ok(Raw::Text(s.clone())),
        (Kind::Bool, toml::Value::Boolean(b)) => Ok(Raw::Text(b.to_string())),
        (Kind::Size | Kind::Duration | Kind::Count, toml::Value::Integer(n)) => {
            Ok(Raw::Text(n.to_string()))
        }
        (Kind::List, toml::Value::Array(items)) => {
            let items: Option<Vec<String>> = items
                .iter()
                .map(|i| i.as_str().map(str::to_owned))
                .collect();
            match items {
                Some(items) => Ok(Raw::List(items)),
                None => wrong("a string or an array of strings"),
            }
        }
        (Kind::Text, _) => wrong("a string"),
        (Kind::Bool, _) => wrong("a boolean or a string"),
        (Kind::Size, _) => wrong("a size: an integer (bytes) or a string such as \"32g\""),
        (Kind::Duration, _) => {
            wrong("a duration: an integer (seconds) or a string such as \"1h30m\"")
        }
        (Kind::List, _) => wrong("a string or an array of strings"),
        (Kind::Count, _) => wrong("a whole number"),
    }
}

/// The parsed `--config` file.
pub(super) struct ConfigFile {
    pub(super) path: PathBuf,
    pub(super) table: toml::Table,
}

impl ConfigFile {
    pub(super) fn open(sources: Sources<'_>) -> Result<Option<ConfigFile>, ConfigError> {
        let env_name = settings::CONFIG.name;
        let path = match (sources.flags.get(env_name), sources.env.get(env_name)) {
            (Some(path), _) => PathBuf::from(path),
            (None, Some(path)) if !path.is_empty() => PathBuf::from(path),
            (None, _) => return Ok(None),
        };
        let text = std::fs::read_to_string(&path).map_err(|source| ConfigError::ReadFile {
            path: path.clone(),
            source,
        })?;
        let file = ConfigFile::parse(path, &text)?;
        Ok(Some(file))
    }

    fn parse(path: PathBuf, text: &str) -> Result<ConfigFile, ConfigError> {
        let table = match text.parse::<toml::Table>() {
            Ok(table) => table,
            Err(e) => {
                let offset = e.span().map_or(0, |span| span.start);
                let (line, column) = line_column(text, offset);
                return Err(ConfigError::ParseFile {
                    path,
                    line,
                    column,
                    message: e.message().trim().to_owned(),
                });
            }
        };
        for key in table.keys() {
            let lower = key.to_ascii_lowercase();
            let upper = key.to_ascii_uppercase();
            let in_file = settings::find(&upper).is_none_or(|s| s.in_file);
            let known = [REGISTRY_KEY, GROUPS_KEY, ACCESS_KEY].contains(&lower.as_str())
                || (settings::is_known(&upper) && in_file);
            if !known || *key != lower {
                let hint = if known { " (keys are lower case)" } else { "" };
                return Err(ConfigError::UnknownKey {
                    path,
                    key: key.clone(),
                    hint,
                });
            }
        }
        Ok(ConfigFile { path, table })
    }

    pub(super) fn setting(&self, key: &str) -> String {
        format!("{key} (in {})", self.path.display())
    }

    /// `[registry."HOST"]` tables: `manifest_cache` overrides (missing fields inherit from `global`)
    /// and `auth` modes.
    pub(super) fn registry_overrides(
        &self,
        global: &TagSettings,
    ) -> Result<RegistryOverrides, ConfigError> {
        let Some(registries) = self.table.get(REGISTRY_KEY) else {
            return Ok((Vec::new(), Vec::new()));
        };
        let Some(registries) = registries.as_table() else {
            return Err(ConfigError::FileType {
                setting: self.setting(REGISTRY_KEY),
                expected: "a table of registries: [registry.\"quay.io\".manifest_cache]",
            });
        };
        let mut seen: Vec<RegistryHost> = Vec::new();
        let mut overrides: Vec<(RegistryHost, ManifestCache)> = Vec::new();
        let mut auth: Vec<(RegistryHost, AuthMode)> = Vec::new();
        for (name, entry) in registries {
            let prefix = format!("{REGISTRY_KEY}.\"{name}\"");
            let host = RegistryHost::parse(name).map_err(|source| ConfigError::Host {
                setting: self.setting(REGISTRY_KEY),
                value: name.clone(),
                source,
            })?;
            if seen.contains(&host) {
                return Err(ConfigError::DuplicateRegistry {
                    setting: self.setting(REGISTRY_KEY),
                    host: host.to_string(),
                });
            }
            seen.push(host.clone());
            let Some(entry) = entry.as_table() else {
                return Err(ConfigError::FileType {
                    setting: self.setting(&prefix),
                    expected: "a table",
                });
            };
            for (key, value) in entry {
                match key.as_str() {
                    "manifest_cache" => {
                        let tags = self.manifest_cache_override(&prefix, global, value)?;
                        overrides.push((host.clone(), tags.build()?));
                    }
                    "auth" => {
                        let setting = self.setting(&format!("{prefix}.auth"));
                        let Some(value) = value.as_str() else {
                            return Err(ConfigError::FileType {
                                setting,
                                expected: "a string: \"verify\" or \"central\"",
                            });
                        };
                        auth.push((host.clone(), parse_auth_mode(&setting, value)?));
                    }
                    _ => {
                        // `[registry.quay.io.manifest_cache]` (unquoted) nests `quay` → `io`.
                        let hint = if value.is_table() {
                            " (quote host names: [registry.\"quay.io\".manifest_cache])"
                        } else {
                            " (known: manifest_cache, auth)"
                        };
                        return Err(ConfigError::UnknownKey {
                            path: self.path.clone(),
                            key: format!("{prefix}.{key}"),
                            hint,
                        });
                    }
                }
            }
        }
        Ok((overrides, auth))
    }

    /// One `[registry."HOST".manifest_cache]` table applied over `global`.
    fn manifest_cache_override(
        &self,
        prefix: &str,
        global: &TagSettings,
        value: &toml::Value,
    ) -> Result<TagSettings, ConfigError> {
        let section = format!("{prefix}.manifest_cache");
        let Some(fields) = value.as_table() else {
            return Err(ConfigError::FileType {
                setting: self.setting(&section),
                expected: "a table",
            });
        };
        let mut tags = global.clone();
        for (field, value) in fields {
            let setting = self.setting(&format!("{section}.{field}"));
            let Some(kind) = tags.field_kind(field) else {
                return Err(ConfigError::UnknownKey {
                    path: self.path.clone(),
                    key: format!("{section}.{field}"),
                    hint: " (known: enabled, primary_regex, primary_time, secondary_regex, secondary_time, default_time)",
                });
            };
            let Raw::Text(text) = file_value(&setting, kind, value)? else {
                return Err(ConfigError::FileType {
                    setting,
                    expected: "a string",
                });
            };
            tags.set(field, setting, text)?;
        }
        Ok(tags)
    }

    /// The `[[access]]` entries in file order and the `[groups]` they may refer to.
    pub(super) fn access_rules(&self) -> Result<AccessTables, ConfigError> {
        let mut groups = BTreeMap::new();
        if let Some(value) = self.table.get(GROUPS_KEY) {
            let Some(table) = value.as_table() else {
                return Err(ConfigError::FileType {
                    setting: self.setting(GROUPS_KEY),
                    expected: "a table of groups: ci = [\"builder1\", \"builder2\"]",
                });
            };
            for (name, members) in table {
                let setting = self.setting(&format!("{GROUPS_KEY}.{name}"));
                groups.insert(name.clone(), string_list(&setting, members)?);
            }
        }
        let mut entries = Vec::new();
        if let Some(value) = self.table.get(ACCESS_KEY) {
            let Some(array) = value.as_array() else {
                return Err(ConfigError::FileType {
                    setting: self.setting(ACCESS_KEY),
                    expected: "an array of tables: [[access]]",
                });
            };
            for (i, entry) in array.iter().enumerate() {
                let prefix = format!("{ACCESS_KEY}[{}]", i + 1);
                let Some(table) = entry.as_table() else {
                    return Err(ConfigError::FileType {
                        setting: self.setting(&prefix),
                        expected: "a table: [[access]]",
                    });
                };
                let mut rule = AccessRule::default();
                let mut has_match = false;
                for (key, value) in table {
                    let setting = self.setting(&format!("{prefix}.{key}"));
                    match key.as_str() {
                        "match" => {
                            let Some(pattern) = value.as_str() else {
                                return Err(ConfigError::FileType {
                                    setting,
                                    expected: "a string: \"<registry>/<repository glob>\" or \"*\"",
                                });
                            };
                            rule.pattern = pattern.to_owned();
                            has_match = true;
                        }
                        "pull" => rule.pull = string_list(&setting, value)?,
                        "fetch" => rule.fetch = string_list(&setting, value)?,
                        "push" => rule.push = string_list(&setting, value)?,
                        _ => {
                            return Err(ConfigError::UnknownKey {
                                path: self.path.clone(),
                                key: format!("{prefix}.{key}"),
                                hint: " (known: match, pull, fetch, push)",
                            });
                        }
                    }
                }
                if !has_match {
                    return Err(ConfigError::FileType {
                        setting: self.setting(&format!("{prefix}.match")),
                        expected: "a string: \"<registry>/<repository glob>\" or \"*\" (every [[access]] entry needs one)",
                    });
                }
                entries.push(rule);
            }
        }
        Ok((entries, groups))
    }
}

/// Per-registry tag-freshness overrides and auth modes.
pub(super) type RegistryOverrides = (
    Vec<(RegistryHost, ManifestCache)>,
    Vec<(RegistryHost, AuthMode)>,
);

/// `[[access]]` entries and `[groups]`.
pub(super) type AccessTables = (Vec<AccessRule>, BTreeMap<String, Vec<String>>);

/// An array of strings (user names, `@group`, `*`, `anonymous`).
fn string_list(setting: &str, value: &toml::Value) -> Result<Vec<String>, ConfigError> {
    value
        .as_array()
        .and_then(|items| {
            items
                .iter()
                .map(|i| i.as_str().map(str::to_owned))
                .collect::<Option<Vec<String>>>()
        })
        .ok_or_else(|| ConfigError::FileType {
            setting: setting.to_owned(),
            expected: "an array of strings, e.g. [\"alice\", \"@ci\"]",
        })
}

/// 1-based line and column of a byte offset.
fn line_column(text: &str, offset: usize) -> (usize, usize) {
    let before = text.get(..offset).unwrap_or(text);
    let line = before.matches('\n').count() + 1;
    let column = before.rsplit('\n').next().map_or(0, |l| l.chars().count()) + 1;
    (line, column)
}

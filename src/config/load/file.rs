//! The `--config` TOML file: parsed once, its keys checked against the known settings, its values
//! turned into the text form flags and environment variables use, and its per-registry overrides.

use super::*;

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
        let path = match (&sources.flags.config, sources.env.get(CONFIG_ENV)) {
            (Some(path), _) => path.clone(),
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
            let known = lower == REGISTRY_KEY || is_known(&key.to_ascii_uppercase());
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

    /// `[registry."HOST".manifest_cache]` tables; missing fields inherit from `global`.
    pub(super) fn manifest_cache_overrides(
        &self,
        global: &TagSettings,
    ) -> Result<Vec<(RegistryHost, ManifestCache)>, ConfigError> {
        let Some(registries) = self.table.get(REGISTRY_KEY) else {
            return Ok(Vec::new());
        };
        let Some(registries) = registries.as_table() else {
            return Err(ConfigError::FileType {
                setting: self.setting(REGISTRY_KEY),
                expected: "a table of registries: [registry.\"quay.io\".manifest_cache]",
            });
        };
        let mut overrides: Vec<(RegistryHost, ManifestCache)> = Vec::new();
        for (name, entry) in registries {
            let prefix = format!("{REGISTRY_KEY}.\"{name}\"");
            let host = RegistryHost::parse(name).map_err(|source| ConfigError::Host {
                setting: self.setting(REGISTRY_KEY),
                value: name.clone(),
                source,
            })?;
            if overrides.iter().any(|(h, _)| *h == host) {
                return Err(ConfigError::DuplicateRegistry {
                    setting: self.setting(REGISTRY_KEY),
                    host: host.to_string(),
                });
            }
            let Some(entry) = entry.as_table() else {
                return Err(ConfigError::FileType {
                    setting: self.setting(&prefix),
                    expected: "a table",
                });
            };
            let mut tags = global.clone();
            for (key, value) in entry {
                if key != "manifest_cache" {
                    // `[registry.quay.io.manifest_cache]` (unquoted) nests `quay` → `io`.
                    let hint = if value.is_table() {
                        " (quote host names: [registry.\"quay.io\".manifest_cache])"
                    } else {
                        ""
                    };
                    return Err(ConfigError::UnknownKey {
                        path: self.path.clone(),
                        key: format!("{prefix}.{key}"),
                        hint,
                    });
                }
                let section = format!("{prefix}.manifest_cache");
                let Some(fields) = value.as_table() else {
                    return Err(ConfigError::FileType {
                        setting: self.setting(&section),
                        expected: "a table",
                    });
                };
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
            }
            overrides.push((host, tags.build()?));
        }
        Ok(overrides)
    }
}

/// 1-based line and column of a byte offset.
fn line_column(text: &str, offset: usize) -> (usize, usize) {
    let before = text.get(..offset).unwrap_or(text);
    let line = before.matches('\n').count() + 1;
    let column = before.rsplit('\n').next().map_or(0, |l| l.chars().count()) + 1;
    (line, column)
}

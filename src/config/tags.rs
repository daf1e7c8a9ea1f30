//! Tag freshness (`ENABLE_MANIFEST_CACHE`, `MANIFEST_CACHE_*`): the global tiers and the per-registry
//! overrides of the config file (`[registry."host".manifest_cache]`), which inherit what they do not
//! set.

use std::time::Duration;

use super::error::ConfigError;
use super::layers::Layers;
use super::parse::parse_bool;
use super::settings::{self as s, Kind, Setting};
use super::units::parse_duration;
use super::{ManifestCache, TtlTier};

/// The tag freshness settings before their regexes are compiled, so that a per-registry override
/// can replace some fields and inherit the rest.
#[derive(Debug, Clone)]
pub(super) struct TagSettings {
    enabled: bool,
    /// (setting, regex source); an empty source disables the tier.
    primary_regex: (String, String),
    primary_time: Duration,
    secondary_regex: (String, String),
    secondary_time: Duration,
    default_time: Duration,
}

impl TagSettings {
    pub(super) fn global(layers: &Layers<'_>) -> Result<TagSettings, ConfigError> {
        let regex = |setting: &Setting| -> Result<(String, String), ConfigError> {
            Ok(layers
                .text(setting)?
                .unwrap_or_else(|| (setting.name.to_owned(), String::new())))
        };
        Ok(TagSettings {
            enabled: layers.bool(&s::ENABLE_MANIFEST_CACHE)?,
            primary_regex: regex(&s::MANIFEST_CACHE_PRIMARY_REGEX)?,
            primary_time: layers.duration(&s::MANIFEST_CACHE_PRIMARY_TIME)?,
            secondary_regex: regex(&s::MANIFEST_CACHE_SECONDARY_REGEX)?,
            secondary_time: layers.duration(&s::MANIFEST_CACHE_SECONDARY_TIME)?,
            default_time: layers.duration(&s::MANIFEST_CACHE_DEFAULT_TIME)?,
        })
    }

    pub(super) fn field_kind(&self, field: &str) -> Option<Kind> {
        match field {
            "enabled" => Some(Kind::Bool),
            "primary_regex" | "secondary_regex" => Some(Kind::Text),
            "primary_time" | "secondary_time" | "default_time" => Some(Kind::Duration),
            _ => None,
        }
    }

    pub(super) fn set(
        &mut self,
        field: &str,
        setting: String,
        value: String,
    ) -> Result<(), ConfigError> {
        let duration = |setting: String, value: &str| {
            parse_duration(value).map_err(|source| ConfigError::Unit { setting, source })
        };
        match field {
            "enabled" => self.enabled = parse_bool(&setting, &value)?,
            "primary_regex" => self.primary_regex = (setting, value),
            "secondary_regex" => self.secondary_regex = (setting, value),
            "primary_time" => self.primary_time = duration(setting, &value)?,
            "secondary_time" => self.secondary_time = duration(setting, &value)?,
            _ => self.default_time = duration(setting, &value)?,
        }
        Ok(())
    }

    pub(super) fn build(&self) -> Result<ManifestCache, ConfigError> {
        let mut tiers = Vec::new();
        for ((setting, source), ttl) in [
            (&self.primary_regex, self.primary_time),
            (&self.secondary_regex, self.secondary_time),
        ] {
            if source.is_empty() {
                continue;
            }
            // Matched from the start of the tag, not anchored at its end: the seed's nginx
            // `location ~ ^/v2/(.*)/manifests/REGEX`.
            let regex =
                regex::Regex::new(&format!("^(?:{source})")).map_err(|e| ConfigError::Regex {
                    setting: setting.clone(),
                    value: source.clone(),
                    source: Box::new(e),
                })?;
            tiers.push(TtlTier { regex, ttl });
        }
        Ok(ManifestCache {
            enabled: self.enabled,
            tiers,
            default_ttl: self.default_time,
        })
    }
}

//! The human form of `cache ls`: a table of images and totals, bytes and ages for people.

use std::fmt::Write as _;

use super::Catalog;

/// Bytes for people: `1.5 MiB`.
pub fn human_bytes(n: u64) -> String {
    const UNITS: [&str; 6] = ["B", "KiB", "MiB", "GiB", "TiB", "PiB"];
    let mut value = n as f64;
    let mut unit = 0;
    while value >= 1024.0 && unit + 1 < UNITS.len() {
        value /= 1024.0;
        unit += 1;
    }
    if unit == 0 {
        format!("{n} B")
    } else {
        format!("{value:.1} {}", UNITS[unit])
    }
}

/// An age for people: `45s`, `12m`, `3h`, `20d`.
pub fn human_age(secs: u64) -> String {
    match secs {
        s if s < 120 => format!("{s}s"),
        s if s < 2 * 3600 => format!("{}m", s / 60),
        s if s < 2 * 86_400 => format!("{}h", s / 3600),
        s => format!("{}d", s / 86_400),
    }
}

impl Catalog {
    /// The human table: one line per image, then totals.
    pub fn table(&self) -> String {
        let mut rows: Vec<[String; 7]> = vec![[
            "IMAGE".into(),
            "DIGEST".into(),
            "PLATFORMS".into(),
            "SIZE".into(),
            "UNIQUE".into(),
            "SHARED".into(),
            "LAST USED".into(),
        ]];
        for registry in &self.registries {
            for repo in &registry.repositories {
                for image in &repo.images {
                    let name = format!("{}/{}", registry.name, repo.name);
                    let name = if image.tags.is_empty() {
                        format!("{name} (untagged)")
                    } else {
                        format!("{name}:{}", image.tags.join(","))
                    };
                    let platforms = if image.kind == "index" {
                        let cached: Vec<&str> = image
                            .platforms
                            .iter()
                            .filter(|p| p.cached && p.platform != "unknown/unknown")
                            .map(|p| p.platform.as_str())
                            .collect();
                        let all = image
                            .platforms
                            .iter()
                            .filter(|p| p.platform != "unknown/unknown")
                            .count();
                        format!("{} ({}/{all})", cached.join(","), cached.len())
                    } else {
                        "-".into()
                    };
                    let short = image.digest.get(..19).unwrap_or(&image.digest).to_owned();
                    let last = match image.last_used {
                        Some(t) => {
                            format!("{} ago", human_age(self.generated_at.saturating_sub(t)))
                        }
                        None => "-".into(),
                    };
                    let mut size = human_bytes(image.bytes);
                    if !image.cached {
                        size = "not cached".into();
                    } else if image.missing_bytes > 0 {
                        size.push('+');
                    }
                    rows.push([
                        name,
                        short,
                        platforms,
                        size,
                        human_bytes(image.unique_bytes),
                        human_bytes(image.shared_bytes),
                        last,
                    ]);
                }
            }
        }
        let mut widths = [0usize; 7];
        for row in &rows {
            for (w, cell) in widths.iter_mut().zip(row) {
                *w = (*w).max(cell.chars().count());
            }
        }
        let mut out = String::new();
        for row in &rows {
            let mut line = String::new();
            for (i, (cell, w)) in row.iter().zip(widths).enumerate() {
                if i + 1 == row.len() {
                    line.push_str(cell);
                } else {
                    let _ = write!(line, "{cell:<w$}  ");
                }
            }
            out.push_str(line.trim_end());
            out.push('\n');
        }
        let t = &self.totals;
        let _ = writeln!(
            out,
            "\n{} images in {} repositories; {} objects, {} ({} blobs, {} manifests)",
            t.images,
            self.registries
                .iter()
                .map(|r| r.repositories.len())
                .sum::<usize>(),
            t.objects,
            human_bytes(t.bytes),
            t.blobs,
            t.manifests
        );
        let _ = writeln!(
            out,
            "shared by several images: {} objects, {}; used by no image: {} objects, {}",
            t.shared_objects,
            human_bytes(t.shared_bytes),
            t.unreferenced_objects,
            human_bytes(t.unreferenced_bytes)
        );
        if rows.len() > 1 {
            out.push_str("(SIZE ends in + when some platforms or layers are not cached)\n");
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn human_units() {
        assert_eq!(human_bytes(0), "0 B");
        assert_eq!(human_bytes(1023), "1023 B");
        assert_eq!(human_bytes(1536), "1.5 KiB");
        assert_eq!(human_bytes(5 << 30), "5.0 GiB");
        assert_eq!(human_age(59), "59s");
        assert_eq!(human_age(600), "10m");
        assert_eq!(human_age(3 * 3600), "3h");
        assert_eq!(human_age(40 * 86_400), "40d");
    }
}

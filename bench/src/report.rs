//! The benchmark report: `latest.json` holds the figures,
//! `{ "<figure>": { "value": <number>, "unit": "<unit>" } }`, and `series.json` next to it the
//! curves the plots are drawn from, `{ "<series>": [[x, y], ...] }`.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

/// One measured figure.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Figure {
    pub value: f64,
    pub unit: String,
}

/// All figures and series, merged across runs of different groups.
#[derive(Debug, Default)]
pub struct Report {
    figures: BTreeMap<String, Figure>,
    series: BTreeMap<String, Vec<[f64; 2]>>,
}

impl Report {
    /// The existing report, or an empty one.
    pub fn load(path: &Path) -> anyhow::Result<Report> {
        Ok(Report {
            figures: read_or_default(path)?,
            series: read_or_default(&series_path(path))?,
        })
    }

    /// Writes the report atomically (temp file, then rename).
    pub fn save(&self, path: &Path) -> anyhow::Result<()> {
        write_atomically(path, &serde_json::to_vec_pretty(&self.figures)?)?;
        write_atomically(&series_path(path), &serde_json::to_vec(&self.series)?)
    }

    /// Records a figure (rounded to 3 decimals) and prints it.
    pub fn set(&mut self, name: &str, value: f64, unit: &str) {
        let value = (value * 1000.0).round() / 1000.0;
        eprintln!("  {name:<36} {value:>14} {unit}");
        self.figures.insert(
            name.to_owned(),
            Figure {
                value,
                unit: unit.to_owned(),
            },
        );
    }

    /// A figure measured earlier in this run (or by an earlier run of its group).
    pub fn get(&self, name: &str) -> anyhow::Result<f64> {
        self.figures.get(name).map(|f| f.value).ok_or_else(|| {
            anyhow::anyhow!("figure `{name}` is missing: run the group that measures it first")
        })
    }

    /// Records a curve for the plots.
    pub fn set_series(&mut self, name: &str, points: Vec<[f64; 2]>) {
        self.series.insert(name.to_owned(), points);
    }

    /// A recorded curve, or an empty one.
    pub fn series(&self, name: &str) -> &[[f64; 2]] {
        self.series.get(name).map_or(&[], Vec::as_slice)
    }
}

fn series_path(figures: &Path) -> PathBuf {
    figures.with_file_name("series.json")
}

fn read_or_default<T: Default + for<'de> Deserialize<'de>>(path: &Path) -> anyhow::Result<T> {
    match std::fs::read(path) {
        Ok(bytes) => Ok(serde_json::from_slice(&bytes)?),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(T::default()),
        Err(e) => Err(e.into()),
    }
}

fn write_atomically(path: &Path, bytes: &[u8]) -> anyhow::Result<()> {
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir)?;
    }
    let tmp = path.with_extension("tmp");
    std::fs::write(&tmp, bytes)?;
    std::fs::rename(tmp, path)?;
    Ok(())
}

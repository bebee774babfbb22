//! The benchmark report: `{ "<figure>": { "value": <number>, "unit": "<unit>" } }`.

use std::collections::BTreeMap;
use std::path::Path;

use serde::{Deserialize, Serialize};

/// One measured figure.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Figure {
    pub value: f64,
    pub unit: String,
}

/// All figures, merged across runs of different groups.
#[derive(Debug, Default, Serialize, Deserialize)]
#[serde(transparent)]
pub struct Report(BTreeMap<String, Figure>);

impl Report {
    /// The existing report, or an empty one.
    pub fn load(path: &Path) -> anyhow::Result<Report> {
        match std::fs::read(path) {
            Ok(bytes) => Ok(serde_json::from_slice(&bytes)?),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(Report::default()),
            Err(e) => Err(e.into()),
        }
    }

    /// Writes the report atomically (temp file, then rename).
    pub fn save(&self, path: &Path) -> anyhow::Result<()> {
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir)?;
        }
        let tmp = path.with_extension("json.tmp");
        std::fs::write(&tmp, serde_json::to_vec_pretty(self)?)?;
        std::fs::rename(tmp, path)?;
        Ok(())
    }

    /// Records a figure (rounded to 3 decimals) and prints it.
    pub fn set(&mut self, name: &str, value: f64, unit: &str) {
        let value = (value * 1000.0).round() / 1000.0;
        eprintln!("  {name:<36} {value:>14} {unit}");
        self.0.insert(
            name.to_owned(),
            Figure {
                value,
                unit: unit.to_owned(),
            },
        );
    }
}

//! The quarantine: captures that vision would not release (a face still detectable after
//! anonymization, an image it could not decode, a failed inference) stay here, on the edge,
//! and are never uploaded: nothing reads this directory but an operator.
//!
//! Format: per capture `<capture_id>.json` (metadata, reason, time, residual detections) and,
//! when there is one, `<capture_id>.jpg`: the anonymized attempt, never the raw frame (an
//! undecodable image keeps no bytes at all). Each file is written to a temporary name and
//! renamed. Beyond `max_files` captures the oldest (by capture id, UUID v7) are deleted.

use std::path::{Path, PathBuf};
use std::sync::Mutex;

use anyhow::Context;
use serde::Serialize;

use crate::domain::CaptureMeta;

#[derive(Debug)]
pub struct Quarantine {
    dir: PathBuf,
    max_files: usize,
    /// Captures quarantined since the process started.
    added: Mutex<u64>,
}

#[derive(Debug, Serialize)]
struct Record<'a> {
    meta: &'a CaptureMeta,
    reason: &'a str,
    quarantined_at: chrono::DateTime<chrono::Utc>,
    residual_scores: &'a [f32],
}

impl Quarantine {
    pub fn open(dir: &Path, max_files: usize) -> anyhow::Result<Self> {
        std::fs::create_dir_all(dir).with_context(|| format!("creating quarantine {}", dir.display()))?;
        Ok(Self { dir: dir.to_owned(), max_files, added: Mutex::new(0) })
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Keeps one capture; `image` is the anonymized attempt, if any.
    pub fn put(
        &self,
        meta: &CaptureMeta,
        reason: &str,
        residual_scores: &[f32],
        image: Option<&[u8]>,
    ) -> anyhow::Result<()> {
        let id = meta.capture_id;
        if let Some(image) = image {
            write_atomic(&self.dir.join(format!("{id}.jpg")), image)?;
        }
        let record = Record { meta, reason, quarantined_at: chrono::Utc::now(), residual_scores };
        write_atomic(&self.dir.join(format!("{id}.json")), &serde_json::to_vec_pretty(&record)?)?;
        *self.added.lock().unwrap() += 1;
        self.trim()
    }

    /// Captures held now.
    pub fn len(&self) -> usize {
        self.ids().map(|ids| ids.len()).unwrap_or(0)
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Captures quarantined by this process.
    pub fn added(&self) -> u64 {
        *self.added.lock().unwrap()
    }

    fn ids(&self) -> anyhow::Result<Vec<String>> {
        let mut ids: Vec<String> = std::fs::read_dir(&self.dir)?
            .filter_map(|e| e.ok())
            .filter_map(|e| e.file_name().to_str().and_then(|n| n.strip_suffix(".json")).map(str::to_owned))
            .collect();
        ids.sort();
        Ok(ids)
    }

    fn trim(&self) -> anyhow::Result<()> {
        let ids = self.ids()?;
        for id in ids.iter().take(ids.len().saturating_sub(self.max_files)) {
            for ext in ["jpg", "json"] {
                let _ = std::fs::remove_file(self.dir.join(format!("{id}.{ext}")));
            }
        }
        Ok(())
    }
}

fn write_atomic(path: &Path, bytes: &[u8]) -> anyhow::Result<()> {
    let tmp = path.with_extension("tmp");
    std::fs::write(&tmp, bytes).with_context(|| format!("writing {}", tmp.display()))?;
    std::fs::rename(&tmp, path).with_context(|| format!("renaming {}", path.display()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn meta() -> CaptureMeta {
        crate::domain::Capture::synthetic("s", 0, "front", bytes::Bytes::new()).meta
    }

    #[test]
    fn keeps_records_and_trims_the_oldest() {
        let dir = tempfile::tempdir().unwrap();
        let q = Quarantine::open(dir.path(), 2).unwrap();
        let first = meta();
        q.put(&first, "face left", &[0.8], Some(b"jpeg")).unwrap();
        q.put(&meta(), "corrupt image", &[], None).unwrap();
        q.put(&meta(), "face left", &[0.9], Some(b"jpeg")).unwrap();
        assert_eq!(q.len(), 2);
        assert_eq!(q.added(), 3);
        assert!(!dir.path().join(format!("{}.json", first.capture_id)).exists(), "oldest trimmed");
        assert!(!dir.path().join(format!("{}.jpg", first.capture_id)).exists());
    }
}

//! [`FileSource`]: the `--vips FILE` source. Re-read on change (polled) and on
//! SIGHUP (forced). A file that cannot be read or parsed yields an error and
//! the caller keeps what is programmed.
use std::path::{Path, PathBuf};

use crate::vip::{VipTable, file};

/// What a poll found.
#[derive(Debug)]
pub enum FilePoll {
    /// Same bytes as last time.
    Unchanged,
    /// New content that parsed.
    Changed(VipTable),
    /// New content (or a read error) that did not parse; report it once.
    Rejected(file::VipFileError),
}

/// Watches one VIP file by content.
pub struct FileSource {
    path: PathBuf,
    /// (mtime, length, inode) when last read: unchanged metadata skips the read.
    last_meta: Option<(std::time::SystemTime, u64, u64)>,
    /// Digest of the last content (or the last read error): unchanged content
    /// is not parsed again.
    last: Option<Result<u64, String>>,
}

fn metadata_stamp(path: &Path) -> Option<(std::time::SystemTime, u64, u64)> {
    use std::os::unix::fs::MetadataExt as _;
    let m = std::fs::metadata(path).ok()?;
    Some((m.modified().ok()?, m.len(), m.ino()))
}

impl FileSource {
    pub fn new(path: impl Into<PathBuf>) -> Self {
        FileSource {
            path: path.into(),
            last_meta: None,
            last: None,
        }
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Reads the file; `force` re-parses even unchanged content (SIGHUP).
    pub fn poll(&mut self, force: bool) -> FilePoll {
        let meta = metadata_stamp(&self.path);
        if !force && meta.is_some() && meta == self.last_meta {
            return FilePoll::Unchanged;
        }
        self.last_meta = meta;
        let now = std::fs::read(&self.path).map_err(|e| e.to_string());
        let stamp = now
            .as_ref()
            .map(|b| crate::digest::fnv1a(b))
            .map_err(Clone::clone);
        if !force && self.last.as_ref() == Some(&stamp) {
            return FilePoll::Unchanged;
        }
        self.last = Some(stamp);
        match now {
            Err(_) => match file::load(&self.path) {
                Ok(table) => FilePoll::Changed(table),
                Err(e) => FilePoll::Rejected(e),
            },
            Ok(bytes) => {
                let text = String::from_utf8_lossy(&bytes);
                match file::parse(&self.path.display().to_string(), &text) {
                    Ok(table) => FilePoll::Changed(table),
                    Err(e) => FilePoll::Rejected(e),
                }
            }
        }
    }
}

/// The file's table as a source table (named entries keep their address);
/// `path` names the file in errors about its entries.
pub fn as_source_table(table: &VipTable, path: &Path) -> super::SourceTable {
    let origin = format!("file {}", path.display());
    table
        .iter()
        .map(|(key, backends)| super::SourceVip {
            vip: super::VipRef::Ip {
                addr: key.addr,
                name: table.name(key).map(str::to_string),
            },
            protocol: key.protocol,
            backends: backends.to_vec(),
            origin: vec![origin.clone()],
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reports_changes_once_and_rejections() {
        let dir = std::env::temp_dir().join(format!("garrison-filesource-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("vips.json");
        let mut src = FileSource::new(&path);
        assert!(matches!(
            src.poll(false),
            FilePoll::Rejected(file::VipFileError::Read { .. })
        ));
        assert!(
            matches!(src.poll(false), FilePoll::Unchanged),
            "same error reported once"
        );
        std::fs::write(
            &path,
            r#"[{"vip":"11.0.0.1:80","backend":[{"ip":"10.0.0.1","port":80}]}]"#,
        )
        .unwrap();
        assert!(matches!(src.poll(false), FilePoll::Changed(t) if t.len() == 1));
        assert!(matches!(src.poll(false), FilePoll::Unchanged));
        assert!(
            matches!(src.poll(true), FilePoll::Changed(_)),
            "forced re-read"
        );
        std::fs::write(&path, "[{").unwrap();
        let FilePoll::Rejected(e) = src.poll(false) else {
            panic!("bad JSON accepted")
        };
        assert!(e.to_string().contains("vips.json"), "{e}");
        std::fs::remove_dir_all(&dir).unwrap();
    }
}

//! Helpers shared by the unit tests.
#![cfg(test)]

use std::path::{Path, PathBuf};

/// A file in the temp directory, removed when dropped (with its directory, for
/// [`TempFile::in_own_dir`]).
pub struct TempFile {
    path: PathBuf,
    own_dir: bool,
}

impl TempFile {
    /// `std::env::temp_dir()/name`, written with `contents`.
    pub fn with_contents(name: &str, contents: &str) -> TempFile {
        let path = std::env::temp_dir().join(name);
        std::fs::write(&path, contents).unwrap();
        TempFile { path, own_dir: false }
    }

    /// `name` in a directory of its own, `std::env::temp_dir()/dir`; no file yet.
    pub fn in_own_dir(dir: &str, name: &str) -> TempFile {
        let d = std::env::temp_dir().join(dir);
        std::fs::create_dir_all(&d).unwrap();
        let path = d.join(name);
        let _ = std::fs::remove_file(&path);
        TempFile { path, own_dir: true }
    }
}

impl std::ops::Deref for TempFile {
    type Target = PathBuf;
    fn deref(&self) -> &PathBuf {
        &self.path
    }
}

impl AsRef<Path> for TempFile {
    fn as_ref(&self) -> &Path {
        &self.path
    }
}

impl Drop for TempFile {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.path);
        if self.own_dir {
            if let Some(d) = self.path.parent() {
                let _ = std::fs::remove_dir(d);
            }
        }
    }
}

//! Attachment bytes kept as one file per content address, beside sled rather than
//! in it.
//!
//! Why outside sled: a blob is large, written once and never changed, but inside
//! sled's log it shares segments with pages that are rewritten all the time, and a
//! segment is only cleaned once half of it is garbage, so every stored byte costs
//! about 1.7 bytes of disk. A plain file costs its size rounded up to a block.
//!
//! Layout: `<data dir>/attachments/<first two hex digits>/<address in hex>`, holding
//! exactly what sled held before (the codec's sealed value). A file is written to a
//! temporary name, synced, renamed into place and its directory synced, so a name
//! that exists always has its whole value. `content.rs` decides when files are
//! written and removed; this module only does the file work.

use crate::store::crypto::{hex, Addr, ADDR_LEN};
use std::fs;
use std::io;
use std::path::{Path, PathBuf};

const DIR_NAME: &str = "attachments";
const TMP_SUFFIX: &str = ".tmp";

/// The attachment files of one store.
#[derive(Debug, Clone)]
pub struct BlobFiles {
    root: PathBuf,
}

impl BlobFiles {
    /// Opens (creating if needed) the attachment directory under `data_dir`, and
    /// removes temporary files a crash left behind.
    pub fn open(data_dir: &Path) -> io::Result<BlobFiles> {
        let root = data_dir.join(DIR_NAME);
        fs::create_dir_all(&root)?;
        let files = BlobFiles { root };
        for (path, is_tmp) in files.entries()? {
            if is_tmp {
                remove_if_present(&path)?;
            }
        }
        Ok(files)
    }

    fn path(&self, a: &Addr) -> PathBuf {
        let name = hex(a);
        self.root.join(&name[..2]).join(name)
    }

    /// Writes `value` as the file for `a`, durably, replacing any earlier file.
    pub fn write(&self, a: &Addr, value: &[u8]) -> io::Result<()> {
        let path = self.path(a);
        fs::create_dir_all(path.parent().unwrap_or(&self.root))?;
        crate::store::disk::write_durably(&path, value)
    }

    /// The stored value for `a`, or `None` when there is no file.
    pub fn read(&self, a: &Addr) -> io::Result<Option<Vec<u8>>> {
        match fs::read(self.path(a)) {
            Ok(bytes) => Ok(Some(bytes)),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(e),
        }
    }

    pub fn remove(&self, a: &Addr) -> io::Result<()> {
        remove_if_present(&self.path(a))
    }

    /// The addresses of every attachment file.
    pub fn addresses(&self) -> io::Result<Vec<Addr>> {
        let mut out = Vec::new();
        for (path, is_tmp) in self.entries()? {
            let parsed = path
                .file_name()
                .and_then(|n| n.to_str())
                .and_then(parse_hex_addr);
            match parsed {
                Some(a) if !is_tmp => out.push(a),
                _ => {}
            }
        }
        Ok(out)
    }

    /// How many attachment files there are and their total size.
    pub fn usage(&self) -> io::Result<(u64, u64)> {
        let (mut count, mut bytes) = (0, 0);
        for (path, is_tmp) in self.entries()? {
            if !is_tmp {
                count += 1;
                bytes += fs::metadata(&path)?.len();
            }
        }
        Ok((count, bytes))
    }

    /// Every file two levels down, with whether it is a temporary one.
    fn entries(&self) -> io::Result<Vec<(PathBuf, bool)>> {
        let mut out = Vec::new();
        for sub in fs::read_dir(&self.root)? {
            let sub = sub?;
            if !sub.file_type()?.is_dir() {
                continue;
            }
            for file in fs::read_dir(sub.path())? {
                let path = file?.path();
                let is_tmp = path
                    .file_name()
                    .and_then(|n| n.to_str())
                    .is_some_and(|n| n.ends_with(TMP_SUFFIX));
                out.push((path, is_tmp));
            }
        }
        Ok(out)
    }
}

fn remove_if_present(path: &Path) -> io::Result<()> {
    match fs::remove_file(path) {
        Err(e) if e.kind() != io::ErrorKind::NotFound => Err(e),
        _ => Ok(()),
    }
}

fn parse_hex_addr(name: &str) -> Option<Addr> {
    if name.len() != ADDR_LEN * 2 {
        return None;
    }
    let mut a = [0u8; ADDR_LEN];
    for (i, byte) in a.iter_mut().enumerate() {
        *byte = u8::from_str_radix(name.get(2 * i..2 * i + 2)?, 16).ok()?;
    }
    Some(a)
}

#[cfg(test)]
mod tests {
    use super::*;

    struct Scratch(PathBuf);

    impl Scratch {
        fn new(name: &str) -> Scratch {
            let dir = std::env::temp_dir()
                .join(format!("llmtap-blob-files-{name}-{}", std::process::id()));
            let _ = fs::remove_dir_all(&dir);
            Scratch(dir)
        }
        fn path(&self) -> &Path {
            &self.0
        }
    }

    impl Drop for Scratch {
        fn drop(&mut self) {
            let _ = fs::remove_dir_all(&self.0);
        }
    }

    #[test]
    fn files_round_trip_and_list_their_addresses() {
        let dir = Scratch::new("round-trip");
        let files = BlobFiles::open(dir.path()).unwrap();
        let a = [0xab; ADDR_LEN];
        assert_eq!(files.read(&a).unwrap(), None);
        files.write(&a, b"first").unwrap();
        files.write(&a, b"second").unwrap();
        assert_eq!(files.read(&a).unwrap().as_deref(), Some(&b"second"[..]));
        assert_eq!(files.addresses().unwrap(), vec![a]);
        files.remove(&a).unwrap();
        files.remove(&a).unwrap();
        assert_eq!(files.read(&a).unwrap(), None);
        assert!(files.addresses().unwrap().is_empty());
    }

    #[test]
    fn reopening_removes_temporary_files_and_ignores_strangers() {
        let dir = Scratch::new("reopen");
        let files = BlobFiles::open(dir.path()).unwrap();
        let a = [7; ADDR_LEN];
        files.write(&a, b"kept").unwrap();
        let sub = dir.path().join(DIR_NAME).join("07");
        fs::write(sub.join(format!("{}{TMP_SUFFIX}", hex(&a))), b"half").unwrap();
        fs::write(sub.join("notes.txt"), b"not ours").unwrap();
        let files = BlobFiles::open(dir.path()).unwrap();
        assert_eq!(files.addresses().unwrap(), vec![a]);
        assert!(!sub.join(format!("{}{TMP_SUFFIX}", hex(&a))).exists());
        assert!(sub.join("notes.txt").exists());
    }

    #[test]
    fn hex_names_parse_only_when_whole() {
        assert_eq!(
            parse_hex_addr(&"0f".repeat(ADDR_LEN)),
            Some([0x0f; ADDR_LEN])
        );
        assert_eq!(parse_hex_addr("0f"), None);
        assert_eq!(parse_hex_addr(&"zz".repeat(ADDR_LEN)), None);
    }
}

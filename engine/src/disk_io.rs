//! The three calls the engine makes on a disk: read, write and flush.
//!
//! In a normal build they are the plain system calls. A chaos build (the `failpoints`
//! feature, never in a release an operator runs) sends each through a failpoint of the
//! `fail` crate, configured at run time by name, so that a test can act out a failing
//! disk under a running OSD:
//! - `disk-read`: `return` fails the read (as EIO would); `return(corrupt)` returns the
//!   bytes with one of them flipped (a bad cable, a controller fault);
//! - `disk-write`: `return` fails the write; `return(corrupt)` stores a flipped byte and
//!   reports success (bit rot, a lost or misdirected write);
//! - `disk-sync`: `return` fails the flush; `sleep(MS)` stalls it; `return(power-loss)`
//!   puts back what every disk of the process held before each write since its last
//!   flush, as a power cut would leave them, and aborts the process.
//!
//! The failpoints take the usual `fail` forms (`10%return`, `3*return(corrupt)`, `off`).
//! To act out a power cut, a chaos build keeps, until each flush, the bytes every write
//! replaced: a copy of all unflushed data, which only a test can afford.

#[cfg(not(feature = "failpoints"))]
pub(crate) use plain::*;

#[cfg(feature = "failpoints")]
pub(crate) use injected::*;

#[cfg(not(feature = "failpoints"))]
mod plain {
    use std::fs::File;
    use std::io;
    use std::os::unix::fs::FileExt;
    use std::sync::Arc;

    /// Reads exactly `buf.len()` bytes at `offset`.
    pub(crate) fn read_at(file: &File, buf: &mut [u8], offset: u64) -> io::Result<()> {
        file.read_exact_at(buf, offset)
    }

    /// Writes all of `buf` at `offset`.
    pub(crate) fn write_at(file: &Arc<File>, buf: &[u8], offset: u64) -> io::Result<()> {
        file.write_all_at(buf, offset)
    }

    /// Makes every write to `file` so far durable.
    pub(crate) fn sync(file: &Arc<File>) -> io::Result<()> {
        file.sync_data()
    }
}

#[cfg(feature = "failpoints")]
mod injected {
    use std::fs::File;
    use std::io;
    use std::os::unix::fs::FileExt;
    use std::sync::{Arc, Mutex};

    /// What a write replaced, kept until its disk is flushed.
    struct Replaced {
        file: Arc<File>,
        offset: u64,
        before: Vec<u8>,
    }

    /// Every write not yet flushed, in the order they were made; `None` once the
    /// power is cut (no write lands after that).
    static UNFLUSHED: Mutex<Option<Vec<Replaced>>> = Mutex::new(Some(Vec::new()));

    fn injected_error(what: &str) -> io::Error {
        io::Error::other(format!("{what} failed (injected by a failpoint)"))
    }

    /// Flips one byte of `buf`, chosen by where it goes.
    fn flip(buf: &mut [u8], offset: u64) {
        if !buf.is_empty() {
            let at = (offset as usize / 7) % buf.len();
            buf[at] ^= 0x5a;
        }
    }

    /// Reads exactly `buf.len()` bytes at `offset`, through `disk-read`.
    pub(crate) fn read_at(file: &File, buf: &mut [u8], offset: u64) -> io::Result<()> {
        match fail::eval("disk-read", |how| how) {
            None => {}
            Some(Some(how)) if how == "corrupt" => {
                file.read_exact_at(buf, offset)?;
                flip(buf, offset);
                return Ok(());
            }
            Some(_) => return Err(injected_error("disk read")),
        }
        file.read_exact_at(buf, offset)
    }

    /// Writes all of `buf` at `offset`, through `disk-write`, keeping what it
    /// replaces until the next flush.
    pub(crate) fn write_at(file: &Arc<File>, buf: &[u8], offset: u64) -> io::Result<()> {
        let mut stored = std::borrow::Cow::Borrowed(buf);
        match fail::eval("disk-write", |how| how) {
            None => {}
            Some(Some(how)) if how == "corrupt" => flip(stored.to_mut(), offset),
            Some(_) => return Err(injected_error("disk write")),
        }
        let mut unflushed = UNFLUSHED.lock().expect("unflushed writes lock poisoned");
        let Some(unflushed) = unflushed.as_mut() else {
            return Err(injected_error("disk write after the power cut"));
        };
        let mut before = vec![0u8; buf.len()];
        let read = file.read_at(&mut before, offset)?;
        before.truncate(read);
        unflushed.push(Replaced {
            file: file.clone(),
            offset,
            before,
        });
        file.write_all_at(&stored, offset)
    }

    /// Makes every write to `file` so far durable, through `disk-sync`.
    pub(crate) fn sync(file: &Arc<File>) -> io::Result<()> {
        match fail::eval("disk-sync", |how| how) {
            None => {}
            Some(Some(how)) if how == "power-loss" => power_cut(),
            Some(_) => return Err(injected_error("disk flush")),
        }
        let mut unflushed = UNFLUSHED.lock().expect("unflushed writes lock poisoned");
        file.sync_data()?;
        if let Some(unflushed) = unflushed.as_mut() {
            unflushed.retain(|write| !Arc::ptr_eq(&write.file, file));
        }
        Ok(())
    }

    /// Puts back, newest first, what every unflushed write replaced, and aborts.
    fn power_cut() -> ! {
        let mut unflushed = UNFLUSHED.lock().unwrap_or_else(|e| e.into_inner());
        let writes = unflushed.take().unwrap_or_default();
        tracing::error!(
            writes = writes.len(),
            "power cut (failpoint): unflushed writes dropped"
        );
        for write in writes.iter().rev() {
            if let Err(error) = write.file.write_all_at(&write.before, write.offset) {
                tracing::error!("putting back an unflushed write: {error}");
            }
        }
        for write in &writes {
            let _ = write.file.sync_data();
        }
        std::process::abort()
    }
}

//! Reading and writing a file around the page cache (`O_DIRECT`), through reused buffers.
//!
//! For files whose bytes this process moves once and does not want cached: an agent's P2P
//! download lands piece by piece and is sent on to its peers and its client as it lands. On the
//! VMs this project measures on, page cache built from memory the guest had handed back to
//! the host (free page reporting) costs about 3 CPU-seconds per GiB at first touch, a third of
//! a fan-out agent's CPU (bench/RESULTS.md); `dd` of 1 GiB with `oflag=direct` took 0.08 CPU-s
//! against 3.5 for the buffered write. Direct I/O moves the bytes between the disk and a few
//! buffers this process already touched.
//!
//! Direct I/O wants the file offset, the length and the memory aligned ([`ALIGN`]). Writes
//! here send the aligned front of the bytes direct and the unaligned rest (a blob's last piece)
//! through the page cache; reads widen the range to aligned bounds and return the part asked
//! for. A filesystem that refuses `O_DIRECT` ([`open`] says `None`) or an I/O that it refuses
//! (`EINVAL`) goes through the page cache instead: slower on such VMs, never wrong. Linux keeps
//! the two coherent (a direct read first writes back cached dirty pages of its range; a direct
//! write drops cached pages of its range).

use std::fs::{File, OpenOptions};
use std::io;
use std::os::unix::fs::{FileExt, OpenOptionsExt};
use std::path::Path;
use std::sync::Mutex;

use bytes::Bytes;

/// The alignment of offsets, lengths and memory for direct I/O: a page, which covers every
/// logical block size in use.
pub const ALIGN: usize = 4096;

/// Bytes of free buffers kept for reuse at most (16 of the default 4 MiB piece).
const KEEP_BYTES: usize = 64 << 20;

/// Opens `path` for direct I/O (reading; writing too when `write`); `None` when its filesystem
/// does not do direct I/O.
pub fn open(path: &Path, write: bool) -> io::Result<Option<File>> {
    let opened = OpenOptions::new()
        .read(true)
        .write(write)
        .custom_flags(libc::O_DIRECT)
        .open(path);
    match opened {
        Ok(file) => Ok(Some(file)),
        Err(e) if e.raw_os_error() == Some(libc::EINVAL) => Ok(None),
        Err(e) => Err(e),
    }
}

fn refused(e: &io::Error) -> bool {
    e.raw_os_error() == Some(libc::EINVAL)
}

/// Writes `data` at `offset`: the aligned front through `direct` (a file opened by [`open`]),
/// the rest through `cached`, an ordinary handle of the same file. An unaligned `offset`, or a
/// direct write the filesystem refuses, goes through `cached` whole.
pub fn write_at(direct: &File, cached: &File, data: &[u8], offset: u64) -> io::Result<()> {
    if !offset.is_multiple_of(ALIGN as u64) {
        return cached.write_all_at(data, offset);
    }
    let front = data.len() / ALIGN * ALIGN;
    let mut done = 0;
    if data.as_ptr().align_offset(ALIGN) == 0 {
        done = write_direct(direct, &data[..front], offset)?;
    } else {
        // Through one reused aligned buffer, a piece at a time.
        let mut buf = take(front.min(MAX_COPY));
        while done < front {
            let n = (front - done).min(buf.len);
            buf.as_mut()[..n].copy_from_slice(&data[done..done + n]);
            let wrote = write_direct(direct, &buf.as_ref()[..n], offset + done as u64)?;
            done += wrote;
            if wrote < n {
                break;
            }
        }
    }
    cached.write_all_at(&data[done..], offset + done as u64)
}

/// Bytes copied into an aligned buffer per direct write of unaligned memory.
const MAX_COPY: usize = 4 << 20;

/// Writes as much of `data` (aligned memory, length a multiple of [`ALIGN`]) as direct I/O
/// takes; returns how much. Stops early, without an error, where the filesystem refuses it or
/// a short write leaves the rest unaligned.
fn write_direct(direct: &File, data: &[u8], offset: u64) -> io::Result<usize> {
    let mut done = 0;
    while done < data.len() {
        match direct.write_at(&data[done..], offset + done as u64) {
            Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
            Ok(n) => {
                done += n;
                if !done.is_multiple_of(ALIGN) {
                    break;
                }
            }
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) if refused(&e) => break,
            Err(e) => return Err(e),
        }
    }
    Ok(done)
}

/// `len` bytes at `offset`, read through `direct` into a reused buffer (the aligned range
/// around them), or through `cached` where the filesystem refuses. The bytes must be in the
/// file: an end of file before `offset + len` is `UnexpectedEof`.
pub fn read_at(direct: &File, cached: &File, offset: u64, len: usize) -> io::Result<Bytes> {
    if len == 0 {
        return Ok(Bytes::new());
    }
    let align = ALIGN as u64;
    let start = offset / align * align;
    let end = offset
        .checked_add(len as u64)
        .ok_or_else(|| io::Error::from(io::ErrorKind::InvalidInput))?;
    let span = usize::try_from(end.div_ceil(align) * align - start).map_err(io::Error::other)?;
    let skip = (offset - start) as usize;
    let mut buf = take(span);
    let mut got = 0;
    while got < skip + len {
        match direct.read_at(&mut buf.as_mut()[got..], start + got as u64) {
            Ok(0) => return Err(io::ErrorKind::UnexpectedEof.into()),
            // Short of the range and unaligned: only at the end of the file.
            Ok(n) if !(got + n).is_multiple_of(ALIGN) && got + n < skip + len => {
                return Err(io::ErrorKind::UnexpectedEof.into());
            }
            Ok(n) => got += n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) if refused(&e) => {
                let rest = &mut buf.as_mut()[got..skip + len];
                cached.read_exact_at(rest, start + got as u64)?;
                got = skip + len;
            }
            Err(e) => return Err(e),
        }
    }
    Ok(buf.freeze().slice(skip..skip + len))
}

/// Buffers smaller than this are not kept for reuse: the allocator serves them without page
/// faults.
pub const MIN_POOLED: usize = 64 * 1024;

/// A buffer whose bytes start on an [`ALIGN`] boundary, from a small process-wide free list.
/// Fresh memory costs page faults and zeroed pages (on this project's 2-core machines
/// `clear_page` alone was 12 % of an agent's CPU at 800 Mbit/s), and glibc hands large blocks
/// back to the kernel when they are freed: a buffer here goes back to the free list when it
/// (or the last [`Bytes`] made of it by [`Aligned::freeze`]) is dropped, and the next user
/// takes it with its bytes already touched. The list keeps at most [`KEEP_BYTES`].
pub struct Aligned {
    buf: Vec<u8>,
    at: usize,
    len: usize,
}

impl AsMut<[u8]> for Aligned {
    /// Its bytes, to fill.
    fn as_mut(&mut self) -> &mut [u8] {
        &mut self.buf[self.at..self.at + self.len]
    }
}

impl Aligned {
    /// Its bytes as [`Bytes`], which hand the buffer back to the free list once every clone
    /// and slice of them is gone.
    pub fn freeze(self) -> Bytes {
        Bytes::from_owner(self)
    }
}

impl AsRef<[u8]> for Aligned {
    fn as_ref(&self) -> &[u8] {
        &self.buf[self.at..self.at + self.len]
    }
}

impl Drop for Aligned {
    fn drop(&mut self) {
        let buf = std::mem::take(&mut self.buf);
        if buf.len() < MIN_POOLED {
            return;
        }
        let mut free = FREE.lock().unwrap_or_else(|e| e.into_inner());
        let kept: usize = free.iter().map(Vec::len).sum();
        if kept + buf.len() <= KEEP_BYTES {
            free.push(buf);
        }
    }
}

static FREE: Mutex<Vec<Vec<u8>>> = Mutex::new(Vec::new());

/// An aligned buffer of `len` bytes, reused when one big enough is free (its contents are
/// whatever its last user left; callers overwrite what they use).
pub fn take(len: usize) -> Aligned {
    if len + ALIGN >= MIN_POOLED {
        let mut free = FREE.lock().unwrap_or_else(|e| e.into_inner());
        // An allocation does not move while it is kept, so its aligned start stays put.
        if let Some(i) = free
            .iter()
            .position(|b| b.len() - b.as_ptr().align_offset(ALIGN) >= len)
        {
            let buf = free.swap_remove(i);
            let at = buf.as_ptr().align_offset(ALIGN);
            return Aligned { buf, at, len };
        }
    }
    // Sizes rounded up past the next 64 KiB, so a piece read for a peer and a piece received
    // (its frame head in front) fit each other's buffers.
    let buf = vec![0; (len + 1).next_multiple_of(MIN_POOLED) + ALIGN];
    let at = buf.as_ptr().align_offset(ALIGN);
    Aligned { buf, at, len }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pattern(len: usize) -> Vec<u8> {
        (0..len).map(|i| (i * 7 + i / 4096) as u8).collect()
    }

    fn pair(dir: &Path) -> (File, File) {
        let path = dir.join("f");
        let cached = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(true)
            .open(&path)
            .unwrap();
        let direct = open(&path, true)
            .unwrap()
            .expect("the test's filesystem does O_DIRECT");
        (direct, cached)
    }

    #[test]
    fn writes_and_reads_at_any_offset_and_length_match_the_bytes() {
        let dir = tempfile::tempdir().unwrap();
        let (direct, cached) = pair(dir.path());
        let data = pattern(3 * ALIGN * 5 + 1234);
        // Aligned offsets with unaligned memory and lengths, then an unaligned offset.
        write_at(&direct, &cached, &data[1..2 * ALIGN + 1], 0).unwrap();
        write_at(&direct, &cached, &data[2 * ALIGN..], 2 * ALIGN as u64).unwrap();
        write_at(&direct, &cached, &data[5..105], 5).unwrap();
        let mut want = data.clone();
        want[..2 * ALIGN].copy_from_slice(&data[1..2 * ALIGN + 1]);
        want[5..105].copy_from_slice(&data[5..105]);
        let mut back = vec![0; want.len()];
        cached.read_exact_at(&mut back, 0).unwrap();
        assert_eq!(back, want);
        for (offset, len) in [
            (0, 10),
            (1, ALIGN),
            (ALIGN - 3, 7),
            (0, want.len()),
            (777, want.len() - 777),
            (want.len() - 1, 1),
        ] {
            let got = read_at(&direct, &cached, offset as u64, len).unwrap();
            assert_eq!(&got[..], &want[offset..offset + len], "{offset}+{len}");
        }
    }

    #[test]
    fn a_read_past_the_end_of_the_file_is_unexpected_eof() {
        let dir = tempfile::tempdir().unwrap();
        let (direct, cached) = pair(dir.path());
        write_at(&direct, &cached, &pattern(ALIGN + 10), 0).unwrap();
        let e = read_at(&direct, &cached, 5, ALIGN + 6).unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::UnexpectedEof);
        assert_eq!(
            read_at(&direct, &cached, 5, ALIGN + 5).unwrap().len(),
            ALIGN + 5
        );
    }

    #[test]
    fn a_dropped_buffer_is_taken_again_with_its_bytes_and_alignment() {
        let len = MIN_POOLED * 3 + 17;
        let mut a = take(len);
        a.as_mut().fill(7);
        let ptr = a.as_ref().as_ptr();
        assert_eq!(ptr.align_offset(ALIGN), 0);
        let bytes = a.freeze();
        let slice = bytes.slice(10..20);
        drop(bytes);
        // A live slice keeps the buffer out of the free list.
        assert_eq!(&slice[..], &[7; 10]);
        let other = take(len);
        assert_ne!(other.as_ref().as_ptr(), ptr);
        drop(other);
        drop(slice);
        // Other tests share the free list: look for ours among a few takes.
        let taken: Vec<Aligned> = (0..8).map(|_| take(len - 5)).collect();
        let again = taken
            .iter()
            .find(|b| b.as_ref().as_ptr() == ptr)
            .expect("reused");
        assert_eq!(again.as_ref().len(), len - 5);
        assert!(again.as_ref().iter().all(|&b| b == 7));
        assert!(
            taken
                .iter()
                .all(|b| b.as_ref().as_ptr().align_offset(ALIGN) == 0)
        );
    }

    #[test]
    fn the_free_list_keeps_at_most_its_bytes() {
        let held: Vec<Aligned> = (0..2 * KEEP_BYTES / MIN_POOLED)
            .map(|_| take(MIN_POOLED))
            .collect();
        drop(held);
        let kept: usize = FREE.lock().unwrap().iter().map(Vec::len).sum();
        assert!(kept <= KEEP_BYTES);
    }

    #[test]
    fn small_buffers_are_aligned_and_not_kept() {
        let b = take(10);
        assert_eq!(b.as_ref().len(), 10);
        assert_eq!(b.as_ref().as_ptr().align_offset(ALIGN), 0);
    }
}

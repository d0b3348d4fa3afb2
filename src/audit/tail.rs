//! Reading the end of an existing audit file without reading all of it: the last line
//! (its hash, whether it is torn) and the number of lines in the chain, counted back to
//! the last checkpoint (README "Audit log"), so a multi-gigabyte file costs a few reads
//! when it has checkpoints, and one pass over the file when it has none.

use super::record::{AuditRecord, MAX_LINE_BYTES, parse_line};
use sha2::{Digest, Sha256};
use std::fs::File;
use std::io;

/// Size of the chunks used to find and hash the last line.
pub(super) const TAIL_CHUNK: usize = 64 * 1024;

/// Size of the chunks read backwards when counting lines.
const COUNT_CHUNK: usize = 1024 * 1024;

/// Longer lines are never checkpoints (a checkpoint line is about 330 bytes).
const MAX_CHECKPOINT_LINE: usize = 1024;

/// What the end of an existing file looks like.
#[derive(Debug)]
pub(super) struct Tail {
    /// Hash of the last line's bytes (without its newline).
    pub hash: String,
    /// The file does not end with a newline.
    pub torn: bool,
    /// Whether the last line parses as a record (`None`: too long to check).
    pub valid: Option<bool>,
}

/// Finds and hashes the last line of `file` without reading more than that line (plus
/// one chunk). `None` for an empty file.
pub(super) fn scan_tail(file: &File) -> io::Result<Option<Tail>> {
    let len = file.metadata()?.len();
    if len == 0 {
        return Ok(None);
    }
    let mut last = [0u8; 1];
    read_at(file, &mut last, len - 1)?;
    let torn = last[0] != b'\n';
    let end = if torn { len } else { len - 1 };

    // Backwards to the newline before the last line.
    let mut buf = vec![0u8; TAIL_CHUNK];
    let mut start = 0;
    let mut pos = end;
    while pos > 0 {
        let n = chunk_len(pos, TAIL_CHUNK);
        pos -= n as u64;
        read_at(file, &mut buf[..n], pos)?;
        if let Some(i) = memchr::memrchr(b'\n', &buf[..n]) {
            start = pos + i as u64 + 1;
            break;
        }
    }

    // Forwards over the last line, hashing it (and keeping it, if small enough to parse).
    let line_len = end - start;
    let keep = usize::try_from(line_len).is_ok_and(|l| l <= MAX_LINE_BYTES);
    let mut kept = Vec::new();
    let mut hasher = Sha256::new();
    let mut pos = start;
    while pos < end {
        let n = chunk_len(end - pos, TAIL_CHUNK);
        read_at(file, &mut buf[..n], pos)?;
        hasher.update(&buf[..n]);
        if keep {
            kept.extend_from_slice(&buf[..n]);
        }
        pos += n as u64;
    }
    Ok(Some(Tail {
        hash: hex::encode(hasher.finalize()),
        torn,
        valid: keep.then(|| parse_line(&kept).is_ok()),
    }))
}

/// The number of lines in the chain that `file` continues: the `records` of the last
/// checkpoint in it, plus 1 for the checkpoint, plus the lines after it; without a
/// checkpoint, every line of the file. Reads backwards from the end in large chunks and
/// stops at the last checkpoint. A last line without a newline counts as a line.
pub(super) fn count_chain(file: &File) -> io::Result<u64> {
    let len = file.metadata()?.len();
    if len == 0 {
        return Ok(0);
    }
    let mut last = [0u8; 1];
    read_at(file, &mut last, len - 1)?;
    // `end`: just past the current line's last byte, its newline excluded.
    let mut end = if last[0] == b'\n' { len - 1 } else { len };
    let mut lines_after = 0u64;
    let mut buf = vec![0u8; COUNT_CHUNK];
    let mut short = Vec::with_capacity(MAX_CHECKPOINT_LINE);
    // Bytes before `pos` are not read yet.
    let mut pos = end;
    loop {
        let chunk_start = pos - chunk_len(pos, COUNT_CHUNK) as u64;
        let n = usize::try_from(pos - chunk_start).expect("at most COUNT_CHUNK");
        read_at(file, &mut buf[..n], chunk_start)?;
        let chunk = &buf[..n];
        for i in memchr::memrchr_iter(b'\n', chunk) {
            let start = chunk_start + i as u64 + 1;
            if let Some(records) = checkpoint_at(file, chunk, chunk_start, start, end, &mut short)?
            {
                return Ok(records + 1 + lines_after);
            }
            lines_after += 1;
            end = start - 1;
        }
        pos = chunk_start;
        if pos == 0 {
            // The first line of the file.
            if let Some(records) = checkpoint_at(file, chunk, 0, 0, end, &mut short)? {
                return Ok(records + 1 + lines_after);
            }
            return Ok(lines_after + 1);
        }
    }
}

/// If the line at `[start, end)` is a checkpoint record, its `records`. Only short lines
/// that name the kind near their start are parsed; one that reaches past the chunk in
/// memory is read again on its own.
fn checkpoint_at(
    file: &File,
    chunk: &[u8],
    chunk_start: u64,
    start: u64,
    end: u64,
    short: &mut Vec<u8>,
) -> io::Result<Option<u64>> {
    let len = end - start;
    if len < 64 || len > MAX_CHECKPOINT_LINE as u64 {
        return Ok(None);
    }
    let len = usize::try_from(len).expect("at most MAX_CHECKPOINT_LINE");
    let offset = usize::try_from(start - chunk_start).expect("inside the chunk");
    let line: &[u8] = if offset + len <= chunk.len() {
        &chunk[offset..offset + len]
    } else {
        short.resize(len, 0);
        read_at(file, short, start)?;
        short
    };
    if memchr::memmem::find(&line[..64], b"\"kind\":\"checkpoint\"").is_none() {
        return Ok(None);
    }
    Ok(match parse_line(line) {
        Ok(parsed) => match parsed.record {
            AuditRecord::Checkpoint(c) => Some(c.records),
            _ => None,
        },
        Err(_) => None,
    })
}

/// `min(remaining, chunk)` as a buffer length.
fn chunk_len(remaining: u64, chunk: usize) -> usize {
    usize::try_from(remaining).map_or(chunk, |r| r.min(chunk))
}

/// Reads exactly `buf.len()` bytes at `offset`, leaving the append position alone.
#[cfg(unix)]
pub(super) fn read_at(file: &File, buf: &mut [u8], offset: u64) -> io::Result<()> {
    std::os::unix::fs::FileExt::read_exact_at(file, buf, offset)
}

/// Reads exactly `buf.len()` bytes at `offset`.
#[cfg(not(unix))]
pub(super) fn read_at(mut file: &File, buf: &mut [u8], offset: u64) -> io::Result<()> {
    use std::io::{Read, Seek, SeekFrom};
    file.seek(SeekFrom::Start(offset))?;
    file.read_exact(buf)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::audit::record::line_hash;
    use std::io::Write;

    #[test]
    fn tail_of_an_empty_file_is_none() {
        let f = tempfile::tempfile().expect("tempfile");
        assert!(scan_tail(&f).expect("scan").is_none());
        assert_eq!(count_chain(&f).expect("count"), 0);
    }

    #[test]
    fn tail_finds_the_last_line_across_chunk_boundaries() {
        // Last lines shorter than, equal to and several times longer than a chunk, after
        // lines that are longer than a chunk too.
        for last_len in [
            0,
            1,
            TAIL_CHUNK - 1,
            TAIL_CHUNK,
            TAIL_CHUNK + 1,
            3 * TAIL_CHUNK + 7,
        ] {
            for torn in [false, true] {
                let mut f = tempfile::tempfile().expect("tempfile");
                let first = vec![b'a'; 2 * TAIL_CHUNK + 3];
                let last = vec![b'b'; last_len];
                f.write_all(&first).expect("write");
                f.write_all(b"\n").expect("write");
                f.write_all(&last).expect("write");
                if !torn {
                    f.write_all(b"\n").expect("write");
                }
                let tail = scan_tail(&f).expect("scan").expect("not empty");
                // Nothing after the first line's newline: that line is the last one.
                let expected = if torn && last_len == 0 { &first } else { &last };
                assert_eq!(tail.hash, line_hash(expected), "len {last_len} torn {torn}");
                assert_eq!(tail.torn, torn && last_len > 0, "len {last_len}");
                assert_eq!(tail.valid, Some(false));
                let lines = if torn && last_len == 0 { 1 } else { 2 };
                assert_eq!(count_chain(&f).expect("count"), lines, "len {last_len}");
            }
        }
    }

    #[test]
    fn tail_of_a_single_line_without_newline() {
        let mut f = tempfile::tempfile().expect("tempfile");
        f.write_all(b"xyz").expect("write");
        let tail = scan_tail(&f).expect("scan").expect("not empty");
        assert!(tail.torn);
        assert_eq!(tail.hash, line_hash(b"xyz"));
        assert_eq!(count_chain(&f).expect("count"), 1);
    }

    #[test]
    fn count_without_checkpoints_counts_every_line_across_chunks() {
        let mut f = tempfile::tempfile().expect("tempfile");
        let mut expected = 0u64;
        // Empty lines, short lines and lines around the chunk size.
        for len in [
            0,
            1,
            200,
            COUNT_CHUNK - 1,
            COUNT_CHUNK,
            COUNT_CHUNK + 1,
            5,
            0,
        ] {
            f.write_all(&vec![b'x'; len]).expect("write");
            f.write_all(b"\n").expect("write");
            expected += 1;
        }
        for _ in 0..100_000 {
            f.write_all(b"{\"ts\":\"short line\"}\n").expect("write");
            expected += 1;
        }
        assert_eq!(count_chain(&f).expect("count"), expected);
        f.write_all(b"torn").expect("write");
        assert_eq!(count_chain(&f).expect("count"), expected + 1);
    }
}

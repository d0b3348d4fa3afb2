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

/// How far back from the end the last checkpoint is looked for before the rest of the
/// file is counted forwards (a checkpoint every 10 minutes is a few MiB apart even
/// while a large backlog drains).
const BACKWARD_LIMIT: u64 = 64 * 1024 * 1024;

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
/// checkpoint, every line of the file. A last line without a newline counts as a line.
///
/// Reads backwards from the end in large chunks, which finds the last checkpoint in a
/// few reads when the daemon writes them; after [`BACKWARD_LIMIT`] bytes without one it
/// counts the rest forwards, which the kernel's read-ahead serves about twice as fast
/// from a cold disk.
pub(super) fn count_chain(file: &File) -> io::Result<u64> {
    count_chain_within(file, BACKWARD_LIMIT)
}

/// [`count_chain`] looking back at most about `backward_limit` bytes.
fn count_chain_within(file: &File, backward_limit: u64) -> io::Result<u64> {
    let len = file.metadata()?.len();
    if len == 0 {
        return Ok(0);
    }
    let mut last = [0u8; 1];
    read_at(file, &mut last, len - 1)?;
    // `end`: just past the current line's last byte, its newline excluded.
    let mut end = if last[0] == b'\n' { len - 1 } else { len };
    let last_end = end;
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
            let line = line_in(file, chunk, chunk_start, start, end, &mut short)?;
            if let Some(records) = line.and_then(checkpoint_records) {
                return Ok(records.saturating_add(1).saturating_add(lines_after));
            }
            lines_after += 1;
            end = start - 1;
        }
        pos = chunk_start;
        if pos == 0 {
            // The first line of the file.
            let line = line_in(file, chunk, 0, 0, end, &mut short)?;
            if let Some(records) = line.and_then(checkpoint_records) {
                return Ok(records.saturating_add(1).saturating_add(lines_after));
            }
            return Ok(lines_after + 1);
        }
        // `end` is a newline once one was found: everything before it is whole lines.
        if len - pos >= backward_limit && end < last_end {
            let (lines, checkpoint) = count_forward(file, end + 1, &mut buf)?;
            return Ok(match checkpoint {
                Some((records, after)) => records
                    .saturating_add(1)
                    .saturating_add(after)
                    .saturating_add(lines_after),
                None => lines + lines_after,
            });
        }
    }
}

/// Counts the lines in `[0, upto)` (whole lines: `upto` follows a newline) and finds
/// the last checkpoint among them: its `records` and the lines after it.
fn count_forward(file: &File, upto: u64, buf: &mut [u8]) -> io::Result<(u64, Option<(u64, u64)>)> {
    let mut lines = 0u64;
    let mut checkpoint: Option<(u64, u64)> = None;
    // The start of a line that runs on into the next chunk (only while it could still
    // be a checkpoint) and its length so far.
    let mut carry = Vec::with_capacity(MAX_CHECKPOINT_LINE);
    let mut carry_len = 0usize;
    let mut pos = 0u64;
    while pos < upto {
        let n = chunk_len(upto - pos, buf.len());
        read_at(file, &mut buf[..n], pos)?;
        let chunk = &buf[..n];
        let mut from = 0;
        for i in memchr::memchr_iter(b'\n', chunk) {
            let piece = &chunk[from..i];
            let records = if carry_len == 0 {
                checkpoint_records(piece)
            } else if carry_len + piece.len() <= MAX_CHECKPOINT_LINE {
                carry.extend_from_slice(piece);
                checkpoint_records(&carry)
            } else {
                None
            };
            match records {
                Some(r) => checkpoint = Some((r, 0)),
                None => {
                    if let Some((_, after)) = &mut checkpoint {
                        *after += 1;
                    }
                }
            }
            lines += 1;
            carry.clear();
            carry_len = 0;
            from = i + 1;
        }
        let rest = &chunk[from..];
        carry_len += rest.len();
        if carry_len <= MAX_CHECKPOINT_LINE {
            carry.extend_from_slice(rest);
        }
        pos += n as u64;
    }
    Ok((lines, checkpoint))
}

/// The bytes of the line at `[start, end)` when it is short enough to be a checkpoint:
/// from the chunk in memory, or read on its own when it reaches past the chunk.
fn line_in<'a>(
    file: &File,
    chunk: &'a [u8],
    chunk_start: u64,
    start: u64,
    end: u64,
    short: &'a mut Vec<u8>,
) -> io::Result<Option<&'a [u8]>> {
    let len = end - start;
    if len > MAX_CHECKPOINT_LINE as u64 {
        return Ok(None);
    }
    let len = usize::try_from(len).expect("at most MAX_CHECKPOINT_LINE");
    let offset = usize::try_from(start - chunk_start).expect("inside the chunk");
    if offset + len <= chunk.len() {
        return Ok(Some(&chunk[offset..offset + len]));
    }
    short.resize(len, 0);
    read_at(file, short, start)?;
    Ok(Some(short))
}

/// If `line` is a checkpoint record, its `records`. Cheap for every other line: a record
/// line names its kind at a fixed offset (after `{"ts":"` and the 24-byte timestamp), and
/// only a line that names `checkpoint` there is parsed.
fn checkpoint_records(line: &[u8]) -> Option<u64> {
    const KIND_AT: usize = 31;
    const KIND: &[u8] = b"\",\"kind\":\"checkpoint\",";
    if line.len() > MAX_CHECKPOINT_LINE || line.get(KIND_AT..KIND_AT + KIND.len()) != Some(KIND) {
        return None;
    }
    match parse_line(line).ok()?.record {
        AuditRecord::Checkpoint(c) => Some(c.records),
        _ => None,
    }
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

    /// A checkpoint line (with a well-formed, unchecked signature) counting `records`.
    fn checkpoint_line(records: u64) -> Vec<u8> {
        use crate::audit::record::{CheckpointRecord, render};
        let head = "ab".repeat(32);
        let rec = CheckpointRecord {
            records,
            head: head.clone(),
            key_id: "0123456789abcdef".to_owned(),
            signature: format!("{}==", "A".repeat(86)),
        };
        render("2026-11-27T12:00:00.123Z", &rec, &head).expect("renders")
    }

    /// Every way of counting `f` gives `expected`: backwards only, and forwards after
    /// looking back 0, 1 or some bytes.
    fn assert_count(f: &File, expected: u64) {
        for limit in [0, 1, 1000, COUNT_CHUNK as u64 + 1, u64::MAX] {
            assert_eq!(
                count_chain_within(f, limit).expect("count"),
                expected,
                "limit {limit}"
            );
        }
    }

    #[test]
    fn count_starts_from_the_last_checkpoint_wherever_it_is() {
        let cp = checkpoint_line(41);
        assert_eq!(checkpoint_records(&cp), Some(41));
        // A checkpoint first, in the middle, across a chunk boundary, last.
        for before in [0usize, 3, COUNT_CHUNK / 700] {
            // 70000 short lines are more than a chunk: the checkpoint is found forwards.
            for after in [0usize, 1, 70_000] {
                let mut f = tempfile::tempfile().expect("tempfile");
                // An earlier checkpoint does not count.
                let early = checkpoint_line(7);
                f.write_all(&early).expect("write");
                f.write_all(b"\n").expect("write");
                for _ in 0..before {
                    f.write_all(&[b'y'; 699]).expect("write");
                    f.write_all(b"\n").expect("write");
                }
                // Pad so that the checkpoint straddles the first forward chunk boundary.
                if before > 10 {
                    let at = early.len() + 1 + before * 700;
                    let pad = COUNT_CHUNK - at - cp.len() / 2;
                    f.write_all(&vec![b'p'; pad - 1]).expect("write");
                    f.write_all(b"\n").expect("write");
                }
                f.write_all(&cp).expect("write");
                f.write_all(b"\n").expect("write");
                for _ in 0..after {
                    f.write_all(b"{\"ts\":\"short\"}\n").expect("write");
                }
                assert_count(&f, 41 + 1 + after as u64);
            }
        }
    }

    #[test]
    fn a_checkpoint_across_the_backward_chunk_boundary_is_found() {
        let cp = checkpoint_line(41);
        let mut f = tempfile::tempfile().expect("tempfile");
        f.write_all(b"before\n").expect("write");
        f.write_all(&cp).expect("write");
        f.write_all(b"\n").expect("write");
        // The last chunk read backwards starts in the middle of the checkpoint.
        let mut after = 0u64;
        let mut left = COUNT_CHUNK - cp.len() / 2;
        while left > 100 {
            f.write_all(&[b'z'; 99]).expect("write");
            f.write_all(b"\n").expect("write");
            left -= 100;
            after += 1;
        }
        f.write_all(&vec![b'z'; left - 1]).expect("write");
        f.write_all(b"\n").expect("write");
        after += 1;
        assert_count(&f, 41 + 1 + after);
    }

    #[test]
    fn a_line_that_only_looks_like_a_checkpoint_does_not_count_as_one() {
        let mut f = tempfile::tempfile().expect("tempfile");
        let mut fake = checkpoint_line(41);
        fake.extend_from_slice(b" trailing");
        f.write_all(b"one\n").expect("write");
        f.write_all(&fake).expect("write");
        f.write_all(b"\nthree\n").expect("write");
        assert_count(&f, 3);
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
        assert_count(&f, expected);
        f.write_all(b"torn").expect("write");
        assert_count(&f, expected + 1);
    }
}

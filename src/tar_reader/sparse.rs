//! Sparse files: GNU's old sparse members (`S`, with extension blocks) and the PAX
//! spellings (GNU sparse 0.0, 0.1 and 1.0), all read into a bounded, validated map.

use std::io::Read;

use tar::{GnuExtSparseHeader, Header};

use super::{
    BLOCK, MAX_PAX_LEN, MAX_SPARSE_SEGMENTS, MemberError, PaxRecord, Segment, Sparse, TarReader,
    parse_decimal, pax_get,
};

impl<R: Read> TarReader<R> {
    /// The map of an old GNU sparse member (`S`): four slots in the header, then
    /// extension blocks of 21 while the "extended" flag is set.
    pub(super) fn gnu_sparse(
        &mut self,
        header: &Header,
    ) -> std::result::Result<Sparse, MemberError> {
        let fmt = |s: String| MemberError::Format(s);
        let Some(gnu) = header.as_gnu() else {
            return Err(fmt("a sparse member without a GNU header".into()));
        };
        let real_size = gnu
            .real_size()
            .map_err(|e| fmt(format!("bad sparse real size: {e}")))?;
        let mut segments = Vec::new();
        let mut push = |b: &tar::GnuSparseHeader| -> std::result::Result<(), MemberError> {
            if b.is_empty() {
                return Ok(());
            }
            let offset = b
                .offset()
                .map_err(|e| fmt(format!("bad sparse offset: {e}")))?;
            let len = b
                .length()
                .map_err(|e| fmt(format!("bad sparse length: {e}")))?;
            if segments.len() >= MAX_SPARSE_SEGMENTS {
                return Err(fmt(format!(
                    "sparse map of more than {MAX_SPARSE_SEGMENTS} segments"
                )));
            }
            segments.push(Segment { offset, len });
            Ok(())
        };
        for b in &gnu.sparse {
            push(b)?;
        }
        let mut extended = gnu.is_extended();
        while extended {
            let block = self
                .read_block()
                .map_err(MemberError::Io)?
                .ok_or_else(|| fmt("the archive ends inside a sparse map".into()))?;
            let mut ext = GnuExtSparseHeader::new();
            ext.as_mut_bytes().copy_from_slice(&block);
            for b in ext.sparse() {
                push(b)?;
            }
            extended = ext.is_extended();
        }
        Ok(Sparse {
            real_size,
            segments,
        })
    }

    /// Reads the map of a PAX sparse 1.0 member from the start of its data: decimal
    /// numbers, one per line (count, then offset and length of each segment), padded to
    /// a block. Returns the segments and the bytes the map took.
    pub(super) fn pax_sparse_v1_0(
        &mut self,
        size: u64,
    ) -> std::result::Result<(Vec<Segment>, u64), MemberError> {
        let fmt = |s: String| MemberError::Format(s);
        let mut text: Vec<u8> = Vec::new();
        let mut numbers: Vec<u64> = Vec::new();
        let mut used: u64 = 0;
        let mut want: Option<usize> = None;
        let complete = |want: Option<usize>, got: usize| want.is_some_and(|n| got > 2 * n);
        loop {
            if used + BLOCK > size {
                return Err(fmt("sparse map runs past the member's data".into()));
            }
            if used + BLOCK > MAX_PAX_LEN {
                return Err(fmt(format!(
                    "sparse map over the limit of {MAX_PAX_LEN} bytes"
                )));
            }
            let mut block = [0u8; BLOCK as usize];
            self.read_exact_counted(&mut block)
                .map_err(MemberError::Io)?;
            used += BLOCK;
            text.extend_from_slice(&block);
            // Take every complete line.
            while let Some(nl) = text.iter().position(|&b| b == b'\n') {
                let line: Vec<u8> = text.drain(..=nl).collect();
                let v = parse_decimal(&line[..line.len() - 1])
                    .ok_or_else(|| fmt("sparse map holds something not a number".into()))?;
                numbers.push(v);
                if want.is_none() {
                    let n = usize::try_from(v).unwrap_or(usize::MAX);
                    if n > MAX_SPARSE_SEGMENTS {
                        return Err(fmt(format!(
                            "sparse map of {v} segments is over the limit of {MAX_SPARSE_SEGMENTS}"
                        )));
                    }
                    want = Some(n);
                }
                if complete(want, numbers.len()) {
                    break;
                }
            }
            if complete(want, numbers.len()) {
                break;
            }
            if text.len() > 64 {
                return Err(fmt("sparse map holds an overlong number".into()));
            }
        }
        let segments = numbers
            .get(1..)
            .unwrap_or_default()
            .chunks_exact(2)
            .map(|c| Segment {
                offset: c[0],
                len: c[1],
            })
            .collect();
        Ok((segments, used))
    }
}

/// The PAX spellings of GNU sparse files.
pub(super) enum PaxSparse {
    V0_0,
    V0_1,
    V1_0,
}

impl PaxSparse {
    pub(super) fn detect(pax: &[PaxRecord]) -> Option<PaxSparse> {
        let major = pax_get(pax, b"GNU.sparse.major");
        let minor = pax_get(pax, b"GNU.sparse.minor");
        match (major, minor) {
            (Some(b"1"), Some(b"0")) => return Some(PaxSparse::V1_0),
            (Some(b"0"), Some(b"1")) => return Some(PaxSparse::V0_1),
            (Some(b"0"), Some(b"0")) => return Some(PaxSparse::V0_0),
            _ => {}
        }
        if pax_get(pax, b"GNU.sparse.map").is_some() {
            Some(PaxSparse::V0_1)
        } else if pax_get(pax, b"GNU.sparse.offset").is_some() {
            Some(PaxSparse::V0_0)
        } else {
            None
        }
    }
}

/// 0.0: repeated `GNU.sparse.offset` / `GNU.sparse.numbytes` records, in order.
pub(super) fn pax_sparse_v0_0(pax: &[PaxRecord]) -> std::result::Result<Vec<Segment>, String> {
    let mut out = Vec::new();
    let mut offset: Option<u64> = None;
    for (k, v) in pax {
        match k.as_slice() {
            b"GNU.sparse.offset" => {
                offset = Some(parse_decimal(v).ok_or("bad GNU.sparse.offset")?);
            }
            b"GNU.sparse.numbytes" => {
                let len = parse_decimal(v).ok_or("bad GNU.sparse.numbytes")?;
                let offset = offset
                    .take()
                    .ok_or("GNU.sparse.numbytes without an offset")?;
                if out.len() >= MAX_SPARSE_SEGMENTS {
                    return Err(format!(
                        "sparse map of more than {MAX_SPARSE_SEGMENTS} segments"
                    ));
                }
                out.push(Segment { offset, len });
            }
            _ => {}
        }
    }
    Ok(out)
}

/// 0.1: `GNU.sparse.map` = `offset,len,offset,len,…`.
pub(super) fn pax_sparse_v0_1(pax: &[PaxRecord]) -> std::result::Result<Vec<Segment>, String> {
    let map = pax_get(pax, b"GNU.sparse.map").ok_or("PAX sparse 0.1 without GNU.sparse.map")?;
    if map.is_empty() {
        return Ok(Vec::new());
    }
    let nums: Vec<u64> = map
        .split(|&b| b == b',')
        .map(parse_decimal)
        .collect::<Option<_>>()
        .ok_or("bad GNU.sparse.map")?;
    if nums.len() % 2 != 0 {
        return Err("GNU.sparse.map has an odd count of numbers".into());
    }
    if nums.len() / 2 > MAX_SPARSE_SEGMENTS {
        return Err(format!(
            "sparse map of more than {MAX_SPARSE_SEGMENTS} segments"
        ));
    }
    Ok(nums
        .chunks_exact(2)
        .map(|c| Segment {
            offset: c[0],
            len: c[1],
        })
        .collect())
}

/// Segments sorted, not overlapping, inside the file, and exactly covering the data.
pub(super) fn validate_sparse(s: &Sparse, data_size: u64) -> std::result::Result<(), String> {
    let mut end = 0u64;
    let mut total = 0u64;
    for seg in &s.segments {
        if seg.offset < end {
            return Err("sparse map segments overlap or are out of order".into());
        }
        end = seg
            .offset
            .checked_add(seg.len)
            .filter(|&e| e <= s.real_size)
            .ok_or("sparse map reaches past the file's size")?;
        total = total
            .checked_add(seg.len)
            .ok_or("sparse map reaches past the file's size")?;
    }
    if total != data_size {
        return Err(format!(
            "sparse map covers {total} bytes but the member holds {data_size}"
        ));
    }
    Ok(())
}
